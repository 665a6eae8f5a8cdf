/* certificate.h - certificate credentials: a certificate and its RSA private
 * key loaded from PEM or PKCS#12, and the client-assertion JWTs signed with
 * it (ENTRA.md section 2).
 *
 * The key is decoded by OpenSSL straight into its secure heap (private key
 * numbers are allocated there once the heap is initialised); the file's
 * bytes are read into secure memory and wiped. A fresh assertion, with a new
 * jti and a ten-minute lifetime, is made for every token request. */
#ifndef BATCHTOK_DAEMON_CERTIFICATE_H
#define BATCHTOK_DAEMON_CERTIFICATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Lifetime of a client assertion: the doc says to keep it within 5-10 min. */
#define ASSERTION_LIFETIME 600
/* Warn this long before a certificate expires. */
#define CERTIFICATE_WARN_AHEAD (30 * 86400)

struct certificate;

enum assertion_alg {
	ASSERTION_PS256 = 0, /* RSASSA-PSS, SHA-256, salt 32: the current doc */
	ASSERTION_RS256,     /* PKCS#1 v1.5, SHA-256: what MSAL and ADAL send */
};

/* Parses data (len bytes, PEM or PKCS#12 DER) holding a certificate and its
 * private key; a separate PEM key may be given in key/key_len. passphrase
 * (may be NULL) decrypts an encrypted key or PKCS#12 file. On failure
 * returns a negative errno and err says what is wrong and how to fix it
 * (never including key material). */
int certificate_load(const char *data, size_t len, const char *key, size_t key_len,
		     const char *passphrase, struct certificate **ret, char *err, size_t errlen);
void certificate_free(struct certificate *c);

int64_t certificate_not_before(const struct certificate *c);
int64_t certificate_not_after(const struct certificate *c);
/* "CN=..." one line, for status and logs. */
const char *certificate_subject(const struct certificate *c);
/* Hex SHA-1 thumbprint as the Azure portal shows it. */
const char *certificate_thumbprint(const struct certificate *c);
/* "YYYY-MM-DD HH:MM UTC", how certificate dates are shown in messages. */
void certificate_date(int64_t t, char *buf, size_t n);
/* Whether two loaded certificates are the same certificate and key. */
bool certificate_equal(const struct certificate *a, const struct certificate *b);

/* A signed client assertion: header {alg, typ, x5t, x5t#S256[, x5c]}, claims
 * {aud, iss, sub, jti, nbf, iat, exp}. *ret is in secure memory
 * (secmem_free_str). */
int certificate_assertion(const struct certificate *c, enum assertion_alg alg, bool x5c,
			  const char *client_id, const char *audience, int64_t now, char **ret);

#endif
