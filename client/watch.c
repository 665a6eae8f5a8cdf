/* watch.c - a watch: one subscription to a token on a connection of its
 * own, made anew when the daemon restarts, behind one descriptor that any
 * event loop can poll. */
#include "batchtok.h"
#include "daemon_conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../proto/msg.h"

/* While the daemon cannot be reached: the first retry soon, since a restart
 * takes a moment, then doubling up to a bound that asks a daemon that stays
 * down no more than once per 5 s. */
#define RETRY_FIRST_MS 100
#define RETRY_MAX_MS   5000
/* The WATCH's request id: one request per connection (HELLO's is 0). */
#define WATCH_ID 1
/* Bytes asked of recv() at a time; a frame may take many. */
#define READ_CHUNK 16384

enum state {
	W_DOWN,	    /* no connection: the next attempt is at retry_at */
	W_HELLO,    /* HELLO sent: its reply says whether WATCH is answered */
	W_WATCHING, /* WATCH sent: events come */
};

struct batchtok_watch {
	int ep;		    /* epoll set: the descriptor callers poll */
	int timer;	    /* timerfd in ep: an attempt is due, or frames wait in in */
	int fd;		    /* the connection, in ep; -1 while W_DOWN */
	uint32_t fd_events; /* what ep waits on fd for */
	enum state state;
	struct bt_token_query query; /* what to watch: strings owned */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int64_t retry_at;  /* CLOCK_MONOTONIC ms of the next attempt (W_DOWN) */
	int retry_ms;	   /* the wait after the next failure; 0: the last subscription worked */
	bool resubscribed; /* the next token is a new subscription's first */
	char *last_token;  /* the last token delivered, so as not to deliver it twice: a secret */
	int64_t last_expires;
	int ended; /* 0, or the errno the watch ended with */
	char daemon_version[64];
	struct bt_buf out;
	struct bt_buf in;
	char error[512];
};

static int fail(batchtok_watch *w, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(batchtok_watch *w, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	return r;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The wait before the next attempt after a failed one, growing. */
static int next_backoff(batchtok_watch *w)
{
	int d = w->retry_ms ? w->retry_ms : RETRY_FIRST_MS;

	w->retry_ms = d < RETRY_MAX_MS / 2 ? d * 2 : RETRY_MAX_MS;
	return d;
}

/* The wait after a connection that was lost: none if its subscription
 * worked (a restart: the new daemon may be up already), else the backoff,
 * so that a daemon that accepts and closes at once is not asked in a loop. */
static int lost_delay(batchtok_watch *w)
{
	if (w->retry_ms)
		return next_backoff(w);
	w->retry_ms = RETRY_FIRST_MS;
	return 0;
}

static void drop_connection(batchtok_watch *w, int delay_ms)
{
	if (w->fd >= 0) {
		epoll_ctl(w->ep, EPOLL_CTL_DEL, w->fd, NULL);
		close(w->fd);
	}
	w->fd = -1;
	w->fd_events = 0;
	w->state = W_DOWN;
	bt_buf_reset(&w->out);
	bt_buf_reset(&w->in);
	w->retry_at = now_ms() + delay_ms;
}

/* The watch is over: this errno from now on. */
static int end(batchtok_watch *w, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int end(batchtok_watch *w, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	drop_connection(w, 0);
	w->ended = r;
	return r;
}

/* The stream is out of step: a new connection, after a while. */
static int broken(batchtok_watch *w, const char *what)
{
	drop_connection(w, next_backoff(w));
	return fail(w, -EPROTO, "batchtokd sent %s: connecting anew", what);
}

static int start_connection(batchtok_watch *w)
{
	struct bt_hello hello = {BT_PROTO_VERSION_MIN, BT_PROTO_VERSION_MAX};
	struct epoll_event ev = {.events = EPOLLIN};
	int fd = -1, r;

	r = daemon_conn_open(w->path, SOCK_NONBLOCK, &fd, w->error, sizeof(w->error));
	if (r < 0) {
		w->retry_at = now_ms() + next_backoff(w);
		return r;
	}
	ev.data.fd = fd;
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = -errno;
		close(fd);
		w->retry_at = now_ms() + next_backoff(w);
		return fail(w, r, "cannot wait for batchtokd's answers: %s", strerror(-r));
	}
	w->fd = fd;
	w->fd_events = EPOLLIN;
	/* WATCH is newer than version 1: only the HELLO reply says whether this
	 * daemon answers it, so it waits for that. */
	if ((r = bt_encode_hello(&w->out, 0, &hello)) < 0) {
		drop_connection(w, next_backoff(w));
		return fail(w, r, "cannot encode a request: %s", strerror(-r));
	}
	w->state = W_HELLO;
	return 0;
}

/* Sends what is queued, as far as the socket takes it now. -ECONNRESET: the
 * connection is gone. */
static int flush(batchtok_watch *w)
{
	while (bt_buf_len(&w->out) > 0) {
		ssize_t n = send(w->fd, bt_buf_ptr(&w->out), bt_buf_len(&w->out),
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			bt_buf_consume(&w->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0; /* the rest when the socket takes it: EPOLLOUT */
		return -ECONNRESET;
	}
	return 0;
}

/* Reads what the socket holds, up to a frame's maximum buffered. 1: read
 * something; -EAGAIN: nothing there; -ECONNRESET: the connection is gone. */
static int fill(batchtok_watch *w)
{
	size_t room = BT_REPLY_MAX - bt_buf_len(&w->in);
	uint8_t *p;
	ssize_t n;

	if (room > READ_CHUNK)
		room = READ_CHUNK;
	/* A whole frame fits: bt_frame_peek() found one or refused its size. */
	if (room == 0 || bt_buf_reserve(&w->in, room, &p) < 0)
		return -ENOMEM;
	n = recv(w->fd, p, room, MSG_DONTWAIT);
	if (n > 0) {
		bt_buf_commit(&w->in, (size_t)n);
		return 1;
	}
	if (n < 0 && errno == EINTR)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -EAGAIN;
	return -ECONNRESET;
}

/* The ERROR that ends the watch's subscription, or (id 0) the connection. */
static int take_end(batchtok_watch *w, struct bt_frame *f)
{
	char msg[400]; /* leaves room in w->error for the sentence around it */
	struct bt_error e;
	uint32_t id = f->id;
	int r;

	if (bt_decode_error(&f->body, &e) < 0)
		return broken(w, "a malformed error reply");
	bt_buf_consume(&w->in, f->size);
	r = daemon_conn_status_errno(e.status);
	snprintf(msg, sizeof(msg), "%s", *e.message ? e.message : bt_status_name(e.status));
	bt_error_clear(&e);
	if (id != WATCH_ID) {
		/* No protocol version in common: nothing to try again. */
		if (r == -EPROTO)
			return end(w, r, "%s", msg);
		/* The daemon closes the connection and says why (max_clients). */
		drop_connection(w, next_backoff(w));
		return fail(w, r, "%s", msg);
	}
	switch (r) {
	case -EHOSTUNREACH:
		/* The daemon is stopping: a new one will come on the same socket. */
		drop_connection(w, lost_delay(w));
		return -EAGAIN;
	case -EBUSY:
		/* Dropped as too slow a reader. The memory that protects is the
		 * daemon's; this program still wants its tokens, and the next
		 * one of a new subscription is the current one. */
		drop_connection(w, next_backoff(w));
		return fail(w, -EBUSY,
			    "batchtokd dropped the watch (%s): subscribing anew; tokens sent in "
			    "between were not seen",
			    msg);
	}
	return end(w, r, "%s", msg);
}

static int take_hello(batchtok_watch *w, struct bt_frame *f)
{
	struct bt_hello_reply h;
	const char *v;
	int r;

	if (f->type == BT_ERROR)
		return take_end(w, f);
	if (f->type != (BT_HELLO | BT_REPLY) || bt_decode_hello_reply(&f->body, &h) < 0)
		return broken(w, "a malformed HELLO reply");
	bt_buf_consume(&w->in, f->size);
	v = strncmp(h.server, "batchtokd ", 10) == 0 ? h.server + 10 : h.server;
	snprintf(w->daemon_version, sizeof(w->daemon_version), "%s", v);
	r = bt_requests_has(bt_hello_requests(&h), BT_WATCH);
	bt_hello_reply_clear(&h);
	if (!r)
		return end(w, -EOPNOTSUPP,
			   "WATCH is not supported by this batchtokd (%s): upgrade batchtokd",
			   w->daemon_version);
	if ((r = bt_encode_token_query(&w->out, BT_WATCH, WATCH_ID, &w->query)) < 0)
		return end(w, -EINVAL,
			   "the request is too large: shorten the identity or resource");
	w->state = W_WATCHING;
	w->resubscribed = true;
	return -EAGAIN;
}

static int take_event(batchtok_watch *w, struct bt_frame *f, struct batchtok_token **ret,
		      int64_t *refresh_at)
{
	struct bt_watch_event ev;
	int64_t when;
	int r;

	if (f->type == BT_ERROR && (f->id == WATCH_ID || f->id == 0))
		return take_end(w, f);
	if (f->type != (BT_WATCH | BT_REPLY) || f->id != WATCH_ID)
		return broken(w, "a reply to no request of this watch");
	if (bt_decode_watch_event(&f->body, &ev) < 0)
		return broken(w, "a malformed WATCH event");
	bt_buf_consume(&w->in, f->size);
	/* The subscription works: a connection lost from now on is made anew
	 * at once. */
	w->retry_ms = 0;
	if (ev.status != BT_OK) {
		r = daemon_conn_status_errno(ev.status);
		fail(w, r, "%s", *ev.message ? ev.message : bt_status_name(ev.status));
		bt_watch_event_clear(&ev);
		return r;
	}
	/* A new subscription starts with the current token, which the caller
	 * may have already. */
	if (w->resubscribed && w->last_token && ev.t.access_token &&
	    strcmp(w->last_token, ev.t.access_token) == 0 &&
	    w->last_expires == (int64_t)ev.t.expires_on) {
		w->resubscribed = false;
		bt_watch_event_clear(&ev);
		return -EAGAIN;
	}
	w->resubscribed = false;
	when = (int64_t)ev.refresh_at;
	r = daemon_conn_take_token(&ev.t, ret);
	bt_watch_event_clear(&ev);
	if (r == -EPROTO)
		return fail(w, r,
			    "batchtokd sent a token holding spaces or control characters, which "
			    "is not a bearer token: refused (upgrade batchtokd, which refuses such "
			    "a reply from the token service and logs it)");
	if (r < 0)
		return fail(w, r, "out of memory");
	bt_free_secret(w->last_token);
	w->last_token = strdup((*ret)->access_token);
	w->last_expires = (*ret)->expires_on;
	if (refresh_at)
		*refresh_at = when;
	return 0;
}

/* Does what can be done without waiting. Returns 0 with a token, an error
 * event's or the end's errno, or -EAGAIN when there is nothing now. */
static int step(batchtok_watch *w, struct batchtok_token **ret, int64_t *refresh_at)
{
	for (;;) {
		struct bt_frame f;
		int r;

		if (w->state == W_DOWN) {
			if (now_ms() < w->retry_at)
				return -EAGAIN;
			if ((r = start_connection(w)) < 0)
				return r;
		}
		if (flush(w) < 0) {
			drop_connection(w, lost_delay(w));
			continue;
		}
		r = bt_frame_peek(&w->in, BT_REPLY_MAX, &f);
		if (r == 0) {
			r = w->state == W_HELLO ? take_hello(w, &f)
						: take_event(w, &f, ret, refresh_at);
			if (r != -EAGAIN)
				return r;
			continue;
		}
		if (r != -EAGAIN)
			return broken(w, r == -EMSGSIZE ? "a frame larger than 1 MiB"
							: "a frame too short for its header");
		r = fill(w);
		if (r == -EAGAIN)
			return r;
		if (r == -ENOMEM) {
			drop_connection(w, next_backoff(w));
			return fail(w, r, "out of memory");
		}
		if (r < 0)
			drop_connection(w, lost_delay(w));
	}
}

/* Makes the descriptor readable exactly when there is work for
 * batchtok_watch_next(): the socket has data (level-triggered), or the timer
 * says an attempt is due or frames are buffered already. Setting the timer
 * also clears its past expiries. */
static void arm(batchtok_watch *w)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	struct bt_frame f;
	int flags = 0;

	if (w->ended) {
		/* Disarmed: nothing will happen any more. */
	} else if (w->state == W_DOWN) {
		flags = TFD_TIMER_ABSTIME;
		its.it_value.tv_sec = w->retry_at / 1000;
		its.it_value.tv_nsec = (w->retry_at % 1000) * 1000000;
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	} else if (bt_frame_peek(&w->in, BT_REPLY_MAX, &f) != -EAGAIN) {
		its.it_value.tv_nsec = 1; /* at once */
	}
	timerfd_settime(w->timer, flags, &its, NULL);
	if (w->fd >= 0) {
		uint32_t want = EPOLLIN | (bt_buf_len(&w->out) ? EPOLLOUT : 0);
		struct epoll_event ev = {.events = want, .data.fd = w->fd};

		if (want != w->fd_events && epoll_ctl(w->ep, EPOLL_CTL_MOD, w->fd, &ev) == 0)
			w->fd_events = want;
	}
}

int batchtok_watch_next(batchtok_watch *w, int timeout_ms, struct batchtok_token **ret,
			int64_t *refresh_at)
{
	int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	struct epoll_event ev;
	int r, ms;

	if (!ret)
		return fail(w, -EINVAL, "no place for the token: pass ret");
	if (w->ended)
		return w->ended;
	w->error[0] = 0;
	for (;;) {
		r = step(w, ret, refresh_at);
		arm(w);
		if (r != -EAGAIN)
			return r;
		if (timeout_ms == 0)
			return -EAGAIN;
		ms = -1;
		if (timeout_ms > 0) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return -EAGAIN;
			ms = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		if (epoll_wait(w->ep, &ev, 1, ms) < 0) {
			if (errno == EINTR)
				return fail(w, -EINTR, "interrupted by a signal");
			return fail(w, -errno, "cannot wait for batchtokd: %s", strerror(errno));
		}
	}
}

int batchtok_watch_start(const char *path, const struct batchtok_request *req, batchtok_watch **ret)
{
	struct epoll_event ev = {.events = EPOLLIN};
	char buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
	batchtok_watch *w;
	int r;

	if (!path)
		path = daemon_conn_default_path(buf, sizeof(buf));
	if (strlen(path) >= sizeof(w->path))
		return -EINVAL;
	if (!(w = calloc(1, sizeof(*w))))
		return -ENOMEM;
	w->ep = w->timer = w->fd = -1;
	bt_buf_init(&w->out, BT_REQUEST_MAX);
	bt_buf_init(&w->in, BT_REPLY_MAX);
	snprintf(w->path, sizeof(w->path), "%s", path);
	if (req) {
		if ((req->identity && !(w->query.identity = strdup(req->identity))) ||
		    (req->resource && !(w->query.resource = strdup(req->resource))) ||
		    (req->scope && !(w->query.scope = strdup(req->scope)))) {
			r = -ENOMEM;
			goto fail;
		}
		w->query.min_validity = req->min_validity;
	}
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	w->timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	ev.data.fd = w->timer;
	if (w->ep < 0 || w->timer < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, w->timer, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	/* The first attempt is due now: the descriptor is readable at once. */
	w->state = W_DOWN;
	w->retry_at = now_ms();
	arm(w);
	*ret = w;
	return 0;
fail:
	batchtok_watch_free(w);
	return r;
}

int batchtok_watch_fd(const batchtok_watch *w)
{
	return w->ep;
}

int batchtok_watch_ended(const batchtok_watch *w)
{
	return w->ended;
}

const char *batchtok_watch_error(const batchtok_watch *w)
{
	return w->error;
}

void batchtok_watch_free(batchtok_watch *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->timer >= 0)
		close(w->timer);
	if (w->ep >= 0)
		close(w->ep);
	bt_token_query_clear(&w->query);
	bt_free_secret(w->last_token);
	bt_buf_free(&w->out);
	bt_buf_free(&w->in);
	bt_wipe(w, sizeof(*w));
	free(w);
}
