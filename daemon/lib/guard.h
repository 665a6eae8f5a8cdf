/* guard.h - the host-wide guard on the token services: for each upstream (a
 * service's origin, scheme://host[:port]) a cap on requests in any one
 * second, a cap on requests at once, and a pause that every request to that
 * upstream keeps after the service asked for one (Retry-After, or a 429).
 *
 * IMDS allows 20 requests per second and 5 at once per machine and answers
 * 429 beyond that; a daemon with many tokens to fetch at once (a cold start,
 * a thousand processes asking for fifty resources) must stay below that
 * whatever the callers do.
 *
 * The rate cap is a bucket of `rate` tokens: a request takes one when it
 * starts and gives it back one second after its answer came (or it was
 * abandoned), not at a steady rate. The service handles a request somewhere
 * between our sending it and our getting the answer, so two requests `rate`
 * apart in the order they started are then at least a second apart at the
 * service too, however the network delays them: it never sees more than
 * `rate` in any one-second window, by whatever clock it counts.
 *
 * Plain logic with no I/O: the caller passes a monotonic clock in
 * milliseconds at creation, asks for a slot before each request and gives
 * it back after; queued requests are handed out by guard_next(), which the
 * caller runs from one timer armed at guard_next_due(). The guard never
 * calls back, so nothing re-enters the caller. */
#ifndef BATCHTOK_DAEMON_GUARD_H
#define BATCHTOK_DAEMON_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"

/* Kinds of upstream the caller names by index (the IMDS, Entra): each kind
 * has its own limits, and an upstream is one (kind, origin). */
#define GUARD_KINDS 4
/* Distinct upstreams remembered: configured identities name them, so a
 * config would need this many distinct token-service hosts to reach it.
 * Past it, idle ones are forgotten (their counters with them). */
#define GUARD_UPSTREAMS_MAX 256
/* The longest origin kept: scheme, a DNS name (253) and a port. */
#define GUARD_ORIGIN_MAX 300
/* Bounds that keep a typo from configuring something absurd. */
#define GUARD_RATE_MAX	      10000
#define GUARD_CONCURRENCY_MAX 1000
/* The rate cap's window: a request's token comes back this long after its
 * answer. */
#define GUARD_WINDOW_MS 1000
/* The longest pause kept: Retry-After is honoured up to an hour (ENTRA.md
 * 1.5). */
#define GUARD_PAUSE_MAX_MS (3600 * 1000)

struct guard;
struct guard_upstream;

struct guard_limits {
	uint32_t rate;	      /* requests in any one second; 0: no cap */
	uint32_t concurrency; /* requests at once; 0: no cap */
};

/* Embedded in whatever waits for a slot (a fetch). Zeroed before first use;
 * between uses it is idle again. */
struct guard_waiter {
	struct list node;
	struct guard_upstream *up; /* NULL: idle */
	bool queued;		   /* waiting in up's queue; else holding a slot */
};

/* One upstream's counters, for status and metrics. */
struct guard_stats {
	const char *origin; /* valid until the guard next changes */
	unsigned kind;
	struct guard_limits limits;
	uint64_t started;   /* requests let through */
	uint64_t throttled; /* answers that paused the upstream */
	uint64_t refused;   /* requests refused while it was paused */
	uint32_t in_flight; /* requests holding a slot now */
	uint32_t peak_in_flight;
	uint32_t queued; /* requests waiting now */
	uint32_t peak_queued;
	int64_t paused_until; /* monotonic ms; 0: not paused */
	int64_t paused_ms;    /* what is left of the pause now; 0: none */
};

/* A guard reading time from now(arg) (monotonic milliseconds). A request
 * is never queued behind a pause ending more than max_wait_ms from now: it
 * is refused instead, so its caller hears at once. Limits start at none. */
int guard_new(int64_t (*now)(void *arg), void *arg, int64_t max_wait_ms, struct guard **ret);

/* Frees the guard; waiters still queued or holding a slot are left idle.
 * Accepts NULL. */
void guard_free(struct guard *g);

/* Sets the limits of every upstream of kind (at start and on reload). A
 * lower cap than the requests already holding slots lets no new one start
 * until enough have ended. Returns 0, or -EINVAL for a kind or limit out of
 * range (nothing changes). */
int guard_configure(struct guard *g, unsigned kind, const struct guard_limits *l);

/* The origin of a URL, lower-cased and without the scheme's default port:
 * "https://login.example.com:8443" of "HTTPS://Login.Example.com:8443/t/",
 * "http://169.254.169.254" of "http://169.254.169.254:80". Returns 0, or
 * -EINVAL if url has no scheme or host, or -ENAMETOOLONG if the origin does
 * not fit n bytes. */
int guard_origin(const char *url, char *buf, size_t n);

/* Asks for a slot on the upstream (kind, origin) for w, which must be idle.
 * Returns 1: w holds a slot, the request may start now; 0: w is queued,
 * guard_next() hands it out later (arm the timer: guard_next_due());
 * -EAGAIN: the upstream is paused until *ret_until (monotonic ms), longer
 * than max_wait_ms, and w stays idle; -EINVAL, -ENAMETOOLONG (a bad kind or
 * origin), -ENOMEM, or -ENOSPC (GUARD_UPSTREAMS_MAX busy upstreams), w idle.
 * Requests of one upstream start in the order they asked. */
int guard_acquire(struct guard *g, unsigned kind, const char *origin, struct guard_waiter *w,
		  int64_t *ret_until);

/* Ends w's use of its upstream: a queued w leaves the queue; a w holding a
 * slot gives it back, its rate token GUARD_WINDOW_MS from now, and when
 * pause_ms > 0 (its answer asked for a pause: Retry-After, a 429) pauses
 * every request to the upstream for that long from now and counts a
 * throttled answer (at most GUARD_PAUSE_MAX_MS; a longer pause already
 * running stays). w is idle afterwards; an idle w is left alone. Something
 * may be due afterwards: re-arm at guard_next_due(). */
void guard_release(struct guard *g, struct guard_waiter *w, int64_t pause_ms);

/* Hands out the next queued waiter whose turn has come. Returns 1 with
 * *ret_w holding a slot, to start now; -EAGAIN with *ret_w refused (its
 * upstream paused until *ret_until, longer than max_wait_ms; now idle); 0
 * if none is due. Call until it returns 0, then re-arm. */
int guard_next(struct guard *g, struct guard_waiter **ret_w, int64_t *ret_until);

/* When guard_next() may next have something (monotonic ms; now or earlier
 * means at once), or INT64_MAX if only a release can change anything. */
int64_t guard_next_due(struct guard *g);

/* Upstream i's counters (0, 1, ... in the order they were first used).
 * Returns 0, or -ENOENT past the last. */
int guard_stats(struct guard *g, size_t i, struct guard_stats *ret);

#endif
