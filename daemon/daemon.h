/* daemon.h - the running daemon: the loop and everything on it, the current
 * configuration, and reload. One instance per process. */
#ifndef BATCHTOK_DAEMON_DAEMON_H
#define BATCHTOK_DAEMON_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/cache.h"
#include "front/compat.h"
#include "identity/config.h"
#include "lib/guard.h"
#include "lib/http.h"
#include "lib/notify.h"
#include "front/server.h"
#include "core/service.h"
#include "identity/signin.h"
#include "lib/usernames.h"

struct daemon {
	uv_loop_t loop;
	struct config_options cfg_opts;
	struct config *cfg;
	struct http *http;
	struct cache *cache;
	struct signin_store *signins;
	struct server *server;
	struct compat *compat;	      /* NULL: compat_endpoint is off */
	struct metrics_http *metrics; /* NULL: metrics_listen is off */
	struct usernames *usernames;  /* of refused users, for messages */
	struct service *service;      /* the request path of every front end */
	/* Caps and pauses per token-service host; guard_stats() reads its
	 * counters. */
	struct guard *guard;
	uv_timer_t guard_timer; /* starts queued fetches when their turn comes */
	struct notify notify;
	uv_timer_t cache_timer;
	int64_t cache_due;
	uv_timer_t audit_timer; /* audits credentials: expiring certificates */
	uv_timer_t log_timer;	/* sums up rate-limited log messages */
	uv_signal_t sighup, sigterm, sigint;
	int64_t started;
	uint64_t reloads;
	bool stopping;
};

/* Runs the daemon with an already loaded config (ownership taken) until
 * SIGTERM or SIGINT. Returns 0 on a clean stop, negative errno if it could
 * not start; uv_loop_close() has succeeded when it returns 0. */
int daemon_run(const struct config_options *opts, struct config *cfg);

/* Loads the config file again and switches to it if valid. On failure the
 * running config stays and *ret_error (free()) says why. */
int daemon_reload(struct daemon *d, char **ret_error);

#endif
