/* schedule.h - when to refresh a token and how long to wait after a failure.
 * Pure functions of the times and the random numbers they are given, so the
 * policy is tested without a clock. All times are wall-clock epoch seconds. */
#ifndef BATCHTOK_DAEMON_SCHEDULE_H
#define BATCHTOK_DAEMON_SCHEDULE_H

#include <stdint.h>

/* Refresh this long before a token would drop under min_validity, to leave
 * room for retries (MSAL and azure-core refresh 5 minutes ahead). */
#define SCHEDULE_REFRESH_LEAD 300
/* Random spread added to the lead, so many daemons started together do not
 * refresh in the same second. */
#define SCHEDULE_JITTER_MAX 30
/* Tokens that live this long are refreshed at half life (MSAL does so for
 * managed identity; ENTRA.md 4.6). */
#define SCHEDULE_HALF_LIFE_FROM 7200
/* Backoff after a failure: 1, 2, 4 ... seconds, at most this. */
#define SCHEDULE_BACKOFF_MAX 60
/* Retry-After is honoured within these bounds. */
#define SCHEDULE_RETRY_AFTER_MIN 1
#define SCHEDULE_RETRY_AFTER_MAX 3600

/* When to refresh a token obtained at `obtained` that expires at
 * `expires_on`, given the server's hint `refresh_on` (0: none), the
 * min_validity it must keep for clients, and a random number. Never earlier
 * than half its lifetime unless the server asked, never later than the lead
 * before it stops being servable. */
int64_t schedule_refresh_at(int64_t obtained, int64_t expires_on, int64_t refresh_on,
			    uint32_t min_validity, uint32_t rnd);

/* Seconds to wait before retry number `attempt` (1 = the first retry) after
 * a failure, honouring the server's Retry-After (0: none). */
uint32_t schedule_backoff(unsigned attempt, uint32_t retry_after, uint32_t rnd);

#endif
