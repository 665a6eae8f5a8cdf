/* test_msg.c - framing and every message's encode/decode pair. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../proto/msg.h"

static void take(struct bt_buf *b, uint8_t type, uint32_t id, struct bt_frame *f)
{
	assert_int_equal(bt_frame_peek(b, BT_REPLY_MAX, f), 0);
	assert_int_equal(f->type, type);
	assert_int_equal(f->id, id);
}

static void test_token_query_roundtrip(void **state)
{
	struct bt_token_query q = {"batch", "https://batch.core.windows.net/", "", 600,
				   BT_GET_FORCE_REFRESH},
			      d;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, BT_REQUEST_MAX);
	assert_int_equal(bt_encode_token_query(&b, BT_GET_TOKEN, 42, &q), 0);
	take(&b, BT_GET_TOKEN, 42, &f);
	assert_int_equal(f.size, bt_buf_len(&b));
	assert_int_equal(bt_decode_token_query(&f.body, &d), 0);
	assert_string_equal(d.identity, "batch");
	assert_string_equal(d.resource, "https://batch.core.windows.net/");
	assert_string_equal(d.scope, "");
	assert_int_equal(d.min_validity, 600);
	assert_int_equal(d.flags, BT_GET_FORCE_REFRESH);
	bt_token_query_clear(&d);
	bt_buf_free(&b);
}

static void test_token_reply_and_error_roundtrip(void **state)
{
	struct bt_token_reply t = {"eyJ.x.y", 1795325662, "Bearer", "batch", "r", "tenant"}, dt;
	struct bt_error e;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_token_reply(&b, 7, &t), 0);
	assert_int_equal(bt_encode_error(&b, 8, BT_E_DENIED, "no"), 0);
	take(&b, BT_GET_TOKEN | BT_REPLY, 7, &f);
	assert_int_equal(bt_decode_token_reply(&f.body, &dt), 0);
	assert_string_equal(dt.access_token, "eyJ.x.y");
	assert_true(dt.expires_on == 1795325662);
	assert_string_equal(dt.tenant, "tenant");
	bt_token_reply_clear(&dt);
	assert_int_equal(bt_buf_consume(&b, f.size), 0);
	take(&b, BT_ERROR, 8, &f);
	assert_int_equal(bt_decode_error(&f.body, &e), 0);
	assert_int_equal(e.status, BT_E_DENIED);
	assert_string_equal(e.message, "no");
	bt_error_clear(&e);
	bt_buf_free(&b);
}

static void test_compat_reply_roundtrip(void **state)
{
	struct bt_compat_reply m = {"bt1_cap", "http://127.0.0.1:50342", "batch", 1795325662}, d;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_compat_reply(&b, 3, &m), 0);
	take(&b, BT_COMPAT | BT_REPLY, 3, &f);
	assert_int_equal(bt_decode_compat_reply(&f.body, &d), 0);
	assert_string_equal(d.capability, "bt1_cap");
	assert_string_equal(d.endpoint, "http://127.0.0.1:50342");
	assert_string_equal(d.identity, "batch");
	assert_true(d.expires_on == 1795325662);
	bt_compat_reply_clear(&d);
	/* A token reply is not a compat reply. */
	bt_buf_reset(&b);
	assert_int_equal(bt_encode_name_request(&b, BT_COMPAT, 4, "batch"), 0);
	take(&b, BT_COMPAT, 4, &f);
	assert_int_equal(bt_decode_compat_reply(&f.body, &d), -EBADMSG);
	bt_buf_free(&b);
}

/* COMPAT_RENEW and COMPAT_REVOKE name a capability; a renewal answers
 * with the new expiry. */
static void test_capability_requests_roundtrip(void **state)
{
	struct bt_buf b;
	struct bt_frame f;
	uint64_t exp = 0;
	char *cap = NULL;

	(void)state;
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_capability_request(&b, BT_COMPAT_RENEW, 5, "bt1_cap"), 0);
	take(&b, BT_COMPAT_RENEW, 5, &f);
	assert_int_equal(bt_decode_capability_request(&f.body, &cap), 0);
	assert_string_equal(cap, "bt1_cap");
	bt_free_secret(cap);
	assert_int_equal(bt_buf_consume(&b, f.size), 0);
	assert_int_equal(bt_encode_expiry_reply(&b, BT_COMPAT_RENEW | BT_REPLY, 5, 1795325662), 0);
	take(&b, BT_COMPAT_RENEW | BT_REPLY, 5, &f);
	assert_int_equal(bt_decode_expiry_reply(&f.body, &exp), 0);
	assert_true(exp == 1795325662);
	/* Trailing bytes or a short body: malformed, *ret untouched. */
	assert_int_equal(bt_buf_consume(&b, f.size), 0);
	assert_int_equal(bt_encode_capability_request(&b, BT_COMPAT_REVOKE, 6, "x"), 0);
	take(&b, BT_COMPAT_REVOKE, 6, &f);
	exp = 7;
	assert_int_equal(bt_decode_expiry_reply(&f.body, &exp), -EBADMSG);
	assert_true(exp == 7);
	assert_string_equal(bt_type_name(BT_COMPAT_RENEW), "COMPAT_RENEW");
	assert_string_equal(bt_type_name(BT_COMPAT_REVOKE | BT_REPLY), "COMPAT_REVOKE");
	bt_buf_free(&b);
}

static void test_hello_roundtrip(void **state)
{
	struct bt_hello h = {BT_PROTO_VERSION_MIN, BT_PROTO_VERSION_MAX}, d;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, BT_REQUEST_MAX);
	assert_int_equal(bt_encode_hello(&b, 0, &h), 0);
	take(&b, BT_HELLO, 0, &f);
	/* The request's shape is version 1's: a daemon from before version 2
	 * reads it. */
	assert_int_equal(f.size, BT_FRAME_HEADER + 8);
	assert_int_equal(bt_decode_hello(&f.body, &d), 0);
	assert_int_equal(d.min_version, 1);
	assert_int_equal(d.max_version, 2);
	bt_buf_free(&b);
}

/* Version 1's reply is exactly version and server, as clients from before
 * version 2 read it; the list of requests is not on the wire. */
static void test_hello_reply_version_1(void **state)
{
	static const uint8_t wire[] = {0x81, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 'b', 't', 'd'};
	struct bt_hello_reply m = {1, "btd", 0xffff}, d;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_hello_reply(&b, 0, &m), 0);
	assert_int_equal(bt_buf_len(&b), 4 + sizeof(wire));
	assert_memory_equal(bt_buf_ptr(&b) + 4, wire, sizeof(wire));
	take(&b, BT_HELLO | BT_REPLY, 0, &f);
	assert_int_equal(bt_decode_hello_reply(&f.body, &d), 0);
	assert_int_equal(d.version, 1);
	assert_string_equal(d.server, "btd");
	assert_true(d.requests == 0);
	/* A version 1 daemon answers what version 1 defined, nothing newer. */
	assert_true(bt_hello_requests(&d) == BT_V1_REQUESTS);
	assert_true(bt_requests_has(bt_hello_requests(&d), BT_COMPAT));
	assert_false(bt_requests_has(bt_hello_requests(&d), BT_COMPAT + 1));
	bt_hello_reply_clear(&d);
	bt_buf_free(&b);
}

static void test_hello_reply_version_2(void **state)
{
	uint64_t set = BT_REQUEST_BIT(BT_HELLO) | BT_REQUEST_BIT(BT_PING) | BT_REQUEST_BIT(63);
	struct bt_hello_reply m = {2, "batchtokd 9.9", set}, d;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_hello_reply(&b, 0, &m), 0);
	take(&b, BT_HELLO | BT_REPLY, 0, &f);
	assert_int_equal(f.size, BT_FRAME_HEADER + 4 + 4 + 13 + 8);
	assert_int_equal(bt_decode_hello_reply(&f.body, &d), 0);
	assert_int_equal(d.version, 2);
	assert_string_equal(d.server, "batchtokd 9.9");
	assert_true(bt_hello_requests(&d) == set);
	assert_true(bt_requests_has(set, 63));
	assert_false(bt_requests_has(set, BT_GET_TOKEN));
	/* Types 64 and up cannot be listed, so no daemon answers them. */
	assert_false(bt_requests_has(UINT64_MAX, 64));
	assert_false(bt_requests_has(UINT64_MAX, 0x7f));
	bt_hello_reply_clear(&d);
	bt_buf_free(&b);
}

/* The version says the shape: a version 1 body with a list behind it, a
 * version 2 body without one, and versions this codec does not speak are
 * all malformed, and leave the caller's struct alone. */
static void test_hello_reply_shape_follows_version(void **state)
{
	static const uint8_t v1_with_list[] = {0, 0, 0, 1, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 6};
	static const uint8_t v2_without[] = {0, 0, 0, 2, 0, 0, 0, 1, 'x'};
	static const uint8_t v3[] = {0, 0, 0, 3, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 6};
	static const uint8_t v0[] = {0, 0, 0, 0, 0, 0, 0, 1, 'x'};
	static const uint8_t v2_short[] = {0, 0, 0, 2, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0};
	const struct {
		const uint8_t *p;
		size_t n;
	} bad[] = {{v1_with_list, sizeof(v1_with_list)},
		   {v2_without, sizeof(v2_without)},
		   {v3, sizeof(v3)},
		   {v0, sizeof(v0)},
		   {v2_short, sizeof(v2_short)}};
	struct bt_hello_reply d = {0};
	struct bt_hello_reply m = {3, "x", 0};
	struct bt_buf v, b;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bt_buf_view(&v, bad[i].p, bad[i].n);
		assert_int_equal(bt_decode_hello_reply(&v, &d), -EBADMSG);
		assert_null(d.server);
	}
	/* Nor does it encode them. */
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_hello_reply(&b, 0, &m), -EINVAL);
	m.version = 0;
	assert_int_equal(bt_encode_hello_reply(&b, 0, &m), -EINVAL);
	assert_int_equal(bt_buf_len(&b), 0);
	bt_buf_free(&b);
}

static void test_frame_limits(void **state)
{
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	bt_buf_init(&b, 64);
	assert_int_equal(bt_frame_peek(&b, 100, &f), -EAGAIN);
	/* A 4 GiB announcement is refused from the header alone. */
	assert_int_equal(bt_buf_put(&b, "\xff\xff\xff\xff", 4), 0);
	assert_int_equal(bt_frame_peek(&b, BT_REQUEST_MAX, &f), -EMSGSIZE);
	bt_buf_reset(&b);
	/* A length that cannot hold the type and id is malformed. */
	assert_int_equal(bt_buf_put(&b, "\x00\x00\x00\x04xxxx", 8), 0);
	assert_int_equal(bt_frame_peek(&b, 100, &f), -EBADMSG);
	bt_buf_reset(&b);
	/* Half a frame: wait for more. */
	assert_int_equal(bt_buf_put(&b, "\x00\x00\x00\x09\x06\x00\x00\x00\x01", 9), 0);
	assert_int_equal(bt_frame_peek(&b, 100, &f), -EAGAIN);
	bt_buf_free(&b);
}

static void test_trailing_bytes_and_truncation_fail(void **state)
{
	struct bt_token_query q = {"a", "b", "c", 1, 0}, d = {0};
	struct bt_buf b, v;
	struct bt_frame f;
	uint8_t raw[256];
	size_t n;

	(void)state;
	bt_buf_init(&b, 256);
	assert_int_equal(bt_encode_token_query(&b, BT_GET_TOKEN, 1, &q), 0);
	take(&b, BT_GET_TOKEN, 1, &f);
	n = bt_buf_len(&f.body);
	memcpy(raw, bt_buf_ptr(&f.body), n);
	raw[n] = 0;
	bt_buf_view(&v, raw, n + 1);
	assert_int_equal(bt_decode_token_query(&v, &d), -EBADMSG);
	assert_null(d.identity);
	for (size_t k = 0; k < n; k++) {
		bt_buf_view(&v, raw, k);
		assert_int_equal(bt_decode_token_query(&v, &d), -EBADMSG);
	}
	bt_buf_free(&b);
}

static void test_encoder_failure_leaves_buffer(void **state)
{
	struct bt_token_reply t = {0};
	char big[200];
	struct bt_buf b;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	t.access_token = big;
	bt_buf_init(&b, 128);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 1), 0);
	assert_int_equal(bt_encode_token_reply(&b, 2, &t), -ENOBUFS);
	assert_int_equal(bt_buf_len(&b), BT_FRAME_HEADER);
	bt_buf_free(&b);
}

static void test_record_roundtrip(void **state)
{
	struct bt_record r = {0}, d = {0}, *child, *tok;
	struct bt_buf b;
	struct bt_frame f;

	(void)state;
	assert_int_equal(bt_record_add_str(&r, "daemon", "batchtokd"), 0);
	assert_int_equal(bt_record_add_int(&r, "clients", BT_FIELD_INT, 3), 0);
	assert_int_equal(bt_record_add_child(&r, &child), 0);
	assert_int_equal(bt_record_add_str(child, "identity", "batch"), 0);
	assert_int_equal(bt_record_add_child(child, &tok), 0);
	assert_int_equal(bt_record_add_int(tok, "expires", BT_FIELD_TIME, 1795325662), 0);
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_record_reply(&b, BT_STATUS | BT_REPLY, 5, &r), 0);
	take(&b, BT_STATUS | BT_REPLY, 5, &f);
	assert_int_equal(bt_decode_record_reply(&f.body, &d), 0);
	assert_int_equal(bt_record_get(&d, "clients")->num, 3);
	assert_string_equal(bt_record_get(&d.children[0], "identity")->str, "batch");
	assert_int_equal(bt_record_get(&d.children[0].children[0], "expires")->kind, BT_FIELD_TIME);
	assert_null(bt_record_get(&d, "missing"));
	bt_record_clear(&r);
	bt_record_clear(&d);
	bt_buf_free(&b);
}

static void test_record_child_count_is_bounded(void **state)
{
	/* 0 fields, then a child count of 2^32-1 with no bytes behind it. */
	static const uint8_t body[] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
	struct bt_record d = {0};
	struct bt_buf v;

	(void)state;
	bt_buf_view(&v, body, sizeof(body));
	assert_int_equal(bt_decode_record_reply(&v, &d), -EBADMSG);
	assert_int_equal(d.n_children, 0);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(bt_type_name(BT_GET_TOKEN | BT_REPLY), "GET_TOKEN");
	assert_string_equal(bt_status_name(BT_E_CREDENTIAL_REJECTED), "credential rejected");
	assert_string_equal(bt_status_name(999), "unknown status");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token_query_roundtrip),
	    cmocka_unit_test(test_token_reply_and_error_roundtrip),
	    cmocka_unit_test(test_compat_reply_roundtrip),
	    cmocka_unit_test(test_capability_requests_roundtrip),
	    cmocka_unit_test(test_hello_roundtrip),
	    cmocka_unit_test(test_hello_reply_version_1),
	    cmocka_unit_test(test_hello_reply_version_2),
	    cmocka_unit_test(test_hello_reply_shape_follows_version),
	    cmocka_unit_test(test_frame_limits),
	    cmocka_unit_test(test_trailing_bytes_and_truncation_fail),
	    cmocka_unit_test(test_encoder_failure_leaves_buffer),
	    cmocka_unit_test(test_record_roundtrip),
	    cmocka_unit_test(test_record_child_count_is_bounded),
	    cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
