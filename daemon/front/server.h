/* server.h - the Unix socket: listening (or the socket systemd passed),
 * accepting, peer credentials, per-connection buffers and framing.
 *
 * Every connection's peer credentials are read from the kernel right after
 * accept; a connection whose credentials cannot be read is closed (fail
 * closed). Each whole frame is handed to the dispatcher; the server never
 * looks inside a message. Everything a client can make the daemon hold is
 * bounded: connections (max_clients, and max_clients_per_uid for each uid),
 * input (one request frame), output, requests outstanding per connection, the
 * time a half-sent frame may sit in the buffer, and the time a connection
 * with nothing pending may stay open (client_idle_timeout). */
#ifndef BATCHTOK_DAEMON_SERVER_H
#define BATCHTOK_DAEMON_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "../../proto/buf.h"
#include "../../proto/msg.h"
#include "../lib/list.h"
#include "../lib/attest.h"
#include "../lib/peer.h"

/* Requests a connection may have waiting for a token at once; more are
 * not read until some are answered (back-pressure, not an error). */
#define SERVER_PENDING_MAX 64
/* Replies queued to a client that does not read them. */
#define SERVER_OUT_MAX (4 * 1024 * 1024)
/* No more frames are taken from a client while this much of its output is
 * unsent: a client that sends and never reads holds little of our memory. */
#define SERVER_TAKE_MAX (64 * 1024)
/* A frame that has not arrived whole after this long closes its connection. */
#define SERVER_PARTIAL_TIMEOUT 30

struct server;

struct conn {
	uv_poll_t poll;
	int fd;
	struct server *srv;
	struct list node;	/* on the server's connection list */
	struct peer peer;	/* peer.att points at att */
	struct attestation att; /* the program, pinned at accept */
	struct bt_buf in, out;
	bool hello_done;
	bool closing;	       /* close once the output is flushed */
	bool closed;	       /* uv_close() called */
	bool in_dispatch;      /* frames are being taken from in */
	int64_t partial_since; /* monotonic ms when a partial frame appeared, 0: none */
	int64_t active_at;     /* monotonic ms of the last byte in or out, or answer */
	int64_t closing_since; /* monotonic ms when conn_close_later() was called, 0: not */
	int events;	       /* what the poll handle currently waits for */
	struct list pendings;  /* the dispatcher's requests, cancelled on close */
	struct list resume;    /* on the server's list of connections to go on with */
	unsigned n_pending;
	unsigned n_watches; /* of n_pending, the watches (the dispatcher's count) */
};

struct server_handlers {
	/* One whole frame from c; f->body is valid during the call. */
	void (*frame)(void *arg, struct conn *c, struct bt_frame *f);
	/* c is going away: cancel what waits for it. */
	void (*closed)(void *arg, struct conn *c);
	/* The daemon is stopping: queue on c->out an answer to each request of
	 * c that waits, telling it so. Called before closed(). */
	void (*stopping)(void *arg, struct conn *c);
	void *arg;
};

struct server_options {
	const char *path;
	mode_t mode;
	gid_t gid; /* (gid_t)-1: leave the group as created */
	uint32_t max_clients;
	uint32_t max_clients_per_uid;
	uint32_t idle_timeout; /* seconds; a connection with nothing pending is closed */
	/* Keep each client's pidfd, which program rules need to know it still
	 * runs; without, a connection costs one descriptor, not two. */
	bool pin_peers;
	/* The monotonic clock, in milliseconds, that idle and half-sent frames
	 * are timed by (server_new() only); NULL: the loop's (uv_now()). Tests
	 * pass their own and call server_sweep(). */
	int64_t (*now)(void *arg);
	void *now_arg;
};

/* Listens on the socket systemd passed, or creates one at opts->path (its
 * directory too, the last component only). The directory and those above it
 * must belong to root or the daemon's user, and only they may write the
 * socket's own directory (-EPERM otherwise); an existing file there is
 * replaced only if it is a socket of the daemon's user that nobody answers
 * on (-EADDRINUSE if a daemon answers, -EEXIST if it is not ours). Nothing
 * is chmod'ed, chown'ed or removed by a path that could be redirected.
 * Every failure is logged with its cause and fix. */
int server_new(uv_loop_t *loop, const struct server_options *opts, const struct server_handlers *h,
	       struct server **ret);
/* Takes opts' limits (max_clients, max_clients_per_uid, idle_timeout,
 * pin_peers), for a reload; connections already open stay, but for those
 * made without a pidfd that are idle or only watch when pin_peers turns
 * on: they are closed, and their clients come back pinned. */
void server_set_limits(struct server *s, const struct server_options *opts);
/* Queues the encoded bytes already appended to c->out for sending. */
void conn_flush(struct conn *c);
/* Flushes what is queued, then closes. */
void conn_close_after_flush(struct conn *c);
/* Called by the dispatcher when an answered request leaves c's pending set.
 * What c has to send, and frames held back by the pending limit, are taken
 * up on the next turn of the loop, never inside the caller: a held-back
 * RELOAD must not run inside the reload that answered, nor a failed write
 * close the connection under the callback that replied. */
void conn_request_done(struct conn *c);
/* The same for an answer that leaves the request pending (a watch's event):
 * what c has to send goes out on the next turn of the loop. */
void conn_answered(struct conn *c);
/* Stops taking c's requests and closes it once what is queued is sent, or
 * SERVER_PARTIAL_TIMEOUT from now if the client does not read it; safe
 * inside any callback (nothing happens before the next turn of the loop). */
void conn_close_later(struct conn *c);
unsigned server_client_count(const struct server *s);
/* Closes every connection that has held half a frame for longer than
 * SERVER_PARTIAL_TIMEOUT, or nothing pending for idle_timeout, by the
 * server's clock. A timer calls it every quarter of idle_timeout (within
 * 250 ms to 5 s); tests call it after moving their clock. */
void server_sweep(struct server *s);
/* Closes the listener and every connection, removes a socket it created;
 * memory is released in close callbacks. Requests still waiting are answered
 * first (handlers' stopping()), as far as their clients take the answer
 * without blocking. */
void server_close(struct server *s);

#endif
