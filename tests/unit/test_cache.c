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
	struct token_entry *e;

	r.access_token = secmem_strndup(token, strlen(token));
	snprintf(r.token_type, sizeof(r.token_type), "Bearer");
	r.expires_on = now + lifetime;
	/* The answer may start the next fetch (a challenge's, after a plain
	 * one): fetching is that one's afterwards. */
	e = fetching;
	fetching = NULL;
	cache_fetch_done(c, e, &r);
	token_result_clear(&r);
}

static void fail_fetch(struct cache *c, uint32_t status, bool transient, uint32_t retry_after)
{
	struct token_result r = {
	    .status = status, .transient = transient, .retry_after = retry_after};
	struct token_entry *e;

	snprintf(r.message, sizeof(r.message), "token service: HTTP 503");
	e = fetching;
	fetching = NULL;
	cache_fetch_done(c, e, &r);
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

/* --- watchers, forced refresh by an administrator, forget, claims --- */

struct watcher {
	struct cache_watcher w;
	int tokens, errors;
	uint32_t status;
	char token[64];
	int64_t refresh_at;
	bool unwatch_all; /* the callback stops every watcher in `all` */
	struct watcher *all;
	int n_all;
};

static void on_event(struct cache_watcher *cw, const struct cache_answer *a)
{
	struct watcher *w = (struct watcher *)cw;

	w->status = a->status;
	if (a->status == BT_OK) {
		w->tokens++;
		w->refresh_at = a->refresh_at;
		snprintf(w->token, sizeof(w->token), "%s", a->access_token);
	} else {
		w->errors++;
	}
	if (w->unwatch_all)
		for (int i = 0; i < w->n_all; i++)
			cache_unwatch(&w->all[i].w);
}

static int watch(struct cache *c, struct watcher *w, uint32_t min_validity)
{
	memset(w, 0, sizeof(*w));
	w->w.fn = on_event;
	return cache_watch(c, &id_a, resources[0], min_validity, &w->w);
}

/* Lets time pass to the armed wake-up and runs it. */
static void run_to_armed(struct cache *c)
{
	assert_true(armed > now && armed < INT64_MAX);
	now = armed;
	cache_tick(c);
}

static void test_watcher_sees_every_rotation_with_one_fetch_each(void **state)
{
	struct cache *c = setup_cache();
	struct watcher w;
	char tok[16];

	(void)state;
	assert_int_equal(watch(c, &w, 0), 0);
	assert_int_equal(fetches, 1); /* nothing cached: fetched for the watcher */
	assert_int_equal(w.tokens, 0);
	succeed(c, "tok0", 600);
	assert_int_equal(w.tokens, 1);
	assert_string_equal(w.token, "tok0");
	assert_true(w.refresh_at > now && w.refresh_at < now + 600);
	/* Nobody asks: the watcher alone keeps the token fresh, well past
	 * idle_timeout (an hour), one fetch per rotation. */
	for (int i = 1; i <= 20; i++) {
		run_to_armed(c);
		assert_int_equal(fetches, i + 1);
		snprintf(tok, sizeof(tok), "tok%d", i);
		succeed(c, tok, 600);
		assert_int_equal(w.tokens, i + 1);
		assert_string_equal(w.token, tok);
	}
	assert_int_equal(w.errors, 0);
	cache_unwatch(&w.w);
	cache_free(c);
}

static void test_thousand_watchers_one_fetch_per_rotation(void **state)
{
	struct cache *c = setup_cache();
	struct watcher *w = calloc(1000, sizeof(*w));

	(void)state;
	assert_non_null(w);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(watch(c, &w[i], 0), 0);
	assert_int_equal(fetches, 1);
	succeed(c, "tok0", 600);
	for (int r = 1; r <= 3; r++) {
		run_to_armed(c);
		succeed(c, "next", 600);
	}
	assert_int_equal(fetches, 4);
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(w[i].tokens, 4);
		cache_unwatch(&w[i].w);
	}
	/* A late watcher gets the cached token at once, with no fetch. */
	assert_int_equal(watch(c, &w[0], 0), 0);
	assert_int_equal(w[0].tokens, 1);
	assert_int_equal(fetches, 4);
	cache_unwatch(&w[0].w);
	free(w);
	cache_free(c);
}

static void test_watcher_told_of_failure_when_its_token_runs_out(void **state)
{
	struct cache *c = setup_cache();
	struct watcher w;
	int64_t expires;

	(void)state;
	watch(c, &w, 0);
	succeed(c, "tok0", 600);
	expires = now + 600;
	run_to_armed(c); /* the refresh */
	/* Failures while the token is still good for min_validity (60 s):
	 * the watcher hears nothing, the retries go on. */
	while (now < expires - 60 - 5) {
		fail_fetch(c, BT_E_UNAVAILABLE, true, 0);
		assert_int_equal(w.errors, 0);
		run_to_armed(c);
	}
	/* Past that point the next failure, or the tick at the threshold,
	 * tells it; once per failure, not once per tick. */
	for (int i = 0; i < 100 && w.errors == 0; i++) {
		if (fetching)
			fail_fetch(c, BT_E_UNAVAILABLE, true, 0);
		else
			run_to_armed(c);
	}
	assert_int_equal(w.errors, 1);
	assert_int_equal(w.status, BT_E_UNAVAILABLE);
	assert_true(now >= expires - 60);
	cache_tick(c);
	assert_int_equal(w.errors, 1);
	/* The service comes back: the token follows. */
	if (!fetching)
		run_to_armed(c);
	succeed(c, "tok1", 600);
	assert_int_equal(w.tokens, 2);
	assert_string_equal(w.token, "tok1");
	cache_unwatch(&w.w);
	cache_free(c);
}

static void test_watcher_callback_may_unwatch_everyone(void **state)
{
	struct cache *c = setup_cache();
	struct watcher w[5];

	(void)state;
	for (int i = 0; i < 5; i++)
		watch(c, &w[i], 0);
	w[1].unwatch_all = true;
	w[1].all = w;
	w[1].n_all = 5;
	succeed(c, "tok0", 600);
	/* 0 and 1 were told; 1 stopped everyone, so 2..4 were not. */
	assert_int_equal(w[0].tokens, 1);
	assert_int_equal(w[1].tokens, 1);
	for (int i = 2; i < 5; i++)
		assert_int_equal(w[i].tokens, 0);
	assert_int_equal(cache_first(c)->n_watchers, 0);
	cache_free(c);
}

static void test_rebind_detaches_watchers_without_a_word(void **state)
{
	struct cache *c = setup_cache();
	struct watcher w;

	(void)state;
	watch(c, &w, 0);
	succeed(c, "tok0", 600);
	cache_rebind(c, keep, NULL); /* NULL: the identity is gone */
	assert_null(w.w.entry);
	assert_int_equal(w.tokens, 1);
	assert_int_equal(w.errors, 0);
	cache_unwatch(&w.w); /* harmless */
	cache_free(c);
}

static void test_admin_refresh_is_one_fetch_and_not_rate_limited(void **state)
{
	struct cache *c = setup_cache();
	struct waiter q[100], g;
	struct watcher w;

	(void)state;
	watch(c, &w, 0);
	succeed(c, "tok0", 3600);
	/* A client's forced refresh spends the 30 s allowance... */
	get(c, &g, 0, true);
	assert_int_equal(fetches, 2);
	succeed(c, "tok1", 3600);
	/* ...and does not hold back 100 administrators asking at once. */
	for (int i = 0; i < 100; i++) {
		memset(&q[i], 0, sizeof(q[i]));
		q[i].w.fn = on_answer;
		assert_int_equal(cache_refresh(c, &id_a, resources[0], &q[i].w), 0);
	}
	assert_int_equal(fetches, 3);
	succeed(c, "tok2", 3600);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(q[i].called, 1);
		assert_string_equal(q[i].token, "tok2");
	}
	assert_int_equal(w.tokens, 3); /* pushed to the watcher each time */
	assert_string_equal(w.token, "tok2");
	/* Backoff and remembered errors do not hold it back either. */
	cache_refresh(c, &id_a, resources[0], &q[0].w);
	fail_fetch(c, BT_E_CREDENTIAL_REJECTED, false, 0);
	cache_refresh(c, &id_a, resources[0], &q[1].w);
	assert_int_equal(fetches, 5);
	succeed(c, "tok3", 3600);
	cache_unwatch(&w.w);
	cache_free(c);
}

static void test_forget_drops_tokens_and_refetches_watched_ones(void **state)
{
	struct cache *c = setup_cache();
	static char *two[] = {"https://batch.core.windows.net/", "https://vault.azure.net"};
	struct identity id_b = {.name = "b", .resources = two, .n_resources = 2};
	struct waiter g;
	struct watcher w;

	(void)state;
	get(c, &g, 0, false);
	succeed(c, "a1", 3600);
	memset(&w, 0, sizeof(w));
	w.w.fn = on_event;
	cache_watch(c, &id_b, two[1], 0, &w.w);
	succeed(c, "b1", 3600);
	assert_int_equal(cache_forget(c, &id_a), 1);
	assert_int_equal(fetches, 2); /* nobody watches a's token */
	get(c, &g, 0, false);
	assert_int_equal(fetches, 3);
	succeed(c, "a2", 3600);
	assert_int_equal(cache_forget(c, NULL), 2);
	assert_int_equal(fetches, 4); /* b's watcher wants one */
	succeed(c, "b2", 3600);
	assert_int_equal(w.tokens, 2);
	assert_string_equal(w.token, "b2");
	assert_int_equal(cache_forget(c, &id_a), 0);
	cache_unwatch(&w.w);
	cache_free(c);
}

static int challenge(struct cache *c, struct waiter *w, const char *claims)
{
	memset(w, 0, sizeof(*w));
	w->w.fn = on_answer;
	return cache_challenge(c, &id_a, resources[0], claims, 0, &w->w);
}

static void test_claims_challenge_single_flight_and_limit(void **state)
{
	struct cache *c = setup_cache();
	struct waiter q[50], other;
	struct watcher w;

	(void)state;
	watch(c, &w, 0);
	/* The fetch in flight carries no claims: the challenge waits for it
	 * (its waiters are its own) and then fetches with the claims. */
	challenge(c, &q[0], "{\"a\":1}");
	assert_int_equal(cancels, 0);
	assert_int_equal(fetches, 1);
	for (int i = 1; i < 50; i++)
		challenge(c, &q[i], "{\"a\":1}");
	succeed(c, "plain", 3600);
	assert_string_equal(w.token, "plain");
	assert_int_equal(q[0].called, 0); /* not a token with the claims */
	assert_int_equal(fetches, 2);
	assert_true(cache_first(c)->fetching_claims);
	assert_string_equal(cache_first(c)->claims, "{\"a\":1}");
	/* Other claims within 30 s wait their turn: BUSY, no fetch. */
	challenge(c, &other, "{\"b\":2}");
	assert_int_equal(other.called, 1);
	assert_int_equal(other.status, BT_E_BUSY);
	assert_non_null(strstr(other.message, "try again after"));
	succeed(c, "claimed", 7200);
	assert_false(cache_first(c)->fetching_claims);
	for (int i = 0; i < 50; i++)
		assert_string_equal(q[i].token, "claimed");
	assert_string_equal(w.token, "claimed");
	/* The same claims again soon: the token they brought. */
	challenge(c, &q[0], "{\"a\":1}");
	assert_int_equal(q[0].called, 1);
	assert_string_equal(q[0].token, "claimed");
	assert_int_equal(fetches, 2);
	/* After 30 s another challenge fetches. */
	now += CACHE_FORCE_INTERVAL;
	challenge(c, &other, "{\"b\":2}");
	assert_int_equal(fetches, 3);
	succeed(c, "claimed2", 3600);
	assert_string_equal(other.token, "claimed2");
	cache_unwatch(&w.w);
	cache_free(c);
}

/* A refused challenge is the challengers' alone: the shared entry keeps
 * its token, errors, backoff and schedule, so a user bringing challenges
 * that fail cannot hold everyone's refresh back (hostile review, issue
 * 15); the same claims within 30 s never get a token without them. */
static void test_a_refused_challenge_leaves_the_token_alone(void **state)
{
	struct cache *c = setup_cache();
	struct waiter g, q, again;
	int64_t refresh_at;

	(void)state;
	get(c, &g, 0, false);
	succeed(c, "tok0", 600);
	refresh_at = cache_first(c)->refresh_at;
	for (int round = 0; round < 20; round++) {
		challenge(c, &q, "{\"acrs\":\"mfa\"}");
		assert_true(cache_first(c)->fetching_claims);
		fail_fetch(c, BT_E_CREDENTIAL_REJECTED, false, 0);
		assert_int_equal(q.called, 1);
		assert_int_equal(q.status, BT_E_CREDENTIAL_REJECTED);
		assert_non_null(strstr(q.message, "claims challenge"));
		assert_int_equal(cache_first(c)->error_status, 0);
		assert_int_equal(cache_first(c)->hard_error_until, 0);
		assert_int_equal(cache_first(c)->retry_at, 0);
		assert_int_equal(cache_first(c)->refresh_at, refresh_at);
		/* The same claims again within 30 s: not the plain token. */
		challenge(c, &again, "{\"acrs\":\"mfa\"}");
		assert_int_equal(again.status, BT_E_BUSY);
		get(c, &g, 0, false);
		assert_string_equal(g.token, "tok0");
		now += CACHE_FORCE_INTERVAL;
		if (now >= refresh_at)
			break;
	}
	/* The refresh comes when it was due, whatever the challenges did. */
	assert_true(now >= refresh_at);
	cache_tick(c);
	assert_non_null(fetching);
	assert_false(cache_first(c)->fetching_claims);
	succeed(c, "tok1", 600);
	cache_free(c);
}

/* Backoff and remembered errors hold a challenge back as they hold any
 * request: no way around a Retry-After. */
static void test_a_challenge_keeps_the_backoff(void **state)
{
	struct cache *c = setup_cache();
	struct waiter g, q;

	(void)state;
	get(c, &g, 0, false);
	fail_fetch(c, BT_E_UNAVAILABLE, true, 600);
	assert_int_equal(fetches, 1);
	challenge(c, &q, "{\"a\":1}");
	assert_int_equal(q.called, 1);
	assert_int_equal(q.status, BT_E_UNAVAILABLE);
	assert_non_null(strstr(q.message, "next attempt in"));
	assert_int_equal(fetches, 1);
	cache_free(c);
}

/* A watcher leaving while the others are being told keeps theirs:
 * their min_validity still sets the schedule (hostile review, issue 15). */
static void test_watch_validity_kept_when_one_leaves_mid_push(void **state)
{
	struct cache *c = setup_cache();
	struct watcher w[2];

	(void)state;
	watch(c, &w[0], 1800);
	watch(c, &w[1], 1800);
	w[0].unwatch_all = true;
	w[0].all = w;
	w[0].n_all = 1; /* only itself */
	succeed(c, "tok0", 7200);
	assert_int_equal(cache_first(c)->n_watchers, 1);
	cache_tick(c);
	run_to_armed(c);
	assert_non_null(fetching);
	succeed(c, "tok1", 7200);
	/* Refreshed early enough for the remaining watcher's 1800 s. */
	assert_true(cache_first(c)->refresh_at <= now + 7200 - 1800);
	cache_unwatch(&w[1].w);
	cache_free(c);
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
	    cmocka_unit_test(test_watcher_sees_every_rotation_with_one_fetch_each),
	    cmocka_unit_test(test_thousand_watchers_one_fetch_per_rotation),
	    cmocka_unit_test(test_watcher_told_of_failure_when_its_token_runs_out),
	    cmocka_unit_test(test_watcher_callback_may_unwatch_everyone),
	    cmocka_unit_test(test_rebind_detaches_watchers_without_a_word),
	    cmocka_unit_test(test_admin_refresh_is_one_fetch_and_not_rate_limited),
	    cmocka_unit_test(test_forget_drops_tokens_and_refetches_watched_ones),
	    cmocka_unit_test(test_claims_challenge_single_flight_and_limit),
	    cmocka_unit_test(test_a_refused_challenge_leaves_the_token_alone),
	    cmocka_unit_test(test_a_challenge_keeps_the_backoff),
	    cmocka_unit_test(test_watch_validity_kept_when_one_leaves_mid_push),
	};
	log_set_level(-1); /* the cache logs each event; keep test output readable */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
