/* test_duration.c - the shared duration syntax. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../proto/duration.h"

static void test_units(void **state)
{
	uint64_t s;

	(void)state;
	assert_int_equal(bt_parse_duration("90", 1000000, &s), 0);
	assert_int_equal(s, 90);
	assert_int_equal(bt_parse_duration("90s", 1000000, &s), 0);
	assert_int_equal(s, 90);
	assert_int_equal(bt_parse_duration("5m", 1000000, &s), 0);
	assert_int_equal(s, 300);
	assert_int_equal(bt_parse_duration("1h", 1000000, &s), 0);
	assert_int_equal(s, 3600);
	assert_int_equal(bt_parse_duration("2d", 1000000, &s), 0);
	assert_int_equal(s, 172800);
}

static void test_rejects(void **state)
{
	uint64_t s = 42;

	(void)state;
	assert_int_equal(bt_parse_duration("", 100, &s), -EINVAL);
	assert_int_equal(bt_parse_duration("m", 100, &s), -EINVAL);
	assert_int_equal(bt_parse_duration("-5", 100, &s), -EINVAL);
	assert_int_equal(bt_parse_duration("5x", 100, &s), -EINVAL);
	assert_int_equal(bt_parse_duration("5mm", 100, &s), -EINVAL);
	assert_int_equal(bt_parse_duration(" 5", 100, &s), -EINVAL);
	assert_int_equal(bt_parse_duration("2m", 100, &s), -ERANGE);
	assert_int_equal(bt_parse_duration("99999999999999999999999", 100, &s), -ERANGE);
	assert_int_equal(s, 42);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_units),
	    cmocka_unit_test(test_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
