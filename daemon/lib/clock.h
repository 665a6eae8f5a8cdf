/* clock.h - the wall clock every expiry is judged by. Tests that judge
 * expiry replace it at link time (-Wl,--wrap=clock_wall_now): every module
 * reads the wall clock through this one function. */
#ifndef BATCHTOK_DAEMON_CLOCK_H
#define BATCHTOK_DAEMON_CLOCK_H

#include <stdint.h>

/* Whole seconds of the wall clock. Not time(): glibc may read the coarse
 * clock, which lags by a tick and so reads the previous second just after a
 * boundary. */
int64_t clock_wall_now(void);

#endif
