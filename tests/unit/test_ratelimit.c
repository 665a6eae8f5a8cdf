/* test_ratelimit.c - bursts, summaries and flushes of the log limiter, on an
 * injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../daemon/lib/ratelimit.h"

static void test_burst_then_suppressed(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(60, 3);
	uint64_t n;
	int64_t span;

	(void)state;
	for (int i = 0; i < 3; i++) {
		assert_true(ratelimit_test(&rl, 1000 + i, &n, &span));
		assert_int_equal(n, 0);
	}
	for (int i = 0; i < 1000; i++) {
		assert_false(ratelimit_test(&rl, 1003 + i % 50, &n, &span));
		assert_int_equal(n, 0);
	}
	/* 59 s after the first event: still the same interval. */
	assert_false(ratelimit_test(&rl, 1059, &n, &span));
	assert_int_equal(n, 0);
	/* The interval is over: the next event is logged, after the summary. */
	assert_true(ratelimit_test(&rl, 1060, &n, &span));
	assert_int_equal(n, 1001);
	assert_int_equal(span, 60);
	/* Nothing is reported twice. */
	assert_true(ratelimit_test(&rl, 1061, &n, &span));
	assert_int_equal(n, 0);
}

static void test_quiet_interval_has_no_summary(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(60, 2);
	uint64_t n;
	int64_t span;

	(void)state;
	assert_true(ratelimit_test(&rl, 0, &n, &span));
	assert_true(ratelimit_test(&rl, 1, &n, &span));
	assert_true(ratelimit_test(&rl, 500, &n, &span));
	assert_int_equal(n, 0);
	assert_int_equal(ratelimit_flush(&rl, 10000, &span), 0);
}

static void test_flush_reports_once_the_interval_is_over(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(60, 1);
	uint64_t n;
	int64_t span;

	(void)state;
	assert_true(ratelimit_test(&rl, 100, &n, &span));
	assert_false(ratelimit_test(&rl, 101, &n, &span));
	assert_false(ratelimit_test(&rl, 102, &n, &span));
	/* Not before the interval ends: events may still come in it. */
	assert_int_equal(ratelimit_flush(&rl, 159, &span), 0);
	assert_int_equal(ratelimit_flush(&rl, 170, &span), 2);
	assert_int_equal(span, 70);
	assert_int_equal(ratelimit_flush(&rl, 171, &span), 0);
	/* What was flushed is not reported again by the next event, which
	 * starts a new burst. */
	assert_true(ratelimit_test(&rl, 172, &n, &span));
	assert_int_equal(n, 0);
	assert_false(ratelimit_test(&rl, 173, &n, &span));
}

static void test_clock_going_back_starts_a_new_interval(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(60, 1);
	uint64_t n;
	int64_t span;

	(void)state;
	assert_true(ratelimit_test(&rl, 1000, &n, &span));
	assert_false(ratelimit_test(&rl, 1001, &n, &span));
	assert_true(ratelimit_test(&rl, 10, &n, &span));
	assert_int_equal(n, 1);
	assert_int_equal(span, 0);
}

/* The first event of each user in an interval is told apart, up to
 * RATELIMIT_UIDS users; a new interval starts afresh. */
static void test_first_of_each_user(void **state)
{
	struct ratelimit_uids u = {.interval = 60};

	(void)state;
	assert_true(ratelimit_first_of(&u, 1000, 65534));
	assert_false(ratelimit_first_of(&u, 1001, 65534));
	assert_true(ratelimit_first_of(&u, 1002, 1002));
	assert_false(ratelimit_first_of(&u, 1003, 1002));
	for (long uid = 0; uid < RATELIMIT_UIDS - 2; uid++)
		assert_true(ratelimit_first_of(&u, 1004, uid));
	assert_false(ratelimit_first_of(&u, 1005, 99999)); /* the table is full */
	assert_true(ratelimit_first_of(&u, 1060, 65534));  /* a new interval */
	assert_true(ratelimit_first_of(&u, 1061, 99999));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_suppressed),
	    cmocka_unit_test(test_quiet_interval_has_no_summary),
	    cmocka_unit_test(test_flush_reports_once_the_interval_is_over),
	    cmocka_unit_test(test_clock_going_back_starts_a_new_interval),
	    cmocka_unit_test(test_first_of_each_user),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
