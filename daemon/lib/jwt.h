/* jwt.h - what the daemon may learn from an access token without trusting
 * it: a short fingerprint for logs, and its decoded header and claims for
 * `batchtok inspect` (never the signature); and the base64url coding JWTs
 * use. */
#ifndef BATCHTOK_DAEMON_JWT_H
#define BATCHTOK_DAEMON_JWT_H

#include <jansson.h>
#include <stddef.h>

/* "sha256:" and the first 12 hex digits of SHA-256(token); n >= 20. */
void jwt_fingerprint(const char *token, char *buf, size_t n);

/* {"header": {...}, "claims": {...}} as indented JSON in *ret (free()).
 * Returns -EINVAL if the token is not a JWS in compact form. */
int jwt_describe(const char *token, char **ret);

/* The claims object of a compact JWS, unverified (new reference), or NULL.
 * For display only: who signed in, never a decision. */
json_t *jwt_claims(const char *token);

/* base64url without padding of n bytes into a new string (free()). */
char *jwt_b64url_encode(const unsigned char *data, size_t n);

#endif
