/* fuzz_frame.c - libFuzzer target for the wire protocol: frames and every
 * message decoder, as both the daemon (requests) and libbatchtok (replies)
 * run them. Whatever decodes must re-encode and decode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/msg.h"

static void reencode_query(const struct bt_token_query *q, uint8_t type)
{
	struct bt_buf out;
	struct bt_frame f;
	struct bt_token_query d;

	bt_buf_init(&out, BT_REPLY_MAX);
	if (bt_encode_token_query(&out, type, 1, q) == 0) {
		if (bt_frame_peek(&out, BT_REPLY_MAX, &f) != 0 ||
		    bt_decode_token_query(&f.body, &d) != 0)
			abort();
		if (strcmp(d.identity, q->identity) || strcmp(d.resource, q->resource) ||
		    d.min_validity != q->min_validity)
			abort();
		bt_token_query_clear(&d);
	}
	bt_buf_free(&out);
}

/* Both shapes of the HELLO reply (version 1 and 2) come back the same. */
static void reencode_hello_reply(const struct bt_hello_reply *m)
{
	struct bt_buf out;
	struct bt_frame f;
	struct bt_hello_reply d;

	bt_buf_init(&out, BT_REPLY_MAX);
	if (bt_encode_hello_reply(&out, 1, m) != 0 || bt_frame_peek(&out, BT_REPLY_MAX, &f) != 0 ||
	    bt_decode_hello_reply(&f.body, &d) != 0)
		abort();
	if (d.version != m->version || strcmp(d.server, m->server) ||
	    bt_hello_requests(&d) != bt_hello_requests(m))
		abort();
	bt_hello_reply_clear(&d);
	bt_buf_free(&out);
}

/* The messages added for watches, forced refreshes and claims come back
 * the same through their encoders. */
static void reencode_new(struct bt_buf *body0, uint8_t type)
{
	struct bt_buf body = *body0, out;
	struct bt_frame f;
	struct bt_challenge ch, ch2;
	struct bt_watch_event ev, ev2;
	struct bt_forget fg, fg2;

	bt_buf_init(&out, BT_REPLY_MAX);
	if (bt_decode_challenge(&body, &ch) == 0) {
		if (bt_encode_challenge(&out, 1, &ch) != 0 ||
		    bt_frame_peek(&out, BT_REPLY_MAX, &f) != 0 ||
		    bt_decode_challenge(&f.body, &ch2) != 0 || strcmp(ch.claims, ch2.claims) ||
		    strcmp(ch.query.scope, ch2.query.scope) || ch.query.flags != ch2.query.flags)
			abort();
		bt_challenge_clear(&ch2);
		bt_challenge_clear(&ch);
		bt_buf_free(&out);
	}
	body = *body0;
	if (bt_decode_watch_event(&body, &ev) == 0) {
		if (bt_encode_watch_event(&out, 1, &ev) != 0 ||
		    bt_frame_peek(&out, BT_REPLY_MAX, &f) != 0 ||
		    bt_decode_watch_event(&f.body, &ev2) != 0 || ev.status != ev2.status ||
		    strcmp(ev.message, ev2.message) ||
		    strcmp(ev.t.access_token, ev2.t.access_token) ||
		    ev.refresh_at != ev2.refresh_at || ev.t.expires_on != ev2.t.expires_on)
			abort();
		bt_watch_event_clear(&ev2);
		bt_watch_event_clear(&ev);
		bt_buf_free(&out);
	}
	body = *body0;
	if (bt_decode_forget(&body, &fg) == 0) {
		if (bt_encode_forget(&out, 1, &fg) != 0 ||
		    bt_frame_peek(&out, BT_REPLY_MAX, &f) != 0 ||
		    bt_decode_forget(&f.body, &fg2) != 0 || strcmp(fg.identity, fg2.identity) ||
		    fg.flags != fg2.flags)
			abort();
		bt_forget_clear(&fg2);
		bt_forget_clear(&fg);
	}
	(void)type;
	bt_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bt_buf in;
	struct bt_frame f;
	int frames = 0;

	bt_buf_init(&in, BT_REPLY_MAX);
	if (bt_buf_put(&in, data, size) < 0) {
		bt_buf_free(&in);
		return 0;
	}
	while (frames++ < 64 && bt_frame_peek(&in, BT_REPLY_MAX, &f) == 0) {
		struct bt_buf body = f.body;
		struct bt_token_query q;
		struct bt_token_reply t;
		struct bt_compat_reply cr;
		struct bt_hello h;
		struct bt_hello_reply hr;
		struct bt_error e;
		struct bt_record r;
		char *s;

		if (bt_decode_token_query(&body, &q) == 0) {
			reencode_query(&q, f.type);
			bt_token_query_clear(&q);
		}
		body = f.body;
		if (bt_decode_token_reply(&body, &t) == 0)
			bt_token_reply_clear(&t);
		body = f.body;
		if (bt_decode_compat_reply(&body, &cr) == 0)
			bt_compat_reply_clear(&cr);
		body = f.body;
		(void)bt_decode_hello(&body, &h);
		body = f.body;
		if (bt_decode_hello_reply(&body, &hr) == 0) {
			reencode_hello_reply(&hr);
			(void)bt_requests_has(bt_hello_requests(&hr), f.type);
			bt_hello_reply_clear(&hr);
		}
		body = f.body;
		if (bt_decode_error(&body, &e) == 0)
			bt_error_clear(&e);
		body = f.body;
		if (bt_decode_record_reply(&body, &r) == 0) {
			struct bt_buf out;
			bt_buf_init(&out, BT_REPLY_MAX);
			(void)bt_encode_record_reply(&out, f.type, f.id, &r);
			bt_buf_free(&out);
			bt_record_clear(&r);
		}
		body = f.body;
		if (bt_decode_text_reply(&body, &s) == 0)
			free(s);
		body = f.body;
		if (bt_decode_capability_request(&body, &s) == 0)
			bt_free_secret(s);
		body = f.body;
		{
			uint64_t exp;
			(void)bt_decode_expiry_reply(&body, &exp);
		}
		reencode_new(&f.body, f.type);
		body = f.body;
		(void)bt_decode_empty(&body);
		(void)bt_type_name(f.type);
		if (bt_buf_consume(&in, f.size) < 0)
			abort();
	}
	bt_buf_free(&in);
	return 0;
}
