/* secmem.h - where secrets live: OpenSSL's secure heap (locked, not dumped,
 * wiped on free), with a wiped ordinary heap as the fallback when the secure
 * heap cannot be had. Also the one string builder for request bodies that
 * carry a secret, and constant-time comparison. */
#ifndef BATCHTOK_DAEMON_SECMEM_H
#define BATCHTOK_DAEMON_SECMEM_H

#include <stddef.h>

/* Sets up the secure heap; returns 0, or -ENOMEM when it could not be locked
 * (secrets are then still wiped, but may be swapped). Call once, early. */
int secmem_init(size_t size);

void *secmem_alloc(size_t n);
/* Wipes and frees; accepts NULL. */
void secmem_free(void *p, size_t n);
char *secmem_strndup(const char *s, size_t n);
/* Wipes a NUL-terminated secret string and frees it; accepts NULL. */
void secmem_free_str(char *s);
/* 1 if a and b are equal, in time that depends on the lengths only. */
int secmem_equal(const char *a, const char *b);

/* A growable string in secure memory, for form bodies holding a secret. */
struct secstr {
	char *p;
	size_t len;
	size_t cap;
};

int secstr_append(struct secstr *s, const char *data, size_t n);
int secstr_append_str(struct secstr *s, const char *data);
/* Appends data application/x-www-form-urlencoded: written here rather than
 * with curl_easy_escape() because that returns an ordinary, unwiped copy. */
int secstr_append_urlenc(struct secstr *s, const char *data);
/* "&key=value" (no "&" when empty), value url-encoded. */
int secstr_add_param(struct secstr *s, const char *key, const char *value);
void secstr_free(struct secstr *s);

/* Allocator functions that wipe every block they free, for libraries that
 * handle tokens in their own memory (jansson, libcurl). */
void *secmem_lib_malloc(size_t n);
void *secmem_lib_calloc(size_t n, size_t size);
void *secmem_lib_realloc(void *p, size_t n);
char *secmem_lib_strdup(const char *s);
void secmem_lib_free(void *p);
#endif
