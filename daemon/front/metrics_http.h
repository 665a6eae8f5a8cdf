/* metrics_http.h - metrics_listen: the daemon's metrics over HTTP for a
 * scraper (Prometheus, a node_exporter proxy), on a Unix socket or a
 * loopback address.
 *
 *   GET /metrics  ->  200, application/openmetrics-text (service_metrics())
 *
 * Who may read is decided as for METRICS on the daemon's socket: root, the
 * daemon's user, members of admin_group and metrics_group. A Unix client is
 * known by its credentials (SO_PEERCRED, SO_PEERGROUPS), and the socket file
 * is 0660 with group metrics_group (admin_group without one; 0600 without
 * either); a TCP client
 * by the uid owning its socket (sockdiag.h), checked against the members of
 * those groups the group database listed at load. The Host header must name
 * loopback (no DNS rebinding). Whoever may not read is answered 403 as
 * soon as the connection is accepted, so holds no slot.
 *
 * One request per connection, answered and closed. Everything a client can
 * hold is bounded: METRICS_HTTP_CONNS connections in all and
 * METRICS_HTTP_PER_UID per uid, the request head (http_in.h), and
 * METRICS_HTTP_DEADLINE for the whole exchange. */
#ifndef BATCHTOK_DAEMON_METRICS_HTTP_H
#define BATCHTOK_DAEMON_METRICS_HTTP_H

#include <uv.h>

#include "../core/service.h"

#define METRICS_HTTP_CONNS    32
#define METRICS_HTTP_PER_UID  4
#define METRICS_HTTP_DEADLINE 10 /* seconds */

struct metrics_http;

/* Listens on the config's metrics_listen. Returns 0, or a negative errno
 * with the cause logged. */
int metrics_http_new(uv_loop_t *loop, struct service *s, struct metrics_http **ret);
/* "unix:PATH" or "http://ADDRESS:PORT/metrics", the port as bound. */
const char *metrics_http_url(const struct metrics_http *m);
/* Closes the listener and every connection; removes a Unix socket it made.
 * Memory is released in close callbacks. Accepts NULL. */
void metrics_http_close(struct metrics_http *m);

#endif
