/* ratelimit.c - bursts and summaries of messages clients can cause. */
#include "ratelimit.h"

#include <time.h>

#include "log.h"

bool ratelimit_test(struct ratelimit *rl, int64_t now, uint64_t *ret_suppressed, int64_t *ret_span)
{
	*ret_suppressed = 0;
	*ret_span = 0;
	/* A new interval: the first event ever, the old one is over, or the
	 * clock went back. */
	if (rl->n == 0 || now - rl->begin >= rl->interval || now < rl->begin) {
		if (rl->suppressed) {
			*ret_suppressed = rl->suppressed;
			*ret_span = now > rl->begin ? now - rl->begin : 0;
		}
		rl->begin = now;
		rl->n = 0;
		rl->suppressed = 0;
	}
	if (rl->n < UINT32_MAX)
		rl->n++;
	if (rl->n <= rl->burst)
		return true;
	rl->suppressed++;
	return false;
}

bool ratelimit_first_of(struct ratelimit_uids *u, int64_t now, long uid)
{
	if (u->n == 0 || now - u->begin >= u->interval || now < u->begin) {
		u->begin = now;
		u->n = 0;
	}
	for (unsigned i = 0; i < u->n; i++)
		if (u->uid[i] == uid)
			return false;
	if (u->n == RATELIMIT_UIDS)
		return false;
	u->uid[u->n++] = uid;
	return true;
}

uint64_t ratelimit_flush(struct ratelimit *rl, int64_t now, int64_t *ret_span)
{
	uint64_t n = rl->suppressed;

	*ret_span = 0;
	if (n == 0 || (now - rl->begin < rl->interval && now >= rl->begin))
		return 0;
	*ret_span = now > rl->begin ? now - rl->begin : 0;
	/* The next event starts a new interval. */
	rl->n = 0;
	rl->suppressed = 0;
	return n;
}

/* Process-wide, as the log itself is. */
static struct ratelimit limits[LOG_LIMIT_COUNT] = {
    [LOG_LIMIT_DENIAL] = RATELIMIT_INIT(LOG_LIMIT_INTERVAL, LOG_LIMIT_BURST),
    [LOG_LIMIT_CAPABILITY] = RATELIMIT_INIT(LOG_LIMIT_INTERVAL, LOG_LIMIT_BURST),
    [LOG_LIMIT_CLIENT] = RATELIMIT_INIT(LOG_LIMIT_INTERVAL, LOG_LIMIT_BURST),
};

static const char *const what[LOG_LIMIT_COUNT] = {
    [LOG_LIMIT_DENIAL] = "denials",
    [LOG_LIMIT_CAPABILITY] = "unknown-capability warnings",
    [LOG_LIMIT_CLIENT] = "client errors",
};

static int64_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

static void summary(enum log_limit kind, uint64_t n, int64_t span)
{
	log_warning("suppressed %llu similar %s in the last %lld s", (unsigned long long)n,
		    what[kind], (long long)span);
}

bool ratelimit_log(enum log_limit kind)
{
	uint64_t n;
	int64_t span;
	bool ok = ratelimit_test(&limits[kind], mono_now(), &n, &span);

	if (n)
		summary(kind, n, span);
	return ok;
}

static struct ratelimit_uids users[LOG_LIMIT_COUNT] = {
    [LOG_LIMIT_DENIAL] = {.interval = LOG_LIMIT_INTERVAL},
    [LOG_LIMIT_CAPABILITY] = {.interval = LOG_LIMIT_INTERVAL},
    [LOG_LIMIT_CLIENT] = {.interval = LOG_LIMIT_INTERVAL},
};

bool ratelimit_log_uid(enum log_limit kind, long uid)
{
	bool first = ratelimit_first_of(&users[kind], mono_now(), uid);

	/* Counted in the burst either way, so one user alone still gets the
	 * burst and no more. */
	return ratelimit_log(kind) || first;
}

void ratelimit_log_flush(void)
{
	int64_t now = mono_now(), span;

	for (int k = 0; k < LOG_LIMIT_COUNT; k++) {
		uint64_t n = ratelimit_flush(&limits[k], now, &span);
		if (n)
			summary(k, n, span);
	}
}
