/* test_buf.c - the bounded buffer: limits, failure leaves state alone. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../proto/buf.h"

static void test_put_get_roundtrip(void **state)
{
	struct bt_buf b;
	uint8_t u8;
	uint32_t u32;
	uint64_t u64;
	char *s;

	(void)state;
	bt_buf_init(&b, 1024);
	assert_int_equal(bt_buf_put_u8(&b, 0xab), 0);
	assert_int_equal(bt_buf_put_u32(&b, 0x01020304), 0);
	assert_int_equal(bt_buf_put_u64(&b, 0x0102030405060708ull), 0);
	assert_int_equal(bt_buf_put_cstring(&b, "hello"), 0);
	assert_int_equal(bt_buf_put_cstring(&b, NULL), 0);
	assert_int_equal(bt_buf_len(&b), 1 + 4 + 8 + 9 + 4);
	/* Big-endian on the wire. */
	assert_memory_equal(bt_buf_ptr(&b) + 1, "\x01\x02\x03\x04", 4);
	assert_int_equal(bt_buf_get_u8(&b, &u8), 0);
	assert_int_equal(u8, 0xab);
	assert_int_equal(bt_buf_get_u32(&b, &u32), 0);
	assert_int_equal(u32, 0x01020304);
	assert_int_equal(bt_buf_get_u64(&b, &u64), 0);
	assert_true(u64 == 0x0102030405060708ull);
	assert_int_equal(bt_buf_get_cstring(&b, 100, &s), 0);
	assert_string_equal(s, "hello");
	free(s);
	assert_int_equal(bt_buf_get_cstring(&b, 100, &s), 0);
	assert_string_equal(s, "");
	free(s);
	assert_int_equal(bt_buf_len(&b), 0);
	bt_buf_free(&b);
}

static void test_failed_get_consumes_nothing(void **state)
{
	struct bt_buf b;
	uint32_t u32 = 7;
	uint64_t u64;
	char *s = NULL;

	(void)state;
	bt_buf_init(&b, 64);
	assert_int_equal(bt_buf_put(&b,
				    "\x00\x00\x00\x05"
				    "ab",
				    6),
			 0);
	assert_int_equal(bt_buf_get_u64(&b, &u64), -EBADMSG);
	assert_int_equal(bt_buf_get_cstring(&b, 100, &s), -EBADMSG);
	assert_null(s);
	assert_int_equal(bt_buf_len(&b), 6);
	/* A string longer than allowed, or holding NUL, is refused whole. */
	bt_buf_reset(&b);
	assert_int_equal(bt_buf_put(&b,
				    "\x00\x00\x00\x02"
				    "a\0",
				    6),
			 0);
	assert_int_equal(bt_buf_get_cstring(&b, 100, &s), -EBADMSG);
	assert_int_equal(bt_buf_get_cstring(&b, 1, &s), -EBADMSG);
	assert_int_equal(bt_buf_len(&b), 6);
	assert_int_equal(bt_buf_get_u32(&b, &u32), 0);
	assert_int_equal(u32, 2);
	bt_buf_free(&b);
}

static void test_maximum_is_enforced(void **state)
{
	struct bt_buf b;
	char big[100] = {0};

	(void)state;
	bt_buf_init(&b, 16);
	assert_int_equal(bt_buf_put(&b, big, 16), 0);
	assert_int_equal(bt_buf_put_u8(&b, 1), -ENOBUFS);
	assert_int_equal(bt_buf_len(&b), 16);
	/* Consuming makes room again without growing past the maximum. */
	assert_int_equal(bt_buf_consume(&b, 8), 0);
	assert_int_equal(bt_buf_put(&b, big, 8), 0);
	assert_true(b.cap <= 16);
	assert_int_equal(bt_buf_put_string(&b, big, 100), -ENOBUFS);
	assert_int_equal(bt_buf_len(&b), 16);
	assert_int_equal(bt_buf_consume(&b, 17), -EBADMSG);
	bt_buf_free(&b);
}

static void test_growth_keeps_data(void **state)
{
	struct bt_buf b;
	uint32_t v;

	(void)state;
	bt_buf_init(&b, 1 << 20);
	for (uint32_t i = 0; i < 10000; i++)
		assert_int_equal(bt_buf_put_u32(&b, i), 0);
	for (uint32_t i = 0; i < 10000; i++) {
		assert_int_equal(bt_buf_get_u32(&b, &v), 0);
		assert_int_equal(v, i);
	}
	bt_buf_free(&b);
}

static void test_view_is_read_only(void **state)
{
	struct bt_buf v;
	uint8_t x;

	(void)state;
	bt_buf_view(&v, "\x07", 1);
	assert_int_equal(bt_buf_put_u8(&v, 1), -EPERM);
	assert_int_equal(bt_buf_get_u8(&v, &x), 0);
	assert_int_equal(x, 7);
	bt_buf_free(&v); /* must not free borrowed memory */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_put_get_roundtrip),
	    cmocka_unit_test(test_failed_get_consumes_nothing),
	    cmocka_unit_test(test_maximum_is_enforced),
	    cmocka_unit_test(test_growth_keeps_data),
	    cmocka_unit_test(test_view_is_read_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
