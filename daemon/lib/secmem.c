/* secmem.c - secret storage on OpenSSL's secure heap. */
#include "secmem.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static int secure_heap;

int secmem_init(size_t size)
{
	/* 2: the heap exists but mlock() failed; still better than nothing. */
	int r = CRYPTO_secure_malloc_init(size, 16);

	secure_heap = r != 0;
	return r == 1 ? 0 : -ENOMEM;
}

void *secmem_alloc(size_t n)
{
	void *p = secure_heap ? CRYPTO_secure_zalloc(n, __FILE__, __LINE__) : NULL;

	/* An exhausted secure heap falls back to the ordinary one: still wiped
	 * on free, though it may be swapped. */
	return p ? p : CRYPTO_zalloc(n, __FILE__, __LINE__);
}

void secmem_free(void *p, size_t n)
{
	if (!p)
		return;
	if (CRYPTO_secure_allocated(p))
		CRYPTO_secure_clear_free(p, n, __FILE__, __LINE__);
	else
		CRYPTO_clear_free(p, n, __FILE__, __LINE__);
}

char *secmem_strndup(const char *s, size_t n)
{
	char *p = secmem_alloc(n + 1);

	if (p)
		memcpy(p, s, n);
	return p;
}

void secmem_free_str(char *s)
{
	if (s)
		secmem_free(s, strlen(s) + 1);
}

int secmem_equal(const char *a, const char *b)
{
	size_t n = strlen(a);

	return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

int secstr_append(struct secstr *s, const char *data, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		char *p;
		while (cap < s->len + n + 1)
			cap *= 2;
		p = secmem_alloc(cap);
		if (!p)
			return -ENOMEM;
		if (s->len)
			memcpy(p, s->p, s->len);
		secmem_free(s->p, s->cap);
		s->p = p;
		s->cap = cap;
	}
	memcpy(s->p + s->len, data, n);
	s->len += n;
	s->p[s->len] = 0;
	return 0;
}

int secstr_append_str(struct secstr *s, const char *data)
{
	return secstr_append(s, data, strlen(data));
}

int secstr_append_urlenc(struct secstr *s, const char *data)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)data; *p; p++) {
		char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
		int r;
		/* RFC 3986 unreserved characters stand for themselves. */
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p))
			r = secstr_append(s, (const char *)p, 1);
		else
			r = secstr_append(s, e, 3);
		if (r < 0) {
			OPENSSL_cleanse(e, sizeof(e));
			return r;
		}
		OPENSSL_cleanse(e, sizeof(e));
	}
	return 0;
}

int secstr_add_param(struct secstr *s, const char *key, const char *value)
{
	int r = 0;

	if (s->len)
		r = secstr_append(s, "&", 1);
	return r ?: secstr_append_str(s, key) ?: secstr_append(s, "=", 1)
			?: secstr_append_urlenc(s, value);
}

void secstr_free(struct secstr *s)
{
	secmem_free(s->p, s->cap);
	memset(s, 0, sizeof(*s));
}

void *secmem_lib_malloc(size_t n)
{
	return malloc(n);
}

void *secmem_lib_calloc(size_t n, size_t size)
{
	return calloc(n, size);
}

void secmem_lib_free(void *p)
{
	if (!p)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

void *secmem_lib_realloc(void *p, size_t n)
{
	size_t old;
	void *q;

	if (!p)
		return malloc(n);
	/* Move by hand: realloc() could leave the old bytes behind unwiped. */
	old = malloc_usable_size(p);
	if (n <= old)
		return p;
	q = malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, old);
	secmem_lib_free(p);
	return q;
}

char *secmem_lib_strdup(const char *s)
{
	return strdup(s);
}
