/* counters.h - what the daemon counts for its metrics: requests to the token
 * services and their answers, refresh latency, the cache's hits and misses,
 * denials, connections. One instance for the process, bumped where things
 * happen (the loop is single-threaded) and read by the metrics renderer
 * (core/metrics.h). Every label a counter is kept under is from a fixed set:
 * values a client or token service controls never become names here. */
#ifndef BATCHTOK_DAEMON_COUNTERS_H
#define BATCHTOK_DAEMON_COUNTERS_H

#include <stdbool.h>
#include <stdint.h>

/* Token services, as they are counted. */
enum counter_service { COUNT_ENTRA, COUNT_IMDS, COUNT_SERVICES };

/* HTTP statuses counted by name; everything else is COUNT_STATUS_OTHER, and
 * no HTTP answer at all (connect, TLS, timeout) COUNT_STATUS_NONE. */
#define COUNT_STATUSES	   13
#define COUNT_STATUS_OTHER (COUNT_STATUSES - 2)
#define COUNT_STATUS_NONE  (COUNT_STATUSES - 1)
extern const int counter_statuses[COUNT_STATUSES - 2];

/* Refresh latency buckets, seconds (upper bounds; +Inf is the count). */
#define COUNT_BUCKETS 10
extern const double counter_buckets[COUNT_BUCKETS];

/* AADSTS codes are counted by the code for those the daemon knows
 * (entra_aadsts_hint()), as "other" beyond; at most this many codes. */
#define COUNT_AADSTS_MAX 64

enum counter_denial { DENY_USER, DENY_PROGRAM, DENY_ADMIN, COUNT_DENIALS };
enum counter_listener { LISTEN_SOCKET, LISTEN_COMPAT, LISTEN_METRICS, COUNT_LISTENERS };

struct counters {
	uint64_t upstream_requests[COUNT_SERVICES];
	uint64_t upstream_responses[COUNT_SERVICES][COUNT_STATUSES];
	struct {
		long code;
		uint64_t n;
	} aadsts[COUNT_AADSTS_MAX];
	uint64_t aadsts_other;
	uint64_t refresh_buckets[COUNT_BUCKETS]; /* not cumulative */
	uint64_t refresh_count;
	double refresh_sum; /* seconds */
	uint64_t cache_hits, cache_misses;
	uint64_t denials[COUNT_DENIALS];
	uint64_t connections[COUNT_LISTENERS]; /* open now */
	uint64_t accepted[COUNT_LISTENERS];    /* since start */
};

extern struct counters counters;

/* One answer from a token service: its HTTP status (0: none came), its
 * AADSTS code (0: none; an unknown code is counted as "other") and how long
 * the request took. */
void counters_upstream_answer(enum counter_service svc, long status, long aadsts, bool known,
			      double seconds);

#endif
