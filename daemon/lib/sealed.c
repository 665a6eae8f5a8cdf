/* sealed.c - AES-256-GCM state files with OpenSSL's EVP interface. */
#include "sealed.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "secmem.h"

#define MAGIC	  "BTS1"
#define MAGIC_LEN 4
#define NONCE_LEN 12
#define TAG_LEN	  16

int sealed_derive_key(const void *material, size_t n, unsigned char *key)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)material, n),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)"batchtok", 8),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)"state v1", 8),
	    OSSL_PARAM_construct_end(),
	};
	int ok = ctx && n > 0 && EVP_KDF_derive(ctx, key, SEALED_KEY_LEN, params) == 1;

	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	ERR_clear_error();
	return ok ? 0 : -EINVAL;
}

/* One GCM pass; out must hold n bytes. On decryption tag is checked. */
static int gcm(int enc, const unsigned char *key, const unsigned char *nonce, const char *aad,
	       const unsigned char *in, size_t n, unsigned char *out, unsigned char *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int len, ok;

	ok = ctx && n < INT32_MAX &&
	     EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc) == 1 &&
	     EVP_CipherUpdate(ctx, NULL, &len, (const unsigned char *)MAGIC, MAGIC_LEN) == 1 &&
	     EVP_CipherUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
	     (n == 0 || EVP_CipherUpdate(ctx, out, &len, in, (int)n) == 1) &&
	     (enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1) &&
	     EVP_CipherFinal_ex(ctx, out + n, &len) == 1 &&
	     (!enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1);
	EVP_CIPHER_CTX_free(ctx);
	ERR_clear_error();
	return ok ? 0 : -EBADMSG;
}

int sealed_seal(const unsigned char *key, const char *aad, const char *plain, size_t n,
		unsigned char **ret, size_t *ret_len)
{
	unsigned char *out = malloc(SEALED_OVERHEAD + n);
	unsigned char *nonce = out + MAGIC_LEN;

	if (!out)
		return -ENOMEM;
	memcpy(out, MAGIC, MAGIC_LEN);
	if (RAND_bytes(nonce, NONCE_LEN) != 1 ||
	    gcm(1, key, nonce, aad, (const unsigned char *)plain, n, nonce + NONCE_LEN,
		nonce + NONCE_LEN + n) < 0) {
		free(out);
		return -EIO;
	}
	*ret = out;
	*ret_len = SEALED_OVERHEAD + n;
	return 0;
}

int sealed_open(const unsigned char *key, const char *aad, const unsigned char *in, size_t n,
		char **ret)
{
	const unsigned char *nonce = in + MAGIC_LEN;
	unsigned char tag[TAG_LEN];
	size_t len;
	char *out;

	if (n < SEALED_OVERHEAD || memcmp(in, MAGIC, MAGIC_LEN) != 0)
		return -EBADMSG;
	len = n - SEALED_OVERHEAD;
	if (!(out = secmem_alloc(len + 1)))
		return -ENOMEM;
	memcpy(tag, nonce + NONCE_LEN + len, TAG_LEN);
	if (gcm(0, key, nonce, aad, nonce + NONCE_LEN, len, (unsigned char *)out, tag) < 0 ||
	    memchr(out, 0, len)) {
		secmem_free(out, len + 1);
		return -EBADMSG;
	}
	*ret = out;
	return 0;
}
