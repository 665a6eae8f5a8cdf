/* buf.c - the bounded byte buffer both ends of the protocol build on. */
#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Storage grows in steps of at least this much, so that a stream of small
 * appends does not reallocate (and wipe) on every call. */
#define BUF_MIN_GROW 256

void bt_wipe(void *p, size_t n)
{
	if (p && n)
		explicit_bzero(p, n);
}

void bt_free_secret(char *s)
{
	if (!s)
		return;
	bt_wipe(s, strlen(s));
	free(s);
}

void bt_buf_init(struct bt_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void bt_buf_view(struct bt_buf *b, const void *p, size_t n)
{
	memset(b, 0, sizeof(*b));
	b->data = (uint8_t *)p;
	b->len = b->cap = b->max = n;
	b->view = 1;
}

void bt_buf_free(struct bt_buf *b)
{
	size_t max = b->max;

	if (!b->view) {
		bt_wipe(b->data, b->cap);
		free(b->data);
	}
	bt_buf_init(b, max);
}

void bt_buf_reset(struct bt_buf *b)
{
	if (b->view) {
		b->off = b->len;
		return;
	}
	bt_wipe(b->data, b->len);
	b->off = b->len = 0;
}

int bt_buf_reserve(struct bt_buf *b, size_t n, uint8_t **ret)
{
	size_t used = b->len - b->off, need, cap;
	uint8_t *p;

	if (b->view)
		return -EPERM;
	if (n > b->max || used > b->max - n)
		return -ENOBUFS;
	need = used + n;
	if (b->len + n <= b->cap) {
		*ret = b->data + b->len;
		return 0;
	}
	if (need <= b->cap) {
		/* Room exists once consumed bytes are dropped: slide the data down. */
		memmove(b->data, b->data + b->off, used);
		bt_wipe(b->data + used, b->len - used);
		b->off = 0;
		b->len = used;
		*ret = b->data + b->len;
		return 0;
	}
	cap = b->cap ? b->cap : BUF_MIN_GROW;
	while (cap < need)
		cap = cap > b->max / 2 ? b->max : cap * 2;
	if (cap > b->max)
		cap = b->max;
	/* Not realloc(): it may leave the old bytes behind unwiped. */
	p = malloc(cap);
	if (!p)
		return -ENOMEM;
	if (used)
		memcpy(p, b->data + b->off, used);
	bt_wipe(b->data, b->cap);
	free(b->data);
	b->data = p;
	b->cap = cap;
	b->off = 0;
	b->len = used;
	*ret = b->data + b->len;
	return 0;
}

void bt_buf_commit(struct bt_buf *b, size_t n)
{
	b->len += n;
}

int bt_buf_consume(struct bt_buf *b, size_t n)
{
	if (n > bt_buf_len(b))
		return -EBADMSG;
	b->off += n;
	if (b->off == b->len && !b->view) {
		bt_wipe(b->data, b->len);
		b->off = b->len = 0;
	}
	return 0;
}

int bt_buf_put(struct bt_buf *b, const void *p, size_t n)
{
	uint8_t *dst;
	int r;

	if (n == 0)
		return b->view ? -EPERM : 0;
	r = bt_buf_reserve(b, n, &dst);
	if (r < 0)
		return r;
	memcpy(dst, p, n);
	bt_buf_commit(b, n);
	return 0;
}

int bt_buf_put_u8(struct bt_buf *b, uint8_t v)
{
	return bt_buf_put(b, &v, 1);
}

int bt_buf_put_u32(struct bt_buf *b, uint32_t v)
{
	uint8_t x[4] = {v >> 24, v >> 16, v >> 8, v};

	return bt_buf_put(b, x, sizeof(x));
}

int bt_buf_put_u64(struct bt_buf *b, uint64_t v)
{
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = v >> (56 - 8 * i);
	return bt_buf_put(b, x, sizeof(x));
}

int bt_buf_put_string(struct bt_buf *b, const void *p, size_t n)
{
	size_t before = b->len;
	int r;

	if (n > UINT32_MAX)
		return -EMSGSIZE;
	r = bt_buf_put_u32(b, (uint32_t)n);
	if (r == 0 && n)
		r = bt_buf_put(b, p, n);
	if (r < 0 && !b->view && b->len > before) {
		/* Leave no half-written string behind. */
		b->len = before;
	}
	return r;
}

int bt_buf_put_cstring(struct bt_buf *b, const char *s)
{
	return bt_buf_put_string(b, s ? s : "", s ? strlen(s) : 0);
}

int bt_buf_get_u8(struct bt_buf *b, uint8_t *ret)
{
	if (bt_buf_len(b) < 1)
		return -EBADMSG;
	*ret = b->data[b->off];
	return bt_buf_consume(b, 1);
}

static uint32_t peek_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int bt_buf_get_u32(struct bt_buf *b, uint32_t *ret)
{
	if (bt_buf_len(b) < 4)
		return -EBADMSG;
	*ret = peek_u32(bt_buf_ptr(b));
	return bt_buf_consume(b, 4);
}

int bt_buf_get_u64(struct bt_buf *b, uint64_t *ret)
{
	const uint8_t *p = bt_buf_ptr(b);
	uint64_t v = 0;

	if (bt_buf_len(b) < 8)
		return -EBADMSG;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	*ret = v;
	return bt_buf_consume(b, 8);
}

int bt_buf_get_cstring(struct bt_buf *b, size_t maxlen, char **ret)
{
	const uint8_t *p = bt_buf_ptr(b);
	uint32_t n;
	char *s;

	if (bt_buf_len(b) < 4)
		return -EBADMSG;
	n = peek_u32(p);
	if (n > maxlen || n > bt_buf_len(b) - 4 || memchr(p + 4, 0, n))
		return -EBADMSG;
	s = malloc((size_t)n + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, p + 4, n);
	s[n] = 0;
	*ret = s;
	return bt_buf_consume(b, 4 + (size_t)n);
}
