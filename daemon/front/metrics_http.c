/* metrics_http.c - metrics_listen: GET /metrics over HTTP (metrics_http.h). */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_in.h"
#include "sockdiag.h"
#include "../lib/counters.h"
#include "../lib/list.h"
#include "../lib/log.h"
#include "../lib/ratelimit.h"
#include "../lib/uidcount.h"
#include "../lib/unixsock.h"

union stream {
	uv_handle_t handle;
	uv_stream_t stream;
	uv_pipe_t pipe;
	uv_tcp_t tcp;
};

struct metrics_http {
	struct service *s;
	union stream l;
	bool tcp;
	bool closing;
	int dir_fd; /* Unix: the socket's directory and name, to remove it */
	char *base;
	int nl_fd; /* TCP: sock_diag, who owns a client's end */
	unsigned port;
	char url[96];
	struct list conns;
	unsigned n_conns;
	struct uidcount per_uid;
	unsigned refs; /* the listener and each connection: freed at 0 */
};

struct mconn {
	union stream h;
	uv_timer_t timer;
	uv_write_t write;
	uv_shutdown_t shutdown;
	struct metrics_http *m;
	struct list node;
	struct http_in req;
	struct peer peer;
	char peer_text[64];
	char buf[4096];
	char *resp;
	int handles;
	bool counted; /* in per_uid */
	bool answered;
	bool closing;
};

static void release(struct metrics_http *m)
{
	if (--m->refs)
		return;
	uidcount_free(&m->per_uid);
	free(m->base);
	free(m);
}

static void on_conn_closed(uv_handle_t *h)
{
	struct mconn *c = h->data;

	if (--c->handles)
		return;
	http_in_wipe(&c->req);
	free(c->peer.groups);
	free(c->resp);
	release(c->m);
	free(c);
}

static void conn_close(struct mconn *c)
{
	struct metrics_http *m = c->m;

	if (c->closing)
		return;
	c->closing = true;
	list_del(&c->node);
	m->n_conns--;
	counters.connections[LISTEN_METRICS]--;
	if (c->counted)
		uidcount_del(&m->per_uid, c->peer.uid);
	uv_close(&c->h.handle, on_conn_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_deadline(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_shut_down(uv_shutdown_t *sd, int status)
{
	(void)status;
	conn_close(sd->data);
}

static void on_written(uv_write_t *w, int status)
{
	struct mconn *c = w->data;

	if (c->closing)
		return;
	/* FIN after the answer; the deadline closes a client that never
	 * closes its end. */
	if (status < 0 || uv_shutdown(&c->shutdown, &c->h.stream, on_shut_down) < 0)
		conn_close(c);
}

/* Answers and ends the exchange: nothing more is read. */
static void respond(struct mconn *c, int status, const char *reason, const char *type,
		    const char *body, size_t len)
{
	uv_buf_t b;
	char *all;
	int n;

	c->answered = true;
	uv_read_stop(&c->h.stream);
	n = asprintf(&c->resp,
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
		     status, reason, type, len, status == 405 ? "Allow: GET\r\n" : "");
	if (n < 0 || !(all = realloc(c->resp, (size_t)n + len))) {
		conn_close(c); /* c->resp, if any, is freed with c */
		return;
	}
	c->resp = all;
	memcpy(c->resp + n, body, len);
	b = uv_buf_init(c->resp, (unsigned)((size_t)n + len));
	c->write.data = c->shutdown.data = c;
	if (uv_write(&c->write, &c->h.stream, &b, 1, on_written) < 0)
		conn_close(c);
}

static void respond_text(struct mconn *c, int status, const char *reason, const char *text)
{
	respond(c, status, reason, "text/plain; charset=utf-8", text, strlen(text));
}

static void handle_request(struct mconn *c)
{
	struct metrics_http *m = c->m;
	char msg[BT_MESSAGE_MAX], *text = NULL;
	const char *path;
	uint32_t status;
	size_t n, len = 0;

	if (m->tcp && !http_in_host_is_loopback(&c->req, m->port)) {
		respond_text(c, 400, "Bad Request",
			     "the Host header must name this address (127.0.0.1, localhost): only "
			     "local programs may read metrics\n");
		return;
	}
	if (c->req.method != HTTP_GET) {
		respond_text(c, 405, "Method Not Allowed", "GET /metrics\n");
		return;
	}
	if (http_in_path(&c->req, &path, &n) < 0 || n != 8 || memcmp(path, "/metrics", 8)) {
		respond_text(c, 404, "Not Found", "the metrics are at /metrics\n");
		return;
	}
	status = service_metrics(m->s, &c->peer, &text, &len, msg, sizeof(msg));
	if (status == BT_OK) {
		respond(c, 200, "OK", "application/openmetrics-text; version=1.0.0; charset=utf-8",
			text, len);
	} else {
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "\n");
		respond_text(c, status == BT_E_DENIED ? 403 : 500,
			     status == BT_E_DENIED ? "Forbidden" : "Internal Server Error", msg);
	}
	free(text);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct mconn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct mconn *c = s->data;
	size_t used = 0;

	if (n < 0) {
		conn_close(c);
		return;
	}
	while (!c->answered && used < (size_t)n) {
		used += http_in_feed(&c->req, buf->base + used, (size_t)n - used);
		if (c->req.status)
			respond_text(c, c->req.status, "Bad Request", "a malformed request\n");
		else if (c->req.complete)
			handle_request(c);
		else
			break;
	}
}

/* Who is on the other end: 0, or -1 with c closed. */
static int identify(struct mconn *c)
{
	struct metrics_http *m = c->m;
	struct sockaddr_storage peer, local;
	int plen = sizeof(peer), llen = sizeof(local), r;
	uv_os_fd_t fd;

	if (!m->tcp) {
		r = uv_fileno(&c->h.handle, &fd) < 0 ? -EBADF : peer_read(fd, &c->peer);
		snprintf(c->peer_text, sizeof(c->peer_text), "pid %d", (int)c->peer.pid);
	} else {
		c->peer.pid = -1;
		c->peer.gid = (gid_t)-1;
		r = uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&peer, &plen) < 0 ||
			    uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&local, &llen) < 0
			? -EIO
			: sockdiag_tcp_owner(m->nl_fd, &peer, &local, &c->peer.uid);
		snprintf(c->peer_text, sizeof(c->peer_text), "a TCP client");
	}
	if (r < 0) {
		log_warning("metrics_listen: cannot tell who connected (%s); closed", strerror(-r));
		conn_close(c);
		return -1;
	}
	/* Who may not read is answered at once, before the connection holds
	 * a slot for the deadline: anyone could take them all otherwise. */
	if (!service_peer_reads_metrics(m->s, &c->peer)) {
		counters.denials[DENY_ADMIN]++;
		if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)c->peer.uid))
			log_msg(LOG_WARNING, &(struct log_ctx){.uid = (long)c->peer.uid, .pid = -1},
				"metrics_listen: denied metrics to uid %u (%s)",
				(unsigned)c->peer.uid, c->peer_text);
		uv_timer_start(&c->timer, on_deadline, METRICS_HTTP_DEADLINE * 1000, 0);
		respond_text(c, 403, "Forbidden",
			     "metrics are for administrators and metrics_group: run the scraper "
			     "as root, as the daemon's user, or as a member of admin_group or "
			     "metrics_group\n");
		return -1;
	}
	if (uidcount_add(&m->per_uid, c->peer.uid, METRICS_HTTP_PER_UID) < 0) {
		if (ratelimit_log_uid(LOG_LIMIT_CLIENT, (long)c->peer.uid))
			log_msg(LOG_WARNING, &(struct log_ctx){.uid = (long)c->peer.uid, .pid = -1},
				"metrics_listen: uid %u has %d connections open already; closed "
				"%s",
				(unsigned)c->peer.uid, METRICS_HTTP_PER_UID, c->peer_text);
		conn_close(c);
		return -1;
	}
	c->counted = true;
	return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
	struct metrics_http *m = server->data;
	struct mconn *c;

	if (status < 0 || m->closing || !(c = calloc(1, sizeof(*c)))) {
		if (status < 0)
			log_warning("metrics_listen: accept failed: %s", uv_strerror(status));
		return;
	}
	c->m = m;
	m->refs++;
	if (m->tcp)
		uv_tcp_init(server->loop, &c->h.tcp);
	else
		uv_pipe_init(server->loop, &c->h.pipe, 0);
	uv_timer_init(server->loop, &c->timer);
	c->h.handle.data = c->timer.data = c;
	c->handles = 2;
	http_in_init(&c->req);
	list_add_tail(&m->conns, &c->node);
	m->n_conns++;
	counters.connections[LISTEN_METRICS]++;
	if (uv_accept(server, &c->h.stream) < 0) {
		conn_close(c);
		return;
	}
	counters.accepted[LISTEN_METRICS]++;
	if (m->n_conns > METRICS_HTTP_CONNS) {
		if (ratelimit_log_uid(LOG_LIMIT_CLIENT, -1))
			log_warning("metrics_listen: %d connections open already; closed a new "
				    "one",
				    METRICS_HTTP_CONNS);
		conn_close(c);
		return;
	}
	if (identify(c) < 0)
		return;
	uv_timer_start(&c->timer, on_deadline, METRICS_HTTP_DEADLINE * 1000, 0);
	if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
		conn_close(c);
}

static int listen_unix(uv_loop_t *loop, struct metrics_http *m, const struct config *cfg)
{
	gid_t gid = cfg->metrics_gid != (gid_t)-1 ? cfg->metrics_gid : cfg->admin_gid;
	int fd, r;

	/* Without either group only root and the daemon's user may read: the
	 * file is theirs alone, not the daemon's group's. */
	if ((r = unixsock_listen(cfg->metrics_path, "metrics_listen",
				 gid == (gid_t)-1 ? 0600 : 0660, gid, &fd, &m->dir_fd, &m->base)) <
	    0)
		return r;
	uv_pipe_init(loop, &m->l.pipe, 0);
	if ((r = uv_pipe_open(&m->l.pipe, fd)) < 0) {
		close(fd);
		return r;
	}
	snprintf(m->url, sizeof(m->url), "unix:%s", cfg->metrics_path);
	return 0;
}

static int listen_tcp(uv_loop_t *loop, struct metrics_http *m, const struct config *cfg)
{
	struct sockaddr_storage a;
	int len = sizeof(a), r;
	char host[INET6_ADDRSTRLEN];

	if ((m->nl_fd = sockdiag_open()) < 0) {
		log_error("metrics_listen: cannot open the kernel's socket diagnostics (%s), which "
			  "tell who connects: use a Unix socket path instead",
			  strerror(-m->nl_fd));
		return m->nl_fd;
	}
	uv_tcp_init(loop, &m->l.tcp);
	if ((r = uv_tcp_bind(&m->l.tcp, (const struct sockaddr *)&cfg->metrics_addr, 0)) < 0 ||
	    (r = uv_tcp_getsockname(&m->l.tcp, (struct sockaddr *)&a, &len)) < 0)
		return r;
	if (a.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		m->port = ntohs(in6->sin6_port);
		snprintf(m->url, sizeof(m->url), "http://[%s]:%u/metrics", host, m->port);
	} else {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		m->port = ntohs(in->sin_port);
		snprintf(m->url, sizeof(m->url), "http://%s:%u/metrics", host, m->port);
	}
	return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
	release(h->data);
}

int metrics_http_new(uv_loop_t *loop, struct service *s, struct metrics_http **ret)
{
	const struct config *cfg = service_config(s);
	struct metrics_http *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->s = s;
	m->tcp = cfg->metrics_path == NULL;
	m->dir_fd = m->nl_fd = -1;
	m->refs = 1;
	list_init(&m->conns);
	r = m->tcp ? listen_tcp(loop, m, cfg) : listen_unix(loop, m, cfg);
	m->l.handle.data = m;
	if (r == 0 && (r = uv_listen(&m->l.stream, 64, on_connection)) == 0) {
		log_info("metrics_listen: serving metrics at %s", m->url);
		*ret = m;
		return 0;
	}
	log_error("metrics_listen = %s: cannot listen: %s", cfg->metrics_listen,
		  r < -4095 ? strerror(-r) : uv_strerror(r));
	metrics_http_close(m);
	return r;
}

const char *metrics_http_url(const struct metrics_http *m)
{
	return m->url;
}

void metrics_http_close(struct metrics_http *m)
{
	struct mconn *c;

	if (!m)
		return;
	m->closing = true;
	while ((c = list_first(&m->conns, struct mconn, node)))
		conn_close(c);
	if (m->base && m->dir_fd >= 0)
		unlinkat(m->dir_fd, m->base, 0);
	if (m->dir_fd >= 0)
		close(m->dir_fd);
	if (m->nl_fd >= 0)
		close(m->nl_fd);
	m->dir_fd = m->nl_fd = -1;
	/* A listener never initialised (the Unix socket could not be made)
	 * has no handle to close. */
	if (m->l.handle.type != UV_UNKNOWN_HANDLE && !uv_is_closing(&m->l.handle))
		uv_close(&m->l.handle, on_listener_closed);
	else
		release(m);
}
