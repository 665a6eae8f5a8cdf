/* guard.c - the token services' upstreams: their rate and concurrency caps,
 * their queues of waiting requests and the pauses they asked for (guard.h). */
#include "guard.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct guard_upstream {
	char origin[GUARD_ORIGIN_MAX];
	unsigned kind;
	struct list queue;   /* waiters in the order they asked */
	struct list holding; /* waiters holding a slot */
	uint32_t queued, in_flight;
	/* When the rate tokens of ended requests come back, oldest first: a
	 * ring of cap times from head. The clock is monotonic and every token
	 * comes back GUARD_WINDOW_MS after its release, so the times only
	 * grow and the oldest is always at the head. */
	int64_t *back;
	size_t back_cap, back_head, back_n;
	int64_t paused_until; /* 0: never paused */
	uint64_t started, throttled, refused;
	uint32_t peak_in_flight, peak_queued;
};

struct guard {
	int64_t (*now)(void *arg);
	void *arg;
	int64_t max_wait;
	struct guard_limits limits[GUARD_KINDS];
	struct guard_upstream *up[GUARD_UPSTREAMS_MAX];
	size_t n;
};

int guard_new(int64_t (*now)(void *arg), void *arg, int64_t max_wait_ms, struct guard **ret)
{
	struct guard *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	g->now = now;
	g->arg = arg;
	g->max_wait = max_wait_ms < 0 ? 0 : max_wait_ms;
	*ret = g;
	return 0;
}

static void make_idle(struct guard_waiter *w)
{
	list_del(&w->node);
	w->up = NULL;
	w->queued = false;
}

static void upstream_free(struct guard_upstream *u)
{
	while (!list_empty(&u->queue))
		make_idle(list_entry(u->queue.next, struct guard_waiter, node));
	while (!list_empty(&u->holding))
		make_idle(list_entry(u->holding.next, struct guard_waiter, node));
	free(u->back);
	free(u);
}

void guard_free(struct guard *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->n; i++)
		upstream_free(g->up[i]);
	free(g);
}

int guard_configure(struct guard *g, unsigned kind, const struct guard_limits *l)
{
	if (kind >= GUARD_KINDS || l->rate > GUARD_RATE_MAX ||
	    l->concurrency > GUARD_CONCURRENCY_MAX)
		return -EINVAL;
	g->limits[kind] = *l;
	return 0;
}

int guard_origin(const char *url, char *buf, size_t n)
{
	const char *sep = strstr(url, "://"), *host, *colon;
	size_t scheme_len, host_len, len;

	if (!sep || sep == url)
		return -EINVAL;
	scheme_len = (size_t)(sep - url);
	for (size_t i = 0; i < scheme_len; i++)
		if (!isalpha((unsigned char)url[i]))
			return -EINVAL;
	host = sep + 3;
	host_len = strcspn(host, "/?#");
	if (host_len == 0 || memchr(host, '@', host_len))
		return -EINVAL;
	/* The scheme's own port names the same origin as none. A colon
	 * followed by ']' is inside an IPv6 literal, not before a port. */
	colon = memrchr(host, ':', host_len);
	if (colon && !memchr(colon, ']', host_len - (size_t)(colon - host))) {
		const char *port = colon + 1;
		size_t port_len = host_len - (size_t)(port - host);

		if ((scheme_len == 5 && !strncasecmp(url, "https", 5) && port_len == 3 &&
		     !memcmp(port, "443", 3)) ||
		    (scheme_len == 4 && !strncasecmp(url, "http", 4) && port_len == 2 &&
		     !memcmp(port, "80", 2)))
			host_len = (size_t)(colon - host);
	}
	if (host_len == 0)
		return -EINVAL;
	len = scheme_len + 3 + host_len;
	if (len >= n)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < scheme_len; i++)
		buf[i] = (char)tolower((unsigned char)url[i]);
	memcpy(buf + scheme_len, "://", 3);
	for (size_t i = 0; i < host_len; i++)
		buf[scheme_len + 3 + i] = (char)tolower((unsigned char)host[i]);
	buf[len] = 0;
	return 0;
}

/* Forgets the rate tokens that have come back by now. */
static void take_back(struct guard_upstream *u, int64_t now)
{
	while (u->back_n && u->back[u->back_head] <= now) {
		u->back_head = (u->back_head + 1) % u->back_cap;
		u->back_n--;
	}
}

/* Notes a rate token that comes back at t. The ring holds about `rate`
 * times, more only after a reload lowered the cap; should it not grow, the
 * token comes back at once: a little more lenient, never stuck. */
static void give_back(struct guard_upstream *u, int64_t t)
{
	if (u->back_n == u->back_cap) {
		size_t cap = u->back_cap ? u->back_cap * 2 : 8;
		int64_t *b = malloc(cap * sizeof(*b));

		if (!b)
			return;
		for (size_t i = 0; i < u->back_n; i++)
			b[i] = u->back[(u->back_head + i) % u->back_cap];
		free(u->back);
		u->back = b;
		u->back_cap = cap;
		u->back_head = 0;
	}
	u->back[(u->back_head + u->back_n) % u->back_cap] = t;
	u->back_n++;
}

/* Whether a request may start on u now, pauses aside; if not, *due is when
 * that may change without a release (INT64_MAX: only a release changes
 * it). */
static bool room(const struct guard *g, struct guard_upstream *u, int64_t now, int64_t *due)
{
	const struct guard_limits *l = &g->limits[u->kind];

	take_back(u, now);
	*due = INT64_MAX;
	if (l->concurrency && u->in_flight >= l->concurrency)
		return false;
	if (l->rate && u->in_flight + u->back_n >= l->rate) {
		if (u->back_n)
			*due = u->back[u->back_head];
		return false;
	}
	return true;
}

static void grant(struct guard_upstream *u, struct guard_waiter *w)
{
	if (w->queued) {
		list_del(&w->node);
		u->queued--;
	}
	list_add_tail(&u->holding, &w->node);
	w->up = u;
	w->queued = false;
	u->in_flight++;
	u->started++;
	if (u->in_flight > u->peak_in_flight)
		u->peak_in_flight = u->in_flight;
}

static bool idle(struct guard_upstream *u, int64_t now)
{
	take_back(u, now);
	return list_empty(&u->queue) && list_empty(&u->holding) && !u->back_n &&
	       u->paused_until <= now;
}

/* The upstream (kind, origin), made if new; NULL with *err set if it
 * cannot be. */
static struct guard_upstream *find_or_add(struct guard *g, unsigned kind, const char *origin,
					  int64_t now, int *err)
{
	struct guard_upstream *u;
	size_t i;

	for (i = 0; i < g->n; i++)
		if (g->up[i]->kind == kind && !strcmp(g->up[i]->origin, origin))
			return g->up[i];
	if (g->n == GUARD_UPSTREAMS_MAX) {
		for (i = 0; i < g->n && !idle(g->up[i], now); i++)
			;
		if (i == g->n) {
			*err = -ENOSPC;
			return NULL;
		}
		upstream_free(g->up[i]);
		memmove(&g->up[i], &g->up[i + 1], (g->n - i - 1) * sizeof(g->up[0]));
		g->n--;
	}
	if (!(u = calloc(1, sizeof(*u)))) {
		*err = -ENOMEM;
		return NULL;
	}
	memcpy(u->origin, origin, strlen(origin) + 1);
	u->kind = kind;
	list_init(&u->queue);
	list_init(&u->holding);
	g->up[g->n++] = u;
	return u;
}

int guard_acquire(struct guard *g, unsigned kind, const char *origin, struct guard_waiter *w,
		  int64_t *ret_until)
{
	int64_t now = g->now(g->arg), due;
	struct guard_upstream *u;
	int err = 0;

	if (kind >= GUARD_KINDS || !*origin)
		return -EINVAL;
	if (strlen(origin) >= GUARD_ORIGIN_MAX)
		return -ENAMETOOLONG;
	if (!(u = find_or_add(g, kind, origin, now, &err)))
		return err;
	if (u->paused_until - now > g->max_wait) {
		u->refused++;
		*ret_until = u->paused_until;
		return -EAGAIN;
	}
	/* Those who asked first start first. */
	if (list_empty(&u->queue) && u->paused_until <= now && room(g, u, now, &due)) {
		w->queued = false;
		grant(u, w);
		return 1;
	}
	list_add_tail(&u->queue, &w->node);
	w->up = u;
	w->queued = true;
	if (++u->queued > u->peak_queued)
		u->peak_queued = u->queued;
	return 0;
}

void guard_release(struct guard *g, struct guard_waiter *w, int64_t pause_ms)
{
	struct guard_upstream *u = w->up;
	int64_t now;

	if (!u)
		return;
	if (w->queued) {
		u->queued--;
		make_idle(w);
		return;
	}
	make_idle(w);
	u->in_flight--;
	now = g->now(g->arg);
	if (g->limits[u->kind].rate)
		give_back(u, now + GUARD_WINDOW_MS);
	if (pause_ms > 0) {
		if (pause_ms > GUARD_PAUSE_MAX_MS)
			pause_ms = GUARD_PAUSE_MAX_MS;
		u->throttled++;
		if (now + pause_ms > u->paused_until)
			u->paused_until = now + pause_ms;
	}
}

int guard_next(struct guard *g, struct guard_waiter **ret_w, int64_t *ret_until)
{
	int64_t now = g->now(g->arg), due;

	for (size_t i = 0; i < g->n; i++) {
		struct guard_upstream *u = g->up[i];
		struct guard_waiter *w = list_first(&u->queue, struct guard_waiter, node);

		if (!w)
			continue;
		if (u->paused_until > now) {
			/* A pause that began while w waited, longer than it
			 * may wait: it hears now. */
			if (u->paused_until - now > g->max_wait) {
				u->queued--;
				u->refused++;
				make_idle(w);
				*ret_w = w;
				*ret_until = u->paused_until;
				return -EAGAIN;
			}
			continue;
		}
		if (room(g, u, now, &due)) {
			grant(u, w);
			*ret_w = w;
			return 1;
		}
	}
	return 0;
}

int64_t guard_next_due(struct guard *g)
{
	int64_t now = g->now(g->arg), due = INT64_MAX, d;

	for (size_t i = 0; i < g->n; i++) {
		struct guard_upstream *u = g->up[i];

		if (list_empty(&u->queue))
			continue;
		if (u->paused_until > now)
			d = u->paused_until - now > g->max_wait ? now : u->paused_until;
		else if (room(g, u, now, &d))
			d = now;
		if (d < due)
			due = d;
	}
	return due;
}

int guard_stats(struct guard *g, size_t i, struct guard_stats *ret)
{
	int64_t now = g->now(g->arg);
	struct guard_upstream *u;

	if (i >= g->n)
		return -ENOENT;
	u = g->up[i];
	*ret = (struct guard_stats){.origin = u->origin,
				    .kind = u->kind,
				    .limits = g->limits[u->kind],
				    .started = u->started,
				    .throttled = u->throttled,
				    .refused = u->refused,
				    .in_flight = u->in_flight,
				    .peak_in_flight = u->peak_in_flight,
				    .queued = u->queued,
				    .peak_queued = u->peak_queued,
				    .paused_until = u->paused_until > now ? u->paused_until : 0,
				    .paused_ms = u->paused_until > now ? u->paused_until - now : 0};
	return 0;
}
