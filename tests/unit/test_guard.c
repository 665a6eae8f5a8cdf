/* test_guard.c - the guard on the token services: rate and concurrency caps
 * per upstream, their order, Retry-After pauses and their bounds, on an
 * injected clock. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/lib/guard.h"

#define IMDS  0
#define ENTRA 1
#define HOST  "http://169.254.169.254"
#define WAIT  10000 /* ms a request may wait behind a pause */

static int64_t clock_ms;

static int64_t fake_now(void *arg)
{
	(void)arg;
	return clock_ms;
}

static struct guard *new_guard(uint32_t rate, uint32_t concurrency)
{
	struct guard *g;

	clock_ms = 1000000;
	assert_int_equal(guard_new(fake_now, NULL, WAIT, &g), 0);
	assert_int_equal(guard_configure(g, IMDS, &(struct guard_limits){rate, concurrency}), 0);
	return g;
}

static struct guard_stats stats_of(struct guard *g, size_t i)
{
	struct guard_stats s;

	assert_int_equal(guard_stats(g, i, &s), 0);
	return s;
}

static void test_origin(void **state)
{
	char buf[64];

	(void)state;
	assert_int_equal(
	    guard_origin("HTTPS://Login.Example.COM:8443/tenant/x?y#z", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "https://login.example.com:8443");
	/* The scheme's own port is the same origin as none. */
	assert_int_equal(guard_origin("https://login.microsoftonline.com:443/", buf, sizeof(buf)),
			 0);
	assert_string_equal(buf, "https://login.microsoftonline.com");
	assert_int_equal(guard_origin("http://169.254.169.254:80", buf, sizeof(buf)), 0);
	assert_string_equal(buf, HOST);
	assert_int_equal(guard_origin("http://127.0.0.1:443", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "http://127.0.0.1:443");
	assert_int_equal(guard_origin("https://[::1]:443/a", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "https://[::1]");
	assert_int_equal(guard_origin("https://[::1]/a", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "https://[::1]");
	/* Not an origin: no scheme, no host, user information. */
	assert_int_equal(guard_origin("login.example.com", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(guard_origin("https:///x", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(guard_origin("://x", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(guard_origin("https://u@host", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(guard_origin("https://:443", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(guard_origin("https://a-long-host.example.com", buf, 20), -ENAMETOOLONG);
}

static void test_concurrency_cap(void **state)
{
	struct guard *g = new_guard(0, 2);
	struct guard_waiter w[4] = {0}, *got;
	int64_t until;

	(void)state;
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[0], &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[1], &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[2], &until), 0);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[3], &until), 0);
	assert_true(w[2].queued && w[3].queued);
	/* Only an answer frees a slot: no time does. */
	assert_int_equal(guard_next_due(g), INT64_MAX);
	clock_ms += 3600 * 1000;
	assert_int_equal(guard_next(g, &got, &until), 0);
	guard_release(g, &w[1], 0);
	assert_null(w[1].up);
	assert_true(guard_next_due(g) <= clock_ms);
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &w[2]);
	assert_false(w[2].queued);
	assert_int_equal(guard_next(g, &got, &until), 0);
	assert_int_equal(stats_of(g, 0).in_flight, 2);
	assert_int_equal(stats_of(g, 0).peak_in_flight, 2);
	assert_int_equal(stats_of(g, 0).queued, 1);
	assert_int_equal(stats_of(g, 0).peak_queued, 2);
	assert_int_equal(stats_of(g, 0).started, 3);
	/* A queued waiter that gives up leaves the queue. */
	guard_release(g, &w[3], 0);
	assert_null(w[3].up);
	assert_int_equal(stats_of(g, 0).queued, 0);
	guard_release(g, &w[0], 0);
	guard_release(g, &w[2], 0);
	assert_int_equal(guard_next(g, &got, &until), 0);
	assert_int_equal(stats_of(g, 0).in_flight, 0);
	/* Releasing an idle waiter changes nothing. */
	guard_release(g, &w[0], 5000);
	assert_int_equal(stats_of(g, 0).throttled, 0);
	guard_free(g);
}

/* A token comes back a second after the answer, not while the request
 * runs. */
static void test_rate_tokens_come_back_a_second_after_the_answer(void **state)
{
	struct guard *g = new_guard(3, 0);
	struct guard_waiter w[5] = {0}, *got;
	int64_t until, t0 = 1000000;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(guard_acquire(g, IMDS, HOST, &w[i], &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[3], &until), 0);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[4], &until), 0);
	/* All three still running: no time brings a token back. */
	clock_ms = t0 + 5000;
	assert_int_equal(guard_next_due(g), INT64_MAX);
	assert_int_equal(guard_next(g, &got, &until), 0);
	guard_release(g, &w[0], 0); /* back at t0 + 6000 */
	clock_ms = t0 + 5500;
	guard_release(g, &w[1], 0); /* back at t0 + 6500 */
	assert_int_equal(guard_next_due(g), t0 + 6000);
	clock_ms = t0 + 5999;
	assert_int_equal(guard_next(g, &got, &until), 0);
	clock_ms = t0 + 6000;
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &w[3]);
	assert_int_equal(guard_next(g, &got, &until), 0);
	assert_int_equal(guard_next_due(g), t0 + 6500);
	clock_ms = t0 + 7000;
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &w[4]);
	assert_int_equal(stats_of(g, 0).started, 5);
	guard_free(g);
	/* The guard left them idle. */
	assert_null(w[2].up);
	assert_null(w[4].up);
}

/* Many requests of random lengths through caps of 20 a second and 5 at
 * once: at every start, fewer than 20 requests are running or ended less
 * than a second ago, and fewer than 5 are running (so no second holds more
 * than 20 starts, nor more than 20 answers); they start in the order they
 * asked, and all do. */
#define SIM_N 400
static void test_rate_and_concurrency_hold_under_load(void **state)
{
	struct guard *g = new_guard(20, 5);
	static struct guard_waiter w[SIM_N];
	int64_t start[SIM_N], end[SIM_N], until;
	int started = 0, ended = 0;
	uint32_t rnd = 12345;

	(void)state;
	memset(w, 0, sizeof(w));
	for (int i = 0; i < SIM_N; i++) {
		start[i] = end[i] = -1;
		assert_true(guard_acquire(g, IMDS, HOST, &w[i], &until) >= 0);
		if (!w[i].queued)
			start[started++] = clock_ms;
	}
	for (int i = 0; i < started; i++)
		end[i] = clock_ms + (rnd = rnd * 1103515245 + 12345) % 400;
	for (int steps = 0; ended < SIM_N && steps < 100000; steps++) {
		struct guard_waiter *got;
		int64_t next = guard_next_due(g);

		/* The next thing that happens: an answer, or a token back. */
		for (int i = 0; i < started; i++)
			if (end[i] >= clock_ms && end[i] < next)
				next = end[i];
		assert_true(next != INT64_MAX);
		if (next > clock_ms)
			clock_ms = next;
		for (int i = 0; i < started; i++)
			if (end[i] == clock_ms) {
				guard_release(g, &w[i], 0);
				end[i] = -end[i]; /* ended: kept as a negative time */
				ended++;
			}
		while (guard_next(g, &got, &until) == 1) {
			int k = (int)(got - w), running = 0, recent = 0;

			assert_int_equal(k, started); /* first come, first served */
			for (int i = 0; i < started; i++) {
				if (end[i] >= 0)
					running++;
				else if (-end[i] > clock_ms - 1000)
					recent++;
			}
			assert_true(running < 5);
			assert_true(running + recent < 20);
			start[started] = clock_ms;
			end[started] = clock_ms + (rnd = rnd * 1103515245 + 12345) % 400;
			started++;
		}
	}
	assert_int_equal(ended, SIM_N);
	/* Counted at their starts, no second holds more than 20. */
	for (int k = 20; k < SIM_N; k++)
		assert_true(start[k] - start[k - 20] >= 1000);
	assert_int_equal(stats_of(g, 0).peak_in_flight, 5);
	assert_int_equal(stats_of(g, 0).peak_queued, SIM_N - 5);
	guard_free(g);
}

static void test_first_come_first_served(void **state)
{
	struct guard *g = new_guard(0, 1);
	struct guard_waiter a = {0}, b = {0}, c = {0}, *got;
	int64_t until;

	(void)state;
	assert_int_equal(guard_acquire(g, IMDS, HOST, &a, &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &b, &until), 0);
	guard_release(g, &a, 0);
	/* There is room now, but b asked first. */
	assert_int_equal(guard_acquire(g, IMDS, HOST, &c, &until), 0);
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &b);
	assert_int_equal(guard_next(g, &got, &until), 0);
	guard_release(g, &b, 0);
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &c);
	guard_free(g);
}

static void test_retry_after_pauses_everyone_on_the_upstream(void **state)
{
	struct guard *g = new_guard(0, 1);
	struct guard_waiter a = {0}, b = {0}, c = {0}, d = {0}, *got;
	int64_t until = 0, t0 = clock_ms;

	(void)state;
	assert_int_equal(guard_acquire(g, IMDS, HOST, &a, &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &b, &until), 0);
	/* a's answer: 429, Retry-After: 60. b, queued, hears at once. */
	guard_release(g, &a, 60000);
	assert_true(guard_next_due(g) <= clock_ms);
	assert_int_equal(guard_next(g, &got, &until), -EAGAIN);
	assert_ptr_equal(got, &b);
	assert_null(b.up);
	assert_int_equal(until, t0 + 60000);
	assert_int_equal(guard_next(g, &got, &until), 0);
	/* So does whoever asks next, for any identity: nothing is queued. */
	clock_ms += 1000;
	until = 0;
	assert_int_equal(guard_acquire(g, IMDS, HOST, &c, &until), -EAGAIN);
	assert_int_equal(until, t0 + 60000);
	assert_null(c.up);
	assert_int_equal(stats_of(g, 0).throttled, 1);
	assert_int_equal(stats_of(g, 0).refused, 2);
	assert_int_equal(stats_of(g, 0).paused_until, t0 + 60000);
	assert_int_equal(stats_of(g, 0).paused_ms, 59000);
	/* Within max_wait of its end, a request waits for it instead. */
	clock_ms = t0 + 60000 - WAIT;
	assert_int_equal(guard_acquire(g, IMDS, HOST, &d, &until), 0);
	assert_int_equal(guard_next_due(g), t0 + 60000);
	clock_ms = t0 + 60000 - 1;
	assert_int_equal(guard_next(g, &got, &until), 0);
	clock_ms = t0 + 60000;
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &d);
	assert_int_equal(stats_of(g, 0).paused_ms, 0);
	assert_int_equal(stats_of(g, 0).paused_until, 0);
	/* A pause is capped, and a shorter one does not cut a longer one
	 * short. */
	assert_int_equal(guard_configure(g, IMDS, &(struct guard_limits){0, 0}), 0);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &a, &until), 1);
	guard_release(g, &d, GUARD_PAUSE_MAX_MS * 10);
	assert_int_equal(stats_of(g, 0).paused_until, clock_ms + GUARD_PAUSE_MAX_MS);
	guard_release(g, &a, 1000);
	assert_int_equal(stats_of(g, 0).paused_until, clock_ms + GUARD_PAUSE_MAX_MS);
	assert_int_equal(stats_of(g, 0).throttled, 3);
	guard_free(g);
}

static void test_upstreams_are_independent(void **state)
{
	struct guard *g = new_guard(0, 1);
	struct guard_waiter a = {0}, b = {0}, c = {0}, d = {0}, e = {0};
	struct guard_stats s;
	int64_t until;

	(void)state;
	assert_int_equal(guard_configure(g, ENTRA, &(struct guard_limits){0, 0}), 0);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &a, &until), 1);
	guard_release(g, &a, 60000);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &a, &until), -EAGAIN);
	/* Another host of the same kind, or the same origin as another kind,
	 * has its own caps and pauses. */
	assert_int_equal(guard_acquire(g, IMDS, "http://127.0.0.1:8080", &b, &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, "http://127.0.0.1:8080", &c, &until), 0);
	assert_int_equal(guard_acquire(g, ENTRA, HOST, &d, &until), 1);
	assert_int_equal(guard_acquire(g, ENTRA, HOST, &e, &until), 1);
	assert_string_equal(stats_of(g, 0).origin, HOST);
	assert_int_equal(stats_of(g, 0).kind, IMDS);
	assert_string_equal(stats_of(g, 1).origin, "http://127.0.0.1:8080");
	assert_int_equal(stats_of(g, 2).kind, ENTRA);
	assert_int_equal(stats_of(g, 2).in_flight, 2);
	assert_int_equal(stats_of(g, 2).limits.concurrency, 0);
	assert_int_equal(guard_stats(g, 3, &s), -ENOENT);
	guard_free(g);
	assert_null(c.up);
	assert_null(e.up);
}

/* New limits (a reload) apply to what is queued and to what comes. */
static void test_reconfigure(void **state)
{
	struct guard *g = new_guard(0, 1);
	struct guard_waiter w[3] = {0}, *got;
	int64_t until;

	(void)state;
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[0], &until), 1);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[1], &until), 0);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[2], &until), 0);
	assert_int_equal(guard_configure(g, IMDS, &(struct guard_limits){0, 3}), 0);
	assert_true(guard_next_due(g) <= clock_ms);
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_int_equal(guard_next(g, &got, &until), 1);
	assert_ptr_equal(got, &w[2]);
	assert_int_equal(stats_of(g, 0).limits.concurrency, 3);
	/* Lower than what runs: nothing new starts until enough have ended. */
	assert_int_equal(guard_configure(g, IMDS, &(struct guard_limits){2, 1}), 0);
	guard_release(g, &w[0], 0);
	assert_int_equal(guard_acquire(g, IMDS, HOST, &w[0], &until), 0);
	guard_release(g, &w[1], 0);
	assert_int_equal(guard_next(g, &got, &until), 0);
	guard_release(g, &w[2], 0);
	/* Nothing runs, but three tokens are out for a second. */
	assert_int_equal(guard_next(g, &got, &until), 0);
	assert_int_equal(guard_next_due(g), clock_ms + GUARD_WINDOW_MS);
	clock_ms += GUARD_WINDOW_MS;
	assert_int_equal(guard_next(g, &got, &until), 1);
	/* Out of range: refused, nothing changes. */
	assert_int_equal(guard_configure(g, IMDS, &(struct guard_limits){GUARD_RATE_MAX + 1, 1}),
			 -EINVAL);
	assert_int_equal(
	    guard_configure(g, IMDS, &(struct guard_limits){1, GUARD_CONCURRENCY_MAX + 1}),
	    -EINVAL);
	assert_int_equal(guard_configure(g, GUARD_KINDS, &(struct guard_limits){1, 1}), -EINVAL);
	assert_int_equal(stats_of(g, 0).limits.rate, 2);
	guard_free(g);
}

static void test_bad_requests_leave_the_waiter_idle(void **state)
{
	struct guard *g = new_guard(0, 0);
	struct guard_waiter w = {0};
	char long_origin[GUARD_ORIGIN_MAX + 1];
	struct guard_stats s;
	int64_t until;

	(void)state;
	memset(long_origin, 'a', sizeof(long_origin) - 1);
	long_origin[sizeof(long_origin) - 1] = 0;
	assert_int_equal(guard_acquire(g, GUARD_KINDS, HOST, &w, &until), -EINVAL);
	assert_int_equal(guard_acquire(g, IMDS, "", &w, &until), -EINVAL);
	assert_int_equal(guard_acquire(g, IMDS, long_origin, &w, &until), -ENAMETOOLONG);
	assert_null(w.up);
	assert_int_equal(guard_stats(g, 0, &s), -ENOENT);
	guard_free(g);
	guard_free(NULL);
}

/* The table of upstreams is bounded; idle ones make room. */
static void test_upstreams_are_bounded(void **state)
{
	struct guard *g = new_guard(5, 0);
	static struct guard_waiter w[GUARD_UPSTREAMS_MAX + 1];
	char origin[64];
	int64_t until;

	(void)state;
	memset(w, 0, sizeof(w));
	for (int i = 0; i < GUARD_UPSTREAMS_MAX; i++) {
		snprintf(origin, sizeof(origin), "https://h%d.example.com", i);
		assert_int_equal(guard_acquire(g, IMDS, origin, &w[i], &until), 1);
	}
	assert_int_equal(
	    guard_acquire(g, IMDS, "https://new.example.com", &w[GUARD_UPSTREAMS_MAX], &until),
	    -ENOSPC);
	/* h7's request ended, but its rate token is out for a second. */
	guard_release(g, &w[7], 0);
	assert_int_equal(
	    guard_acquire(g, IMDS, "https://new.example.com", &w[GUARD_UPSTREAMS_MAX], &until),
	    -ENOSPC);
	clock_ms += GUARD_WINDOW_MS;
	assert_int_equal(
	    guard_acquire(g, IMDS, "https://new.example.com", &w[GUARD_UPSTREAMS_MAX], &until), 1);
	assert_string_equal(stats_of(g, 7).origin, "https://h8.example.com");
	assert_string_equal(stats_of(g, GUARD_UPSTREAMS_MAX - 1).origin, "https://new.example.com");
	guard_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_origin),
	    cmocka_unit_test(test_concurrency_cap),
	    cmocka_unit_test(test_rate_tokens_come_back_a_second_after_the_answer),
	    cmocka_unit_test(test_rate_and_concurrency_hold_under_load),
	    cmocka_unit_test(test_first_come_first_served),
	    cmocka_unit_test(test_retry_after_pauses_everyone_on_the_upstream),
	    cmocka_unit_test(test_upstreams_are_independent),
	    cmocka_unit_test(test_reconfigure),
	    cmocka_unit_test(test_bad_requests_leave_the_waiter_idle),
	    cmocka_unit_test(test_upstreams_are_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
