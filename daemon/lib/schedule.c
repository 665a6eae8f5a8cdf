/* schedule.c - the refresh and retry policy (ENTRA.md 1.5 and 4.6). */
#include "schedule.h"

int64_t schedule_refresh_at(int64_t obtained, int64_t expires_on, int64_t refresh_on,
			    uint32_t min_validity, uint32_t rnd)
{
	int64_t lifetime = expires_on - obtained;
	int64_t at, half, jitter_span;

	if (lifetime <= 0)
		return obtained;
	half = obtained + lifetime / 2;
	/* Short-lived tokens get a proportionally short jitter. */
	jitter_span = lifetime / 10 < SCHEDULE_JITTER_MAX ? lifetime / 10 : SCHEDULE_JITTER_MAX;
	at = expires_on - (int64_t)min_validity - SCHEDULE_REFRESH_LEAD;
	if (jitter_span > 0)
		at -= rnd % (uint64_t)(jitter_span + 1);
	if (at < half)
		at = half;
	if (lifetime >= SCHEDULE_HALF_LIFE_FROM && half < at)
		at = half;
	if (refresh_on > obtained && refresh_on < at)
		at = refresh_on;
	return at;
}

uint32_t schedule_backoff(unsigned attempt, uint32_t retry_after, uint32_t rnd)
{
	uint32_t base;

	if (retry_after)
		return retry_after < SCHEDULE_RETRY_AFTER_MIN	? SCHEDULE_RETRY_AFTER_MIN
		       : retry_after > SCHEDULE_RETRY_AFTER_MAX ? SCHEDULE_RETRY_AFTER_MAX
								: retry_after;
	if (attempt == 0)
		attempt = 1;
	base = attempt > 6 ? SCHEDULE_BACKOFF_MAX : 1u << (attempt - 1);
	if (base > SCHEDULE_BACKOFF_MAX)
		base = SCHEDULE_BACKOFF_MAX;
	/* "Equal jitter": half fixed, half random, so waits still grow. */
	base = base / 2 + rnd % (base - base / 2 + 1);
	return base ? base : 1;
}
