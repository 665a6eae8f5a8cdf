/* certificate.c - loads certificate credentials with OpenSSL and signs client
 * assertions with them. */
#include "certificate.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwt.h"
#include "secmem.h"

/* Certificates beyond the leaf that x5c may carry. */
#define CHAIN_MAX 8

struct certificate {
	EVP_PKEY *key;
	X509 *cert;
	STACK_OF(X509) * chain; /* the other certificates of the file, in order */
	char x5t[32];		/* base64url SHA-1 of the DER */
	char x5t256[48];	/* base64url SHA-256 of the DER */
	char *x5c;		/* JSON array text: leaf first, standard base64 */
	char thumbprint[48];	/* hex SHA-1 */
	char subject[256];
	int64_t not_before, not_after;
};

void certificate_free(struct certificate *c)
{
	if (!c)
		return;
	EVP_PKEY_free(c->key);
	X509_free(c->cert);
	sk_X509_pop_free(c->chain, X509_free);
	free(c->x5c);
	free(c);
}

/* What the passphrase callback saw: whether a passphrase was needed. */
struct pass {
	const char *passphrase;
	bool asked;
};

static int pass_cb(char *buf, int size, int rwflag, void *u)
{
	struct pass *p = u;
	size_t n;

	(void)rwflag;
	p->asked = true;
	if (!p->passphrase)
		return -1;
	n = strlen(p->passphrase);
	if (n >= (size_t)size)
		return -1;
	memcpy(buf, p->passphrase, n);
	return (int)n;
}

static int64_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

static int digest_b64(X509 *cert, const EVP_MD *md, char *buf, size_t n)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int len;
	char *s;

	if (X509_digest(cert, md, d, &len) != 1 || !(s = jwt_b64url_encode(d, len)))
		return -ENOMEM;
	snprintf(buf, n, "%s", s);
	free(s);
	return 0;
}

static int der_b64(X509 *cert, json_t *array)
{
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der);
	char *s;
	int r;

	if (len <= 0)
		return -ENOMEM;
	s = malloc(4 * (((size_t)len + 2) / 3) + 1);
	if (!s) {
		OPENSSL_free(der);
		return -ENOMEM;
	}
	EVP_EncodeBlock((unsigned char *)s, der, len);
	OPENSSL_free(der);
	r = json_array_append_new(array, json_string(s));
	free(s);
	return r < 0 ? -ENOMEM : 0;
}

/* Fills in everything derived from the leaf and chain. */
static int describe(struct certificate *c)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int len;
	json_t *x5c = json_array();
	int r;

	if (!x5c)
		return -ENOMEM;
	r = digest_b64(c->cert, EVP_sha1(), c->x5t, sizeof(c->x5t))
		?: digest_b64(c->cert, EVP_sha256(), c->x5t256, sizeof(c->x5t256))
		?: der_b64(c->cert, x5c);
	for (int i = 0; r == 0 && i < sk_X509_num(c->chain) && i < CHAIN_MAX; i++)
		r = der_b64(sk_X509_value(c->chain, i), x5c);
	if (r == 0 && !(c->x5c = json_dumps(x5c, JSON_COMPACT)))
		r = -ENOMEM;
	json_decref(x5c);
	if (r < 0)
		return r;
	if (X509_digest(c->cert, EVP_sha1(), d, &len) != 1)
		return -ENOMEM;
	for (unsigned i = 0; i < len; i++)
		snprintf(c->thumbprint + 2 * i, 3, "%02X", d[i]);
	X509_NAME_oneline(X509_get_subject_name(c->cert), c->subject, sizeof(c->subject));
	c->not_before = asn1_time(X509_get0_notBefore(c->cert));
	c->not_after = asn1_time(X509_get0_notAfter(c->cert));
	return 0;
}

static int load_pkcs12(struct certificate *c, const char *data, size_t len, struct pass *pass,
		       char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	PKCS12 *p12 = bio ? d2i_PKCS12_bio(bio, NULL) : NULL;
	int r = 0;

	BIO_free(bio);
	if (!p12) {
		snprintf(err, errlen, "is neither PEM (-----BEGIN ...) nor PKCS#12");
		return -EINVAL;
	}
	/* An unprotected PKCS#12 file uses an empty passphrase or none. */
	if (!PKCS12_parse(p12, pass->passphrase ? pass->passphrase : "", &c->key, &c->cert,
			  &c->chain) &&
	    (pass->passphrase || !PKCS12_parse(p12, NULL, &c->key, &c->cert, &c->chain))) {
		snprintf(
		    err, errlen,
		    pass->passphrase
			? "cannot open the PKCS#12 file: wrong passphrase, or an algorithm "
			  "OpenSSL 3 does not enable by default (re-export it with "
			  "openssl pkcs12 -export -keypbe AES-256-CBC -certpbe AES-256-CBC)"
			: "the PKCS#12 file is protected: give its passphrase with "
			  "certificate_passphrase_file = or certificate_passphrase_credential =");
		r = -EINVAL;
	} else if (!c->key || !c->cert) {
		snprintf(err, errlen, "the PKCS#12 file needs both a certificate and its key");
		r = -EINVAL;
	}
	PKCS12_free(p12);
	return r;
}

static int load_pem(struct certificate *c, const char *data, size_t len, const char *key,
		    size_t key_len, struct pass *pass, char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509 *x;

	if (!bio)
		return -ENOMEM;
	if (!(c->chain = sk_X509_new_null())) {
		BIO_free(bio);
		return -ENOMEM;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
		if (!sk_X509_push(c->chain, x)) {
			X509_free(x);
			BIO_free(bio);
			return -ENOMEM;
		}
	BIO_free(bio);
	ERR_clear_error();
	bio = key ? BIO_new_mem_buf(key, (int)key_len) : BIO_new_mem_buf(data, (int)len);
	if (!bio)
		return -ENOMEM;
	c->key = PEM_read_bio_PrivateKey(bio, NULL, pass_cb, pass);
	BIO_free(bio);
	if (!c->key) {
		if (pass->asked && !pass->passphrase)
			snprintf(err, errlen,
				 "the private key is encrypted: give its passphrase with "
				 "certificate_passphrase_file = or "
				 "certificate_passphrase_credential =");
		else if (pass->asked)
			snprintf(err, errlen, "cannot decrypt the private key: wrong passphrase");
		else
			snprintf(err, errlen,
				 "holds no private key: put the PEM key after the certificate, "
				 "or name it with key_file =");
		return -EINVAL;
	}
	/* The leaf is the certificate of this key, wherever it sits. */
	for (int i = 0; i < sk_X509_num(c->chain); i++) {
		x = sk_X509_value(c->chain, i);
		if (X509_check_private_key(x, c->key) == 1) {
			c->cert = sk_X509_delete(c->chain, i);
			break;
		}
	}
	ERR_clear_error();
	if (!c->cert) {
		snprintf(err, errlen,
			 sk_X509_num(c->chain)
			     ? "no certificate in the file matches the private key"
			     : "holds no certificate: put the PEM certificate in the file");
		return -EINVAL;
	}
	return 0;
}

int certificate_load(const char *data, size_t len, const char *key, size_t key_len,
		     const char *passphrase, struct certificate **ret, char *err, size_t errlen)
{
	struct certificate *c = calloc(1, sizeof(*c));
	struct pass pass = {.passphrase = passphrase};
	int r;

	if (!c)
		return -ENOMEM;
	if (len > INT32_MAX || key_len > INT32_MAX)
		r = -EFBIG;
	else if (memmem(data, len, "-----BEGIN", 10) || key)
		r = load_pem(c, data, len, key, key_len, &pass, err, errlen);
	else
		r = load_pkcs12(c, data, len, &pass, err, errlen);
	ERR_clear_error();
	if (r == 0 && !EVP_PKEY_is_a(c->key, "RSA")) {
		snprintf(err, errlen,
			 "the key is not an RSA key: Entra ID certificate credentials need RSA "
			 "(2048 bits or more)");
		r = -EINVAL;
	}
	if (r == 0 && X509_check_private_key(c->cert, c->key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "the certificate does not match the private key");
		r = -EINVAL;
	}
	if (r == 0 && (r = describe(c)) < 0)
		snprintf(err, errlen, "out of memory");
	if (r < 0) {
		certificate_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

int64_t certificate_not_before(const struct certificate *c)
{
	return c->not_before;
}

int64_t certificate_not_after(const struct certificate *c)
{
	return c->not_after;
}

const char *certificate_subject(const struct certificate *c)
{
	return c->subject;
}

const char *certificate_thumbprint(const struct certificate *c)
{
	return c->thumbprint;
}

void certificate_date(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(buf, n, "@%lld", (long long)t);
}

bool certificate_equal(const struct certificate *a, const struct certificate *b)
{
	if (a == b)
		return true;
	if (!a || !b)
		return false;
	return X509_cmp(a->cert, b->cert) == 0 && EVP_PKEY_eq(a->key, b->key) == 1 &&
	       strcmp(a->x5c, b->x5c) == 0;
}

/* A random UUID (version 4), as the jti. */
static int uuid4(char buf[37])
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return -EIO;
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

static char *json_b64(json_t *obj)
{
	char *text = json_dumps(obj, JSON_COMPACT);
	char *s;

	if (!text)
		return NULL;
	s = jwt_b64url_encode((const unsigned char *)text, strlen(text));
	free(text);
	return s;
}

static int sign(const struct certificate *c, enum assertion_alg alg, const char *input,
		unsigned char **ret, size_t *ret_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *sig = NULL;
	size_t n = 0;
	int ok;

	ok = md && EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, c->key) == 1;
	if (ok && alg == ASSERTION_PS256)
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1;
	ok = ok && EVP_DigestSign(md, NULL, &n, (const unsigned char *)input, strlen(input)) == 1 &&
	     (sig = malloc(n)) &&
	     EVP_DigestSign(md, sig, &n, (const unsigned char *)input, strlen(input)) == 1;
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	if (!ok) {
		free(sig);
		return -EIO;
	}
	*ret = sig;
	*ret_len = n;
	return 0;
}

int certificate_assertion(const struct certificate *c, enum assertion_alg alg, bool x5c,
			  const char *client_id, const char *audience, int64_t now, char **ret)
{
	json_t *header = NULL, *claims = NULL;
	char jti[37], *h = NULL, *p = NULL, *input = NULL, *s = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	int r = -ENOMEM;

	if (uuid4(jti) < 0)
		return -EIO;
	header =
	    json_pack("{s:s, s:s, s:s, s:s}", "alg", alg == ASSERTION_PS256 ? "PS256" : "RS256",
		      "typ", "JWT", "x5t", c->x5t, "x5t#S256", c->x5t256);
	if (header && x5c)
		json_object_set_new(header, "x5c", json_loads(c->x5c, 0, NULL));
	claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", audience, "iss", client_id,
			   "sub", client_id, "jti", jti, "nbf", (json_int_t)now, "iat",
			   (json_int_t)now, "exp", (json_int_t)(now + ASSERTION_LIFETIME));
	if (!header || !claims || (x5c && !json_object_get(header, "x5c")))
		goto out;
	if (!(h = json_b64(header)) || !(p = json_b64(claims)) ||
	    asprintf(&input, "%s.%s", h, p) < 0) {
		input = NULL;
		goto out;
	}
	if ((r = sign(c, alg, input, &sig, &sig_len)) < 0)
		goto out;
	r = -ENOMEM;
	if (!(s = jwt_b64url_encode(sig, sig_len)))
		goto out;
	size_t n = strlen(input) + 1 + strlen(s);
	if (!(*ret = secmem_alloc(n + 1)))
		goto out;
	snprintf(*ret, n + 1, "%s.%s", input, s);
	r = 0;
out:
	json_decref(header);
	json_decref(claims);
	free(h);
	free(p);
	free(input);
	/* The signature makes the assertion a credential for ten minutes. */
	if (sig)
		OPENSSL_cleanse(sig, sig_len);
	free(sig);
	if (s)
		OPENSSL_cleanse(s, strlen(s));
	free(s);
	return r;
}
