/* unix_client.h - what the tests of the Unix socket's modules share: the
 * daemon's loop turned a bounded number of times without blocking, and a
 * client that writes frames to the socket and reads the replies without
 * blocking. Every wait is a count of loop turns, never a sleep: the peer is
 * in the same process, so whatever it sends is there by the next turn. */
#ifndef BATCHTOK_TESTS_UNIX_CLIENT_H
#define BATCHTOK_TESTS_UNIX_CLIENT_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "../../proto/buf.h"
#include "../../proto/msg.h"

/* Turns of the loop a wait may take before the test gives up; after the
 * first TURNS_EAGER, each turn waits for an event, at most TURN_WAIT_MS:
 * work in libuv's thread pool (user names, files) ends when its thread is
 * done, not on a given turn. A test that passes never waits that long. */
#define TURNS_MAX    2000
#define TURNS_EAGER  100
#define TURN_WAIT_MS 5

struct client {
	int fd;
	struct bt_buf in; /* replies read and not yet taken */
	bool eof;	  /* the daemon closed the connection */
};

static inline void run_turns(uv_loop_t *loop, int n)
{
	for (int i = 0; i < n; i++)
		uv_run(loop, UV_RUN_NOWAIT);
}

static inline void on_turn_over(uv_timer_t *t)
{
	(void)t;
}

/* Turn i of a wait: at once for the first TURNS_EAGER, then waiting for
 * the next event, but no longer than TURN_WAIT_MS. */
static inline void run_turn(uv_loop_t *loop, int i)
{
	uv_timer_t t;

	if (i < TURNS_EAGER) {
		uv_run(loop, UV_RUN_NOWAIT);
		return;
	}
	uv_timer_init(loop, &t);
	uv_timer_start(&t, on_turn_over, TURN_WAIT_MS, 0);
	uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT); /* t's close ends before t goes */
}

/* Connects to the socket at path; the connection is accepted on the next
 * turn of the loop. Returns 0 or -errno. */
static inline int client_connect(struct client *cl, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	memset(cl, 0, sizeof(*cl));
	bt_buf_init(&cl->in, 64 * 1024 * 1024);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cl->fd < 0)
		return -errno;
	if (connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(cl->fd);
		cl->fd = -1;
		return -e;
	}
	return 0;
}

static inline void client_close(struct client *cl)
{
	if (cl->fd >= 0)
		close(cl->fd);
	cl->fd = -1;
	bt_buf_free(&cl->in);
}

/* Sends n bytes; returns how many the socket took. */
static inline size_t client_send(struct client *cl, const void *p, size_t n)
{
	ssize_t k = send(cl->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

	return k > 0 ? (size_t)k : 0;
}

/* Sends what b holds and empties it; returns whether all of it went. */
static inline bool client_send_buf(struct client *cl, struct bt_buf *b)
{
	size_t n = bt_buf_len(b);
	bool all = client_send(cl, bt_buf_ptr(b), n) == n;

	bt_buf_reset(b);
	return all;
}

/* Reads whatever has arrived. */
static inline void client_read(struct client *cl)
{
	uint8_t chunk[65536];
	ssize_t n;

	while ((n = recv(cl->fd, chunk, sizeof(chunk), MSG_DONTWAIT)) > 0)
		bt_buf_put(&cl->in, chunk, (size_t)n);
	if (n == 0)
		cl->eof = true;
}

/* Turns the loop until a whole reply has arrived; 0 with *f a view of it
 * (take it with client_next()), or -EAGAIN if none came. */
static inline int client_wait_frame(uv_loop_t *loop, struct client *cl, struct bt_frame *f)
{
	for (int i = 0; i < TURNS_MAX; i++) {
		client_read(cl);
		if (bt_frame_peek(&cl->in, BT_REPLY_MAX + BT_FRAME_HEADER, f) == 0)
			return 0;
		if (cl->eof)
			return -EAGAIN;
		run_turn(loop, i);
	}
	return -EAGAIN;
}

static inline void client_next(struct client *cl, const struct bt_frame *f)
{
	bt_buf_consume(&cl->in, f->size);
}

/* Turns the loop until the daemon has closed the connection; whether it
 * did. */
static inline bool client_wait_eof(uv_loop_t *loop, struct client *cl)
{
	for (int i = 0; i < TURNS_MAX && !cl->eof; i++) {
		run_turn(loop, i);
		client_read(cl);
	}
	return cl->eof;
}

/* The status and message of an error reply f (message in buf). */
static inline uint32_t frame_error(const struct bt_frame *f, char *buf, size_t n)
{
	struct bt_buf body = f->body;
	struct bt_error e = {0};
	uint32_t status;

	if (f->type != BT_ERROR || bt_decode_error(&body, &e) < 0)
		return BT_OK;
	status = e.status;
	snprintf(buf, n, "%s", e.message ? e.message : "");
	bt_error_clear(&e);
	return status;
}

/* Runs the loop until nothing is left on it (bounded); uv_loop_close()'s
 * result. */
static inline int loop_finish(uv_loop_t *loop)
{
	for (int i = 0; i < TURNS_MAX && uv_loop_alive(loop); i++)
		run_turn(loop, i);
	return uv_loop_close(loop);
}

#endif
