/* jwt.c - fingerprints and unverified decoding of access tokens. */
#include "jwt.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JWT segment is a few KiB; refuse to decode absurd ones. */
#define SEGMENT_MAX (128 * 1024)

void jwt_fingerprint(const char *token, char *buf, size_t n)
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)token, strlen(token), md);
	snprintf(buf, n, "sha256:%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4],
		 md[5]);
}

/* Decodes one unpadded base64url segment with OpenSSL's decoder. */
static int b64url_decode(const char *s, size_t len, unsigned char **ret, size_t *ret_len)
{
	size_t padded = (len + 3) / 4 * 4;
	unsigned char *in, *out;
	int n;

	if (len == 0 || len > SEGMENT_MAX || len % 4 == 1)
		return -EINVAL;
	in = malloc(padded + 1);
	out = malloc(padded / 4 * 3 + 1);
	if (!in || !out) {
		free(in);
		free(out);
		return -ENOMEM;
	}
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '+' || c == '/' || c == '=') {
			free(in);
			free(out);
			return -EINVAL;
		}
		in[i] = c == '-' ? '+' : c == '_' ? '/' : (unsigned char)c;
	}
	for (size_t i = len; i < padded; i++)
		in[i] = '=';
	n = EVP_DecodeBlock(out, in, (int)padded);
	free(in);
	if (n < 0) {
		free(out);
		return -EINVAL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes; drop them. */
	n -= (int)(padded - len);
	out[n] = 0;
	*ret = out;
	*ret_len = (size_t)n;
	return 0;
}

static json_t *decode_part(const char *s, size_t len)
{
	unsigned char *raw;
	size_t n;
	json_t *j;

	if (b64url_decode(s, len, &raw, &n) < 0)
		return NULL;
	j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	if (j && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

int jwt_describe(const char *token, char **ret)
{
	const char *dot1 = strchr(token, '.'), *dot2;
	json_t *header, *claims, *doc;
	char *s;

	if (!dot1 || !(dot2 = strchr(dot1 + 1, '.')))
		return -EINVAL;
	header = decode_part(token, (size_t)(dot1 - token));
	claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (!header || !claims) {
		json_decref(header);
		json_decref(claims);
		return -EINVAL;
	}
	doc = json_pack("{s:o, s:o}", "header", header, "claims", claims);
	if (!doc)
		return -ENOMEM;
	s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

json_t *jwt_claims(const char *token)
{
	const char *dot1 = strchr(token, '.'), *dot2;

	if (!dot1 || !(dot2 = strchr(dot1 + 1, '.')))
		return NULL;
	return decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
}

char *jwt_b64url_encode(const unsigned char *data, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	int len;

	if (!out)
		return NULL;
	len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = 0;
	for (int i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return out;
}
