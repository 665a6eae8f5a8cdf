/* server.c - listening, accepting, peer credentials, buffered I/O. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "../lib/log.h"

/* Connections taken per wake-up, so a flood cannot starve the clients that
 * are already connected. */
#define ACCEPT_BATCH 64
/* How much to read at once. */
#define READ_CHUNK 16384
/* Supplementary groups read from the kernel at most. */
#define PEER_GROUPS_MAX 65536
/* After EMFILE, pause accepting for this long rather than spin. */
#define ACCEPT_PAUSE_MS 1000
/* How often half-sent frames are looked for. */
#define SWEEP_MS 5000
/* The directory the daemon makes for its socket: anyone may pass through;
 * the socket's own mode and group decide who may connect. */
#define SOCKET_DIR_MODE 0755

struct server {
	uv_loop_t *loop;
	uv_poll_t listen_poll;
	uv_timer_t pause_timer;
	uv_timer_t sweep_timer;
	int listen_fd;
	bool created; /* we made the socket file and remove it at exit */
	char *path;
	struct server_handlers h;
	uint32_t max_clients;
	unsigned n_conns;
	struct list conns;
	struct list resume; /* connections with answers to send or frames held back */
	uv_idle_t resume_idle;
	int pending_closes; /* handles whose close callback has not run */
	bool closing;
};

static int64_t mono_ms(uv_loop_t *loop)
{
	return (int64_t)uv_now(loop);
}

static void update_events(struct conn *c);
static void conn_close(struct conn *c);

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	close(c->fd);
	bt_buf_free(&c->in);
	bt_buf_free(&c->out);
	free(c->peer.groups);
	free(c);
}

static void conn_close(struct conn *c)
{
	struct server *s = c->srv;

	if (c->closed)
		return;
	c->closed = true;
	s->h.closed(s->h.arg, c);
	list_del(&c->node);
	list_del(&c->resume);
	s->n_conns--;
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, on_conn_closed);
}

/* Writes as much as the socket takes; 0, or -1 if the connection was closed. */
static int write_out(struct conn *c)
{
	while (bt_buf_len(&c->out) > 0) {
		ssize_t n = send(c->fd, bt_buf_ptr(&c->out), bt_buf_len(&c->out),
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			bt_buf_consume(&c->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		conn_close(c);
		return -1;
	}
	if (c->closing) {
		conn_close(c);
		return -1;
	}
	bt_buf_free(&c->out); /* drained: idle connections keep no buffer */
	return 0;
}

static void process_input(struct conn *c)
{
	struct server *s = c->srv;

	/* Frames are taken one at a time while the client may have more
	 * requests outstanding and its replies are being read. An answer given
	 * from inside a handler does not re-enter this loop (in_dispatch). */
	c->in_dispatch = true;
	while (!c->closed && !c->closing && c->n_pending < SERVER_PENDING_MAX &&
	       bt_buf_len(&c->out) < SERVER_OUT_MAX / 2) {
		struct bt_frame f;
		int r = bt_frame_peek(&c->in, BT_REQUEST_MAX, &f);
		if (r == -EAGAIN) {
			c->partial_since =
			    bt_buf_len(&c->in) ? (c->partial_since ?: mono_ms(s->loop)) : 0;
			break;
		}
		if (r < 0) {
			/* Broken framing: the stream cannot be resynchronised. Say
			 * why, then close. */
			bt_encode_error(&c->out, 0, BT_E_BAD_REQUEST,
					r == -EMSGSIZE ? "request frame larger than the protocol's "
							 "maximum; closing the connection"
						       : "malformed frame; closing the connection");
			log_msg(LOG_WARNING,
				&(struct log_ctx){.uid = c->peer.uid, .pid = c->peer.pid},
				"client pid %d uid %u: %s; connection closed", (int)c->peer.pid,
				(unsigned)c->peer.uid,
				r == -EMSGSIZE ? "oversized frame" : "malformed frame");
			c->closing = true;
			break;
		}
		c->partial_since = 0;
		s->h.frame(s->h.arg, c, &f);
		if (c->closed)
			return;
		bt_buf_consume(&c->in, f.size);
	}
	c->in_dispatch = false;
	if (bt_buf_len(&c->in) == 0)
		bt_buf_free(&c->in);
	if (!c->closed)
		conn_flush(c);
}

static void on_conn_io(uv_poll_t *p, int status, int events)
{
	struct conn *c = p->data;

	if (status < 0) {
		conn_close(c);
		return;
	}
	if ((events & UV_WRITABLE) && write_out(c) < 0)
		return;
	if (events & UV_READABLE) {
		/* Read into the stack and keep only what is unprocessed, so that an
		 * idle connection holds no buffer at all. */
		uint8_t chunk[READ_CHUNK];
		size_t room = c->in.max - bt_buf_len(&c->in);
		ssize_t n =
		    recv(c->fd, chunk, room < sizeof(chunk) ? room : sizeof(chunk), MSG_DONTWAIT);
		if (n == 0 ||
		    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			conn_close(c);
			return;
		}
		if (n > 0) {
			if (bt_buf_put(&c->in, chunk, (size_t)n) < 0) {
				conn_close(c);
				return;
			}
			process_input(c);
			return;
		}
	}
	if (!c->closed)
		update_events(c);
}

static void update_events(struct conn *c)
{
	int ev = 0;

	if (c->closed)
		return;
	/* Read only while we are willing to take another frame. */
	if (!c->closing && c->n_pending < SERVER_PENDING_MAX &&
	    bt_buf_len(&c->out) < SERVER_OUT_MAX / 2 &&
	    bt_buf_len(&c->in) < BT_REQUEST_MAX + READ_CHUNK)
		ev |= UV_READABLE;
	if (bt_buf_len(&c->out) > 0)
		ev |= UV_WRITABLE;
	if (ev == c->events)
		return;
	c->events = ev;
	if (ev)
		uv_poll_start(&c->poll, ev, on_conn_io);
	else
		uv_poll_stop(&c->poll);
}

void conn_flush(struct conn *c)
{
	if (c->closed || write_out(c) < 0)
		return;
	update_events(c);
}

void conn_close_after_flush(struct conn *c)
{
	c->closing = true;
	conn_flush(c);
}

static void on_resume(uv_idle_t *h)
{
	struct server *s = h->data;
	struct conn *c;

	while ((c = list_first(&s->resume, struct conn, resume))) {
		list_del(&c->resume);
		/* Frames held back by the pending limit can go on now. */
		if (bt_buf_len(&c->in))
			process_input(c);
		else
			conn_flush(c);
	}
	uv_idle_stop(h);
}

void conn_request_done(struct conn *c)
{
	struct server *s = c->srv;

	c->n_pending--;
	if (c->in_dispatch || c->closed)
		return; /* the loop taking frames goes on by itself */
	/* Answers come from inside other modules' callbacks (a fetch ending, a
	 * reload rebinding the cache): going on here could start a reload
	 * inside a reload, or close the connection under its caller. */
	if (list_empty(&c->resume)) {
		list_add_tail(&s->resume, &c->resume);
		uv_idle_start(&s->resume_idle, on_resume);
	}
}

static int read_peer(int fd, struct peer *p)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t *groups = NULL;
	socklen_t glen = 64 * sizeof(gid_t);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
		return -errno ?: -EIO;
	for (;;) {
		gid_t *g = realloc(groups, glen ? glen : sizeof(gid_t));
		if (!g) {
			free(groups);
			return -ENOMEM;
		}
		groups = g;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
			break;
		if (errno != ERANGE || glen > PEER_GROUPS_MAX * sizeof(gid_t)) {
			int e = errno;
			free(groups);
			return -e;
		}
	}
	p->uid = cred.uid;
	p->gid = cred.gid;
	p->pid = cred.pid;
	p->groups = groups;
	p->n_groups = (int)(glen / sizeof(gid_t));
	return 0;
}

static void refuse(int fd, const char *why)
{
	struct bt_buf b;

	/* Best effort: a client that cannot take a short error frame right away
	 * just sees the connection close. */
	bt_buf_init(&b, 1024);
	if (bt_encode_error(&b, 0, BT_E_BUSY, why) == 0)
		(void)!send(fd, bt_buf_ptr(&b), bt_buf_len(&b), MSG_NOSIGNAL | MSG_DONTWAIT);
	bt_buf_free(&b);
	close(fd);
}

static void on_listen(uv_poll_t *p, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
	struct server *s = t->data;

	if (!s->closing)
		uv_poll_start(&s->listen_poll, UV_READABLE, on_listen);
}

static void on_listen(uv_poll_t *p, int status, int events)
{
	struct server *s = p->data;

	(void)events;
	if (status < 0)
		return;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warning("cannot accept connections: %s; pausing for %d ms "
					    "(raise LimitNOFILE= or lower max_clients)",
					    strerror(errno), ACCEPT_PAUSE_MS);
				uv_poll_stop(&s->listen_poll);
				uv_timer_start(&s->pause_timer, on_pause_over, ACCEPT_PAUSE_MS, 0);
			}
			return;
		}
		if (s->n_conns >= s->max_clients) {
			refuse(fd, "batchtokd has max_clients connections already; try again "
				   "later or raise max_clients");
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		if (read_peer(fd, &c->peer) < 0) {
			/* Without the peer's identity nothing can be authorised. */
			log_warning("closed a connection whose peer credentials could not be read");
			free(c);
			close(fd);
			continue;
		}
		if (uv_poll_init(s->loop, &c->poll, fd) < 0) {
			free(c->peer.groups);
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->srv = s;
		c->poll.data = c;
		bt_buf_init(&c->in, BT_REQUEST_MAX + READ_CHUNK);
		bt_buf_init(&c->out, SERVER_OUT_MAX);
		list_init(&c->pendings);
		list_init(&c->resume);
		list_add_tail(&s->conns, &c->node);
		s->n_conns++;
		update_events(c);
	}
}

static void on_sweep(uv_timer_t *t)
{
	struct server *s = t->data;
	int64_t now = mono_ms(s->loop);
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &s->conns)
	{
		struct conn *c = list_entry(n, struct conn, node);
		if (c->partial_since && now - c->partial_since > SERVER_PARTIAL_TIMEOUT * 1000) {
			log_msg(LOG_WARNING,
				&(struct log_ctx){.uid = c->peer.uid, .pid = c->peer.pid},
				"client pid %d uid %u sent half a request and stopped; closed",
				(int)c->peer.pid, (unsigned)c->peer.uid);
			conn_close(c);
		}
	}
}

static int mkdir_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;
	mode_t mask;
	int r;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	/* Only the last component is created: the runtime directory above it
	 * belongs to systemd or the user. */
	/* The daemon's umask is 0077; those the socket's own mode admits must
	 * be able to reach it. The mode is given at creation, not changed by
	 * path afterwards: no later swap of a path component can redirect it. */
	mask = umask(0022);
	r = mkdir(dir, SOCKET_DIR_MODE) < 0 && errno != EEXIST ? -errno : 0;
	umask(mask);
	return r;
}

/* Binds path, replacing a stale socket file but never a live daemon's. */
static int bind_socket(const struct server_options *o, int *ret)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	if (strlen(o->path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, o->path, strlen(o->path) + 1);
	if ((r = mkdir_parent(o->path)) < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int probe;
		if (errno != EADDRINUSE) {
			r = -errno;
			close(fd);
			return r;
		}
		/* A socket file exists: if a daemon answers there, leave it. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		r = probe >= 0 ? connect(probe, (struct sockaddr *)&sa, sizeof(sa)) : -1;
		if (probe >= 0)
			close(probe);
		if (r == 0) {
			close(fd);
			return -EADDRINUSE;
		}
		unlink(o->path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			r = -errno;
			close(fd);
			return r;
		}
	}
	if (chmod(o->path, o->mode) < 0 ||
	    (o->gid != (gid_t)-1 && chown(o->path, (uid_t)-1, o->gid) < 0) ||
	    listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		close(fd);
		unlink(o->path);
		return r;
	}
	*ret = fd;
	return 0;
}

int server_new(uv_loop_t *loop, const struct server_options *opts, const struct server_handlers *h,
	       struct server **ret)
{
	struct server *s = calloc(1, sizeof(*s));
	int n, r, fd = -1;

	if (!s)
		return -ENOMEM;
	n = sd_listen_fds(1);
	if (n > 1) {
		free(s);
		return -E2BIG;
	}
	if (n == 1) {
		fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			free(s);
			return -ENOTSOCK;
		}
		if ((r = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, r | O_NONBLOCK) < 0) {
			free(s);
			return -errno;
		}
		log_info("using the socket passed by systemd");
	} else {
		if ((r = bind_socket(opts, &fd)) < 0) {
			free(s);
			return r;
		}
		s->created = true;
		log_info("listening on %s", opts->path);
	}
	/* The poll is the one handle whose set-up can fail: it comes first, so
	 * that nothing needs closing when it does. */
	if (!(s->path = strdup(opts->path ? opts->path : "")) ||
	    (r = uv_poll_init(loop, &s->listen_poll, fd)) < 0) {
		r = s->path ? r : -ENOMEM;
		if (s->created && opts->path)
			unlink(opts->path);
		close(fd);
		free(s->path);
		free(s);
		return r;
	}
	s->listen_poll.data = s;
	s->loop = loop;
	list_init(&s->conns);
	s->listen_fd = fd;
	s->h = *h;
	list_init(&s->resume);
	uv_idle_init(loop, &s->resume_idle);
	s->resume_idle.data = s;
	s->max_clients = opts->max_clients;
	uv_timer_init(loop, &s->pause_timer);
	s->pause_timer.data = s;
	uv_timer_init(loop, &s->sweep_timer);
	s->sweep_timer.data = s;
	if ((r = uv_poll_start(&s->listen_poll, UV_READABLE, on_listen)) < 0) {
		/* Every handle is closed and s freed in their close callbacks. */
		server_close(s);
		return r;
	}
	uv_timer_start(&s->sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
	*ret = s;
	return 0;
}

void server_set_max_clients(struct server *s, uint32_t max_clients)
{
	s->max_clients = max_clients;
}

unsigned server_client_count(const struct server *s)
{
	return s->n_conns;
}

static void on_server_handle_closed(uv_handle_t *h)
{
	struct server *s = h->data;

	if (--s->pending_closes == 0) {
		close(s->listen_fd);
		free(s->path);
		free(s);
	}
}

void server_close(struct server *s)
{
	if (!s)
		return;
	s->closing = true;
	while (!list_empty(&s->conns))
		conn_close(list_entry(s->conns.next, struct conn, node));
	if (s->created && s->path && *s->path)
		unlink(s->path);
	s->pending_closes = 4;
	uv_close((uv_handle_t *)&s->resume_idle, on_server_handle_closed);
	uv_close((uv_handle_t *)&s->listen_poll, on_server_handle_closed);
	uv_close((uv_handle_t *)&s->pause_timer, on_server_handle_closed);
	uv_close((uv_handle_t *)&s->sweep_timer, on_server_handle_closed);
}
