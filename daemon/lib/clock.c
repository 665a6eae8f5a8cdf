/* clock.c - the wall clock. */
#include "clock.h"

#include <time.h>

int64_t clock_wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}
