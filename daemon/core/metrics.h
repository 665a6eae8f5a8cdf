/* metrics.h - the daemon's state and counters as OpenMetrics text (the
 * Prometheus exposition format's successor, which Prometheus and
 * node_exporter's textfile collector read): tokens' seconds to expiry,
 * whether each identity is authenticated, requests to the token services and
 * their answers, refresh latency, single-flight waiters and watchers, cache
 * hits and misses, denials, connections, requests per caller unit.
 *
 * Label values come from the configuration (identity names, resources), from
 * fixed sets (statuses, reasons, listeners), or from bounded tables (AADSTS
 * codes the daemon knows, at most UNITCOUNT_MAX units, the rest "other"):
 * never from what a client or the token service chose. */
#ifndef BATCHTOK_DAEMON_METRICS_H
#define BATCHTOK_DAEMON_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache.h"
#include "../identity/config.h"
#include "../lib/unitcount.h"

struct metrics_input {
	const struct config *cfg;
	struct cache *cache;
	const struct unitcount *units;
	int64_t now; /* wall clock */
	/* More families from modules the service does not know (the upstream
	 * guard), written before the end; may be NULL. */
	void (*extra)(void *arg, FILE *f);
	void *extra_arg;
};

/* The text in *ret (free()), *len bytes, ending "# EOF\n". */
int metrics_render(const struct metrics_input *in, char **ret, size_t *len);

/* Writes s as an OpenMetrics label value: quoted, with \\, \" and \n
 * escaped. */
void metrics_label(FILE *f, const char *s);

#endif
