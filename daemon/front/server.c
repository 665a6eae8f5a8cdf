/* server.c - listening, accepting, peer credentials, buffered I/O. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "../lib/counters.h"
#include "../lib/fdstore.h"
#include "../lib/log.h"
#include "../lib/unixsock.h"
#include "../lib/ratelimit.h"
#include "../lib/uidcount.h"

/* Connections taken per wake-up, so a flood cannot starve the clients that
 * are already connected. */
#define ACCEPT_BATCH 64
/* How much to read at once. */
#define READ_CHUNK 16384
/* After EMFILE, pause accepting for this long rather than spin. */
#define ACCEPT_PAUSE_MS 1000
/* How often half-sent frames and idle connections are looked for; more
 * often when client_idle_timeout is short, so that it is kept to within a
 * quarter of itself, but never more often than SWEEP_MIN_MS. */
#define SWEEP_MS     5000
#define SWEEP_MIN_MS 250
struct server {
	uv_loop_t *loop;
	uv_poll_t listen_poll;
	uv_timer_t pause_timer;
	uv_timer_t sweep_timer;
	int listen_fd;
	bool created; /* we made the socket file and remove it at exit */
	int dir_fd;   /* created: the directory it is in (O_PATH) */
	char *base;   /* created: its name there */
	char *path;
	struct server_handlers h;
	int64_t (*now)(void *arg); /* NULL: the loop's clock */
	void *now_arg;
	uint32_t max_clients;
	uint32_t max_per_uid;
	int64_t idle_ms;
	uint64_t sweep_ms;
	struct uidcount per_uid; /* connections of each uid */
	unsigned n_conns;
	struct list conns;
	struct list resume; /* connections with answers to send or frames held back */
	uv_idle_t resume_idle;
	int pending_closes; /* handles whose close callback has not run */
	bool closing;
	bool pin_peers; /* keep each client's pidfd (server_options) */
};

static int64_t mono_ms(const struct server *s)
{
	return s->now ? s->now(s->now_arg) : (int64_t)uv_now(s->loop);
}

static void update_events(struct conn *c);
static void conn_close(struct conn *c);

/* No more requests are taken from c; it is closed once its output is
 * sent, or by the sweep SERVER_PARTIAL_TIMEOUT from now if its client does
 * not read it. */
static void mark_closing(struct conn *c)
{
	if (!c->closing)
		c->closing_since = mono_ms(c->srv);
	c->closing = true;
}

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	close(c->fd);
	bt_buf_free(&c->in);
	bt_buf_free(&c->out);
	free(c->peer.groups);
	attest_clear(&c->att);
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
	counters.connections[LISTEN_SOCKET]--;
	uidcount_del(&s->per_uid, c->peer.uid);
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
			c->active_at = mono_ms(c->srv);
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

/* Whether c may take another frame: it has room for another request
 * outstanding and its client reads its replies. */
static bool may_take(const struct conn *c)
{
	return !c->closed && !c->closing && c->n_pending < SERVER_PENDING_MAX &&
	       bt_buf_len(&c->out) < SERVER_TAKE_MAX;
}

static void on_resume(uv_idle_t *h);

/* Has c taken up on the next turn of the loop. */
static void resume_later(struct conn *c)
{
	struct server *s = c->srv;

	if (list_empty(&c->resume)) {
		list_add_tail(&s->resume, &c->resume);
		uv_idle_start(&s->resume_idle, on_resume);
	}
}

static void process_input(struct conn *c)
{
	struct server *s = c->srv;
	bool held = false;

	/* Frames are taken one at a time while the client may have more
	 * requests outstanding and its replies are being read. An answer given
	 * from inside a handler does not re-enter this loop (in_dispatch). */
	c->in_dispatch = true;
	for (;;) {
		struct bt_frame f;
		if (!may_take(c)) {
			held = bt_buf_len(&c->in) > 0;
			break;
		}
		int r = bt_frame_peek(&c->in, BT_REQUEST_MAX, &f);
		if (r == -EAGAIN) {
			c->partial_since =
			    bt_buf_len(&c->in) ? (c->partial_since ?: mono_ms(s)) : 0;
			break;
		}
		if (r < 0) {
			/* Broken framing: the stream cannot be resynchronised. Say
			 * why, then close. */
			bt_encode_error(&c->out, 0, BT_E_BAD_REQUEST,
					r == -EMSGSIZE ? "request frame larger than the protocol's "
							 "maximum; closing the connection"
						       : "malformed frame; closing the connection");
			if (ratelimit_log_uid(LOG_LIMIT_CLIENT, (long)c->peer.uid))
				log_msg(LOG_WARNING,
					&(struct log_ctx){.uid = c->peer.uid, .pid = c->peer.pid},
					"client pid %d uid %u: %s; connection closed",
					(int)c->peer.pid, (unsigned)c->peer.uid,
					r == -EMSGSIZE ? "oversized frame" : "malformed frame");
			mark_closing(c);
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
	if (c->closed)
		return;
	conn_flush(c);
	/* The loop stopped for a full output, and the flush has drained it
	 * (the client reads as fast as we write): no more input may come to
	 * wake us for the frames still waiting. */
	if (held && !c->closed && may_take(c))
		resume_later(c);
}

/* Reads what the client sent. On an attested connection the kernel says
 * which process sent each read (SO_PASSCRED: a read never spans two
 * senders): bytes from any process but the one attested, which was handed
 * the connection, mark it lent, and program rules no longer pass on it. */
static ssize_t read_chunk(struct conn *c, uint8_t *buf, size_t len)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	ssize_t n;

	if (c->att.err || c->att.pidfd < 0)
		return recv(c->fd, buf, len, MSG_DONTWAIT);
	msg.msg_control = ctl.buf;
	msg.msg_controllen = sizeof(ctl.buf);
	if ((n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) <= 0)
		return n;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
			struct ucred u;
			memcpy(&u, CMSG_DATA(cm), sizeof(u));
			if (u.pid != c->att.pid && !c->att.lent_to)
				c->att.lent_to = u.pid ? u.pid : -1;
			return n;
		}
	if (!c->att.lent_to)
		c->att.lent_to = -1; /* the sender is unknown */
	return n;
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
	/* The client hung up while its requests were at the limit (a
	 * connection with 64 watches, say): nothing more will be read. */
	if ((events & UV_DISCONNECT) && !(events & UV_READABLE)) {
		conn_close(c);
		return;
	}
	if (events & UV_READABLE) {
		/* Read into the stack and keep only what is unprocessed, so that an
		 * idle connection holds no buffer at all. */
		uint8_t chunk[READ_CHUNK];
		size_t room = c->in.max - bt_buf_len(&c->in);
		ssize_t n = read_chunk(c, chunk, room < sizeof(chunk) ? room : sizeof(chunk));
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
			c->active_at = mono_ms(c->srv);
		}
	}
	/* Frames read while the output was full wait in c->in: take them up
	 * as soon as it has drained, for the client may have nothing more to
	 * send that would wake us. */
	if (bt_buf_len(&c->in) && may_take(c)) {
		process_input(c);
		return;
	}
	if (!c->closed)
		update_events(c);
}

static void update_events(struct conn *c)
{
	int ev = 0;

	if (c->closed)
		return;
	/* Read only while we are willing to take another frame; a hangup is
	 * noticed either way. */
	if (may_take(c) && bt_buf_len(&c->in) < BT_REQUEST_MAX + READ_CHUNK)
		ev |= UV_READABLE;
	ev |= UV_DISCONNECT;
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
	mark_closing(c);
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
	c->n_pending--;
	conn_answered(c);
}

void conn_answered(struct conn *c)
{
	c->active_at = mono_ms(c->srv);
	if (c->in_dispatch || c->closed)
		return; /* the loop taking frames goes on by itself */
	/* Answers come from inside other modules' callbacks (a fetch ending, a
	 * reload rebinding the cache): going on here could start a reload
	 * inside a reload, or close the connection under its caller. */
	resume_later(c);
}

void conn_close_later(struct conn *c)
{
	if (c->closed || c->closing)
		return;
	mark_closing(c);
	if (!c->in_dispatch)
		resume_later(c);
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

/* Counts a new connection of peer p against its uid's quota; when the uid
 * holds max_clients_per_uid already, tells the client why, closes fd and
 * returns -EDQUOT (or -ENOMEM). */
static int refuse_over_quota(struct server *s, int fd, const struct peer *p)
{
	char why[BT_MESSAGE_MAX];
	int r = uidcount_add(&s->per_uid, p->uid, s->max_per_uid);

	if (r == -ENOMEM) {
		close(fd);
		return r;
	}
	if (r < 0) {
		snprintf(why, sizeof(why),
			 "uid %u has max_clients_per_uid (%u) connections to batchtokd already: "
			 "close some, or an administrator can raise max_clients_per_uid",
			 (unsigned)p->uid, s->max_per_uid);
		if (ratelimit_log_uid(LOG_LIMIT_CLIENT, (long)p->uid))
			log_msg(LOG_WARNING, &(struct log_ctx){.uid = p->uid, .pid = p->pid},
				"refused a connection of pid %d uid %u: it has "
				"max_clients_per_uid (%u) already",
				(int)p->pid, (unsigned)p->uid, s->max_per_uid);
		refuse(fd, why);
	}
	return r;
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
		if (peer_read(fd, &c->peer) < 0) {
			/* Without the peer's identity nothing can be authorised. */
			log_warning("closed a connection whose peer credentials could not be read");
			free(c);
			close(fd);
			continue;
		}
		if (refuse_over_quota(s, fd, &c->peer) < 0) {
			free(c->peer.groups);
			free(c);
			continue;
		}
		/* Which program connected: once, here, off the requests' path.
		 * What cannot be attested is recorded and decided on by the
		 * identities that need it. */
		if (attest_peer(fd, c->peer.pid, &c->att) < 0 ||
		    uv_poll_init(s->loop, &c->poll, fd) < 0) {
			uidcount_del(&s->per_uid, c->peer.uid);
			attest_clear(&c->att);
			free(c->peer.groups);
			free(c);
			close(fd);
			continue;
		}
		c->peer.att = &c->att;
		/* Its pidfd, and the sender of every read (SO_PASSCRED, from
		 * the listening socket), only while program rules need them: a
		 * descriptor more a connection, and credentials on every read,
		 * are what they cost. */
		if (!s->pin_peers && c->att.pidfd >= 0) {
			close(c->att.pidfd);
			c->att.pidfd = -1;
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
		counters.connections[LISTEN_SOCKET]++;
		counters.accepted[LISTEN_SOCKET]++;
		c->active_at = mono_ms(s);
		update_events(c);
	}
}

void server_sweep(struct server *s)
{
	int64_t now = mono_ms(s);
	struct list *n, *tmp;

	list_for_each_safe(n, tmp, &s->conns)
	{
		struct conn *c = list_entry(n, struct conn, node);
		if (c->partial_since && now - c->partial_since > SERVER_PARTIAL_TIMEOUT * 1000) {
			if (ratelimit_log_uid(LOG_LIMIT_CLIENT, (long)c->peer.uid))
				log_msg(LOG_WARNING,
					&(struct log_ctx){.uid = c->peer.uid, .pid = c->peer.pid},
					"client pid %d uid %u sent half a request and stopped; "
					"closed",
					(int)c->peer.pid, (unsigned)c->peer.uid);
			conn_close(c);
		} else if (c->closing_since &&
			   now - c->closing_since > SERVER_PARTIAL_TIMEOUT * 1000) {
			/* Its last words were not read either. */
			conn_close(c);
		} else if (c->n_pending == 0 && now - c->active_at >= s->idle_ms) {
			/* Nothing waits for an answer (a subscription, once there
			 * is one, counts as waiting): the client holds a slot for
			 * nothing. */
			log_msg(LOG_DEBUG,
				&(struct log_ctx){.uid = c->peer.uid, .pid = c->peer.pid},
				"closed the connection of pid %d uid %u, idle for "
				"client_idle_timeout",
				(int)c->peer.pid, (unsigned)c->peer.uid);
			conn_close(c);
		}
	}
}

static void on_sweep(uv_timer_t *t)
{
	server_sweep(t->data);
}

int server_new(uv_loop_t *loop, const struct server_options *opts, const struct server_handlers *h,
	       struct server **ret)
{
	struct server *s = calloc(1, sizeof(*s));
	char **names = NULL;
	int n, r, fd = -1;

	if (!s) {
		log_error("out of memory starting the socket");
		return -ENOMEM;
	}
	/* What systemd passed: the socket, and state from the descriptor
	 * store (fdstore.h), which its reader has taken already. */
	n = sd_listen_fds_with_names(1, &names);
	for (int i = 0, k = 0; i < n; i++) {
		if (names && fdstore_is_state(names[i])) {
			close(SD_LISTEN_FDS_START + i); /* its reader is done with it */
			continue;
		}
		if (k++ == 0)
			fd = SD_LISTEN_FDS_START + i;
		else
			fd = -2;
	}
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (fd == -2) {
		log_error("systemd passed more than one socket; batchtokd takes one: list one "
			  "ListenStream= in batchtokd.socket");
		free(s);
		return -E2BIG;
	}
	if (fd >= 0) {
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			log_error("the socket systemd passed is not a listening Unix stream "
				  "socket: use ListenStream=PATH in batchtokd.socket");
			free(s);
			return -ENOTSOCK;
		}
		if ((r = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, r | O_NONBLOCK) < 0) {
			r = -errno;
			log_error("cannot use the socket systemd passed: %s", strerror(-r));
			free(s);
			return r;
		}
		log_info("using the socket passed by systemd");
	} else {
		if ((r = unixsock_listen(opts->path, "socket", opts->mode, opts->gid, &fd,
					 &s->dir_fd, &s->base)) < 0) {
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
	s->now = opts->now;
	s->now_arg = opts->now_arg;
	list_init(&s->resume);
	uv_idle_init(loop, &s->resume_idle);
	s->resume_idle.data = s;
	uv_timer_init(loop, &s->pause_timer);
	s->pause_timer.data = s;
	uv_timer_init(loop, &s->sweep_timer);
	s->sweep_timer.data = s;
	if ((r = uv_poll_start(&s->listen_poll, UV_READABLE, on_listen)) < 0) {
		/* Every handle is closed and s freed in their close callbacks. */
		server_close(s);
		return r;
	}
	server_set_limits(s, opts);
	*ret = s;
	return 0;
}

void server_set_limits(struct server *s, const struct server_options *opts)
{
	uint64_t sweep;

	/* Program rules from now on: connections made without a pidfd that
	 * are idle or only watch are closed, so that their clients come back
	 * pinned (libbatchtok and the Python client reconnect and watch again
	 * by themselves); events not yet sent are lost, and the new watch
	 * starts with the current token. */
	if (opts->pin_peers != s->pin_peers) {
		/* Accepted connections take it from the listening socket at
		 * once: what a client sends between accept() and a setsockopt()
		 * of our own would carry no sender (read_chunk()). */
		int on = opts->pin_peers;
		if (setsockopt(s->listen_fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) < 0)
			log_warning("cannot %s senders' credentials on the socket: %s",
				    on ? "ask for" : "stop asking for", strerror(errno));
	}
	if (opts->pin_peers && !s->pin_peers) {
		struct list *n, *tmp;
		list_for_each_safe(n, tmp, &s->conns)
		{
			struct conn *c = list_entry(n, struct conn, node);
			/* Not the one whose RELOAD this is, nor one with an
			 * answer still to send. */
			if (c->att.pidfd < 0 && !c->att.err && !c->in_dispatch &&
			    ((c->n_pending == 0 && bt_buf_len(&c->out) == 0) ||
			     (c->n_watches && c->n_pending == c->n_watches)))
				conn_close(c);
		}
	}
	s->pin_peers = opts->pin_peers;
	s->max_clients = opts->max_clients;
	s->max_per_uid = opts->max_clients_per_uid;
	s->idle_ms = (int64_t)opts->idle_timeout * 1000;
	sweep = (uint64_t)s->idle_ms / 4;
	sweep = sweep < SWEEP_MIN_MS ? SWEEP_MIN_MS : sweep > SWEEP_MS ? SWEEP_MS : sweep;
	if (sweep != s->sweep_ms) {
		s->sweep_ms = sweep;
		uv_timer_start(&s->sweep_timer, on_sweep, sweep, sweep);
	}
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
		if (s->created)
			close(s->dir_fd);
		free(s->base);
		uidcount_free(&s->per_uid);
		free(s->path);
		free(s);
	}
}

/* Sends what c->out holds as far as the socket takes it now; the daemon is
 * stopping and waits for no one. */
static void send_now(struct conn *c)
{
	while (bt_buf_len(&c->out) > 0) {
		ssize_t n = send(c->fd, bt_buf_ptr(&c->out), bt_buf_len(&c->out),
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			bt_buf_consume(&c->out, (size_t)n);
		else if (n < 0 && errno == EINTR)
			continue;
		else
			break;
	}
}

void server_close(struct server *s)
{
	struct conn *c;

	if (!s)
		return;
	s->closing = true;
	while ((c = list_first(&s->conns, struct conn, node))) {
		/* Clients waiting for an answer are told why none comes. */
		if (c->n_pending && s->h.stopping) {
			s->h.stopping(s->h.arg, c);
			send_now(c);
		}
		conn_close(c);
	}
	/* By name in the directory checked at start: a path swapped since
	 * cannot redirect it. */
	if (s->created)
		unlinkat(s->dir_fd, s->base, 0);
	s->pending_closes = 4;
	uv_close((uv_handle_t *)&s->resume_idle, on_server_handle_closed);
	uv_close((uv_handle_t *)&s->listen_poll, on_server_handle_closed);
	uv_close((uv_handle_t *)&s->pause_timer, on_server_handle_closed);
	uv_close((uv_handle_t *)&s->sweep_timer, on_server_handle_closed);
}
