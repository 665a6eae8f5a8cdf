/* ratelimit.h - keeps what a hostile client can make the daemon log within
 * bounds: at most a burst of messages of one kind per interval, and one
 * summary line for the rest ("suppressed N similar denials in the last
 * 60 s"), so a flood cannot fill the journal and hide real errors.
 *
 * The limiter itself is plain arithmetic on a clock the caller passes, so
 * tests inject time. The daemon's kinds of limited message and their
 * summaries sit on top of it (ratelimit_log()). */
#ifndef BATCHTOK_DAEMON_RATELIMIT_H
#define BATCHTOK_DAEMON_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
	int64_t interval;    /* seconds */
	uint32_t burst;	     /* events let through per interval */
	int64_t begin;	     /* when the current interval began */
	uint32_t n;	     /* events in it, let through or not */
	uint64_t suppressed; /* events held back in it */
};

#define RATELIMIT_INIT(interval_, burst_)                                                          \
	{                                                                                          \
		.interval = (interval_), .burst = (burst_)                                         \
	}

/* Counts one event at now (seconds, any clock that does not jump). Returns
 * true if it may be logged. An interval ends interval seconds after its first
 * event (or when the clock went back); when this event starts a new one and
 * the old one held events back, *ret_suppressed gets their count and
 * *ret_span the seconds since the old interval began, for the caller to log
 * a summary first; otherwise both are 0. */
bool ratelimit_test(struct ratelimit *rl, int64_t now, uint64_t *ret_suppressed, int64_t *ret_span);

/* The users who have had a message of one kind logged in the current
 * interval: the first of each user's is logged whatever the burst, so that
 * one user's flood cannot hide another user's event. */
#define RATELIMIT_UIDS 32
struct ratelimit_uids {
	int64_t interval;
	int64_t begin;
	unsigned n;
	long uid[RATELIMIT_UIDS];
};

/* Whether uid has its first event of the interval at now (any clock that
 * does not jump); past RATELIMIT_UIDS users in one interval, false. */
bool ratelimit_first_of(struct ratelimit_uids *u, int64_t now, long uid);

/* For a periodic timer, so a summary comes out when the flood stops: if the
 * current interval has ended and held events back, returns their count (and
 * the span as above) and forgets them; 0 otherwise. */
uint64_t ratelimit_flush(struct ratelimit *rl, int64_t now, int64_t *ret_span);

/* The daemon's kinds of message a client can cause at will. */
enum log_limit {
	LOG_LIMIT_DENIAL,     /* a peer was refused an identity or an admin request */
	LOG_LIMIT_CAPABILITY, /* the compat endpoint got a capability it does not know */
	LOG_LIMIT_CLIENT,     /* a client broke the protocol or hit a per-uid limit */
	LOG_LIMIT_COUNT,
};

/* Seconds between summaries, and messages of one kind let through in that
 * time: enough to see who is misbehaving, too few to flood the journal. */
#define LOG_LIMIT_INTERVAL 60
#define LOG_LIMIT_BURST	   20

/* Whether a message of kind may be logged now (monotonic clock); first logs
 * the summary of what the interval before held back. */
bool ratelimit_log(enum log_limit kind);
/* The same for an event caused by uid (-1: unknown): a user's first message
 * of the interval is always logged. */
bool ratelimit_log_uid(enum log_limit kind, long uid);
/* Logs the summary of every kind whose interval has ended with messages
 * held back. Call it every few seconds. */
void ratelimit_log_flush(void);

#endif
