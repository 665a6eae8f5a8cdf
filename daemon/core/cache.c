/* cache.c - token entries, single-flight fetches, refresh and retry. */
#include "cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/counters.h"
#include "../lib/jwt.h"
#include "../lib/log.h"
#include "../lib/schedule.h"
#include "../lib/secmem.h"

struct cache {
	struct cache_ops ops;
	void *arg;
	struct cache_settings set;
	struct list entries;
	uint64_t fetches;
	int64_t armed;	 /* the due time last passed to ops.arm */
	bool ticking;	 /* cache_tick() is running: a nested call only asks for */
	bool tick_again; /* another pass, so the loop's next pointer stays valid */
};

static const struct log_ctx *ctx_of(const struct token_entry *e, struct log_ctx *ctx)
{
	*ctx = (struct log_ctx){.identity = e->id->name,
				.resource = e->resource,
				.uid = -1,
				.pid = -1,
				.aadsts = e->aadsts[0] ? e->aadsts : NULL,
				.fingerprint = e->fingerprint[0] ? e->fingerprint : NULL};
	return ctx;
}

int cache_new(const struct cache_ops *ops, void *arg, const struct cache_settings *s,
	      struct cache **ret)
{
	struct cache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->ops = *ops;
	c->arg = arg;
	c->set = *s;
	c->armed = INT64_MAX;
	list_init(&c->entries);
	*ret = c;
	return 0;
}

void cache_configure(struct cache *c, const struct cache_settings *s)
{
	c->set = *s;
	cache_tick(c);
}

static void drop_token(struct token_entry *e)
{
	secmem_free_str(e->token);
	e->token = NULL;
	e->token_has_claims = false;
	e->fingerprint[0] = 0;
	e->obtained = e->expires_on = e->refresh_at = 0;
}

/* Whether a token expiring at expires_on stays valid for `validity` seconds.
 * The clock counts whole seconds rounded down, so "now" may be up to a second
 * behind: only strictly more than asked keeps the promise. */
static bool valid_for(int64_t expires_on, int64_t now, uint32_t validity)
{
	return expires_on - now > (int64_t)validity;
}

static void fill_ok(const struct token_entry *e, struct cache_answer *a)
{
	*a = (struct cache_answer){.status = BT_OK,
				   .access_token = e->token,
				   .token_type = e->token_type,
				   .expires_on = e->expires_on,
				   .fingerprint = e->fingerprint,
				   .refresh_at = e->refresh_at,
				   .watchers = e->n_watchers};
}

/* t as "2025-01-31 12:00:00 UTC": the daemon's and the client's time zones
 * may differ. */
static void format_time(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, n, "%lld (Unix time)", (long long)t);
}

/* What to change when a request asks for more validity than a token has:
 * the request's own, or the daemon's floor when that is what asked. */
static const char *validity_fix(const struct cache *c, uint32_t validity, char *buf, size_t n)
{
	if (validity > c->set.min_validity)
		snprintf(buf, n, "ask for less with --min-validity (min_validity of the request)");
	else
		snprintf(buf, n, "lower min_validity in batchtokd.conf (now %u s)",
			 c->set.min_validity);
	return buf;
}

/* Fills a with the refusal of a request for a token valid `validity`
 * seconds that no token of e can meet (the token service answered; asking
 * it again would not help): BT_E_BAD_REQUEST, naming when the token ends.
 * ends is when the token meant ends; why says why no other will do. */
static void refuse_validity(const struct cache *c, const struct token_entry *e, int64_t ends,
			    uint32_t validity, const char *why, char *msg, size_t n,
			    struct cache_answer *a)
{
	char when[64], fix[96];

	format_time(ends, when, sizeof(when));
	snprintf(msg, n,
		 "identity %s: no token for %s stays valid for the %u s asked for: %s, and the "
		 "token ends at %s: %s",
		 e->id->name, e->resource, validity, why, when,
		 validity_fix(c, validity, fix, sizeof(fix)));
	*a = (struct cache_answer){.status = BT_E_BAD_REQUEST, .message = msg};
}

/* Which waiters an answer is for. */
enum waiters { ALL_WAITERS, PLAIN_WAITERS, CHALLENGERS };

static bool is_one_of(const struct cache_waiter *w, enum waiters which)
{
	return which == ALL_WAITERS || (which == CHALLENGERS) == w->claims;
}

/* Whether e has waiters of that kind. */
static bool has_waiters(const struct token_entry *e, enum waiters which)
{
	for (const struct list *n = e->waiters.next; n != &e->waiters; n = n->next)
		if (is_one_of(list_entry(n, struct cache_waiter, node), which))
			return true;
	return false;
}

static void answer_waiters(struct token_entry *e, const struct cache_answer *ok,
			   const struct cache_answer *fail, int64_t now, enum waiters which)
{
	struct cache_waiter *w;
	struct list todo, *n, *tmp;

	/* The ones answered move to a list of their own first; each is
	 * unlinked before its callback, which may free it or cancel others
	 * (cache_waiter_cancel() unlinks from whichever list). */
	list_init(&todo);
	list_for_each_safe(n, tmp, &e->waiters)
	{
		w = list_entry(n, struct cache_waiter, node);
		if (is_one_of(w, which)) {
			list_del(&w->node);
			list_add_tail(&todo, &w->node);
		}
	}
	while ((w = list_first(&todo, struct cache_waiter, node))) {
		list_del(&w->node);
		e->n_waiters--;
		w->entry = NULL;
		if (ok && valid_for(ok->expires_on, now, w->min_validity)) {
			e->served++;
			w->fn(w, ok);
		} else if (ok) {
			char msg[BT_MESSAGE_MAX], why[96];
			struct cache_answer a;
			snprintf(why, sizeof(why),
				 "the token service has just issued one valid for %lld s",
				 (long long)(ok->expires_on - now));
			refuse_validity(e->cache, e, ok->expires_on, w->min_validity, why, msg,
					sizeof(msg), &a);
			w->fn(w, &a);
		} else {
			w->fn(w, fail);
		}
	}
}

/* Moves e's watchers to a list of their own and tells them one by one, each
 * put back before its callback: a callback may stop watching, itself or
 * others, whichever list they are on. tell() says what to tell one, if
 * anything. */
static void tell_watchers(struct token_entry *e, int64_t now,
			  bool (*tell)(struct token_entry *, struct cache_watcher *, int64_t,
				       struct cache_answer *, char *, size_t))
{
	struct list todo;
	struct cache_watcher *w;
	char msg[BT_MESSAGE_MAX];

	list_init(&todo);
	while ((w = list_first(&e->watchers, struct cache_watcher, node))) {
		list_del(&w->node);
		list_add_tail(&todo, &w->node);
	}
	while ((w = list_first(&todo, struct cache_watcher, node))) {
		struct cache_answer a;
		list_del(&w->node);
		list_add_tail(&e->watchers, &w->node);
		if (tell(e, w, now, &a, msg, sizeof(msg)))
			w->fn(w, &a);
	}
}

/* A new token: to every watcher it is valid long enough for. */
static bool tell_token(struct token_entry *e, struct cache_watcher *w, int64_t now,
		       struct cache_answer *a, char *msg, size_t n)
{
	char why[96];

	if (valid_for(e->expires_on, now, w->min_validity)) {
		fill_ok(e, a);
		w->told_expires = e->expires_on;
		e->served++;
		return true;
	}
	snprintf(why, sizeof(why), "the token service has just issued one valid for %lld s",
		 (long long)(e->expires_on - now));
	refuse_validity(e->cache, e, e->expires_on, w->min_validity, why, msg, n, a);
	return true;
}

/* A failure: to every watcher whose last token is no longer valid long
 * enough, once per failure. */
static bool tell_failure(struct token_entry *e, struct cache_watcher *w, int64_t now,
			 struct cache_answer *a, char *msg, size_t n)
{
	(void)msg;
	(void)n;
	if (!e->error_status || w->told_error_at == e->error_at ||
	    valid_for(w->told_expires, now, w->min_validity))
		return false;
	w->told_error_at = e->error_at;
	*a = (struct cache_answer){.status = e->error_status, .message = e->error};
	return true;
}

/* The watchers' largest min_validity, counted again if one that had it
 * left: never while tell_watchers() holds some of them on a list of its
 * own, which this would miss. */
static uint32_t watch_validity(struct token_entry *e)
{
	struct list *n;

	if (!e->watch_validity_stale)
		return e->watch_validity;
	e->watch_validity_stale = false;
	e->watch_validity = 0;
	for (n = e->watchers.next; n != &e->watchers; n = n->next) {
		struct cache_watcher *w = list_entry(n, struct cache_watcher, node);
		if (w->min_validity > e->watch_validity)
			e->watch_validity = w->min_validity;
	}
	return e->watch_validity;
}

static void entry_free(struct cache *c, struct token_entry *e, const char *why)
{
	struct cache_answer a = {.status = BT_E_UNAVAILABLE, .message = why};
	struct cache_watcher *w;

	if (e->fetch)
		c->ops.cancel(c->arg, e);
	e->fetch = NULL;
	answer_waiters(e, NULL, &a, 0, ALL_WAITERS);
	/* Detached, not told: whoever rebinds watches again (cache.h). */
	while ((w = list_first(&e->watchers, struct cache_watcher, node))) {
		list_del(&w->node);
		w->entry = NULL;
	}
	list_del(&e->node);
	drop_token(e);
	free(e->claims);
	free(e->resource);
	free(e);
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	while (!list_empty(&c->entries))
		entry_free(c, list_entry(c->entries.next, struct token_entry, node),
			   "batchtokd is shutting down; try again when it is back");
	free(c);
}

static struct token_entry *find(struct cache *c, const struct identity *id, const char *resource)
{
	struct list *n;

	for (n = c->entries.next; n != &c->entries; n = n->next) {
		struct token_entry *e = list_entry(n, struct token_entry, node);
		if (e->id == id && strcmp(e->resource, resource) == 0)
			return e;
	}
	return NULL;
}

static struct token_entry *find_or_add(struct cache *c, const struct identity *id,
				       const char *resource)
{
	struct token_entry *e = find(c, id, resource);

	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->resource = strdup(resource))) {
		free(e);
		return NULL;
	}
	e->cache = c;
	e->id = id;
	list_init(&e->waiters);
	list_init(&e->watchers);
	list_add_tail(&c->entries, &e->node);
	return e;
}

static void start_fetch(struct cache *c, struct token_entry *e)
{
	struct token_result res = {0};
	int r;

	if (e->fetch)
		return;
	e->retry_at = 0;
	c->fetches++;
	e->fetches++;
	r = c->ops.fetch(c->arg, e, &res);
	if (r < 0) {
		if (!res.status) {
			res.status = BT_E_INTERNAL;
			res.transient = true;
			snprintf(res.message, sizeof(res.message),
				 "cannot start a token request: %s", strerror(-r));
		}
		e->fetch = NULL;
		cache_fetch_done(c, e, &res);
		token_result_clear(&res);
	}
}

/* The effective min_validity of a request: the daemon's is a floor. */
static uint32_t want_validity(const struct cache *c, uint32_t asked)
{
	return asked > c->set.min_validity ? asked : c->set.min_validity;
}

/* Whether e's last failure holds a request back: a credential the service
 * refused (remembered CACHE_NEGATIVE_TTL), or a retry further off than a
 * client waits (a long Retry-After). If so, a (with msg, n bytes) is the
 * answer. */
static bool held_back(const struct token_entry *e, int64_t now, char *msg, size_t n,
		      struct cache_answer *a)
{
	if (e->fetch)
		return false;
	if (e->hard_error_until > now) {
		*a = (struct cache_answer){.status = e->error_status, .message = e->error};
		return true;
	}
	if (e->retry_at > now + CACHE_WAIT_FOR_RETRY) {
		snprintf(msg, n, "%s (next attempt in %lld s)", e->error,
			 (long long)(e->retry_at - now));
		*a = (struct cache_answer){.status = e->error_status ?: BT_E_UNAVAILABLE,
					   .message = msg};
		return true;
	}
	return false;
}

int cache_get(struct cache *c, const struct identity *id, const char *resource,
	      uint32_t min_validity, bool force, struct cache_waiter *w)
{
	int64_t now = c->ops.now(c->arg);
	struct token_entry *e = find_or_add(c, id, resource);
	struct cache_answer a;
	char msg[BT_MESSAGE_MAX], why[128];
	bool early;

	if (!e)
		return -ENOMEM;
	e->last_used = now;
	w->min_validity = want_validity(c, min_validity);
	w->claims = false;
	if (force && now - e->last_forced < CACHE_FORCE_INTERVAL)
		force = false; /* rate-limited: the cached token is as good */
	if (!force && e->token && valid_for(e->expires_on, now, w->min_validity)) {
		e->served++;
		counters.cache_hits++;
		fill_ok(e, &a);
		w->fn(w, &a);
		return 0;
	}
	/* No token the service gives lasts that long: asking it again on each
	 * such request would only get the application throttled. */
	if (e->lifetime && w->min_validity >= e->lifetime) {
		snprintf(why, sizeof(why), "the token service issues tokens valid for %lld s",
			 (long long)e->lifetime);
		refuse_validity(c, e, e->token ? e->expires_on : now + e->lifetime, w->min_validity,
				why, msg, sizeof(msg), &a);
		w->fn(w, &a);
		return 0;
	}
	if (held_back(e, now, msg, sizeof(msg), &a)) {
		w->fn(w, &a);
		return 0;
	}
	/* The token is valid, only not for as long as this request asks:
	 * fetching anew ahead of the schedule is a forced refresh, and limited
	 * like one (a service whose lifetimes vary could otherwise be asked
	 * once per request). */
	early =
	    !force && !e->fetch && e->token && valid_for(e->expires_on, now, c->set.min_validity);
	if (early && now - e->last_forced < CACHE_FORCE_INTERVAL) {
		snprintf(why, sizeof(why),
			 "a new token was fetched less than %d s ago and did not last longer",
			 CACHE_FORCE_INTERVAL);
		refuse_validity(c, e, e->expires_on, w->min_validity, why, msg, sizeof(msg), &a);
		w->fn(w, &a);
		return 0;
	}
	if (e->n_waiters >= CACHE_WAITERS_MAX)
		return -EBUSY;
	w->entry = e;
	list_add_tail(&e->waiters, &w->node);
	e->n_waiters++;
	counters.cache_misses++;
	if (force || early)
		e->last_forced = now;
	/* In a short backoff the scheduled retry serves this waiter too. */
	if (!e->fetch && !(e->retry_at > now))
		start_fetch(c, e);
	cache_tick(c);
	return 0;
}

void cache_waiter_cancel(struct cache_waiter *w)
{
	struct token_entry *e = w->entry;

	if (!e)
		return;
	list_del(&w->node);
	e->n_waiters--;
	w->entry = NULL;
}

int cache_restore(struct cache *c, const struct identity *id, const char *resource, char *token,
		  const char *token_type, int64_t expires_on, int64_t obtained, int64_t lifetime)
{
	int64_t now = c->ops.now(c->arg);
	struct token_entry *e = find_or_add(c, id, resource);

	if (!e)
		return -ENOMEM;
	if (e->token || e->fetch)
		return -EEXIST;
	e->token = token;
	snprintf(e->token_type, sizeof(e->token_type), "%s", token_type);
	jwt_fingerprint(e->token, e->fingerprint, sizeof(e->fingerprint));
	e->obtained = obtained < now ? obtained : now;
	e->expires_on = expires_on;
	e->lifetime = lifetime > expires_on - e->obtained ? lifetime : expires_on - e->obtained;
	e->refresh_at = schedule_refresh_at(e->obtained, expires_on, 0, c->set.min_validity,
					    c->ops.random(c->arg));
	/* Used now: kept fresh for idle_timeout, as before the restart. */
	e->last_used = now;
	cache_tick(c);
	return 0;
}

int cache_prefetch(struct cache *c, const struct identity *id, const char *resource)
{
	struct token_entry *e = find_or_add(c, id, resource);

	if (!e)
		return -ENOMEM;
	e->prefetch = true;
	if (!e->token && !e->fetch && !e->retry_at)
		start_fetch(c, e);
	cache_tick(c);
	return 0;
}

static bool wanted(const struct cache *c, const struct token_entry *e, int64_t now)
{
	return e->prefetch || e->n_waiters || e->n_watchers ||
	       now - e->last_used < (int64_t)c->set.idle_timeout;
}

/* Queues w on e; -EBUSY when e has too many waiters. */
static int enqueue(struct token_entry *e, struct cache_waiter *w)
{
	if (e->n_waiters >= CACHE_WAITERS_MAX)
		return -EBUSY;
	w->entry = e;
	list_add_tail(&e->waiters, &w->node);
	e->n_waiters++;
	return 0;
}

/* Starts the fetch that carries e's challenge claims; its failure leaves
 * the retry it put off as it was. */
static void start_claims_fetch(struct cache *c, struct token_entry *e)
{
	e->saved_retry_at = e->retry_at;
	e->fetching_claims = true;
	start_fetch(c, e);
}

int cache_refresh(struct cache *c, const struct identity *id, const char *resource,
		  struct cache_waiter *w)
{
	int64_t now = c->ops.now(c->arg);
	struct token_entry *e = find_or_add(c, id, resource);
	int r;

	if (!e)
		return -ENOMEM;
	e->last_used = now;
	w->min_validity = 0; /* whatever comes is what was asked for */
	w->claims = false;
	if ((r = enqueue(e, w)) < 0)
		return r;
	/* Clients' forced refreshes within the limit get this token. */
	e->last_forced = now;
	if (!e->fetch) {
		e->hard_error_until = 0;
		e->retry_at = 0;
		start_fetch(c, e);
	}
	cache_tick(c);
	return 0;
}

int cache_challenge(struct cache *c, const struct identity *id, const char *resource,
		    const char *claims, uint32_t min_validity, struct cache_waiter *w)
{
	int64_t now = c->ops.now(c->arg);
	struct token_entry *e = find_or_add(c, id, resource);
	struct cache_answer a;
	char msg[BT_MESSAGE_MAX], when[64];
	struct log_ctx ctx;
	bool same;
	char *copy;
	int r;

	if (!e)
		return -ENOMEM;
	e->last_used = now;
	w->min_validity = want_validity(c, min_validity);
	w->claims = true;
	same = e->claims && strcmp(e->claims, claims) == 0;
	if (now - e->challenged_at < CACHE_FORCE_INTERVAL) {
		/* The last challenge is recent: the same claims share what it
		 * brought (or brings), others wait their turn. */
		if (same && e->token_has_claims && e->token &&
		    valid_for(e->expires_on, now, w->min_validity)) {
			e->served++;
			fill_ok(e, &a);
			w->fn(w, &a);
			return 0;
		}
		if (same && (e->fetching_claims || has_waiters(e, CHALLENGERS)))
			return enqueue(e, w);
		format_time(e->challenged_at + CACHE_FORCE_INTERVAL, when, sizeof(when));
		snprintf(msg, sizeof(msg),
			 "identity %s: a claims challenge for %s was answered less than %d s ago, "
			 "and challenges are answered once per %d s per token: try again after %s",
			 e->id->name, e->resource, CACHE_FORCE_INTERVAL, CACHE_FORCE_INTERVAL,
			 when);
		a = (struct cache_answer){.status = BT_E_BUSY, .message = msg};
		w->fn(w, &a);
		return 0;
	}
	/* What holds back any request holds back a challenge. */
	if (held_back(e, now, msg, sizeof(msg), &a)) {
		w->fn(w, &a);
		return 0;
	}
	if (!(copy = strdup(claims)))
		return -ENOMEM;
	if ((r = enqueue(e, w)) < 0) {
		free(copy);
		return r;
	}
	free(e->claims);
	e->claims = copy;
	e->challenged_at = e->last_forced = now;
	log_msg(LOG_INFO, ctx_of(e, &ctx),
		"identity %s: fetching a token for %s for a claims "
		"challenge",
		e->id->name, e->resource);
	/* A fetch in flight asks without the claims, for its own waiters:
	 * the challenge's fetch follows it (cache_fetch_done()). */
	if (!e->fetch)
		start_claims_fetch(c, e);
	cache_tick(c);
	return 0;
}

int cache_watch(struct cache *c, const struct identity *id, const char *resource,
		uint32_t min_validity, struct cache_watcher *w)
{
	int64_t now = c->ops.now(c->arg);
	struct token_entry *e = find_or_add(c, id, resource);
	struct cache_answer a;
	char msg[BT_MESSAGE_MAX];

	if (!e)
		return -ENOMEM;
	if (e->n_watchers >= CACHE_WATCHERS_MAX)
		return -EBUSY;
	/* As for a request: no token lasts that long, and asking would only
	 * cost token requests. */
	if (e->lifetime && want_validity(c, min_validity) >= e->lifetime)
		return -ERANGE;
	w->entry = e;
	w->min_validity = want_validity(c, min_validity);
	w->told_expires = w->told_error_at = 0;
	list_add_tail(&e->watchers, &w->node);
	e->n_watchers++;
	e->last_used = now;
	/* A watcher that needs more validity than the schedule keeps gets
	 * its refreshes earlier (never before half a token's life). */
	if (w->min_validity > watch_validity(e)) {
		e->watch_validity = w->min_validity;
		if (e->token) {
			int64_t at = schedule_refresh_at(e->obtained, e->expires_on, 0,
							 e->watch_validity, 0);
			if (at < e->refresh_at)
				e->refresh_at = at;
		}
	}
	if (e->token && valid_for(e->expires_on, now, w->min_validity)) {
		tell_token(e, w, now, &a, msg, sizeof(msg));
		w->fn(w, &a);
	} else if (!e->fetch && (e->hard_error_until > now || e->retry_at > now)) {
		/* In backoff: say why there is nothing yet; the retry brings
		 * the token. */
		if (tell_failure(e, w, now, &a, msg, sizeof(msg)))
			w->fn(w, &a);
	} else if (!e->fetch && (!e->token || now - e->last_forced >= CACHE_FORCE_INTERVAL)) {
		if (e->token)
			e->last_forced = now;
		start_fetch(c, e);
	}
	cache_tick(c);
	return 0;
}

void cache_unwatch(struct cache_watcher *w)
{
	struct token_entry *e = w->entry;

	if (!e)
		return;
	list_del(&w->node);
	e->n_watchers--;
	w->entry = NULL;
	if (w->min_validity >= e->watch_validity)
		e->watch_validity_stale = true;
}

/* Forgets e's token and what its failures taught. */
static void reset_entry(struct token_entry *e)
{
	drop_token(e);
	e->attempts = 0;
	e->retry_at = e->hard_error_until = e->error_at = 0;
	e->error_status = 0;
	e->error[0] = e->aadsts[0] = 0;
}

unsigned cache_forget(struct cache *c, const struct identity *id)
{
	unsigned n = 0;
	struct list *p;

	for (p = c->entries.next; p != &c->entries; p = p->next) {
		struct token_entry *e = list_entry(p, struct token_entry, node);
		if (id && e->id != id)
			continue;
		n += e->token != NULL;
		reset_entry(e);
	}
	/* Watched entries are fetched anew there. */
	cache_tick(c);
	return n;
}

void cache_fetch_done(struct cache *c, struct token_entry *e, struct token_result *r)
{
	int64_t now = c->ops.now(c->arg);
	struct log_ctx ctx;
	bool claims = e->fetching_claims;

	e->fetch = NULL;
	e->fetching_claims = false;
	if (r->status == BT_OK) {
		struct cache_answer ok;
		drop_token(e);
		e->token = r->access_token;
		r->access_token = NULL;
		snprintf(e->token_type, sizeof(e->token_type), "%s", r->token_type);
		jwt_fingerprint(e->token, e->fingerprint, sizeof(e->fingerprint));
		e->obtained = now;
		e->expires_on = r->expires_on;
		if (e->expires_on - now > e->lifetime)
			e->lifetime = e->expires_on - now;
		e->refresh_at = schedule_refresh_at(now, e->expires_on, r->refresh_on,
						    watch_validity(e) > c->set.min_validity
							? e->watch_validity
							: c->set.min_validity,
						    c->ops.random(c->arg));
		e->token_has_claims = claims;
		e->attempts = 0;
		e->retry_at = 0;
		e->hard_error_until = 0;
		e->error[0] = e->aadsts[0] = 0;
		e->error_status = 0;
		log_msg(LOG_INFO, ctx_of(e, &ctx),
			"identity %s: token for %s obtained (%s)%s, valid for %lld s, refresh in "
			"%lld s",
			e->id->name, e->resource, e->fingerprint,
			claims ? " for a claims challenge" : "", (long long)(e->expires_on - now),
			(long long)(e->refresh_at - now));
		fill_ok(e, &ok);
		/* A token fetched with the claims serves everyone waiting; one
		 * without serves all but the challengers, whose fetch follows. */
		answer_waiters(e, &ok, NULL, now, claims ? ALL_WAITERS : PLAIN_WAITERS);
		tell_watchers(e, now, tell_token);
		if (!e->fetch && has_waiters(e, CHALLENGERS))
			start_claims_fetch(c, e);
	} else if (claims) {
		/* The challenge was refused: its challengers are told, and the
		 * entry is as it was (its token, errors, backoff and schedule);
		 * others who came meanwhile get a fetch of their own. */
		char msg[BT_MESSAGE_MAX];
		struct cache_answer fail = {.status = r->status, .message = msg};
		snprintf(msg, sizeof(msg),
			 "identity %s: the claims challenge for %s was refused: %s", e->id->name,
			 e->resource, r->message);
		e->retry_at = e->saved_retry_at;
		log_msg(LOG_WARNING, ctx_of(e, &ctx), "%s", msg);
		answer_waiters(e, NULL, &fail, now, CHALLENGERS);
		if (!e->fetch && has_waiters(e, PLAIN_WAITERS) && !(e->retry_at > now))
			start_fetch(c, e);
	} else {
		struct cache_answer fail = {.status = r->status, .message = e->error};
		uint32_t delay;

		e->attempts++;
		e->error_status = r->status;
		e->error_at = now;
		snprintf(e->error, sizeof(e->error), "identity %s: %s", e->id->name, r->message);
		snprintf(e->aadsts, sizeof(e->aadsts), "%s", r->aadsts);
		delay = schedule_backoff(e->attempts, r->retry_after, c->ops.random(c->arg));
		if (!r->transient) {
			e->hard_error_until = now + CACHE_NEGATIVE_TTL;
			if (delay < CACHE_NEGATIVE_TTL)
				delay = CACHE_NEGATIVE_TTL;
		}
		e->retry_at = wanted(c, e, now) ? now + delay : 0;
		log_msg(r->transient ? LOG_WARNING : LOG_ERR, ctx_of(e, &ctx), "%s%s", e->error,
			e->retry_at ? "; will retry" : "");
		/* Waiters stay for a retry that comes soon; otherwise they hear
		 * now, and the retry (if any) goes on in the background. After a
		 * timeout they have waited a whole request_timeout already. */
		if (!r->transient || r->status == BT_E_TIMEOUT ||
		    e->attempts >= CACHE_WAITER_ATTEMPTS || delay > CACHE_WAIT_FOR_RETRY ||
		    !e->retry_at)
			answer_waiters(e, NULL, &fail, now, ALL_WAITERS);
		tell_watchers(e, now, tell_failure);
	}
	cache_tick(c);
}

void cache_tick(struct cache *c)
{
	int64_t now, due;
	struct list *n, *tmp;

	/* A fetch that fails at once reports back, and that ends in here again
	 * while the loop below holds a pointer to the next entry. */
	if (c->ticking) {
		c->tick_again = true;
		return;
	}
	c->ticking = true;
again:
	c->tick_again = false;
	now = c->ops.now(c->arg);
	due = INT64_MAX;
	list_for_each_safe(n, tmp, &c->entries)
	{
		struct token_entry *e = list_entry(n, struct token_entry, node);
		bool want = wanted(c, e, now);

		if (e->token && now >= e->expires_on)
			drop_token(e);
		if (!e->fetch && e->retry_at && now >= e->retry_at) {
			if (want)
				start_fetch(c, e);
			else
				e->retry_at = 0;
		} else if (!e->fetch && e->token && want && !e->retry_at && now >= e->refresh_at) {
			start_fetch(c, e);
		} else if (!e->fetch && !e->token && e->n_watchers && !e->retry_at &&
			   e->hard_error_until <= now) {
			/* Watched and forgotten (cache_forget()): fetch anew. */
			start_fetch(c, e);
		}
		/* Failing while a watcher's token runs out: tell it. */
		if (e->n_watchers && e->error_status)
			tell_watchers(e, now, tell_failure);
		if (!want && !e->fetch && !e->token && !e->retry_at && e->hard_error_until <= now) {
			entry_free(c, e, "");
			continue;
		}
		/* The next moment something changes for this entry. */
		if (e->fetch)
			continue;
		if (e->retry_at && e->retry_at < due)
			due = e->retry_at;
		if (e->token && !e->retry_at && want && e->refresh_at < due)
			due = e->refresh_at;
		if (e->token && e->expires_on < due)
			due = e->expires_on;
		if (e->token && e->n_watchers && e->error_status &&
		    e->expires_on - (int64_t)watch_validity(e) > now &&
		    e->expires_on - (int64_t)e->watch_validity < due)
			due = e->expires_on - (int64_t)e->watch_validity;
		if (!e->prefetch && !e->n_watchers &&
		    e->last_used + (int64_t)c->set.idle_timeout < due)
			due = e->last_used + (int64_t)c->set.idle_timeout;
		if (e->hard_error_until > now && e->hard_error_until < due)
			due = e->hard_error_until;
	}
	if (c->tick_again)
		goto again;
	c->ticking = false;
	if (due <= now)
		due = now + 1;
	if (due != c->armed) {
		c->armed = due;
		c->ops.arm(c->arg, due);
	}
}

void cache_rebind(struct cache *c,
		  const struct identity *(*resolve)(void *, const struct identity *), void *arg)
{
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &c->entries)
	{
		struct token_entry *e = list_entry(n, struct token_entry, node);
		const struct identity *nid = resolve(arg, e->id);

		if (nid && identity_resource(nid, e->resource, NULL)) {
			e->id = nid;
			e->prefetch = false; /* re-declared by the new config */
			continue;
		}
		entry_free(
		    c, e,
		    "the identity was changed or removed by a configuration reload; try again");
	}
	cache_tick(c);
}

void cache_forget_identity(struct cache *c, const struct identity *id, const char *why)
{
	struct cache_answer a = {.status = BT_E_UNAVAILABLE, .message = why};
	struct list *n;

	for (n = c->entries.next; n != &c->entries; n = n->next) {
		struct token_entry *e = list_entry(n, struct token_entry, node);
		if (e->id != id)
			continue;
		/* What is in flight asks for the user who was signed in. */
		if (e->fetch)
			c->ops.cancel(c->arg, e);
		e->fetch = NULL;
		e->fetching_claims = false;
		answer_waiters(e, NULL, &a, 0, ALL_WAITERS);
		reset_entry(e);
	}
	cache_tick(c);
}

struct token_entry *cache_first(struct cache *c)
{
	return list_first(&c->entries, struct token_entry, node);
}

struct token_entry *cache_next(struct token_entry *e)
{
	return e->node.next == &e->cache->entries
		   ? NULL
		   : list_entry(e->node.next, struct token_entry, node);
}

uint64_t cache_fetch_count(const struct cache *c)
{
	return c->fetches;
}
