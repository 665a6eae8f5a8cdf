/* test_server.c - the Unix socket: accept, peer credentials, framing,
 * max_clients and max_clients_per_uid, idle and half-sent connections
 * closed by the server's clock (injected: the test moves it and sweeps),
 * the output limit with pipelined requests, the pending limit, and stop.
 * The handlers stand in for the dispatcher: PING is answered at once with
 * reply_size bytes of text, GET_TOKEN is held until the test answers it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../daemon/front/server.h"
#include "../../daemon/lib/log.h"
#include "unix_client.h"

/* Requests the handlers hold at most. */
#define HELD_MAX 256

struct fixture {
	uv_loop_t loop;
	struct server *srv;
	struct server_options opts;
	char dir[32], path[64];
	int64_t now; /* the server's clock, ms */
	/* What the handlers saw. */
	int frames, closed, stopping;
	struct peer peer; /* of the last frame */
	uint32_t last_id;
	size_t reply_size; /* PING's answer, bytes of text */
	struct conn *held_conn[HELD_MAX];
	uint32_t held_id[HELD_MAX];
	int n_held;
};

static int64_t fake_now(void *arg)
{
	return ((struct fixture *)arg)->now;
}

static void on_frame(void *arg, struct conn *c, struct bt_frame *f)
{
	struct fixture *fx = arg;

	fx->frames++;
	fx->peer = c->peer;
	fx->last_id = f->id;
	if (f->type == BT_GET_TOKEN) {
		assert_true(fx->n_held < HELD_MAX);
		fx->held_conn[fx->n_held] = c;
		fx->held_id[fx->n_held++] = f->id;
		c->n_pending++;
		return;
	}
	if (fx->reply_size) {
		char *text = malloc(fx->reply_size + 1);
		assert_non_null(text);
		memset(text, 'x', fx->reply_size);
		text[fx->reply_size] = 0;
		assert_int_equal(bt_encode_text_reply(&c->out, BT_PING | BT_REPLY, f->id, text), 0);
		free(text);
	} else {
		assert_int_equal(bt_encode_text_reply(&c->out, BT_PING | BT_REPLY, f->id, "pong"),
				 0);
	}
}

static void forget_held(struct fixture *fx, struct conn *c)
{
	for (int i = 0; i < fx->n_held; i++)
		if (fx->held_conn[i] == c)
			fx->held_conn[i] = NULL;
}

static void on_closed(void *arg, struct conn *c)
{
	struct fixture *fx = arg;

	fx->closed++;
	forget_held(fx, c);
	c->n_pending = 0;
}

static void on_stopping(void *arg, struct conn *c)
{
	struct fixture *fx = arg;

	fx->stopping++;
	for (int i = 0; i < fx->n_held; i++)
		if (fx->held_conn[i] == c)
			bt_encode_error(&c->out, fx->held_id[i], BT_E_UNAVAILABLE, "stopping");
}

/* Answers the i-th held request, as the dispatcher does when a token comes. */
static void answer_held(struct fixture *fx, int i)
{
	struct conn *c = fx->held_conn[i];

	assert_non_null(c);
	assert_int_equal(
	    bt_encode_text_reply(&c->out, BT_GET_TOKEN | BT_REPLY, fx->held_id[i], "t"), 0);
	fx->held_conn[i] = NULL;
	conn_request_done(c);
}

static void start(struct fixture *fx)
{
	struct server_handlers h = {
	    .frame = on_frame, .closed = on_closed, .stopping = on_stopping, .arg = fx};

	fx->opts.path = fx->path;
	fx->opts.now = fake_now;
	fx->opts.now_arg = fx;
	assert_int_equal(server_new(&fx->loop, &fx->opts, &h, &fx->srv), 0);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/bt-srv-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/s/sock", fx->dir);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	fx->now = 1000000;
	fx->opts = (struct server_options){.mode = 0600,
					   .gid = (gid_t)-1,
					   .max_clients = 100,
					   .max_clients_per_uid = 100,
					   .idle_timeout = 3600};
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char sub[64];

	if (fx->srv)
		server_close(fx->srv);
	assert_int_equal(loop_finish(&fx->loop), 0);
	snprintf(sub, sizeof(sub), "%s/s", fx->dir);
	rmdir(sub);
	assert_int_equal(rmdir(fx->dir), 0);
	free(fx);
	return 0;
}

static void connect_client(struct fixture *fx, struct client *cl)
{
	assert_int_equal(client_connect(cl, fx->path), 0);
	run_turns(&fx->loop, 2);
}

static void send_type(struct client *cl, uint8_t type, uint32_t id)
{
	struct bt_buf b;

	bt_buf_init(&b, 1024);
	assert_int_equal(bt_encode_empty(&b, type, id), 0);
	assert_true(client_send_buf(cl, &b));
	bt_buf_free(&b);
}

/* Waits for the reply to id and checks it is a reply of type. */
static void expect_reply(struct fixture *fx, struct client *cl, uint8_t type, uint32_t id)
{
	struct bt_frame f;

	assert_int_equal(client_wait_frame(&fx->loop, cl, &f), 0);
	assert_int_equal(f.type, type | BT_REPLY);
	assert_int_equal(f.id, id);
	client_next(cl, &f);
}

static void test_accept_and_peer_credentials(void **state)
{
	struct fixture *fx = *state;
	struct client cl;
	struct stat st;

	start(fx);
	/* The socket has the configured mode, in a directory made for it. */
	assert_int_equal(stat(fx->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	connect_client(fx, &cl);
	assert_int_equal(server_client_count(fx->srv), 1);
	send_type(&cl, BT_PING, 7);
	expect_reply(fx, &cl, BT_PING, 7);
	assert_int_equal(fx->frames, 1);
	/* The kernel's word on who is calling: this very process. */
	assert_int_equal(fx->peer.uid, getuid());
	assert_int_equal(fx->peer.gid, getgid());
	assert_int_equal(fx->peer.pid, getpid());
	assert_true(fx->peer.n_groups >= 0);
	client_close(&cl);
	run_turns(&fx->loop, 3);
	assert_int_equal(fx->closed, 1);
	assert_int_equal(server_client_count(fx->srv), 0);
}

/* A client that sends in the moment after accept() returns, before the
 * server has done anything with the connection. */
static struct client *send_on_accept;

int __real_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	int r = __real_accept4(fd, addr, len, flags);

	if (r >= 0 && send_on_accept) {
		send_type(send_on_accept, BT_PING, 9);
		send_on_accept = NULL;
	}
	return r;
}

/* Every byte carries its sender, even what a client sends while its
 * connection is being accepted: the connection stays attested (its process
 * sent it), where a window between accept() and a SO_PASSCRED of its own
 * had it taken for one handed to another process. */
static void test_sender_known_from_the_first_byte(void **state)
{
	struct fixture *fx = *state;
	struct client cl;

	fx->opts.pin_peers = true;
	start(fx);
	assert_int_equal(client_connect(&cl, fx->path), 0);
	send_on_accept = &cl;
	run_turns(&fx->loop, 2);
	assert_null(send_on_accept);
	expect_reply(fx, &cl, BT_PING, 9);
	assert_non_null(fx->peer.att);
	assert_int_equal(fx->peer.att->err, 0);
	assert_int_equal(fx->peer.att->lent_to, 0);
	assert_int_equal(attest_alive(fx->peer.att), 0);
	client_close(&cl);
	run_turns(&fx->loop, 3);
}

/* A pidfd is kept only while program rules need one; when they come, idle
 * connections made without are closed (their clients reconnect, pinned),
 * and the ones made then are pinned. */
static void test_peers_pinned_only_for_program_rules(void **state)
{
	struct fixture *fx = *state;
	struct server_options on;
	struct client a, b;

	start(fx);
	connect_client(fx, &a);
	send_type(&a, BT_PING, 1);
	expect_reply(fx, &a, BT_PING, 1);
	assert_int_equal(fx->peer.att->pidfd, -1);
	assert_int_equal(fx->peer.att->err, 0);
	assert_int_equal(attest_alive(fx->peer.att), -EBADF);
	on = fx->opts;
	on.pin_peers = true;
	server_set_limits(fx->srv, &on);
	assert_true(client_wait_eof(&fx->loop, &a));
	assert_int_equal(server_client_count(fx->srv), 0);
	connect_client(fx, &b);
	send_type(&b, BT_PING, 2);
	expect_reply(fx, &b, BT_PING, 2);
	assert_true(fx->peer.att->pidfd >= 0);
	assert_int_equal(attest_alive(fx->peer.att), 0);
	client_close(&a);
	client_close(&b);
	run_turns(&fx->loop, 3);
}

static void test_frame_split_and_batched(void **state)
{
	struct fixture *fx = *state;
	struct client cl;
	struct bt_buf b;

	start(fx);
	connect_client(fx, &cl);
	bt_buf_init(&b, 1024);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 1), 0);
	/* A byte at a time: no frame until the last one. */
	for (size_t i = 0; i < bt_buf_len(&b); i++) {
		assert_int_equal(client_send(&cl, bt_buf_ptr(&b) + i, 1), 1);
		run_turns(&fx->loop, 2);
		assert_int_equal(fx->frames, i + 1 == bt_buf_len(&b) ? 1 : 0);
	}
	expect_reply(fx, &cl, BT_PING, 1);
	/* Three frames in one write: three frames, in order. */
	bt_buf_reset(&b);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 2), 0);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 3), 0);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 4), 0);
	assert_true(client_send_buf(&cl, &b));
	expect_reply(fx, &cl, BT_PING, 2);
	expect_reply(fx, &cl, BT_PING, 3);
	expect_reply(fx, &cl, BT_PING, 4);
	assert_int_equal(fx->frames, 4);
	bt_buf_free(&b);
	client_close(&cl);
}

/* A header announcing more than a request may hold is refused before its
 * body is read, with a reason, and the connection closed. */
static void test_oversized_frame_closes(void **state)
{
	struct fixture *fx = *state;
	uint8_t hdr[BT_FRAME_HEADER] = {0};
	uint32_t len = BT_REQUEST_MAX;
	struct client cl;
	struct bt_frame f;
	char msg[BT_MESSAGE_MAX];

	start(fx);
	connect_client(fx, &cl);
	hdr[0] = (uint8_t)(len >> 24), hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8), hdr[3] = (uint8_t)len;
	hdr[4] = BT_PING;
	assert_int_equal(client_send(&cl, hdr, sizeof(hdr)), sizeof(hdr));
	assert_int_equal(client_wait_frame(&fx->loop, &cl, &f), 0);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	assert_non_null(strstr(msg, "larger than the protocol's maximum"));
	client_next(&cl, &f);
	assert_true(client_wait_eof(&fx->loop, &cl));
	assert_int_equal(fx->frames, 0);
	assert_int_equal(fx->closed, 1);
	client_close(&cl);
}

/* A length too short to hold a header cannot be resynchronised. */
static void test_malformed_frame_closes(void **state)
{
	struct fixture *fx = *state;
	uint8_t hdr[BT_FRAME_HEADER] = {0, 0, 0, 1, BT_PING};
	struct client cl;
	struct bt_frame f;
	char msg[BT_MESSAGE_MAX];

	start(fx);
	connect_client(fx, &cl);
	assert_int_equal(client_send(&cl, hdr, sizeof(hdr)), sizeof(hdr));
	assert_int_equal(client_wait_frame(&fx->loop, &cl, &f), 0);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	assert_non_null(strstr(msg, "malformed frame"));
	client_next(&cl, &f);
	assert_true(client_wait_eof(&fx->loop, &cl));
	assert_int_equal(fx->frames, 0);
	client_close(&cl);
}

static void test_max_clients_per_uid(void **state)
{
	struct fixture *fx = *state;
	struct client cl[3], again;
	struct bt_frame f;
	char msg[BT_MESSAGE_MAX];

	fx->opts.max_clients_per_uid = 2;
	start(fx);
	connect_client(fx, &cl[0]);
	connect_client(fx, &cl[1]);
	connect_client(fx, &cl[2]);
	assert_int_equal(server_client_count(fx->srv), 2);
	/* The third is told why, and closed. */
	assert_int_equal(client_wait_frame(&fx->loop, &cl[2], &f), 0);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_BUSY);
	assert_non_null(strstr(msg, "max_clients_per_uid (2)"));
	client_next(&cl[2], &f);
	assert_true(client_wait_eof(&fx->loop, &cl[2]));
	/* The first two are served. */
	send_type(&cl[1], BT_PING, 5);
	expect_reply(fx, &cl[1], BT_PING, 5);
	/* A slot given back is a slot for the same uid again. */
	client_close(&cl[0]);
	run_turns(&fx->loop, 3);
	assert_int_equal(server_client_count(fx->srv), 1);
	connect_client(fx, &again);
	assert_int_equal(server_client_count(fx->srv), 2);
	send_type(&again, BT_PING, 6);
	expect_reply(fx, &again, BT_PING, 6);
	/* A reload's limits apply to new connections. */
	server_set_limits(fx->srv, &(struct server_options){.max_clients = 100,
							    .max_clients_per_uid = 3,
							    .idle_timeout = 3600});
	client_close(&cl[2]);
	connect_client(fx, &cl[2]);
	assert_int_equal(server_client_count(fx->srv), 3);
	client_close(&cl[1]);
	client_close(&cl[2]);
	client_close(&again);
}

static void test_max_clients(void **state)
{
	struct fixture *fx = *state;
	struct client a, b;
	struct bt_frame f;
	char msg[BT_MESSAGE_MAX];

	fx->opts.max_clients = 1;
	start(fx);
	connect_client(fx, &a);
	connect_client(fx, &b);
	assert_int_equal(server_client_count(fx->srv), 1);
	assert_int_equal(client_wait_frame(&fx->loop, &b, &f), 0);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_BUSY);
	assert_non_null(strstr(msg, "max_clients"));
	client_next(&b, &f);
	assert_true(client_wait_eof(&fx->loop, &b));
	client_close(&a);
	client_close(&b);
}

/* client_idle_timeout, by the server's clock: a connection with nothing
 * pending is closed once it has been quiet that long; one that waits for an
 * answer is not, and its idle time starts again at the answer. */
static void test_idle_close(void **state)
{
	struct fixture *fx = *state;
	struct client quiet, waiting;

	fx->opts.idle_timeout = 10;
	start(fx);
	connect_client(fx, &quiet);
	connect_client(fx, &waiting);
	send_type(&waiting, BT_GET_TOKEN, 1);
	run_turns(&fx->loop, 3);
	assert_int_equal(fx->n_held, 1);

	fx->now += 9999;
	server_sweep(fx->srv);
	run_turns(&fx->loop, 2);
	assert_int_equal(server_client_count(fx->srv), 2);

	fx->now += 1;
	server_sweep(fx->srv);
	assert_true(client_wait_eof(&fx->loop, &quiet));
	assert_int_equal(server_client_count(fx->srv), 1);

	/* Far past the timeout, still waiting: kept. */
	fx->now += 100000;
	server_sweep(fx->srv);
	run_turns(&fx->loop, 2);
	assert_int_equal(server_client_count(fx->srv), 1);
	answer_held(fx, 0);
	expect_reply(fx, &waiting, BT_GET_TOKEN, 1);
	fx->now += 9999;
	server_sweep(fx->srv);
	run_turns(&fx->loop, 2);
	assert_int_equal(server_client_count(fx->srv), 1);
	fx->now += 1;
	server_sweep(fx->srv);
	assert_true(client_wait_eof(&fx->loop, &waiting));
	assert_int_equal(server_client_count(fx->srv), 0);
	client_close(&quiet);
	client_close(&waiting);
}

/* Half a frame may sit for SERVER_PARTIAL_TIMEOUT, however long the idle
 * timeout; the rest arriving in time clears it. */
static void test_partial_frame_timeout(void **state)
{
	struct fixture *fx = *state;
	struct client slow, done;
	struct bt_buf b;

	start(fx);
	connect_client(fx, &slow);
	connect_client(fx, &done);
	bt_buf_init(&b, 1024);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 1), 0);
	assert_int_equal(client_send(&slow, bt_buf_ptr(&b), 4), 4);
	assert_int_equal(client_send(&done, bt_buf_ptr(&b), 4), 4);
	run_turns(&fx->loop, 3);
	fx->now += SERVER_PARTIAL_TIMEOUT * 1000 - 1;
	assert_int_equal(client_send(&done, bt_buf_ptr(&b) + 4, bt_buf_len(&b) - 4),
			 bt_buf_len(&b) - 4);
	expect_reply(fx, &done, BT_PING, 1);
	server_sweep(fx->srv);
	run_turns(&fx->loop, 2);
	assert_int_equal(server_client_count(fx->srv), 2);
	fx->now += 2;
	server_sweep(fx->srv);
	assert_true(client_wait_eof(&fx->loop, &slow));
	assert_int_equal(server_client_count(fx->srv), 1);
	assert_int_equal(fx->frames, 1);
	bt_buf_free(&b);
	client_close(&slow);
	client_close(&done);
}

/* A client that sends many requests before reading any reply: reading
 * stops while SERVER_OUT_MAX/2 of replies wait, and every frame already
 * read is answered once the client has read what was queued, though it
 * sends nothing more (issue 12, item 7). */
static void test_pipelined_past_output_limit(void **state)
{
	struct fixture *fx = *state;
	enum { N = 200 };
	struct client cl;
	struct bt_buf b;
	int replies = 0;

	fx->reply_size = 64 * 1024;
	start(fx);
	connect_client(fx, &cl);
	bt_buf_init(&b, 1 << 20);
	for (uint32_t i = 1; i <= N; i++)
		assert_int_equal(bt_encode_empty(&b, BT_PING, i), 0);
	assert_true(client_send_buf(&cl, &b));
	run_turns(&fx->loop, 50);
	/* N replies are more than the output may hold: some wait unread. */
	assert_true(fx->frames < N);
	for (int turn = 0; turn < 20 * TURNS_MAX && replies < N; turn++) {
		struct bt_frame f;
		client_read(&cl);
		while (bt_frame_peek(&cl.in, BT_REPLY_MAX, &f) == 0) {
			assert_int_equal(f.type, BT_PING | BT_REPLY);
			assert_int_equal(f.id, (uint32_t)replies + 1);
			client_next(&cl, &f);
			replies++;
		}
		uv_run(&fx->loop, UV_RUN_NOWAIT);
	}
	assert_int_equal(replies, N);
	assert_int_equal(fx->frames, N);
	bt_buf_free(&b);
	client_close(&cl);
}

/* SERVER_PENDING_MAX requests may wait at once; the next is read only when
 * one is answered, and then without the client sending anything more. */
static void test_pending_limit(void **state)
{
	struct fixture *fx = *state;
	struct client cl;
	struct bt_buf b;

	start(fx);
	connect_client(fx, &cl);
	bt_buf_init(&b, 1 << 20);
	for (uint32_t i = 1; i <= SERVER_PENDING_MAX + 1; i++)
		assert_int_equal(bt_encode_empty(&b, BT_GET_TOKEN, i), 0);
	assert_int_equal(bt_encode_empty(&b, BT_PING, 1000), 0);
	assert_true(client_send_buf(&cl, &b));
	run_turns(&fx->loop, 20);
	assert_int_equal(fx->n_held, SERVER_PENDING_MAX);
	answer_held(fx, 0);
	expect_reply(fx, &cl, BT_GET_TOKEN, 1);
	run_turns(&fx->loop, 5);
	assert_int_equal(fx->n_held, SERVER_PENDING_MAX + 1);
	/* The PING behind it waits for another slot. */
	assert_int_equal(fx->frames, SERVER_PENDING_MAX + 1);
	answer_held(fx, 1);
	expect_reply(fx, &cl, BT_GET_TOKEN, 2);
	expect_reply(fx, &cl, BT_PING, 1000);
	bt_buf_free(&b);
	client_close(&cl);
}

/* Stopping: a client waiting for an answer is told why none comes; then
 * every connection closes, the socket file goes, and nothing is left on
 * the loop. */
static void test_stop_tells_waiting_clients(void **state)
{
	struct fixture *fx = *state;
	struct client waiting, quiet;
	struct bt_frame f;
	char msg[BT_MESSAGE_MAX];

	start(fx);
	connect_client(fx, &waiting);
	connect_client(fx, &quiet);
	send_type(&waiting, BT_GET_TOKEN, 9);
	run_turns(&fx->loop, 3);
	assert_int_equal(fx->n_held, 1);
	server_close(fx->srv);
	fx->srv = NULL;
	assert_int_equal(fx->stopping, 1);
	assert_int_equal(fx->closed, 2);
	assert_int_equal(access(fx->path, F_OK), -1);
	client_read(&waiting);
	assert_int_equal(bt_frame_peek(&waiting.in, BT_REPLY_MAX, &f), 0);
	assert_int_equal(f.id, 9);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_UNAVAILABLE);
	client_next(&waiting, &f);
	assert_int_equal(loop_finish(&fx->loop), 0);
	client_read(&waiting);
	client_read(&quiet);
	assert_true(waiting.eof);
	assert_true(quiet.eof);
	assert_int_equal(uv_loop_init(&fx->loop), 0); /* for teardown */
	client_close(&waiting);
	client_close(&quiet);
}

/* The socket's directory must be one only we (or root) can write. */
static void test_unsafe_directory_refused(void **state)
{
	struct fixture *fx = *state;
	struct server_handlers h = {.frame = on_frame, .closed = on_closed, .arg = fx};
	char sub[64];

	snprintf(sub, sizeof(sub), "%s/s", fx->dir);
	assert_int_equal(mkdir(sub, 0777), 0);
	assert_int_equal(chmod(sub, 0777), 0);
	fx->opts.path = fx->path;
	assert_int_equal(server_new(&fx->loop, &fx->opts, &h, &fx->srv), -EPERM);
	assert_null(fx->srv);
	assert_int_equal(access(fx->path, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_accept_and_peer_credentials, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sender_known_from_the_first_byte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peers_pinned_only_for_program_rules, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_frame_split_and_batched, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oversized_frame_closes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_frame_closes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_clients_per_uid, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_clients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partial_frame_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined_past_output_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pending_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_tells_waiting_clients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unsafe_directory_refused, setup, teardown),
	};

	log_init(LOG_CRIT);
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
