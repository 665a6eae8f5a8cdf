/* notify.h - systemd integration: READY/RELOADING/STOPPING/STATUS
 * notifications and the watchdog. Every call is a no-op outside systemd. */
#ifndef BATCHTOK_DAEMON_NOTIFY_H
#define BATCHTOK_DAEMON_NOTIFY_H

#include <uv.h>

struct notify {
	uv_timer_t watchdog;
	int watchdog_on;
};

/* Starts pinging the watchdog if WatchdogSec= is set. */
void notify_init(struct notify *n, uv_loop_t *loop);
void notify_close(struct notify *n);
void notify_ready(const char *status);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *status);

#endif
