/* buf.h - a bounded byte buffer with big-endian get/put helpers.
 *
 * Modelled on OpenSSH's sshbuf, smaller. Every buffer has a maximum size
 * fixed at creation: nothing a peer sends can make it grow past that. Data is
 * appended at the end and consumed from the front. A failed get consumes
 * nothing. Growth, reset and free wipe the bytes they discard, because the
 * same type carries tokens and request bodies that hold secrets.
 *
 * Functions return 0 (or a count) on success and a negative errno code:
 *   -ENOBUFS  the operation would take the buffer past its maximum
 *   -ENOMEM   allocation failed
 *   -EBADMSG  a get ran past the end of the data, or a string was malformed
 */
#ifndef BATCHTOK_PROTO_BUF_H
#define BATCHTOK_PROTO_BUF_H

#include <stddef.h>
#include <stdint.h>

struct bt_buf {
	uint8_t *data; /* storage, owned unless the buffer is a view */
	size_t off;    /* first unread byte */
	size_t len;    /* end of the data */
	size_t cap;    /* allocated bytes */
	size_t max;    /* hard limit on cap */
	int view;      /* 1: data is borrowed and read-only */
};

/* An empty buffer that may grow to max bytes. Allocates nothing yet. */
void bt_buf_init(struct bt_buf *b, size_t max);

/* A read-only buffer over n borrowed bytes at p; puts fail with -EPERM. */
void bt_buf_view(struct bt_buf *b, const void *p, size_t n);

/* Wipes and releases the storage; the buffer is then empty, as after init. */
void bt_buf_free(struct bt_buf *b);

/* Wipes the data but keeps the storage for reuse. */
void bt_buf_reset(struct bt_buf *b);

static inline size_t bt_buf_len(const struct bt_buf *b)
{
	return b->len - b->off;
}

static inline const uint8_t *bt_buf_ptr(const struct bt_buf *b)
{
	return b->data + b->off;
}

/* Makes room for n more bytes at the end and returns where they go in *ret;
 * the caller fills them and then calls bt_buf_commit(). May move the data. */
int bt_buf_reserve(struct bt_buf *b, size_t n, uint8_t **ret);
void bt_buf_commit(struct bt_buf *b, size_t n);

/* Drops n bytes from the front; -EBADMSG (nothing dropped) if fewer exist. */
int bt_buf_consume(struct bt_buf *b, size_t n);

int bt_buf_put(struct bt_buf *b, const void *p, size_t n);
int bt_buf_put_u8(struct bt_buf *b, uint8_t v);
int bt_buf_put_u32(struct bt_buf *b, uint32_t v);
int bt_buf_put_u64(struct bt_buf *b, uint64_t v);
/* A string is a u32 length followed by that many bytes, no terminator. */
int bt_buf_put_string(struct bt_buf *b, const void *p, size_t n);
/* s may be NULL, which is sent as the empty string. */
int bt_buf_put_cstring(struct bt_buf *b, const char *s);

int bt_buf_get_u8(struct bt_buf *b, uint8_t *ret);
int bt_buf_get_u32(struct bt_buf *b, uint32_t *ret);
int bt_buf_get_u64(struct bt_buf *b, uint64_t *ret);
/* Reads a string into a new NUL-terminated allocation in *ret (free it with
 * bt_free_secret() if it may hold a secret). A string holding a NUL byte or
 * longer than maxlen is -EBADMSG. */
int bt_buf_get_cstring(struct bt_buf *b, size_t maxlen, char **ret);

/* Overwrites n bytes at p in a way the compiler may not elide. */
void bt_wipe(void *p, size_t n);
/* Wipes a NUL-terminated string and frees it; accepts NULL. */
void bt_free_secret(char *s);

#endif
