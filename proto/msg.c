/* msg.c - framing and the typed encode/decode pairs of the wire protocol. */
#include "msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bt_frame_peek(const struct bt_buf *in, size_t max, struct bt_frame *ret)
{
	const uint8_t *p = bt_buf_ptr(in);
	uint32_t len;

	if (bt_buf_len(in) < 4)
		return -EAGAIN;
	len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (len < BT_FRAME_HEADER - 4)
		return -EBADMSG;
	if ((size_t)len + 4 > max)
		return -EMSGSIZE;
	if (bt_buf_len(in) < (size_t)len + 4)
		return -EAGAIN;
	ret->type = p[4];
	ret->id = (uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8];
	bt_buf_view(&ret->body, p + BT_FRAME_HEADER, (size_t)len + 4 - BT_FRAME_HEADER);
	ret->size = (size_t)len + 4;
	return 0;
}

int bt_frame_begin(struct bt_buf *out, uint8_t type, uint32_t id, size_t *mark)
{
	int r;

	/* The mark is relative to the read position, which stays put while we
	 * append even if the storage moves. */
	*mark = bt_buf_len(out);
	if ((r = bt_buf_put_u32(out, 0)) < 0 || (r = bt_buf_put_u8(out, type)) < 0 ||
	    (r = bt_buf_put_u32(out, id)) < 0) {
		bt_frame_abort(out, *mark);
		return r;
	}
	return 0;
}

int bt_frame_end(struct bt_buf *out, size_t mark)
{
	size_t len = bt_buf_len(out) - mark - 4;
	uint8_t *p = out->data + out->off + mark;

	if (len > UINT32_MAX) {
		bt_frame_abort(out, mark);
		return -EMSGSIZE;
	}
	p[0] = len >> 24;
	p[1] = len >> 16;
	p[2] = len >> 8;
	p[3] = len;
	return 0;
}

void bt_frame_abort(struct bt_buf *out, size_t mark)
{
	size_t keep = out->off + mark;

	bt_wipe(out->data + keep, out->len - keep);
	out->len = keep;
}

/* The body encoders below are written as a chain of puts; this wraps one in a
 * frame and drops it whole if any put fails. */
#define ENCODE_FRAME(out, type, id, puts)                                                          \
	do {                                                                                       \
		size_t mark_;                                                                      \
		int r_ = bt_frame_begin(out, type, id, &mark_);                                    \
		if (r_ < 0)                                                                        \
			return r_;                                                                 \
		if ((r_ = (puts)) < 0 || (r_ = bt_frame_end(out, mark_)) < 0) {                    \
			bt_frame_abort(out, mark_);                                                \
			return r_;                                                                 \
		}                                                                                  \
		return 0;                                                                          \
	} while (0)

int bt_encode_hello(struct bt_buf *out, uint32_t id, const struct bt_hello *m)
{
	ENCODE_FRAME(out, BT_HELLO, id,
		     bt_buf_put_u32(out, m->min_version) ?: bt_buf_put_u32(out, m->max_version));
}

int bt_encode_hello_reply(struct bt_buf *out, uint32_t id, const struct bt_hello_reply *m)
{
	if (m->version < BT_PROTO_VERSION_MIN || m->version > BT_PROTO_VERSION_MAX)
		return -EINVAL;
	/* Version 1 clients read exactly version and server: the list follows
	 * only for those that asked for version 2. */
	ENCODE_FRAME(out, BT_HELLO | BT_REPLY, id,
		     bt_buf_put_u32(out, m->version) ?: bt_buf_put_cstring(out, m->server)
		     ?: (m->version >= 2 ? bt_buf_put_u64(out, m->requests) : 0));
}

static int put_token_query(struct bt_buf *out, const struct bt_token_query *m)
{
	return bt_buf_put_cstring(out, m->identity) ?: bt_buf_put_cstring(out, m->resource)
	       ?: bt_buf_put_cstring(out, m->scope) ?: bt_buf_put_u32(out, m->min_validity)
	       ?: bt_buf_put_u32(out, m->flags);
}

static int put_token_reply(struct bt_buf *out, const struct bt_token_reply *m)
{
	return bt_buf_put_cstring(out, m->access_token) ?: bt_buf_put_u64(out, m->expires_on)
	       ?: bt_buf_put_cstring(out, m->token_type) ?: bt_buf_put_cstring(out, m->identity)
	       ?: bt_buf_put_cstring(out, m->resource) ?: bt_buf_put_cstring(out, m->tenant);
}

int bt_encode_token_query(struct bt_buf *out, uint8_t type, uint32_t id,
			  const struct bt_token_query *m)
{
	ENCODE_FRAME(out, type, id, put_token_query(out, m));
}

int bt_encode_token_reply(struct bt_buf *out, uint32_t id, const struct bt_token_reply *m)
{
	return bt_encode_token_reply_as(out, BT_GET_TOKEN | BT_REPLY, id, m);
}

int bt_encode_token_reply_as(struct bt_buf *out, uint8_t type, uint32_t id,
			     const struct bt_token_reply *m)
{
	ENCODE_FRAME(out, type, id, put_token_reply(out, m));
}

int bt_encode_challenge(struct bt_buf *out, uint32_t id, const struct bt_challenge *m)
{
	ENCODE_FRAME(out, BT_CHALLENGE, id,
		     put_token_query(out, &m->query) ?: bt_buf_put_cstring(out, m->claims));
}

int bt_encode_watch_event(struct bt_buf *out, uint32_t id, const struct bt_watch_event *m)
{
	ENCODE_FRAME(out, BT_WATCH | BT_REPLY, id,
		     bt_buf_put_u32(out, m->status) ?: bt_buf_put_cstring(out, m->message)
		     ?: put_token_reply(out, &m->t) ?: bt_buf_put_u64(out, m->refresh_at));
}

int bt_encode_forget(struct bt_buf *out, uint32_t id, const struct bt_forget *m)
{
	ENCODE_FRAME(out, BT_FORGET, id,
		     bt_buf_put_cstring(out, m->identity) ?: bt_buf_put_u32(out, m->flags));
}

int bt_encode_text_reply(struct bt_buf *out, uint8_t type, uint32_t id, const char *text)
{
	ENCODE_FRAME(out, type, id, bt_buf_put_cstring(out, text));
}

int bt_encode_name_request(struct bt_buf *out, uint8_t type, uint32_t id, const char *name)
{
	ENCODE_FRAME(out, type, id, bt_buf_put_cstring(out, name));
}

int bt_encode_capability_request(struct bt_buf *out, uint8_t type, uint32_t id,
				 const char *capability)
{
	ENCODE_FRAME(out, type, id, bt_buf_put_cstring(out, capability));
}

int bt_encode_expiry_reply(struct bt_buf *out, uint8_t type, uint32_t id, uint64_t expires_on)
{
	ENCODE_FRAME(out, type, id, bt_buf_put_u64(out, expires_on));
}

int bt_encode_empty(struct bt_buf *out, uint8_t type, uint32_t id)
{
	ENCODE_FRAME(out, type, id, 0);
}

int bt_encode_error(struct bt_buf *out, uint32_t id, uint32_t status, const char *message)
{
	ENCODE_FRAME(out, BT_ERROR, id,
		     bt_buf_put_u32(out, status) ?: bt_buf_put_cstring(out, message));
}

int bt_encode_compat_reply(struct bt_buf *out, uint32_t id, const struct bt_compat_reply *m)
{
	ENCODE_FRAME(out, BT_COMPAT | BT_REPLY, id,
		     bt_buf_put_cstring(out, m->capability) ?: bt_buf_put_cstring(out, m->endpoint)
		     ?: bt_buf_put_cstring(out, m->identity) ?: bt_buf_put_u64(out, m->expires_on));
}

static int put_record(struct bt_buf *out, const struct bt_record *r, int depth)
{
	int e;

	if (depth > BT_RECORD_DEPTH_MAX || r->n_fields > BT_RECORD_FIELDS_MAX)
		return -EINVAL;
	if ((e = bt_buf_put_u32(out, r->n_fields)) < 0)
		return e;
	for (uint32_t i = 0; i < r->n_fields; i++) {
		const struct bt_field *f = &r->fields[i];
		e = bt_buf_put_cstring(out, f->key) ?: bt_buf_put_u8(out, f->kind);
		if (e == 0)
			e = f->kind == BT_FIELD_STR ? bt_buf_put_cstring(out, f->str)
						    : bt_buf_put_u64(out, (uint64_t)f->num);
		if (e < 0)
			return e;
	}
	if ((e = bt_buf_put_u32(out, r->n_children)) < 0)
		return e;
	for (uint32_t i = 0; i < r->n_children; i++)
		if ((e = put_record(out, &r->children[i], depth + 1)) < 0)
			return e;
	return 0;
}

int bt_encode_record_reply(struct bt_buf *out, uint8_t type, uint32_t id, const struct bt_record *m)
{
	ENCODE_FRAME(out, type, id, put_record(out, m, 1));
}

/* Decoding. Each decoder fills a local copy and assigns *ret only when the
 * whole body has been read, so a failure leaves the caller's struct alone. */

static int at_end(const struct bt_buf *body)
{
	return bt_buf_len(body) == 0 ? 0 : -EBADMSG;
}

int bt_decode_hello(struct bt_buf *body, struct bt_hello *ret)
{
	struct bt_hello m;
	int r;

	r = bt_buf_get_u32(body, &m.min_version) ?: bt_buf_get_u32(body, &m.max_version)
	    ?: at_end(body);
	if (r < 0)
		return r;
	*ret = m;
	return 0;
}

int bt_decode_hello_reply(struct bt_buf *body, struct bt_hello_reply *ret)
{
	struct bt_hello_reply m = {0};
	int r;

	r = bt_buf_get_u32(body, &m.version);
	if (r == 0 && (m.version < BT_PROTO_VERSION_MIN || m.version > BT_PROTO_VERSION_MAX))
		r = -EBADMSG;
	if (r == 0)
		r = bt_buf_get_cstring(body, BT_NAME_MAX, &m.server)
		    ?: (m.version >= 2 ? bt_buf_get_u64(body, &m.requests) : 0) ?: at_end(body);
	if (r < 0) {
		bt_hello_reply_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

uint64_t bt_hello_requests(const struct bt_hello_reply *m)
{
	return m->version >= 2 ? m->requests : BT_V1_REQUESTS;
}

static int get_token_query(struct bt_buf *body, struct bt_token_query *m)
{
	return bt_buf_get_cstring(body, BT_NAME_MAX, &m->identity)
	       ?: bt_buf_get_cstring(body, BT_RESOURCE_MAX, &m->resource)
	       ?: bt_buf_get_cstring(body, BT_RESOURCE_MAX, &m->scope)
	       ?: bt_buf_get_u32(body, &m->min_validity) ?: bt_buf_get_u32(body, &m->flags);
}

static int get_token_reply(struct bt_buf *body, struct bt_token_reply *m)
{
	return bt_buf_get_cstring(body, BT_TOKEN_MAX, &m->access_token)
	       ?: bt_buf_get_u64(body, &m->expires_on)
	       ?: bt_buf_get_cstring(body, BT_NAME_MAX, &m->token_type)
	       ?: bt_buf_get_cstring(body, BT_NAME_MAX, &m->identity)
	       ?: bt_buf_get_cstring(body, BT_RESOURCE_MAX, &m->resource)
	       ?: bt_buf_get_cstring(body, BT_NAME_MAX, &m->tenant);
}

int bt_decode_token_query(struct bt_buf *body, struct bt_token_query *ret)
{
	struct bt_token_query m = {0};
	int r = get_token_query(body, &m) ?: at_end(body);

	if (r < 0) {
		bt_token_query_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

int bt_decode_token_reply(struct bt_buf *body, struct bt_token_reply *ret)
{
	struct bt_token_reply m = {0};
	int r = get_token_reply(body, &m) ?: at_end(body);

	if (r < 0) {
		bt_token_reply_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

int bt_decode_challenge(struct bt_buf *body, struct bt_challenge *ret)
{
	struct bt_challenge m = {0};
	int r = get_token_query(body, &m.query) ?: bt_buf_get_cstring(body, BT_CLAIMS_MAX, &m.claims)
		?: at_end(body);

	if (r < 0) {
		bt_challenge_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

int bt_decode_watch_event(struct bt_buf *body, struct bt_watch_event *ret)
{
	struct bt_watch_event m = {0};
	int r = bt_buf_get_u32(body, &m.status)
		?: bt_buf_get_cstring(body, BT_MESSAGE_MAX, &m.message)
		?: get_token_reply(body, &m.t) ?: bt_buf_get_u64(body, &m.refresh_at)
		?: at_end(body);

	if (r < 0) {
		bt_watch_event_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

int bt_decode_forget(struct bt_buf *body, struct bt_forget *ret)
{
	struct bt_forget m = {0};
	int r = bt_buf_get_cstring(body, BT_NAME_MAX, &m.identity) ?: bt_buf_get_u32(body, &m.flags)
		?: at_end(body);

	if (r < 0) {
		bt_forget_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

/* A body that is one string of at most max bytes. */
int bt_decode_compat_reply(struct bt_buf *body, struct bt_compat_reply *ret)
{
	struct bt_compat_reply m = {0};
	int r;

	r = bt_buf_get_cstring(body, BT_NAME_MAX, &m.capability)
	    ?: bt_buf_get_cstring(body, BT_RESOURCE_MAX, &m.endpoint)
	    ?: bt_buf_get_cstring(body, BT_NAME_MAX, &m.identity)
	    ?: bt_buf_get_u64(body, &m.expires_on) ?: at_end(body);
	if (r < 0) {
		bt_compat_reply_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

static int decode_one_string(struct bt_buf *body, size_t max, char **ret)
{
	char *s = NULL;
	int r;

	r = bt_buf_get_cstring(body, max, &s) ?: at_end(body);
	if (r < 0) {
		bt_free_secret(s);
		return r;
	}
	*ret = s;
	return 0;
}

int bt_decode_text_reply(struct bt_buf *body, char **ret)
{
	return decode_one_string(body, BT_TOKEN_MAX, ret);
}

int bt_decode_name_request(struct bt_buf *body, char **ret)
{
	return decode_one_string(body, BT_NAME_MAX, ret);
}

int bt_decode_capability_request(struct bt_buf *body, char **ret)
{
	return decode_one_string(body, BT_NAME_MAX, ret);
}

int bt_decode_expiry_reply(struct bt_buf *body, uint64_t *ret)
{
	uint64_t v;
	int r = bt_buf_get_u64(body, &v) ?: at_end(body);

	if (r < 0)
		return r;
	*ret = v;
	return 0;
}

int bt_decode_empty(struct bt_buf *body)
{
	return at_end(body);
}

int bt_decode_error(struct bt_buf *body, struct bt_error *ret)
{
	struct bt_error m = {0};
	int r;

	r = bt_buf_get_u32(body, &m.status) ?: bt_buf_get_cstring(body, BT_MESSAGE_MAX, &m.message)
	    ?: at_end(body);
	if (r < 0) {
		bt_error_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

static int get_record(struct bt_buf *body, struct bt_record *r, int depth)
{
	uint32_t n;
	int e;

	if (depth > BT_RECORD_DEPTH_MAX)
		return -EBADMSG;
	if ((e = bt_buf_get_u32(body, &n)) < 0)
		return e;
	if (n > BT_RECORD_FIELDS_MAX)
		return -EBADMSG;
	for (uint32_t i = 0; i < n; i++) {
		char *key = NULL, *str = NULL;
		uint8_t kind;
		uint64_t num = 0;

		e = bt_buf_get_cstring(body, BT_NAME_MAX, &key) ?: bt_buf_get_u8(body, &kind);
		if (e == 0) {
			if (kind == BT_FIELD_STR)
				e = bt_buf_get_cstring(body, BT_MESSAGE_MAX, &str);
			else if (kind == BT_FIELD_INT || kind == BT_FIELD_TIME ||
				 kind == BT_FIELD_BOOL)
				e = bt_buf_get_u64(body, &num);
			else
				e = -EBADMSG;
		}
		if (e == 0)
			e = kind == BT_FIELD_STR ? bt_record_add_str(r, key, str)
						 : bt_record_add_int(r, key, kind, (int64_t)num);
		free(key);
		free(str);
		if (e < 0)
			return e;
	}
	if ((e = bt_buf_get_u32(body, &n)) < 0)
		return e;
	/* Every child takes at least 8 bytes, so a count the body cannot hold
	 * is refused before anything is allocated for it. */
	if (n > bt_buf_len(body) / 8)
		return -EBADMSG;
	for (uint32_t i = 0; i < n; i++) {
		struct bt_record *child;
		if ((e = bt_record_add_child(r, &child)) < 0 ||
		    (e = get_record(body, child, depth + 1)) < 0)
			return e;
	}
	return 0;
}

int bt_decode_record_reply(struct bt_buf *body, struct bt_record *ret)
{
	struct bt_record m = {0};
	int r;

	r = get_record(body, &m, 1) ?: at_end(body);
	if (r < 0) {
		bt_record_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

static int add_field(struct bt_record *r, const char *key, struct bt_field **ret)
{
	struct bt_field *f;

	if (r->n_fields >= BT_RECORD_FIELDS_MAX)
		return -E2BIG;
	f = realloc(r->fields, (r->n_fields + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	r->fields = f;
	f = &f[r->n_fields];
	memset(f, 0, sizeof(*f));
	if (!(f->key = strdup(key)))
		return -ENOMEM;
	r->n_fields++;
	*ret = f;
	return 0;
}

int bt_record_add_str(struct bt_record *r, const char *key, const char *val)
{
	struct bt_field *f;
	char *s = strdup(val ? val : "");
	int e;

	if (!s)
		return -ENOMEM;
	if ((e = add_field(r, key, &f)) < 0) {
		free(s);
		return e;
	}
	f->kind = BT_FIELD_STR;
	f->str = s;
	return 0;
}

int bt_record_add_int(struct bt_record *r, const char *key, uint8_t kind, int64_t val)
{
	struct bt_field *f;
	int e;

	if ((e = add_field(r, key, &f)) < 0)
		return e;
	f->kind = kind;
	f->num = val;
	return 0;
}

int bt_record_add_child(struct bt_record *r, struct bt_record **ret)
{
	struct bt_record *c;

	c = realloc(r->children, (r->n_children + 1) * sizeof(*c));
	if (!c)
		return -ENOMEM;
	r->children = c;
	c = &c[r->n_children++];
	memset(c, 0, sizeof(*c));
	*ret = c;
	return 0;
}

const struct bt_field *bt_record_get(const struct bt_record *r, const char *key)
{
	for (uint32_t i = 0; i < r->n_fields; i++)
		if (strcmp(r->fields[i].key, key) == 0)
			return &r->fields[i];
	return NULL;
}

void bt_record_clear(struct bt_record *r)
{
	for (uint32_t i = 0; i < r->n_fields; i++) {
		free(r->fields[i].key);
		free(r->fields[i].str);
	}
	for (uint32_t i = 0; i < r->n_children; i++)
		bt_record_clear(&r->children[i]);
	free(r->fields);
	free(r->children);
	memset(r, 0, sizeof(*r));
}

void bt_hello_reply_clear(struct bt_hello_reply *m)
{
	free(m->server);
	memset(m, 0, sizeof(*m));
}

void bt_token_query_clear(struct bt_token_query *m)
{
	free(m->identity);
	free(m->resource);
	free(m->scope);
	memset(m, 0, sizeof(*m));
}

void bt_compat_reply_clear(struct bt_compat_reply *m)
{
	bt_free_secret(m->capability);
	free(m->endpoint);
	free(m->identity);
	memset(m, 0, sizeof(*m));
}

void bt_token_reply_clear(struct bt_token_reply *m)
{
	bt_free_secret(m->access_token);
	free(m->token_type);
	free(m->identity);
	free(m->resource);
	free(m->tenant);
	memset(m, 0, sizeof(*m));
}

void bt_challenge_clear(struct bt_challenge *m)
{
	bt_token_query_clear(&m->query);
	free(m->claims);
	m->claims = NULL;
}

void bt_watch_event_clear(struct bt_watch_event *m)
{
	free(m->message);
	bt_token_reply_clear(&m->t);
	memset(m, 0, sizeof(*m));
}

void bt_forget_clear(struct bt_forget *m)
{
	free(m->identity);
	memset(m, 0, sizeof(*m));
}

void bt_error_clear(struct bt_error *m)
{
	free(m->message);
	memset(m, 0, sizeof(*m));
}

const char *bt_type_name(uint8_t type)
{
	switch (type & ~BT_REPLY) {
	case BT_HELLO:
		return "HELLO";
	case BT_GET_TOKEN:
		return "GET_TOKEN";
	case BT_STATUS:
		return "STATUS";
	case BT_INSPECT:
		return "INSPECT";
	case BT_RELOAD:
		return "RELOAD";
	case BT_PING:
		return "PING";
	case BT_LOGIN:
		return "LOGIN";
	case BT_LOGIN_WAIT:
		return "LOGIN_WAIT";
	case BT_LOGOUT:
		return "LOGOUT";
	case BT_COMPAT:
		return "COMPAT";
	case BT_COMPAT_RENEW:
		return "COMPAT_RENEW";
	case BT_COMPAT_REVOKE:
		return "COMPAT_REVOKE";
	case BT_WATCH:
		return "WATCH";
	case BT_REFRESH:
		return "REFRESH";
	case BT_FORGET:
		return "FORGET";
	case BT_CHALLENGE:
		return "CHALLENGE";
	case BT_METRICS:
		return "METRICS";
	}
	return type == BT_ERROR ? "ERROR" : "unknown";
}

const char *bt_status_name(uint32_t status)
{
	static const char *const names[] = {
	    [BT_OK] = "ok",
	    [BT_E_INTERNAL] = "internal error",
	    [BT_E_BAD_REQUEST] = "bad request",
	    [BT_E_DENIED] = "access denied",
	    [BT_E_UNKNOWN_IDENTITY] = "unknown identity",
	    [BT_E_RESOURCE_NOT_ALLOWED] = "resource not allowed",
	    [BT_E_CREDENTIAL_REJECTED] = "credential rejected",
	    [BT_E_UNAVAILABLE] = "token service unavailable",
	    [BT_E_TIMEOUT] = "timed out",
	    [BT_E_UNSUPPORTED] = "unsupported request",
	    [BT_E_VERSION] = "protocol version mismatch",
	    [BT_E_BUSY] = "daemon busy",
	};

	return status < sizeof(names) / sizeof(names[0]) && names[status] ? names[status]
									  : "unknown status";
}
