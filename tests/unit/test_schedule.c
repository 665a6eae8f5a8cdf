/* test_schedule.c - refresh times and backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../daemon/lib/schedule.h"

static void test_one_hour_token(void **state)
{
	int64_t t0 = 1000000;

	(void)state;
	/* 5 min lead + 5 min min_validity before expiry, minus up to 30 s jitter. */
	assert_int_equal(schedule_refresh_at(t0, t0 + 3600, 0, 300, 0), t0 + 3000);
	for (uint32_t r = 0; r < 100; r++) {
		int64_t at = schedule_refresh_at(t0, t0 + 3600, 0, 300, r * 7919);
		assert_true(at <= t0 + 3000 && at >= t0 + 2970);
	}
}

static void test_short_token_refreshes_at_half_life(void **state)
{
	(void)state;
	assert_int_equal(schedule_refresh_at(100, 130, 0, 5, 12345), 115);
	assert_int_equal(schedule_refresh_at(100, 100, 0, 5, 0), 100);
}

static void test_long_token_and_server_hint(void **state)
{
	(void)state;
	/* 24 h managed-identity token: half life. */
	assert_int_equal(schedule_refresh_at(0, 86400, 0, 300, 0), 43200);
	/* refresh_in wins when earlier. */
	assert_int_equal(schedule_refresh_at(0, 3600, 1800, 300, 0), 1800);
	assert_int_equal(schedule_refresh_at(0, 3600, 3500, 300, 0), 3000);
}

static void test_backoff(void **state)
{
	(void)state;
	for (uint32_t r = 0; r < 50; r++) {
		assert_in_range(schedule_backoff(1, 0, r), 1, 1);
		assert_in_range(schedule_backoff(2, 0, r), 1, 2);
		assert_in_range(schedule_backoff(4, 0, r), 4, 8);
		assert_in_range(schedule_backoff(20, 0, r), 30, 60);
	}
	assert_int_equal(schedule_backoff(1, 60, 5), 60);
	assert_int_equal(schedule_backoff(9, 99999, 5), 3600);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_hour_token),
	    cmocka_unit_test(test_short_token_refreshes_at_half_life),
	    cmocka_unit_test(test_long_token_and_server_hint),
	    cmocka_unit_test(test_backoff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
