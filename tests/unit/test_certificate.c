/* test_certificate.c - loading certificate credentials and the client
 * assertions signed with them, checked with OpenSSL as Entra would. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "../../daemon/lib/certificate.h"
#include "../../daemon/lib/jwt.h"
#include "../../daemon/lib/secmem.h"

struct pem {
	char *cert, *key, *enc_key;
	size_t cert_len, key_len, enc_len;
	EVP_PKEY *pkey;
};

static char *bio_text(BIO *b, size_t *len)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *s = malloc((size_t)n + 1);

	memcpy(s, p, (size_t)n);
	s[n] = 0;
	*len = (size_t)n;
	BIO_free(b);
	return s;
}

/* A self-signed certificate valid from now-1d for days, with its key. */
static void make(struct pem *p, const char *type, long days)
{
	X509 *x = X509_new();
	BIO *b;

	p->pkey = strcmp(type, "RSA") == 0 ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -86400);
	X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
	X509_set_pubkey(x, p->pkey);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"unit", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, p->pkey, EVP_sha256());
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	p->cert = bio_text(b, &p->cert_len);
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(b, p->pkey, NULL, NULL, 0, NULL, NULL);
	p->key = bio_text(b, &p->key_len);
	b = BIO_new(BIO_s_mem());
	PEM_write_bio_PKCS8PrivateKey(b, p->pkey, EVP_aes_256_cbc(), "pw", 2, NULL, NULL);
	p->enc_key = bio_text(b, &p->enc_len);
	X509_free(x);
}

static void drop(struct pem *p)
{
	free(p->cert);
	free(p->key);
	free(p->enc_key);
	EVP_PKEY_free(p->pkey);
}

static char *concat(const char *a, const char *b, size_t *len)
{
	char *s;

	*len = (size_t)asprintf(&s, "%s%s", a, b);
	return s;
}

/* Decodes a base64url segment of n bytes. */
static unsigned char *unb64(const char *s, size_t n, int *len)
{
	char *in = calloc(1, n + 4);
	unsigned char *out = calloc(1, n + 4);
	size_t k;

	for (k = 0; k < n; k++)
		in[k] = s[k] == '-' ? '+' : s[k] == '_' ? '/' : s[k];
	while (k % 4)
		in[k++] = '=';
	*len = EVP_DecodeBlock(out, (unsigned char *)in, (int)k) - (int)(k - n);
	free(in);
	return out;
}

static int verify(EVP_PKEY *key, const char *jwt, int pss)
{
	const char *dot = strrchr(jwt, '.');
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx;
	int siglen, ok;
	unsigned char *sig = unb64(dot + 1, strlen(dot + 1), &siglen);

	EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key);
	if (pss) {
		EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32);
	}
	ok = EVP_DigestVerify(md, sig, (size_t)siglen, (const unsigned char *)jwt,
			      (size_t)(dot - jwt));
	EVP_MD_CTX_free(md);
	free(sig);
	return ok;
}

static json_t *header_of(const char *jwt)
{
	int n;
	unsigned char *h = unb64(jwt, (size_t)(strchr(jwt, '.') - jwt), &n);
	json_t *j = json_loadb((char *)h, (size_t)n, 0, NULL);

	free(h);
	return j;
}

static void test_assertion_ps256_and_rs256(void **state)
{
	struct pem p;
	struct certificate *c;
	char err[300] = "", *a, *b, *data;
	size_t len;
	json_t *h, *claims;

	(void)state;
	make(&p, "RSA", 30);
	data = concat(p.cert, p.key, &len);
	assert_int_equal(certificate_load(data, len, NULL, 0, NULL, &c, err, sizeof(err)), 0);
	assert_int_equal(strlen(certificate_thumbprint(c)), 40);
	assert_true(certificate_not_after(c) - certificate_not_before(c) == 31 * 86400);

	assert_int_equal(
	    certificate_assertion(c, ASSERTION_PS256, false, "cid", "https://a/t", 1700000000, &a),
	    0);
	assert_int_equal(verify(p.pkey, a, 1), 1);
	assert_int_not_equal(verify(p.pkey, a, 0), 1);
	h = header_of(a);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "PS256");
	assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
	assert_int_equal(strlen(json_string_value(json_object_get(h, "x5t"))), 27);
	assert_int_equal(strlen(json_string_value(json_object_get(h, "x5t#S256"))), 43);
	assert_null(json_object_get(h, "x5c"));
	json_decref(h);
	claims = jwt_claims(a);
	assert_string_equal(json_string_value(json_object_get(claims, "aud")), "https://a/t");
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), "cid");
	assert_string_equal(json_string_value(json_object_get(claims, "sub")), "cid");
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")),
			 1700000000 + ASSERTION_LIFETIME);
	assert_int_equal(strlen(json_string_value(json_object_get(claims, "jti"))), 36);
	json_decref(claims);

	assert_int_equal(
	    certificate_assertion(c, ASSERTION_RS256, true, "cid", "https://a/t", 1700000000, &b),
	    0);
	assert_int_equal(verify(p.pkey, b, 0), 1);
	h = header_of(b);
	assert_int_equal(json_array_size(json_object_get(h, "x5c")), 1);
	json_decref(h);
	/* A fresh jti every time. */
	assert_string_not_equal(a, b);
	secmem_free_str(a);
	secmem_free_str(b);
	certificate_free(c);
	free(data);
	drop(&p);
}

static void test_key_file_and_passphrase(void **state)
{
	struct pem p;
	struct certificate *c;
	char err[300] = "";

	(void)state;
	make(&p, "RSA", 30);
	assert_int_equal(
	    certificate_load(p.cert, p.cert_len, p.enc_key, p.enc_len, NULL, &c, err, sizeof(err)),
	    -EINVAL);
	assert_non_null(strstr(err, "encrypted"));
	assert_non_null(strstr(err, "certificate_passphrase_credential"));
	assert_int_equal(certificate_load(p.cert, p.cert_len, p.enc_key, p.enc_len, "nope", &c, err,
					  sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "wrong passphrase"));
	assert_int_equal(
	    certificate_load(p.cert, p.cert_len, p.enc_key, p.enc_len, "pw", &c, err, sizeof(err)),
	    0);
	certificate_free(c);
	drop(&p);
}

static void test_refusals(void **state)
{
	struct pem p, q, e;
	struct certificate *c;
	char err[300] = "", *data;
	size_t len;

	(void)state;
	make(&p, "RSA", 30);
	make(&q, "RSA", 30);
	make(&e, "EC", 30);
	data = concat(p.cert, q.key, &len);
	assert_int_equal(certificate_load(data, len, NULL, 0, NULL, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "matches the private key"));
	free(data);
	assert_int_equal(certificate_load(p.key, p.key_len, NULL, 0, NULL, &c, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "holds no certificate"));
	assert_int_equal(certificate_load(p.cert, p.cert_len, NULL, 0, NULL, &c, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "holds no private key"));
	data = concat(e.cert, e.key, &len);
	assert_int_equal(certificate_load(data, len, NULL, 0, NULL, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not an RSA key"));
	free(data);
	assert_int_equal(certificate_load("garbage", 7, NULL, 0, NULL, &c, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "neither PEM"));
	drop(&p);
	drop(&q);
	drop(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_assertion_ps256_and_rs256),
	    cmocka_unit_test(test_key_file_and_passphrase),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
