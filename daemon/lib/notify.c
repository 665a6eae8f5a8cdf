/* notify.c - sd_notify() and the watchdog timer. */
#include "notify.h"

#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

static void on_watchdog(uv_timer_t *t)
{
	(void)t;
	sd_notify(0, "WATCHDOG=1");
}

void notify_init(struct notify *n, uv_loop_t *loop)
{
	uint64_t usec = 0;

	uv_timer_init(loop, &n->watchdog);
	n->watchdog_on = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
	if (n->watchdog_on) {
		/* Half the period, as sd_watchdog_enabled(3) recommends. */
		uint64_t ms = usec / 2000 ? usec / 2000 : 1;
		uv_timer_start(&n->watchdog, on_watchdog, ms, ms);
		sd_notify(0, "WATCHDOG=1");
	}
}

void notify_close(struct notify *n)
{
	uv_close((uv_handle_t *)&n->watchdog, NULL);
}

void notify_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_reloading(void)
{
	struct timespec ts;

	/* MONOTONIC_USEC lets Type=notify-reload units match the reload. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading configuration",
		   (unsigned long long)ts.tv_sec * 1000000ULL +
		       (unsigned long long)ts.tv_nsec / 1000);
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void notify_status(const char *status)
{
	sd_notifyf(0, "STATUS=%s", status);
}
