/* libbatchtok.c - the client end of the socket: connect, one request and its
 * reply at a time, and the wire status to errno mapping. */
#include "batchtok.h"
#include "daemon_conn.h"
#include "status_format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../proto/msg.h"

#define DEFAULT_TIMEOUT_MS 60000
/* Requests are small; replies may carry a large token or a full status. */
#define OUT_MAX BT_REQUEST_MAX
#define IN_MAX	BT_REPLY_MAX

/* Requests sent again, once, on a new connection when the old one was lost
 * before their reply came (a restarted daemon): asking twice changes
 * nothing. A second forced refresh is rate-limited by the daemon, and
 * renewing or revoking a capability twice ends the same. A second claims
 * challenge is rate-limited as a forced refresh is; a second REFRESH makes
 * one more fetch, which is what the administrator asked for; forgetting
 * twice forgets nothing more (a restarted daemon has nothing cached). Not
 * RELOAD, not
 * the sign-in requests (LOGIN, LOGIN_WAIT, LOGOUT), and not COMPAT, which
 * would issue a second capability. */
#define SAFE_TO_REPEAT                                                                             \
	(BT_REQUEST_BIT(BT_GET_TOKEN) | BT_REQUEST_BIT(BT_INSPECT) | BT_REQUEST_BIT(BT_STATUS) |   \
	 BT_REQUEST_BIT(BT_PING) | BT_REQUEST_BIT(BT_COMPAT_RENEW) |                               \
	 BT_REQUEST_BIT(BT_COMPAT_REVOKE) | BT_REQUEST_BIT(BT_CHALLENGE) |                         \
	 BT_REQUEST_BIT(BT_REFRESH) | BT_REQUEST_BIT(BT_FORGET) | BT_REQUEST_BIT(BT_METRICS))

struct batchtok {
	int fd;
	int timeout_ms;
	int hello_pending; /* HELLO sent with the next request, reply unread */
	/* From the HELLO reply: the request types the daemon answers, and its
	 * version for messages. */
	uint64_t requests;
	char daemon_version[64];
	uint32_t next_id;
	/* The request in flight: its id, and where its frame starts in out. */
	uint32_t cur_id;
	size_t req_start;
	/* The last call found the connection gone before its answer came: the
	 * daemon closed it (a restart, an idle connection) or it broke. */
	bool lost;
	/* The socket of the last batchtok_connect(): "" before one. */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct bt_buf out;
	struct bt_buf in;
	char error[512];
};

static int fail(batchtok *bt, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(batchtok *bt, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bt->error, sizeof(bt->error), fmt, ap);
	va_end(ap);
	return r;
}

int batchtok_new(batchtok **ret)
{
	batchtok *bt = calloc(1, sizeof(*bt));

	if (!bt)
		return -ENOMEM;
	bt->fd = -1;
	bt->timeout_ms = DEFAULT_TIMEOUT_MS;
	bt->next_id = 1;
	bt_buf_init(&bt->out, OUT_MAX);
	bt_buf_init(&bt->in, IN_MAX);
	*ret = bt;
	return 0;
}

void batchtok_set_timeout(batchtok *bt, int timeout_ms)
{
	bt->timeout_ms = timeout_ms;
}

const char *batchtok_error(const batchtok *bt)
{
	return bt->error;
}

static void disconnect(batchtok *bt)
{
	if (bt->fd >= 0)
		close(bt->fd);
	bt->fd = -1;
	bt->hello_pending = 0;
	bt->requests = 0;
	bt->daemon_version[0] = 0;
	bt_buf_reset(&bt->out);
	bt_buf_reset(&bt->in);
}

void batchtok_free(batchtok *bt)
{
	if (!bt)
		return;
	disconnect(bt);
	bt_buf_free(&bt->out);
	bt_buf_free(&bt->in);
	bt_wipe(bt, sizeof(*bt));
	free(bt);
}

int batchtok_connect(batchtok *bt, const char *path)
{
	/* A daemon from before version 2 accepts any range holding 1 and
	 * answers version 1: asking for 1..2 costs old daemons nothing. */
	struct bt_hello hello = {BT_PROTO_VERSION_MIN, BT_PROTO_VERSION_MAX};
	char buf[sizeof(bt->path)];
	int fd = -1, r;

	bt->error[0] = 0;
	disconnect(bt);
	if (!path)
		path = daemon_conn_default_path(buf, sizeof(buf));
	if (strlen(path) >= sizeof(bt->path))
		return fail(bt, -EINVAL, "socket path too long: %s", path);
	snprintf(bt->path, sizeof(bt->path), "%s", path);
	if ((r = daemon_conn_open(path, 0, &fd, bt->error, sizeof(bt->error))) < 0)
		return r;
	bt->fd = fd;
	/* Sent with the first request so that a one-shot client pays one round
	 * trip, not two. */
	r = bt_encode_hello(&bt->out, 0, &hello);
	if (r < 0) {
		disconnect(bt);
		return fail(bt, r, "cannot encode a request: %s", strerror(-r));
	}
	bt->hello_pending = 1;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events until deadline (-1: forever). */
static int wait_fd(batchtok *bt, short events, int64_t deadline)
{
	struct pollfd p = {.fd = bt->fd, .events = events};
	int r, ms;

	for (;;) {
		ms = deadline < 0 ? -1 : (int)(deadline > now_ms() ? deadline - now_ms() : 0);
		r = poll(&p, 1, ms);
		if (r > 0)
			return 0;
		if (r == 0)
			return fail(bt, -ETIMEDOUT,
				    "batchtokd did not answer within %d ms: check "
				    "'journalctl -u batchtokd', or raise the timeout",
				    bt->timeout_ms);
		if (errno != EINTR)
			return fail(bt, -errno, "poll: %s", strerror(errno));
	}
}

static int take_error(batchtok *bt, struct bt_frame *f);

/* The daemon closed on us. It says why before closing (max_clients, a bad
 * frame), so whatever is already in the socket is worth one look. */
static int lost_connection(batchtok *bt, int err)
{
	struct bt_frame f;
	uint8_t *p;

	for (;;) {
		ssize_t n;
		if (bt_frame_peek(&bt->in, IN_MAX, &f) == 0) {
			/* The answer to the request in flight; or, with another
			 * id, why the daemon closed the connection. */
			if (f.type == BT_ERROR) {
				bt->lost = f.id != bt->cur_id;
				return take_error(bt, &f);
			}
			/* A reply to an earlier request: skip it. */
			bt_buf_consume(&bt->in, f.size);
			continue;
		}
		if (bt_buf_reserve(&bt->in, 4096, &p) < 0)
			break;
		n = recv(bt->fd, p, 4096, MSG_DONTWAIT);
		if (n <= 0)
			break;
		bt_buf_commit(&bt->in, (size_t)n);
	}
	bt->lost = true;
	return fail(bt, -ECONNREFUSED, "lost the connection to batchtokd at %s: %s", bt->path,
		    strerror(err));
}

static int flush_out(batchtok *bt, int64_t deadline)
{
	while (bt_buf_len(&bt->out) > 0) {
		ssize_t n = send(bt->fd, bt_buf_ptr(&bt->out), bt_buf_len(&bt->out),
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			bt_buf_consume(&bt->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(bt, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		return lost_connection(bt, errno);
	}
	return 0;
}

/* Reads until one whole frame is buffered; *ret views it. */
static int read_frame(batchtok *bt, int64_t deadline, struct bt_frame *ret)
{
	for (;;) {
		uint8_t *p;
		ssize_t n;
		int r = bt_frame_peek(&bt->in, IN_MAX, ret);

		if (r == 0)
			return 0;
		if (r != -EAGAIN)
			return fail(bt, -EPROTO, "batchtokd sent a malformed reply (%s)",
				    strerror(-r));
		r = bt_buf_reserve(
		    &bt->in,
		    16384 < IN_MAX - bt_buf_len(&bt->in) ? 16384 : IN_MAX - bt_buf_len(&bt->in),
		    &p);
		if (r < 0)
			return fail(bt, r, "cannot buffer the reply: %s", strerror(-r));
		n = recv(bt->fd, p, bt->in.cap - bt->in.len, MSG_DONTWAIT);
		if (n > 0) {
			bt_buf_commit(&bt->in, (size_t)n);
			continue;
		}
		if (n == 0) {
			bt->lost = true;
			return fail(bt, -ECONNREFUSED,
				    "batchtokd closed the connection: see its log "
				    "(journalctl -u batchtokd)");
		}
		if (errno == ECONNRESET || errno == EPIPE)
			return lost_connection(bt, errno);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			bt->lost = true;
			return fail(bt, -ECONNREFUSED, "lost the connection to batchtokd: %s",
				    strerror(errno));
		}
		if ((r = wait_fd(bt, POLLIN, deadline)) < 0)
			return r;
	}
}

/* Turns an ERROR reply into an errno and the daemon's message. */
static int take_error(batchtok *bt, struct bt_frame *f)
{
	struct bt_error e;
	int r = bt_decode_error(&f->body, &e);

	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed error reply");
	r = daemon_conn_status_errno(e.status);
	fail(bt, r, "%s", e.message && *e.message ? e.message : bt_status_name(e.status));
	bt_error_clear(&e);
	return r;
}

/* Reads the HELLO reply (bt->out flushed first) and keeps what it says. On
 * failure the caller disconnects: the stream is out of step. */
static int finish_hello(batchtok *bt, int64_t deadline)
{
	struct bt_hello_reply h;
	struct bt_frame f;
	const char *v;
	int r;

	if ((r = flush_out(bt, deadline)) < 0 || (r = read_frame(bt, deadline, &f)) < 0)
		return r;
	if (f.type == BT_ERROR)
		return take_error(bt, &f);
	if (f.type != (BT_HELLO | BT_REPLY))
		return fail(bt, -EPROTO, "batchtokd answered the handshake with %s",
			    bt_type_name(f.type));
	if (bt_decode_hello_reply(&f.body, &h) < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed HELLO reply");
	bt->requests = bt_hello_requests(&h);
	v = strncmp(h.server, "batchtokd ", 10) == 0 ? h.server + 10 : h.server;
	snprintf(bt->daemon_version, sizeof(bt->daemon_version), "%s", v);
	bt_hello_reply_clear(&h);
	bt_buf_consume(&bt->in, f.size);
	bt->hello_pending = 0;
	return 0;
}

/* The daemon does not answer requests of this type. */
static int unsupported(batchtok *bt, uint8_t type)
{
	char name[32];

	if (strcmp(bt_type_name(type), "unknown") == 0)
		snprintf(name, sizeof(name), "request type %u", type);
	else
		snprintf(name, sizeof(name), "%s", bt_type_name(type));
	return fail(bt, -EOPNOTSUPP,
		    "%s is not supported by this batchtokd (%s): upgrade batchtokd", name,
		    bt->daemon_version);
}

/* Connects again to the socket of the last batchtok_connect(). */
static int reconnect(batchtok *bt)
{
	char path[sizeof(bt->path)];

	memcpy(path, bt->path, sizeof(path));
	return batchtok_connect(bt, path);
}

/* On a new connection, makes ready to send a request of this type: the
 * HELLO reply first if the type is newer than version 1 (only it says
 * whether this daemon answers it). */
static int hello_for(batchtok *bt, uint8_t type, int64_t deadline)
{
	int r;

	if (bt->hello_pending && !bt_requests_has(BT_V1_REQUESTS, type)) {
		bt->lost = false;
		r = finish_hello(bt, deadline);
		/* Nothing of the request has been sent: a connection found gone
		 * is made anew, once. */
		if (r < 0 && bt->lost) {
			disconnect(bt);
			if ((r = reconnect(bt)) == 0)
				r = finish_hello(bt, deadline);
		}
		if (r < 0) {
			disconnect(bt);
			return r;
		}
	}
	if (!bt->hello_pending && !bt_requests_has(bt->requests, type))
		return unsupported(bt, type);
	return 0;
}

/* Sends what is in bt->out and reads the reply frame with the given id. */
static int exchange(batchtok *bt, uint32_t id, int64_t deadline, struct bt_frame *ret)
{
	int r;

	bt->cur_id = id;
	bt->lost = false;
	if ((r = flush_out(bt, deadline)) < 0)
		return r;
	if (bt->hello_pending && (r = finish_hello(bt, deadline)) < 0)
		return r;
	return read_frame(bt, deadline, ret);
}

/* Sends the request already encoded in bt->out and leaves its reply frame
 * in *ret (consume reply->size from bt->in when done). An ERROR reply is
 * turned into its errno here. A request that is safe to repeat goes again,
 * once, on a new connection if the daemon went away before answering it. */
static int transact(batchtok *bt, uint32_t id, uint8_t type, struct bt_frame *ret)
{
	int64_t deadline = bt->timeout_ms > 0 ? now_ms() + bt->timeout_ms : -1;
	size_t again_len = bt_buf_len(&bt->out) - bt->req_start;
	uint8_t *again = NULL;
	struct bt_frame f;
	int r;

	/* The request's own frame (it may hold a capability: wiped below). */
	if (bt_requests_has(SAFE_TO_REPEAT, type) && (again = malloc(again_len)))
		memcpy(again, bt_buf_ptr(&bt->out) + bt->req_start, again_len);
	r = exchange(bt, id, deadline, &f);
	if (r < 0 && bt->lost && again) {
		disconnect(bt);
		if ((r = reconnect(bt)) == 0 && (r = hello_for(bt, type, deadline)) == 0) {
			if (bt_buf_put(&bt->out, again, again_len) < 0)
				r = fail(bt, -ENOMEM, "out of memory");
			else
				r = exchange(bt, id, deadline, &f);
		}
	}
	if (again) {
		bt_wipe(again, again_len);
		free(again);
	}
	if (r < 0)
		goto broken;
	if (f.id != id) {
		r = fail(bt, -EPROTO, "batchtokd answered request %u, expected %u", f.id, id);
		goto broken;
	}
	if (f.type == BT_ERROR) {
		r = take_error(bt, &f);
		bt_buf_consume(&bt->in, f.size);
		/* Sent with HELLO before the daemon said what it answers (only
		 * version 1's requests are) and not among them after all. */
		if (r == -EOPNOTSUPP && !bt_requests_has(bt->requests, type))
			r = unsupported(bt, type);
		return r;
	}
	if (f.type != (type | BT_REPLY)) {
		r = fail(bt, -EPROTO, "batchtokd answered %s with %s", bt_type_name(type),
			 bt_type_name(f.type));
		goto broken;
	}
	*ret = f;
	return 0;
broken:
	/* The stream is out of step; the next call connects anew. */
	disconnect(bt);
	return r;
}

/* Starts a request of the given type: a new id, and the check that the
 * daemon answers the type. A request it does not answer is refused here and
 * never sent, so an older daemon is not asked for what it lacks. A handle
 * whose connection was lost connects again first. */
static int begin(batchtok *bt, uint8_t type, uint32_t *id)
{
	int64_t deadline = bt->timeout_ms > 0 ? now_ms() + bt->timeout_ms : -1;
	int r;

	bt->error[0] = 0;
	if (bt->fd < 0) {
		if (!bt->path[0])
			return fail(bt, -ECONNREFUSED,
				    "not connected to batchtokd: call batchtok_connect() first");
		if ((r = reconnect(bt)) < 0)
			return r;
	}
	/* Every daemon answers version 1's requests, so those ride with HELLO
	 * in one round trip; for a newer one the HELLO reply must be read first:
	 * only it says whether the daemon knows the type. */
	if ((r = hello_for(bt, type, deadline)) < 0)
		return r;
	*id = bt->next_id++;
	if (bt->next_id == 0)
		bt->next_id = 1;
	bt->req_start = bt_buf_len(&bt->out);
	return 0;
}

/* The wire form of a request; its strings stay the caller's. */
static void to_query(const struct batchtok_request *req, struct bt_token_query *q)
{
	memset(q, 0, sizeof(*q));
	if (!req)
		return;
	q->identity = (char *)req->identity;
	q->resource = (char *)req->resource;
	q->scope = (char *)req->scope;
	q->min_validity = req->min_validity;
	q->flags = req->flags & BATCHTOK_FORCE_REFRESH ? BT_GET_FORCE_REFRESH : 0;
}

static int send_query(batchtok *bt, uint8_t type, const struct batchtok_request *req, uint32_t *id)
{
	struct bt_token_query q;
	int r;

	if ((r = begin(bt, type, id)) < 0)
		return r;
	to_query(req, &q);
	r = bt_encode_token_query(&bt->out, type, *id, &q);
	if (r < 0)
		return fail(bt, r == -ENOBUFS ? -EINVAL : r,
			    "the request is too large: shorten the identity or resource");
	return 0;
}

void batchtok_token_free(struct batchtok_token *t)
{
	if (!t)
		return;
	bt_free_secret(t->access_token);
	free(t->token_type);
	free(t->identity);
	free(t->resource);
	free(t->tenant);
	bt_wipe(t, sizeof(*t));
	free(t);
}

/* Sends the request already encoded and reads its token reply. */
static int token_request(batchtok *bt, uint8_t type, uint32_t id, struct batchtok_token **ret)
{
	struct bt_token_reply m;
	struct bt_frame f;
	int r;

	if ((r = transact(bt, id, type, &f)) < 0)
		return r;
	r = bt_decode_token_reply(&f.body, &m);
	bt_buf_consume(&bt->in, f.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed %s reply", bt_type_name(type));
	r = daemon_conn_take_token(&m, ret);
	if (r == -EPROTO)
		return fail(bt, r,
			    "batchtokd sent a token holding spaces or control characters, which "
			    "is not a bearer token: refused (upgrade batchtokd, which refuses such "
			    "a reply from the token service and logs it)");
	return r < 0 ? fail(bt, r, "out of memory") : 0;
}

int batchtok_get_token(batchtok *bt, const struct batchtok_request *req,
		       struct batchtok_token **ret)
{
	uint32_t id = 0;
	int r;

	if ((r = send_query(bt, BT_GET_TOKEN, req, &id)) < 0)
		return r;
	return token_request(bt, BT_GET_TOKEN, id, ret);
}

int batchtok_get_token_claims(batchtok *bt, const struct batchtok_request *req, const char *claims,
			      struct batchtok_token **ret)
{
	struct bt_challenge c;
	uint32_t id = 0;
	size_t n;
	int r;

	bt->error[0] = 0;
	if (!claims || !(n = strlen(claims)))
		return fail(bt, -EINVAL,
			    "no claims: pass the claims challenge of the 401 "
			    "(the decoded JSON of its claims= parameter)");
	if (n > BT_CLAIMS_MAX)
		return fail(bt, -EINVAL,
			    "the claims challenge is %zu bytes, more than the %d a daemon takes: "
			    "pass the decoded JSON of the 401's claims= parameter, nothing more",
			    n, BT_CLAIMS_MAX);
	if ((r = begin(bt, BT_CHALLENGE, &id)) < 0)
		return r;
	to_query(req, &c.query);
	c.claims = (char *)claims;
	if ((r = bt_encode_challenge(&bt->out, id, &c)) < 0)
		return fail(bt, r == -ENOBUFS ? -EINVAL : r,
			    "the request is too large: shorten the identity or resource");
	return token_request(bt, BT_CHALLENGE, id, ret);
}

static int text_request(batchtok *bt, uint8_t type, uint32_t id, char **ret)
{
	struct bt_frame f;
	char *s;
	int r;

	if ((r = transact(bt, id, type, &f)) < 0)
		return r;
	r = bt_decode_text_reply(&f.body, &s);
	bt_buf_consume(&bt->in, f.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed %s reply", bt_type_name(type));
	if (ret)
		*ret = s;
	else
		free(s);
	return 0;
}

int batchtok_inspect(batchtok *bt, const struct batchtok_request *req, char **ret)
{
	uint32_t id = 0;
	int r;

	if ((r = send_query(bt, BT_INSPECT, req, &id)) < 0)
		return r;
	return text_request(bt, BT_INSPECT, id, ret);
}

int batchtok_ping(batchtok *bt, char **ret)
{
	uint32_t id = 0;
	int r;

	if ((r = begin(bt, BT_PING, &id)) < 0 || (r = bt_encode_empty(&bt->out, BT_PING, id)) < 0)
		return r;
	return text_request(bt, BT_PING, id, ret);
}

int batchtok_metrics(batchtok *bt, char **ret)
{
	uint32_t id = 0;
	int r;

	if ((r = begin(bt, BT_METRICS, &id)) < 0 ||
	    (r = bt_encode_empty(&bt->out, BT_METRICS, id)) < 0)
		return r;
	return text_request(bt, BT_METRICS, id, ret);
}

int batchtok_reload(batchtok *bt)
{
	struct bt_frame f;
	uint32_t id = 0;
	int r;

	if ((r = begin(bt, BT_RELOAD, &id)) < 0 ||
	    (r = bt_encode_empty(&bt->out, BT_RELOAD, id)) < 0 ||
	    (r = transact(bt, id, BT_RELOAD, &f)) < 0)
		return r;
	r = bt_decode_empty(&f.body);
	bt_buf_consume(&bt->in, f.size);
	return r < 0 ? fail(bt, -EPROTO, "batchtokd sent a malformed RELOAD reply") : 0;
}

int batchtok_status(batchtok *bt, int json, char **ret)
{
	struct bt_record rec;
	struct bt_frame f;
	uint32_t id = 0;
	int r;

	if ((r = begin(bt, BT_STATUS, &id)) < 0 ||
	    (r = bt_encode_empty(&bt->out, BT_STATUS, id)) < 0 ||
	    (r = transact(bt, id, BT_STATUS, &f)) < 0)
		return r;
	r = bt_decode_record_reply(&f.body, &rec);
	bt_buf_consume(&bt->in, f.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed STATUS reply");
	r = json ? status_format_json(&rec, ret) : status_format_text(&rec, time(NULL), ret);
	bt_record_clear(&rec);
	return r < 0 ? fail(bt, r, "cannot format the status: %s", strerror(-r)) : 0;
}

/* A request naming an identity whose reply is a record. */
static int name_request(batchtok *bt, uint8_t type, const char *identity, struct bt_record *ret)
{
	struct bt_frame f;
	uint32_t id = 0;
	int r;

	if ((r = begin(bt, type, &id)) < 0)
		return r;
	if ((r = bt_encode_name_request(&bt->out, type, id, identity ? identity : "")) < 0)
		return fail(bt, -EINVAL, "the identity name is too long");
	if ((r = transact(bt, id, type, &f)) < 0)
		return r;
	r = ret ? bt_decode_record_reply(&f.body, ret) : bt_decode_empty(&f.body);
	bt_buf_consume(&bt->in, f.size);
	return r < 0 ? fail(bt, -EPROTO, "batchtokd sent a malformed %s reply", bt_type_name(type))
		     : 0;
}

static char *field_dup(const struct bt_record *rec, const char *key)
{
	const struct bt_field *f = bt_record_get(rec, key);

	return strdup(f && f->kind == BT_FIELD_STR && f->str ? f->str : "");
}

static unsigned field_uint(const struct bt_record *rec, const char *key)
{
	const struct bt_field *f = bt_record_get(rec, key);

	return f && f->kind == BT_FIELD_INT && f->num > 0 && f->num < 86400 ? (unsigned)f->num : 0;
}

void batchtok_login_free(struct batchtok_login *l)
{
	if (!l)
		return;
	free(l->identity);
	free(l->message);
	free(l->user_code);
	free(l->verification_uri);
	free(l);
}

int batchtok_login_start(batchtok *bt, const char *identity, struct batchtok_login **ret)
{
	struct bt_record rec;
	struct batchtok_login *l;
	int r;

	if ((r = name_request(bt, BT_LOGIN, identity, &rec)) < 0)
		return r;
	l = calloc(1, sizeof(*l));
	if (l) {
		l->identity = field_dup(&rec, "identity");
		l->message = field_dup(&rec, "message");
		l->user_code = field_dup(&rec, "user_code");
		l->verification_uri = field_dup(&rec, "verification_uri");
		l->expires_in = field_uint(&rec, "expires_in");
		l->interval = field_uint(&rec, "interval");
	}
	bt_record_clear(&rec);
	if (!l || !l->identity || !l->message || !l->user_code || !l->verification_uri) {
		batchtok_login_free(l);
		return fail(bt, -ENOMEM, "out of memory");
	}
	*ret = l;
	return 0;
}

int batchtok_login_wait(batchtok *bt, const char *identity, char **ret)
{
	struct bt_record rec;
	char *user;
	int r;

	if ((r = name_request(bt, BT_LOGIN_WAIT, identity, &rec)) < 0)
		return r;
	user = field_dup(&rec, "user");
	bt_record_clear(&rec);
	if (!user)
		return fail(bt, -ENOMEM, "out of memory");
	if (ret)
		*ret = user;
	else
		free(user);
	return 0;
}

int batchtok_logout(batchtok *bt, const char *identity)
{
	return name_request(bt, BT_LOGOUT, identity, NULL);
}

void batchtok_compat_free(struct batchtok_compat *c)
{
	if (!c)
		return;
	bt_free_secret(c->capability);
	free(c->endpoint);
	free(c->identity);
	free(c);
}

int batchtok_compat_grant(batchtok *bt, const char *identity, struct batchtok_compat **ret)
{
	struct bt_compat_reply m;
	struct batchtok_compat *c;
	struct bt_frame f;
	uint32_t id = 0;
	int r;

	if ((r = begin(bt, BT_COMPAT, &id)) < 0)
		return r;
	if (bt_encode_name_request(&bt->out, BT_COMPAT, id, identity ? identity : "") < 0)
		return fail(bt, -EINVAL, "the identity name is too long");
	if ((r = transact(bt, id, BT_COMPAT, &f)) < 0)
		return r;
	r = bt_decode_compat_reply(&f.body, &m);
	bt_buf_consume(&bt->in, f.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed COMPAT reply");
	if (!(c = calloc(1, sizeof(*c)))) {
		bt_compat_reply_clear(&m);
		return fail(bt, -ENOMEM, "out of memory");
	}
	/* The decoded strings move into c. */
	c->capability = m.capability;
	c->endpoint = m.endpoint;
	c->identity = m.identity;
	c->expires_on = (int64_t)m.expires_on;
	*ret = c;
	return 0;
}

int batchtok_compat_renew(batchtok *bt, struct batchtok_compat *c)
{
	struct bt_frame f;
	uint64_t expires_on;
	uint32_t id = 0;
	int r;

	if (!c || !c->capability)
		return fail(bt, -EINVAL, "no capability to renew");
	if ((r = begin(bt, BT_COMPAT_RENEW, &id)) < 0)
		return r;
	if (bt_encode_capability_request(&bt->out, BT_COMPAT_RENEW, id, c->capability) < 0)
		return fail(bt, -EINVAL, "the capability is too long");
	if ((r = transact(bt, id, BT_COMPAT_RENEW, &f)) < 0)
		return r;
	r = bt_decode_expiry_reply(&f.body, &expires_on);
	bt_buf_consume(&bt->in, f.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed COMPAT_RENEW reply");
	c->expires_on = (int64_t)expires_on;
	return 0;
}

int batchtok_compat_revoke(batchtok *bt, const struct batchtok_compat *c)
{
	struct bt_frame f;
	uint32_t id = 0;
	int r;

	if (!c || !c->capability)
		return fail(bt, -EINVAL, "no capability to revoke");
	if ((r = begin(bt, BT_COMPAT_REVOKE, &id)) < 0)
		return r;
	if (bt_encode_capability_request(&bt->out, BT_COMPAT_REVOKE, id, c->capability) < 0)
		return fail(bt, -EINVAL, "the capability is too long");
	if ((r = transact(bt, id, BT_COMPAT_REVOKE, &f)) < 0)
		return r;
	r = bt_decode_empty(&f.body);
	bt_buf_consume(&bt->in, f.size);
	return r < 0 ? fail(bt, -EPROTO, "batchtokd sent a malformed COMPAT_REVOKE reply") : 0;
}

void batchtok_refresh_free(struct batchtok_refresh *f)
{
	if (!f)
		return;
	free(f->identity);
	free(f->resource);
	free(f->fingerprint);
	free(f);
}

static int64_t field_num(const struct bt_record *rec, const char *key, uint8_t kind)
{
	const struct bt_field *f = bt_record_get(rec, key);

	return f && f->kind == kind && f->num > 0 ? f->num : 0;
}

int batchtok_refresh(batchtok *bt, const struct batchtok_request *req,
		     struct batchtok_refresh **ret)
{
	struct batchtok_refresh *f;
	struct bt_record rec;
	struct bt_frame fr;
	uint32_t id = 0;
	int64_t w;
	int r;

	if ((r = send_query(bt, BT_REFRESH, req, &id)) < 0 ||
	    (r = transact(bt, id, BT_REFRESH, &fr)) < 0)
		return r;
	r = bt_decode_record_reply(&fr.body, &rec);
	bt_buf_consume(&bt->in, fr.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed REFRESH reply");
	f = calloc(1, sizeof(*f));
	if (f) {
		f->identity = field_dup(&rec, "identity");
		f->resource = field_dup(&rec, "resource");
		f->fingerprint = field_dup(&rec, "fingerprint");
		f->expires_on = field_num(&rec, "expires", BT_FIELD_TIME);
		f->refresh_at = field_num(&rec, "refresh", BT_FIELD_TIME);
		w = field_num(&rec, "watchers", BT_FIELD_INT);
		f->watchers = w > UINT32_MAX ? UINT32_MAX : (unsigned)w;
	}
	bt_record_clear(&rec);
	if (!f || !f->identity || !f->resource || !f->fingerprint) {
		batchtok_refresh_free(f);
		return fail(bt, -ENOMEM, "out of memory");
	}
	*ret = f;
	return 0;
}

int batchtok_forget(batchtok *bt, const char *identity, unsigned flags, unsigned *forgotten)
{
	struct bt_forget m = {(char *)identity, 0};
	struct bt_record rec;
	struct bt_frame f;
	uint32_t id = 0;
	int64_t n;
	int r;

	bt->error[0] = 0;
	if (flags & ~BATCHTOK_FORGET_ALL)
		return fail(bt, -EINVAL, "unknown flags 0x%x for batchtok_forget()", flags);
	if (flags & BATCHTOK_FORGET_ALL) {
		if (identity && *identity)
			return fail(bt, -EINVAL, "name an identity or forget them all, not both");
		m.identity = (char *)"";
		m.flags = BT_FORGET_ALL;
	} else if (!identity || !*identity) {
		return fail(
		    bt, -EINVAL,
		    "name the identity whose tokens to forget, or pass BATCHTOK_FORGET_ALL");
	}
	if ((r = begin(bt, BT_FORGET, &id)) < 0)
		return r;
	if (bt_encode_forget(&bt->out, id, &m) < 0)
		return fail(bt, -EINVAL, "the identity name is too long");
	if ((r = transact(bt, id, BT_FORGET, &f)) < 0)
		return r;
	r = bt_decode_record_reply(&f.body, &rec);
	bt_buf_consume(&bt->in, f.size);
	if (r < 0)
		return fail(bt, -EPROTO, "batchtokd sent a malformed FORGET reply");
	n = field_num(&rec, "forgotten", BT_FIELD_INT);
	bt_record_clear(&rec);
	if (forgotten)
		*forgotten = n > UINT32_MAX ? UINT32_MAX : (unsigned)n;
	return 0;
}
