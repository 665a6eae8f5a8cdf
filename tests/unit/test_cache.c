/* test_cache.c - single flight, refresh, retry, negative caching, idle
 * expiry and reload, driven by a fake clock and a fake fetcher. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/core/cache.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"
#include "../../proto/msg.h"

static int64_t now;
static int fetches, cancels;
static struct token_entry *fetching;
static int64_t armed;

static int fake_fetch(void *arg, struct token_entry *e, struct token_result *err)
{
	(void)arg;
	(void)err;
	fetches++;
	fetching = e;
	e->fetch = e; /* any non-NULL handle */
	return 0;
}

static void fake_cancel(void *arg, struct token_entry *e)
{
	(void)arg;
	cancels++;
	e->fetch = NULL;
	fetching = NULL;
}

static void fake_arm(void *arg, int64_t due)
{
	(void)arg;
	armed = due;
}

static int64_t fake_now(void *arg)
{
	(void)arg;
	return now;
}

static uint32_t fake_random(void *arg)
{
	(void)arg;
	return 0;
}

static const struct cache_ops ops = {fake_fetch, fake_cancel, fake_arm, fake_now, fake_random};

struct waiter {
	struct cache_waiter w;
	int called;
	uint32_t status;
	char token[64];
	char message[700];
};

static void on_answer(struct cache_waiter *cw, const struct cache_answer *a)
{
	struct waiter *w = (struct waiter *)cw;

	w->called++;
	w->status = a->status;
	if (a->access_token)
		snprintf(w->token, sizeof(w->token), "%s", a->access_token);
	if (a->message)
		snprintf(w->message, sizeof(w->message), "%s", a->message);
}

static char *resources[] = {"https://batch.core.windows.net/"};
static struct identity id_a = {.name = "a", .resources = resources, .n_resources = 1};

static struct cache *setup_cache(void)
{
	struct cache_settings s = {.min_validity = 60, .idle_timeout = 3600};
	struct cache *c;

	now = 1000000;
	fetches = cancels = 0;
	fetching = NULL;
	assert_int_equal(cache_new(&ops, NULL, &s, &c), 0);
	return c;
}

static void succeed(struct cache *c, const char *token, int lifetime)
{
	struct token_result r = {.status = BT_OK};

	r.access_token = secmem_strndup(token, strlen(token));
	snprintf(r.token_type, sizeof(r.token_type), "Bearer");
	r.expires_on = now + lifetime;
	cache_fetch_done(c, fetching, &r);
	token_result_clear(&r);
	fetching = NULL;
}

static void fail_fetch(struct cache *c, uint32_t status, bool transient, uint32_t retry_after)
{
	struct token_result r = {
	    .status = status, .transient = transient, .retry_after = retry_after};

	snprintf(r.message, sizeof(r.message), "token service: HTTP 503");
	cache_fetch_done(c, fetching, &r);
	fetching = NULL;
}

static int get(struct cache *c, struct waiter *w, uint32_t min_validity, bool force)
{
	memset(w, 0, sizeof(*w));
	w->w.fn = on_answer;
	return cache_get(c, &id_a, resources[0], min_validity, force, &w->w);
}

static void test_single_flight(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w[100];

	(void)state;
	for (int i = 0; i < 100; i++) {
		assert_int_equal(get(c, &w[i], 0, false), 0);
		assert_int_equal(w[i].called, 0);
	}
	assert_int_equal(fetches, 1);
	succeed(c, "tok1", 3600);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(w[i].called, 1);
		assert_int_equal(w[i].status, BT_OK);
		assert_string_equal(w[i].token, "tok1");
	}
	/* Cached: answered at once, no fetch. */
	assert_int_equal(get(c, &w[0], 0, false), 0);
	assert_int_equal(w[0].called, 1);
	assert_int_equal(fetches, 1);
	cache_free(c);
}

static void test_refresh_ahead_without_blocking_clients(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;
	struct token_entry *e;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 3600);
	e = cache_first(c);
	/* 5 min lead plus 60 s min_validity before expiry. */
	assert_int_equal(e->refresh_at, now + 3600 - 360);
	assert_int_equal(armed, e->refresh_at);
	now = e->refresh_at;
	cache_tick(c);
	assert_int_equal(fetches, 2);
	/* During the refresh the old token is still served at once. */
	get(c, &w, 0, false);
	assert_int_equal(w.called, 1);
	assert_string_equal(w.token, "tok1");
	succeed(c, "tok2", 3600);
	get(c, &w, 0, false);
	assert_string_equal(w.token, "tok2");
	cache_free(c);
}

static void test_outage_keeps_serving_cached_token(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;
	struct token_entry *e;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 3600);
	e = cache_first(c);
	now = e->refresh_at;
	cache_tick(c);
	fail_fetch(c, BT_E_UNAVAILABLE, true, 0);
	assert_true(e->retry_at > now);
	get(c, &w, 0, false);
	assert_int_equal(w.status, BT_OK);
	/* Retries go on with growing waits until the service is back. */
	for (int i = 0; i < 5; i++) {
		now = e->retry_at;
		cache_tick(c);
		assert_non_null(fetching);
		fail_fetch(c, BT_E_UNAVAILABLE, true, 0);
	}
	assert_int_equal(fetches, 7);
	/* Past the point where the token is servable, clients are told. */
	now = e->expires_on - 30;
	get(c, &w, 0, false);
	if (!w.called) {
		/* A retry was due soon: the waiter rides on it and hears its end. */
		now = e->retry_at;
		cache_tick(c);
		fail_fetch(c, BT_E_UNAVAILABLE, true, 0);
	}
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, BT_E_UNAVAILABLE);
	assert_non_null(strstr(w.message, "HTTP 503"));
	cache_free(c);
}

static void test_long_retry_after_answers_at_once(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w1, w2;

	(void)state;
	get(c, &w1, 0, false);
	fail_fetch(c, BT_E_UNAVAILABLE, true, 120);
	assert_int_equal(w1.called, 1);
	assert_int_equal(w1.status, BT_E_UNAVAILABLE);
	now += 30;
	get(c, &w2, 0, false);
	assert_int_equal(w2.called, 1);
	assert_non_null(strstr(w2.message, "next attempt in 90 s"));
	assert_int_equal(fetches, 1);
	now += 90;
	cache_tick(c);
	assert_int_equal(fetches, 2);
	cache_free(c);
}

static void test_short_backoff_keeps_waiters(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;
	struct token_entry *e;

	(void)state;
	get(c, &w, 0, false);
	e = cache_first(c);
	fail_fetch(c, BT_E_UNAVAILABLE, true, 0);
	assert_int_equal(w.called, 0);
	now = e->retry_at;
	cache_tick(c);
	succeed(c, "tok", 3600);
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, BT_OK);
	cache_free(c);
}

static void test_hard_error_is_remembered(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;

	(void)state;
	get(c, &w, 0, false);
	fail_fetch(c, BT_E_CREDENTIAL_REJECTED, false, 0);
	assert_int_equal(w.status, BT_E_CREDENTIAL_REJECTED);
	now += CACHE_NEGATIVE_TTL - 1;
	get(c, &w, 0, false);
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, BT_E_CREDENTIAL_REJECTED);
	assert_int_equal(fetches, 1);
	now += 2;
	get(c, &w, 0, false);
	assert_int_equal(fetches, 2);
	cache_free(c);
}

static void test_wall_clock_jump_after_suspend(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 3600);
	now += 5 * 3600; /* the laptop slept */
	get(c, &w, 0, false);
	assert_int_equal(w.called, 0);
	assert_int_equal(fetches, 2);
	succeed(c, "tok2", 3600);
	assert_string_equal(w.token, "tok2");
	cache_free(c);
}

static void test_min_validity_and_force(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 600);
	/* Longer than the token service's tokens last: refused at once, naming
	 * when the token ends, without asking the service. */
	get(c, &w, 900, false);
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, BT_E_BAD_REQUEST);
	assert_non_null(strstr(w.message, "issues tokens valid for 600 s"));
	assert_non_null(strstr(w.message, "ends at 1970-01-12 13:56:40 UTC"));
	assert_non_null(strstr(w.message, "--min-validity"));
	assert_int_equal(fetches, 1);
	get(c, &w, 0, true);
	assert_int_equal(w.called, 0);
	succeed(c, "tok3", 600);
	assert_string_equal(w.token, "tok3");
	/* Forced again too soon: the cache answers. */
	get(c, &w, 0, true);
	assert_string_equal(w.token, "tok3");
	assert_int_equal(fetches, 2);
	/* Whole seconds: "now" may be up to a second behind, so a token with
	 * exactly the asked validity left is not handed out; one more is. */
	get(c, &w, 599, false);
	assert_string_equal(w.token, "tok3");
	get(c, &w, 600, false);
	assert_int_equal(w.status, BT_E_BAD_REQUEST);
	assert_int_equal(fetches, 2);
	cache_free(c);
}

/* The first request for more than the service gives costs the one fetch
 * that finds out; the next 40 cost nothing. */
static void test_too_long_costs_one_fetch(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;

	(void)state;
	get(c, &w, 7200, false);
	assert_int_equal(w.called, 0);
	succeed(c, "tok1", 3600);
	assert_int_equal(w.status, BT_E_BAD_REQUEST);
	assert_non_null(strstr(w.message, "has just issued one valid for 3600 s"));
	assert_non_null(strstr(w.message, "ends at 1970-01-12 14:46:40 UTC"));
	for (int i = 0; i < 40; i++) {
		now += 1;
		get(c, &w, 7200, false);
		assert_int_equal(w.called, 1);
		assert_int_equal(w.status, BT_E_BAD_REQUEST);
	}
	assert_int_equal(fetches, 1);
	/* The daemon's own floor is named when it is what asks too much. */
	cache_configure(c, &(struct cache_settings){.min_validity = 4000, .idle_timeout = 3600});
	get(c, &w, 0, false);
	assert_int_equal(w.status, BT_E_BAD_REQUEST);
	assert_non_null(strstr(w.message, "lower min_validity in batchtokd.conf (now 4000 s)"));
	cache_free(c);
}

/* A valid token that is only too short for a request is fetched anew early
 * at most once per CACHE_FORCE_INTERVAL, whatever the service's lifetimes. */
static void test_early_fetch_is_rate_limited(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 3600);
	now += 1000;
	get(c, &w, 3000, false);
	assert_int_equal(w.called, 0);
	assert_int_equal(fetches, 2);
	succeed(c, "tok2", 2900); /* this one is shorter */
	assert_int_equal(w.status, BT_E_BAD_REQUEST);
	get(c, &w, 3000, false);
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, BT_E_BAD_REQUEST);
	assert_non_null(strstr(w.message, "fetched less than 30 s ago"));
	assert_int_equal(fetches, 2);
	now += CACHE_FORCE_INTERVAL;
	get(c, &w, 3000, false);
	assert_int_equal(fetches, 3);
	succeed(c, "tok3", 3500);
	assert_string_equal(w.token, "tok3");
	cache_free(c);
}

static void test_idle_tokens_are_not_refreshed(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;
	struct token_entry *e;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 7200);
	e = cache_first(c);
	now += 3601; /* nobody asked for an hour */
	cache_tick(c);
	assert_int_equal(fetches, 1);
	now = e->expires_on;
	cache_tick(c);
	assert_null(cache_first(c));
	cache_free(c);
}

static void test_cancelled_waiter_is_not_called(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w1, w2;

	(void)state;
	get(c, &w1, 0, false);
	get(c, &w2, 0, false);
	cache_waiter_cancel(&w1.w);
	succeed(c, "tok", 3600);
	assert_int_equal(w1.called, 0);
	assert_int_equal(w2.called, 1);
	cache_free(c);
}

static const struct identity *keep(void *arg, const struct identity *old)
{
	(void)old;
	return arg;
}

static void test_rebind(void **state)
{
	struct cache *c = setup_cache();
	struct identity id_b = id_a;
	struct waiter w;

	(void)state;
	get(c, &w, 0, false);
	succeed(c, "tok1", 3600);
	cache_rebind(c, keep, &id_b);
	assert_ptr_equal(cache_first(c)->id, &id_b);
	assert_string_equal(cache_first(c)->token, "tok1");
	/* A changed identity loses its entry; its waiters hear why. */
	now += 3600;
	get(c, &w, 0, false);
	cache_rebind(c, keep, NULL);
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, BT_E_UNAVAILABLE);
	assert_int_equal(cancels, 1);
	assert_null(cache_first(c));
	cache_free(c);
}

static void test_free_tells_waiters(void **state)
{
	struct cache *c = setup_cache();
	struct waiter w;

	(void)state;
	get(c, &w, 0, false);
	cache_free(c);
	assert_int_equal(w.called, 1);
	assert_non_null(strstr(w.message, "shutting down"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_flight),
	    cmocka_unit_test(test_refresh_ahead_without_blocking_clients),
	    cmocka_unit_test(test_outage_keeps_serving_cached_token),
	    cmocka_unit_test(test_long_retry_after_answers_at_once),
	    cmocka_unit_test(test_short_backoff_keeps_waiters),
	    cmocka_unit_test(test_hard_error_is_remembered),
	    cmocka_unit_test(test_wall_clock_jump_after_suspend),
	    cmocka_unit_test(test_min_validity_and_force),
	    cmocka_unit_test(test_too_long_costs_one_fetch),
	    cmocka_unit_test(test_early_fetch_is_rate_limited),
	    cmocka_unit_test(test_idle_tokens_are_not_refreshed),
	    cmocka_unit_test(test_cancelled_waiter_is_not_called),
	    cmocka_unit_test(test_rebind),
	    cmocka_unit_test(test_free_tells_waiters),
	};
	log_set_level(-1); /* the cache logs each event; keep test output readable */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
