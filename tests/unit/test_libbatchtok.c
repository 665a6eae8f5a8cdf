/* test_libbatchtok.c - the client's handshake against a scripted daemon: what
 * it sends, and how it treats requests the daemon does not answer.
 *
 * The library is included whole so that a request type newer than any call
 * of its API can go through begin(), the path every call takes. The daemon
 * is a socket whose replies are written before the client asks, so nothing
 * runs concurrently and nothing waits. */
#include "../../client/libbatchtok.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>

#include <cmocka.h>

/* A request type no daemon had when this test was written. */
#define FUTURE_TYPE (BT_METRICS + 1)

struct peer {
	char dir[64];
	char path[128];
	int listener;
	int fd; /* the daemon's end */
	batchtok *bt;
	struct bt_buf heard; /* what hear() read of the client's frames */
	batchtok_watch *w;
};

static int setup(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct peer *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	snprintf(p->dir, sizeof(p->dir), "/tmp/test_libbatchtok.XXXXXX");
	assert_non_null(mkdtemp(p->dir));
	snprintf(p->path, sizeof(p->path), "%s/sock", p->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
	p->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->listener >= 0);
	assert_int_equal(bind(p->listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(p->listener, 1), 0);
	assert_int_equal(batchtok_new(&p->bt), 0);
	batchtok_set_timeout(p->bt, 5000);
	assert_int_equal(batchtok_connect(p->bt, p->path), 0);
	p->fd = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
	assert_true(p->fd >= 0);
	bt_buf_init(&p->heard, BT_REQUEST_MAX);
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct peer *p = *state;

	batchtok_free(p->bt);
	bt_buf_free(&p->heard);
	if (p->fd >= 0)
		close(p->fd);
	close(p->listener);
	unlink(p->path);
	rmdir(p->dir);
	free(p);
	return 0;
}

/* Queues the daemon's answers: they wait in the socket for the client. */
static void say(struct peer *p, struct bt_buf *b)
{
	assert_int_equal(send(p->fd, bt_buf_ptr(b), bt_buf_len(b), MSG_NOSIGNAL),
			 (ssize_t)bt_buf_len(b));
	bt_buf_free(b);
}

static void say_hello(struct peer *p, uint32_t version, const char *server, uint64_t requests)
{
	struct bt_hello_reply m = {version, (char *)server, requests};
	struct bt_buf b;

	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_hello_reply(&b, 0, &m), 0);
	say(p, &b);
}

static void say_text(struct peer *p, uint8_t type, uint32_t id, const char *text)
{
	struct bt_buf b;

	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_text_reply(&b, type | BT_REPLY, id, text), 0);
	say(p, &b);
}

static void say_error(struct peer *p, uint32_t id, uint32_t status, const char *message)
{
	struct bt_buf b;

	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_error(&b, id, status, message), 0);
	say(p, &b);
}

/* The types of the frames the client has sent so far, in order, into
 * types (n at most); returns how many. */
static size_t heard(struct peer *p, uint8_t *types, size_t n)
{
	struct bt_buf in;
	struct bt_frame f;
	uint8_t *w;
	ssize_t k;
	size_t count = 0;

	bt_buf_init(&in, BT_REQUEST_MAX);
	while (bt_buf_reserve(&in, 4096, &w) == 0 && (k = recv(p->fd, w, 4096, MSG_DONTWAIT)) > 0)
		bt_buf_commit(&in, (size_t)k);
	while (bt_frame_peek(&in, BT_REQUEST_MAX, &f) == 0) {
		assert_true(count < n);
		if (f.type == BT_HELLO) {
			struct bt_hello h;
			/* A client from now on asks for 1..2: a version 1 daemon
			 * accepts that and answers 1. */
			assert_int_equal(bt_decode_hello(&f.body, &h), 0);
			assert_int_equal(h.min_version, 1);
			assert_int_equal(h.max_version, 2);
		}
		types[count++] = f.type;
		bt_buf_consume(&in, f.size);
	}
	assert_int_equal(bt_buf_len(&in), 0);
	bt_buf_free(&in);
	return count;
}

static void test_version_1_requests_ride_with_hello(void **state)
{
	struct peer *p = *state;
	uint8_t t[4];
	char *s = NULL;

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS);
	say_text(p, BT_PING, 1, "batchtokd 9.9");
	assert_int_equal(batchtok_ping(p->bt, &s), 0);
	assert_string_equal(s, "batchtokd 9.9");
	free(s);
	assert_int_equal(heard(p, t, 4), 2);
	assert_int_equal(t[0], BT_HELLO);
	assert_int_equal(t[1], BT_PING);
}

/* A version 2 daemon that does not list STATUS: the client refuses it
 * without a byte on the wire, and the connection goes on. */
static void test_unlisted_request_is_refused_unsent(void **state)
{
	struct peer *p = *state;
	char *out = (char *)"untouched";
	uint8_t t[4];

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS & ~BT_REQUEST_BIT(BT_STATUS));
	say_text(p, BT_PING, 1, "batchtokd 9.9");
	assert_int_equal(batchtok_ping(p->bt, NULL), 0);
	assert_int_equal(heard(p, t, 4), 2);

	assert_int_equal(batchtok_status(p->bt, 0, &out), -EOPNOTSUPP);
	assert_string_equal(out, "untouched");
	assert_string_equal(batchtok_error(p->bt),
			    "STATUS is not supported by this batchtokd (9.9): upgrade batchtokd");
	assert_int_equal(heard(p, t, 4), 0);

	say_text(p, BT_PING, 2, "batchtokd 9.9");
	assert_int_equal(batchtok_ping(p->bt, NULL), 0);
	assert_int_equal(batchtok_error(p->bt)[0], 0);
	assert_int_equal(heard(p, t, 4), 1);
	assert_int_equal(t[0], BT_PING);
}

/* A daemon from before version 2 answers HELLO 1..2 with version 1 and no
 * list. A request newer than version 1 waits for that answer instead of
 * riding with HELLO, and is then refused unsent: such a daemon cannot know
 * it. Version 1's requests still work. */
static void test_newer_request_to_a_version_1_daemon(void **state)
{
	struct peer *p = *state;
	uint32_t id = 0;
	uint8_t t[4];

	say_hello(p, 1, "batchtokd 0.1.0", 0);
	assert_int_equal(begin(p->bt, FUTURE_TYPE, &id), -EOPNOTSUPP);
	assert_string_equal(
	    batchtok_error(p->bt),
	    "request type 18 is not supported by this batchtokd (0.1.0): upgrade batchtokd");
	assert_int_equal(heard(p, t, 4), 1);
	assert_int_equal(t[0], BT_HELLO);
	assert_true(p->bt->fd >= 0);

	say_text(p, BT_PING, 1, "batchtokd 0.1.0");
	assert_int_equal(batchtok_ping(p->bt, NULL), 0);
	assert_int_equal(heard(p, t, 4), 1);
	assert_int_equal(t[0], BT_PING);
}

/* The same request to a daemon that lists it: the handshake is done first
 * and the request may go. */
static void test_newer_request_to_a_daemon_that_lists_it(void **state)
{
	struct peer *p = *state;
	uint32_t id = 0;
	uint8_t t[4];

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS | BT_REQUEST_BIT(FUTURE_TYPE));
	assert_int_equal(begin(p->bt, FUTURE_TYPE, &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(p->bt->hello_pending, 0);
	assert_int_equal(heard(p, t, 4), 1);
	assert_int_equal(t[0], BT_HELLO);
}

/* A request that went out with HELLO before the daemon said it does not
 * answer it gets the same message from the daemon's UNSUPPORTED; a listed
 * request's UNSUPPORTED (compat_endpoint off) keeps the daemon's words. */
static void test_unsupported_answers(void **state)
{
	struct peer *p = *state;
	struct batchtok_compat *c = NULL;
	char *out = NULL;

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS & ~BT_REQUEST_BIT(BT_STATUS));
	say_error(p, 1, BT_E_UNSUPPORTED, "unknown request type 3");
	assert_int_equal(batchtok_status(p->bt, 0, &out), -EOPNOTSUPP);
	assert_null(out);
	assert_string_equal(batchtok_error(p->bt),
			    "STATUS is not supported by this batchtokd (9.9): upgrade batchtokd");

	say_error(p, 2, BT_E_UNSUPPORTED, "the compatible endpoint is off");
	assert_int_equal(batchtok_compat_grant(p->bt, NULL, &c), -EOPNOTSUPP);
	assert_null(c);
	assert_string_equal(batchtok_error(p->bt), "the compatible endpoint is off");
}

/* A restarted daemon: a child process accepts the handle's next connection
 * on the same socket, expects HELLO and one request of type `type`, answers
 * both, and exits 0 (1 if it heard anything else). */
static pid_t next_daemon(struct peer *p, uint8_t type)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct bt_hello_reply h = {2, "batchtokd 9.9", BT_V1_REQUESTS};
		struct bt_buf in, out;
		struct bt_frame f;
		int fd = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC), frames = 0, ok = 1;
		uint8_t *w;
		ssize_t k;

		bt_buf_init(&in, BT_REQUEST_MAX);
		bt_buf_init(&out, BT_REPLY_MAX);
		while (fd >= 0 && frames < 2 && bt_buf_reserve(&in, 4096, &w) == 0 &&
		       (k = recv(fd, w, 4096, 0)) > 0) {
			bt_buf_commit(&in, (size_t)k);
			while (frames < 2 && bt_frame_peek(&in, BT_REQUEST_MAX, &f) == 0) {
				ok &= f.type == (frames ? type : BT_HELLO);
				if (frames++ == 0)
					bt_encode_hello_reply(&out, f.id, &h);
				else
					bt_encode_text_reply(&out, type | BT_REPLY, f.id,
							     "batchtokd 9.9");
				bt_buf_consume(&in, f.size);
			}
		}
		ok &= frames == 2 && send(fd, bt_buf_ptr(&out), bt_buf_len(&out), MSG_NOSIGNAL) ==
					 (ssize_t)bt_buf_len(&out);
		_exit(ok ? 0 : 1);
	}
	return pid;
}

static void daemon_exited(pid_t pid)
{
	int status = -1;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* The daemon restarted between two calls: the old connection is gone
 * (EPIPE on send, with SIGPIPE not raised) and a request that is safe to
 * repeat goes again on a new connection, with a new HELLO, transparently. */
static void test_reconnects_once_for_a_safe_request(void **state)
{
	struct peer *p = *state;
	uint8_t t[4];
	char *s = NULL;
	pid_t pid;

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS);
	say_text(p, BT_PING, 1, "batchtokd 9.9");
	assert_int_equal(batchtok_ping(p->bt, NULL), 0);
	assert_int_equal(heard(p, t, 4), 2);
	close(p->fd); /* the old daemon stops */
	p->fd = -1;
	pid = next_daemon(p, BT_PING);
	assert_int_equal(batchtok_ping(p->bt, &s), 0);
	assert_string_equal(s, "batchtokd 9.9");
	free(s);
	daemon_exited(pid);
}

/* A request that is not safe to repeat (COMPAT would issue a second
 * capability) is not sent again: the call fails, and the next call
 * connects anew instead of saying "not connected". */
static void test_unsafe_request_is_not_repeated(void **state)
{
	struct peer *p = *state;
	struct batchtok_compat *c = NULL;
	uint8_t t[4];
	pid_t pid;

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS);
	say_text(p, BT_PING, 1, "batchtokd 9.9");
	assert_int_equal(batchtok_ping(p->bt, NULL), 0);
	assert_int_equal(heard(p, t, 4), 2);
	close(p->fd);
	p->fd = -1;
	assert_int_equal(batchtok_compat_grant(p->bt, NULL, &c), -ECONNREFUSED);
	assert_null(c);
	assert_non_null(strstr(batchtok_error(p->bt), "lost the connection to batchtokd"));
	/* Nobody connected again for it. */
	assert_int_equal(poll(&(struct pollfd){.fd = p->listener, .events = POLLIN}, 1, 0), 0);
	pid = next_daemon(p, BT_PING);
	assert_int_equal(batchtok_ping(p->bt, NULL), 0);
	daemon_exited(pid);
}

/* A HELLO reply in a version the client did not offer cannot be read: the
 * connection is dropped with a plain message. */
static void test_unreadable_hello_reply(void **state)
{
	struct peer *p = *state;
	struct bt_buf b;
	size_t mark;

	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_frame_begin(&b, BT_HELLO | BT_REPLY, 0, &mark), 0);
	assert_int_equal(bt_buf_put_u32(&b, 3), 0);
	assert_int_equal(bt_buf_put_cstring(&b, "batchtokd 99"), 0);
	assert_int_equal(bt_frame_end(&b, mark), 0);
	say(p, &b);
	assert_int_equal(batchtok_ping(p->bt, NULL), -EPROTO);
	assert_string_equal(batchtok_error(p->bt), "batchtokd sent a malformed HELLO reply");
	assert_true(p->bt->fd < 0);
}

static void say_token(struct peer *p, uint32_t id, const char *token, const char *type)
{
	struct bt_token_reply m = {(char *)token, 4000, (char *)type, "batch", "r", "t"};
	struct bt_buf b;

	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_token_reply(&b, id, &m), 0);
	say(p, &b);
}

/* A token is printed and pasted into headers as it is: one holding a space
 * or a control character (a daemon that passed on a hostile token service's
 * reply) is refused, and the message does not repeat it. */
static void test_token_with_control_characters_is_refused(void **state)
{
	static const char *const bad[][2] = {
	    {"abc\r\nX-Injected: 1", "Bearer"},
	    {"abc\x1b[2J", "Bearer"},
	    {"a b", "Bearer"},
	    {"abc\x7f", "Bearer"},
	    {"abc\xc3\xa9", "Bearer"},
	    {"abc", "Bearer\r\nX-Injected: 1"},
	};
	struct peer *p = *state;
	struct batchtok_token *t = (struct batchtok_token *)&t;
	uint32_t id = 1;

	say_hello(p, 2, "batchtokd 9.9", BT_V1_REQUESTS);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++, id++) {
		say_token(p, id, bad[i][0], bad[i][1]);
		assert_int_equal(batchtok_get_token(p->bt, &(struct batchtok_request){0}, &t),
				 -EPROTO);
		assert_ptr_equal(t, (struct batchtok_token *)&t);
		assert_non_null(strstr(batchtok_error(p->bt), "control characters"));
		assert_null(strstr(batchtok_error(p->bt), "Injected"));
	}
	/* The connection goes on: the reply itself was well formed. */
	say_token(p, id, "eyJ.a-b_c~d+e/f==", "Bearer");
	assert_int_equal(batchtok_get_token(p->bt, &(struct batchtok_request){0}, &t), 0);
	assert_string_equal(t->access_token, "eyJ.a-b_c~d+e/f==");
	batchtok_token_free(t);
}

/* The daemon's view of the next frame the client sent, read from what the
 * socket holds into p's buffer; consume f->size from p->heard when done. */
static void hear(struct peer *p, struct bt_frame *f)
{
	uint8_t *w;
	ssize_t k;

	while (bt_buf_reserve(&p->heard, 4096, &w) == 0 &&
	       (k = recv(p->fd, w, 4096, MSG_DONTWAIT)) > 0)
		bt_buf_commit(&p->heard, (size_t)k);
	assert_int_equal(bt_frame_peek(&p->heard, BT_REQUEST_MAX, f), 0);
}

/* Every request type this client knows, as a batchtokd 0.3.0 lists them. */
#define ALL_REQUESTS 0x1fffe

static void say_record(struct peer *p, uint8_t type, uint32_t id, const struct bt_record *rec)
{
	struct bt_buf b;

	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_record_reply(&b, type | BT_REPLY, id, rec), 0);
	say(p, &b);
}

/* A claims challenge goes as CHALLENGE, with the query and the claims as
 * given, once the daemon has said it answers CHALLENGE; its token reply
 * comes back as a token. */
static void test_claims_challenge(void **state)
{
	static const char claims[] = "{\"access_token\":{\"acrs\":{\"essential\":true,"
				     "\"value\":\"cp1\"}}}";
	struct peer *p = *state;
	struct bt_token_reply m = {"eyJ.new.sig", 4000, "Bearer", "graph", "r", "t"};
	struct batchtok_token *t = NULL;
	struct bt_challenge c;
	struct bt_frame f;
	struct bt_buf b;

	say_hello(p, 2, "batchtokd 0.3.0", ALL_REQUESTS);
	bt_buf_init(&b, BT_REPLY_MAX);
	assert_int_equal(bt_encode_token_reply_as(&b, BT_CHALLENGE | BT_REPLY, 1, &m), 0);
	say(p, &b);
	assert_int_equal(batchtok_get_token_claims(
			     p->bt,
			     &(struct batchtok_request){.identity = "graph", .min_validity = 90},
			     claims, &t),
			 0);
	assert_string_equal(t->access_token, "eyJ.new.sig");
	assert_string_equal(t->identity, "graph");
	batchtok_token_free(t);

	hear(p, &f);
	assert_int_equal(f.type, BT_HELLO);
	bt_buf_consume(&p->heard, f.size);
	hear(p, &f);
	assert_int_equal(f.type, BT_CHALLENGE);
	assert_int_equal(f.id, 1);
	assert_int_equal(bt_decode_challenge(&f.body, &c), 0);
	assert_string_equal(c.query.identity, "graph");
	assert_string_equal(c.query.resource, "");
	assert_int_equal(c.query.min_validity, 90);
	assert_int_equal(c.query.flags, 0);
	assert_string_equal(c.claims, claims);
	bt_challenge_clear(&c);
	bt_buf_consume(&p->heard, f.size);
}

/* Claims that cannot be sent are refused before anything goes; a daemon
 * from before CHALLENGE is not asked. */
static void test_claims_refused_unsent(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t = NULL;
	char big[BT_CLAIMS_MAX + 2];
	uint8_t types[4];

	memset(big, ' ', sizeof(big) - 1);
	big[0] = '{';
	big[sizeof(big) - 2] = '}';
	big[sizeof(big) - 1] = 0;
	assert_int_equal(batchtok_get_token_claims(p->bt, NULL, big, &t), -EINVAL);
	assert_non_null(strstr(batchtok_error(p->bt), "more than the 8192"));
	assert_int_equal(batchtok_get_token_claims(p->bt, NULL, "", &t), -EINVAL);
	assert_int_equal(batchtok_get_token_claims(p->bt, NULL, NULL, &t), -EINVAL);
	assert_int_equal(heard(p, types, 4), 0);

	say_hello(p, 2, "batchtokd 0.2.0",
		  BT_V1_REQUESTS | BT_REQUEST_BIT(BT_COMPAT_RENEW) |
		      BT_REQUEST_BIT(BT_COMPAT_REVOKE));
	assert_int_equal(batchtok_get_token_claims(p->bt, NULL, "{}", &t), -EOPNOTSUPP);
	assert_string_equal(
	    batchtok_error(p->bt),
	    "CHALLENGE is not supported by this batchtokd (0.2.0): upgrade batchtokd");
	assert_null(t);
	assert_int_equal(heard(p, types, 4), 1);
	assert_int_equal(types[0], BT_HELLO);
}

static void test_refresh(void **state)
{
	struct peer *p = *state;
	struct batchtok_refresh *r = NULL;
	struct bt_token_query q;
	struct bt_record rec = {0};
	struct bt_frame f;

	assert_int_equal(bt_record_add_str(&rec, "identity", "batch"), 0);
	assert_int_equal(bt_record_add_str(&rec, "resource", "https://batch.core.windows.net/"), 0);
	assert_int_equal(bt_record_add_str(&rec, "fingerprint", "sha256:0123456789ab"), 0);
	assert_int_equal(bt_record_add_int(&rec, "expires", BT_FIELD_TIME, 1795325662), 0);
	assert_int_equal(bt_record_add_int(&rec, "refresh", BT_FIELD_TIME, 1795323862), 0);
	assert_int_equal(bt_record_add_int(&rec, "watchers", BT_FIELD_INT, 3), 0);
	say_hello(p, 2, "batchtokd 0.3.0", ALL_REQUESTS);
	say_record(p, BT_REFRESH, 1, &rec);
	bt_record_clear(&rec);
	say_error(p, 2, BT_E_DENIED, "REFRESH is for administrators");

	assert_int_equal(
	    batchtok_refresh(p->bt, &(struct batchtok_request){.identity = "batch"}, &r), 0);
	assert_string_equal(r->identity, "batch");
	assert_string_equal(r->resource, "https://batch.core.windows.net/");
	assert_string_equal(r->fingerprint, "sha256:0123456789ab");
	assert_int_equal(r->expires_on, 1795325662);
	assert_int_equal(r->refresh_at, 1795323862);
	assert_int_equal(r->watchers, 3);
	batchtok_refresh_free(r);
	hear(p, &f);
	bt_buf_consume(&p->heard, f.size);
	hear(p, &f);
	assert_int_equal(f.type, BT_REFRESH);
	assert_int_equal(bt_decode_token_query(&f.body, &q), 0);
	assert_string_equal(q.identity, "batch");
	bt_token_query_clear(&q);
	bt_buf_consume(&p->heard, f.size);

	r = NULL;
	assert_int_equal(batchtok_refresh(p->bt, NULL, &r), -EACCES);
	assert_null(r);
	assert_string_equal(batchtok_error(p->bt), "REFRESH is for administrators");
}

static void test_forget(void **state)
{
	struct peer *p = *state;
	struct bt_record rec = {0};
	struct bt_forget m;
	struct bt_frame f;
	unsigned n = 99;
	uint8_t types[4];

	/* An identity or all of them, not both, not neither: nothing sent. */
	assert_int_equal(batchtok_forget(p->bt, NULL, 0, &n), -EINVAL);
	assert_int_equal(batchtok_forget(p->bt, "", 0, &n), -EINVAL);
	assert_int_equal(batchtok_forget(p->bt, "batch", BATCHTOK_FORGET_ALL, &n), -EINVAL);
	assert_int_equal(batchtok_forget(p->bt, "batch", 0x2, &n), -EINVAL);
	assert_int_equal(n, 99);
	assert_int_equal(heard(p, types, 4), 0);

	assert_int_equal(bt_record_add_int(&rec, "forgotten", BT_FIELD_INT, 2), 0);
	say_hello(p, 2, "batchtokd 0.3.0", ALL_REQUESTS);
	say_record(p, BT_FORGET, 1, &rec);
	say_record(p, BT_FORGET, 2, &rec);
	bt_record_clear(&rec);
	assert_int_equal(batchtok_forget(p->bt, "batch", 0, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(batchtok_forget(p->bt, NULL, BATCHTOK_FORGET_ALL, NULL), 0);
	hear(p, &f);
	bt_buf_consume(&p->heard, f.size);
	for (uint32_t id = 1; id <= 2; id++) {
		hear(p, &f);
		assert_int_equal(f.type, BT_FORGET);
		assert_int_equal(f.id, id);
		assert_int_equal(bt_decode_forget(&f.body, &m), 0);
		assert_string_equal(m.identity, id == 1 ? "batch" : "");
		assert_int_equal(m.flags, id == 1 ? 0 : BT_FORGET_ALL);
		bt_forget_clear(&m);
		bt_buf_consume(&p->heard, f.size);
	}
}

/* Watches. The scripted daemon accepts the watch's connections itself, and
 * the watch is driven with batchtok_watch_next(w, 0, ...), which never
 * waits: each step is the client's answer to what the daemon already said. */

static void listen_at(struct peer *p)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
	p->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->listener >= 0);
	assert_int_equal(bind(p->listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(p->listener, 4), 0);
}

/* A daemon's socket and a watch of identity "batch" on it, not connected. */
static int setup_watch(void **state)
{
	struct peer *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	snprintf(p->dir, sizeof(p->dir), "/tmp/test_libbatchtok.XXXXXX");
	assert_non_null(mkdtemp(p->dir));
	snprintf(p->path, sizeof(p->path), "%s/sock", p->dir);
	listen_at(p);
	p->fd = -1;
	bt_buf_init(&p->heard, BT_REQUEST_MAX);
	assert_int_equal(batchtok_watch_start(
			     p->path,
			     &(struct batchtok_request){.identity = "batch", .min_validity = 60},
			     &p->w),
			 0);
	*state = p;
	return 0;
}

static int teardown_watch(void **state)
{
	struct peer *p = *state;

	batchtok_watch_free(p->w);
	return teardown(state);
}

/* Whether the watch's descriptor is readable within ms. */
static bool readable(struct peer *p, int ms)
{
	struct pollfd pfd = {.fd = batchtok_watch_fd(p->w), .events = POLLIN};

	return poll(&pfd, 1, ms) == 1 && (pfd.revents & POLLIN);
}

static int next(struct peer *p, struct batchtok_token **t, int64_t *refresh_at)
{
	*t = NULL;
	return batchtok_watch_next(p->w, 0, t, refresh_at);
}

/* The daemon accepts the watch's connection, hears HELLO, answers it
 * (version 2, listing requests), and hears the WATCH the client sends
 * then. */
static void subscribe(struct peer *p, uint64_t requests)
{
	struct batchtok_token *t;
	struct bt_token_query q;
	struct bt_frame f;

	/* Readable at once: the first attempt is due. */
	assert_true(readable(p, 0));
	assert_int_equal(next(p, &t, NULL), -EAGAIN);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
	assert_true(p->fd >= 0);
	bt_buf_reset(&p->heard);
	hear(p, &f);
	assert_int_equal(f.type, BT_HELLO);
	bt_buf_consume(&p->heard, f.size);
	/* Nothing more than HELLO: WATCH waits for the daemon's list. */
	assert_int_equal(bt_buf_len(&p->heard), 0);
	assert_false(readable(p, 0));
	say_hello(p, 2, "batchtokd 0.3.0", requests);
	assert_true(readable(p, 0));
	assert_int_equal(next(p, &t, NULL), -EAGAIN);
	hear(p, &f);
	assert_int_equal(f.type, BT_WATCH);
	assert_int_equal(f.id, 1);
	assert_int_equal(bt_decode_token_query(&f.body, &q), 0);
	assert_string_equal(q.identity, "batch");
	assert_int_equal(q.min_validity, 60);
	assert_int_equal(q.flags, 0);
	bt_token_query_clear(&q);
	bt_buf_consume(&p->heard, f.size);
}

static void encode_event(struct bt_buf *b, uint32_t status, const char *message, const char *token,
			 uint64_t refresh_at)
{
	struct bt_watch_event ev = {status,
				    (char *)message,
				    {(char *)token, 4000, "Bearer", "batch", "r", "t"},
				    refresh_at};

	if (status) {
		ev.t.access_token = ev.t.token_type = ev.t.identity = "";
		ev.t.expires_on = 0;
	}
	assert_int_equal(bt_encode_watch_event(b, 1, &ev), 0);
}

static void say_event(struct peer *p, uint32_t status, const char *message, const char *token,
		      uint64_t refresh_at)
{
	struct bt_buf b;

	bt_buf_init(&b, BT_REPLY_MAX);
	encode_event(&b, status, message, token, refresh_at);
	say(p, &b);
}

static void expect_token(struct peer *p, const char *token, int64_t refresh_at)
{
	struct batchtok_token *t;
	int64_t when = -1;

	assert_int_equal(next(p, &t, &when), 0);
	assert_string_equal(t->access_token, token);
	assert_int_equal(t->expires_on, 4000);
	assert_string_equal(t->identity, "batch");
	assert_int_equal(when, refresh_at);
	assert_string_equal(batchtok_watch_error(p->w), "");
	batchtok_token_free(t);
}

/* Tokens and error events in order; the descriptor is readable exactly
 * while something waits, buffered events included. */
static void test_watch_events(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t;

	subscribe(p, ALL_REQUESTS);
	assert_false(readable(p, 0));
	say_event(p, 0, "", "tok1", 3000);
	say_event(p, 0, "", "tok2", 3500);
	assert_true(readable(p, 0));
	expect_token(p, "tok1", 3000);
	/* tok2 came in the same read: buffered, and the descriptor says so. */
	assert_true(readable(p, 0));
	expect_token(p, "tok2", 3500);
	assert_false(readable(p, 0));
	assert_int_equal(next(p, &t, NULL), -EAGAIN);

	say_event(p, BT_E_UNAVAILABLE, "the token service answers 503; retrying at 10:00", NULL, 0);
	assert_int_equal(next(p, &t, NULL), -EHOSTUNREACH);
	assert_null(t);
	assert_string_equal(batchtok_watch_error(p->w),
			    "the token service answers 503; retrying at 10:00");
	assert_int_equal(batchtok_watch_ended(p->w), 0);
	say_event(p, BT_E_CREDENTIAL_REJECTED, "AADSTS7000215: invalid client secret", NULL, 0);
	assert_int_equal(next(p, &t, NULL), -EKEYREJECTED);
	say_event(p, 0, "", "tok3", 0);
	expect_token(p, "tok3", 0);
}

/* A frame that comes a byte at a time is delivered when whole, and no call
 * waits for the rest. A large one takes many reads. */
static void test_watch_partial_frames(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t;
	struct bt_buf b;
	size_t n, sent = 0;
	char *big;

	subscribe(p, ALL_REQUESTS);
	bt_buf_init(&b, BT_REPLY_MAX);
	encode_event(&b, 0, "", "tok1", 3000);
	n = bt_buf_len(&b);
	for (size_t i = 0; i < n - 1; i++) {
		assert_int_equal(send(p->fd, bt_buf_ptr(&b) + i, 1, MSG_NOSIGNAL), 1);
		assert_int_equal(next(p, &t, NULL), -EAGAIN);
		assert_false(readable(p, 0));
	}
	assert_int_equal(send(p->fd, bt_buf_ptr(&b) + n - 1, 1, MSG_NOSIGNAL), 1);
	expect_token(p, "tok1", 3000);
	bt_buf_free(&b);

	/* 200 KiB: more than the socket holds at once, sent as it drains. */
	big = malloc(200 * 1024 + 1);
	assert_non_null(big);
	memset(big, 'x', 200 * 1024);
	big[200 * 1024] = 0;
	bt_buf_init(&b, BT_REPLY_MAX);
	encode_event(&b, 0, "", big, 7);
	n = bt_buf_len(&b);
	for (int rounds = 0; sent < n; rounds++) {
		ssize_t k =
		    send(p->fd, bt_buf_ptr(&b) + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k > 0)
			sent += (size_t)k;
		if (sent < n)
			assert_int_equal(next(p, &t, NULL), -EAGAIN);
		assert_true(rounds < 10000);
	}
	expect_token(p, big, 7);
	bt_buf_free(&b);
	free(big);
}

/* An ERROR for the watch's id ends it: that errno from then on, the
 * connection closed, the descriptor quiet. */
static void test_watch_ends(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t;
	char c;

	subscribe(p, ALL_REQUESTS);
	say_event(p, 0, "", "tok1", 3000);
	say_error(p, 1, BT_E_DENIED, "uid 1001 may no longer use identity 'batch'");
	expect_token(p, "tok1", 3000);
	assert_int_equal(next(p, &t, NULL), -EACCES);
	assert_int_equal(batchtok_watch_ended(p->w), -EACCES);
	assert_string_equal(batchtok_watch_error(p->w),
			    "uid 1001 may no longer use identity 'batch'");
	assert_int_equal(recv(p->fd, &c, 1, 0), 0);
	assert_false(readable(p, 0));
	assert_int_equal(batchtok_watch_next(p->w, 1000, &t, NULL), -EACCES);
	assert_null(t);
	/* Nobody connected again. */
	assert_int_equal(poll(&(struct pollfd){.fd = p->listener, .events = POLLIN}, 1, 0), 0);
}

static void test_watch_old_daemon(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t;
	struct bt_frame f;

	assert_int_equal(next(p, &t, NULL), -EAGAIN);
	p->fd = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
	assert_true(p->fd >= 0);
	say_hello(p, 1, "batchtokd 0.1.0", 0);
	assert_int_equal(next(p, &t, NULL), -EOPNOTSUPP);
	assert_string_equal(batchtok_watch_error(p->w),
			    "WATCH is not supported by this batchtokd (0.1.0): upgrade batchtokd");
	assert_int_equal(batchtok_watch_ended(p->w), -EOPNOTSUPP);
	/* HELLO alone was sent. */
	hear(p, &f);
	assert_int_equal(f.type, BT_HELLO);
	bt_buf_consume(&p->heard, f.size);
	assert_int_equal(bt_buf_len(&p->heard), 0);
}

/* The daemon restarts: the watch connects at once and subscribes anew;
 * the new subscription's first token, the one the caller has, is not
 * delivered twice. A daemon that says it is stopping is the same. */
static void test_watch_resubscribes(void **state)
{
	struct peer *p = *state;

	subscribe(p, ALL_REQUESTS);
	say_event(p, 0, "", "tok1", 3000);
	expect_token(p, "tok1", 3000);
	close(p->fd); /* the daemon stops */
	p->fd = -1;
	assert_true(readable(p, 0));
	subscribe(p, ALL_REQUESTS);
	say_event(p, 0, "", "tok1", 3000);
	say_event(p, 0, "", "tok2", 3500);
	expect_token(p, "tok2", 3500);

	say_error(p, 1, BT_E_UNAVAILABLE, "batchtokd is stopping");
	subscribe(p, ALL_REQUESTS);
	assert_int_equal(batchtok_watch_ended(p->w), 0);
	/* Another token first on a new subscription is delivered. */
	say_event(p, 0, "", "tok3", 4000);
	expect_token(p, "tok3", 4000);
}

/* No daemon: -ECONNREFUSED, saying what to do, and a new attempt when it
 * is due (the descriptor becomes readable), which finds the daemon back. */
static void test_watch_unreachable(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t;

	close(p->listener);
	unlink(p->path);
	assert_true(readable(p, 0));
	assert_int_equal(next(p, &t, NULL), -ECONNREFUSED);
	assert_non_null(strstr(batchtok_watch_error(p->w), "cannot reach batchtokd at"));
	assert_int_equal(batchtok_watch_ended(p->w), 0);
	/* Not again before the backoff has passed. */
	assert_false(readable(p, 0));
	assert_int_equal(next(p, &t, NULL), -EAGAIN);
	assert_true(readable(p, 5000));
	assert_int_equal(next(p, &t, NULL), -ECONNREFUSED);

	listen_at(p);
	assert_true(readable(p, 5000));
	subscribe(p, ALL_REQUESTS);
	say_event(p, 0, "", "tok1", 3000);
	expect_token(p, "tok1", 3000);
}

/* A slow reader: the events the daemon sent are delivered, then its BUSY
 * is an error event and the watch subscribes anew. Broken input is -EPROTO
 * and never buffered past a frame's maximum. */
static void test_watch_slow_reader_and_bad_input(void **state)
{
	struct peer *p = *state;
	struct batchtok_token *t;
	struct bt_buf b;
	char c;

	subscribe(p, ALL_REQUESTS);
	for (int i = 0; i < 3; i++)
		say_event(p, 0, "", i == 0 ? "tok0" : i == 1 ? "tok1" : "tok2", 3000);
	say_error(p, 1, BT_E_BUSY, "events were not read");
	close(p->fd);
	p->fd = -1;
	expect_token(p, "tok0", 3000);
	expect_token(p, "tok1", 3000);
	expect_token(p, "tok2", 3000);
	assert_int_equal(next(p, &t, NULL), -EBUSY);
	assert_non_null(strstr(batchtok_watch_error(p->w), "events were not read"));
	assert_int_equal(batchtok_watch_ended(p->w), 0);
	assert_true(readable(p, 5000));
	subscribe(p, ALL_REQUESTS);

	/* A token that is no bearer token: refused, and the watch goes on. */
	say_event(p, 0, "", "a b", 3000);
	assert_int_equal(next(p, &t, NULL), -EPROTO);
	assert_non_null(strstr(batchtok_watch_error(p->w), "control characters"));
	say_event(p, 0, "", "tok3", 3000);
	expect_token(p, "tok3", 3000);

	/* A frame announced larger than 1 MiB: refused from its header, and a
	 * new connection. */
	bt_buf_init(&b, 64);
	assert_int_equal(bt_buf_put_u32(&b, BT_REPLY_MAX + 1), 0);
	say(p, &b);
	assert_int_equal(next(p, &t, NULL), -EPROTO);
	assert_non_null(strstr(batchtok_watch_error(p->w), "larger than 1 MiB"));
	assert_int_equal(recv(p->fd, &c, 1, 0), 0);
	assert_true(readable(p, 5000));
	subscribe(p, ALL_REQUESTS);
	say_event(p, 0, "", "tok4", 3000);
	expect_token(p, "tok4", 3000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_version_1_requests_ride_with_hello, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_unlisted_request_is_refused_unsent, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_newer_request_to_a_version_1_daemon, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_newer_request_to_a_daemon_that_lists_it, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_unsupported_answers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unreadable_hello_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_with_control_characters_is_refused, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_reconnects_once_for_a_safe_request, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_unsafe_request_is_not_repeated, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claims_challenge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claims_refused_unsent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_watch_events, setup_watch, teardown_watch),
	    cmocka_unit_test_setup_teardown(test_watch_partial_frames, setup_watch, teardown_watch),
	    cmocka_unit_test_setup_teardown(test_watch_ends, setup_watch, teardown_watch),
	    cmocka_unit_test_setup_teardown(test_watch_old_daemon, setup_watch, teardown_watch),
	    cmocka_unit_test_setup_teardown(test_watch_resubscribes, setup_watch, teardown_watch),
	    cmocka_unit_test_setup_teardown(test_watch_unreachable, setup_watch, teardown_watch),
	    cmocka_unit_test_setup_teardown(test_watch_slow_reader_and_bad_input, setup_watch,
					    teardown_watch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
