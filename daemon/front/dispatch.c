/* dispatch.c - the Unix socket's front end: one handler per message type
 * decodes the request, hands it to the service layer, and encodes what it
 * answers (now, or when the cache has a token). */
#include "dispatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capability.h"
#include "../core/policy.h"
#include "../identity/credential.h"
#include "../lib/jwt.h"
#include "../lib/log.h"
#include "../lib/ratelimit.h"
#include "../identity/signin.h"

/* A request that is answered later: what it waits on, and where the answer
 * goes. */
/* Unread events a watching connection may have queued: past this, its
 * watches end (BUSY) and it is closed. */
#define WATCH_BACKLOG_MAX (256 * 1024)

struct pending {
	struct service_request q;   /* token and access requests */
	struct service_watch watch; /* WATCH */
	struct signin_waiter sw;    /* LOGIN, LOGIN_WAIT */
	char *identity;		    /* sign-ins: the identity's name */
	struct list node;	    /* on its connection's pending list */
	struct conn *conn;
	uint32_t id;
	uint8_t type;
};

/* The peer's log fields: uid, pid and, when attested, its program. */
static struct log_ctx peer_ctx(const struct conn *c, const char *identity, const char *resource)
{
	struct log_ctx ctx = {.identity = identity, .resource = resource};

	policy_log_ctx(&c->peer, &ctx);
	return ctx;
}

static void reply_error(struct conn *c, uint32_t id, uint32_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_error(struct conn *c, uint32_t id, uint32_t status, const char *fmt, ...)
{
	char msg[BT_MESSAGE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (bt_encode_error(&c->out, id, status, msg) < 0)
		conn_close_after_flush(c);
}

/* An encoder failed: the client is not reading its replies. */
static void check_encoded(struct conn *c, int r)
{
	if (r < 0)
		conn_close_after_flush(c);
}

/* A request that will be answered later, queued on its connection; NULL
 * (and the client told) when out of memory. */
static struct pending *pending_add(struct conn *c, const struct bt_frame *f)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p) {
		reply_error(c, f->id, BT_E_INTERNAL, "out of memory");
		return NULL;
	}
	p->conn = c;
	p->id = f->id;
	p->type = f->type;
	list_init(&p->sw.node);
	list_add_tail(&c->pendings, &p->node);
	c->n_pending++;
	return p;
}

/* Takes p off its connection before it is answered: replying may close the
 * connection, which frees what is still on its list. */
static struct pending *pending_take(struct pending *p)
{
	list_del(&p->node);
	return p;
}

/* The request is answered: forget it. */
static void pending_done(struct pending *p)
{
	struct conn *c = p->conn;

	list_del(&p->node);
	free(p->identity);
	/* A connection closed while answering has forgotten its counts. */
	if (!c->closed && p->type == BT_WATCH)
		c->n_watches--;
	free(p);
	if (!c->closed)
		conn_request_done(c);
}

static void answer_token(struct pending *p, const struct service_answer *a)
{
	struct conn *c = p->conn;
	struct bt_token_reply m = {
	    .access_token = (char *)a->access_token,
	    .expires_on = (uint64_t)a->expires_on,
	    .token_type = (char *)a->token_type,
	    .identity = (char *)a->identity,
	    .resource = (char *)a->resource,
	    .tenant = (char *)a->tenant,
	};
	struct log_ctx ctx = peer_ctx(c, a->identity, a->resource);
	char what[POLICY_WHY_MAX];

	what[0] = '\0';
	ctx.fingerprint = a->fingerprint;
	/* The audit line: which program got which token. */
	if (c->peer.att && log_enabled(LOG_DEBUG))
		policy_describe_caller(&c->peer, what, sizeof(what));
	log_msg(LOG_DEBUG, &ctx, "handed token %s for %s to pid %d uid %u%s%s%s", a->fingerprint,
		a->resource, (int)c->peer.pid, (unsigned)c->peer.uid, *what ? " (" : "", what,
		*what ? ")" : "");
	check_encoded(c, bt_encode_token_reply_as(&c->out, p->type | BT_REPLY, p->id, &m));
}

static void answer_inspect(struct pending *p, const struct service_answer *a)
{
	struct conn *c = p->conn;
	char *json;

	if (jwt_describe(a->access_token, &json) < 0) {
		reply_error(c, p->id, BT_E_UNSUPPORTED,
			    "the token for %s is not a JWT; there are no claims to show",
			    a->resource);
		return;
	}
	check_encoded(c, bt_encode_text_reply(&c->out, BT_INSPECT | BT_REPLY, p->id, json));
	free(json);
}

static void on_token(struct service_request *q, const struct service_answer *a)
{
	struct pending *p = pending_take(container_of(q, struct pending, q));

	if (a->status != BT_OK)
		reply_error(p->conn, p->id, a->status, "%s", a->message);
	else if (p->type == BT_INSPECT)
		answer_inspect(p, a);
	else
		answer_token(p, a);
	pending_done(p);
}

static void handle_token_query(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct bt_token_query q;
	struct pending *p;

	if (bt_decode_token_query(&f->body, &q) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed %s request",
			    bt_type_name(f->type));
		return;
	}
	if ((p = pending_add(c, f))) {
		p->q.fn = on_token;
		/* May answer (and free p) before it returns. */
		service_get_token(s, &c->peer, q.identity, q.resource, q.scope, q.min_validity,
				  q.flags & BT_GET_FORCE_REFRESH, &p->q);
	}
	bt_token_query_clear(&q);
}

static void handle_challenge(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct bt_challenge m;
	struct pending *p;

	if (bt_decode_challenge(&f->body, &m) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST,
			    "malformed CHALLENGE request (claims are at most %d bytes)",
			    BT_CLAIMS_MAX);
		return;
	}
	if ((p = pending_add(c, f))) {
		p->q.fn = on_token;
		service_challenge(s, &c->peer, m.query.identity, m.query.resource, m.query.scope,
				  m.query.min_validity, m.claims, &p->q);
	}
	bt_challenge_clear(&m);
}

static void on_refreshed(struct service_request *q, const struct service_answer *a)
{
	struct pending *p = pending_take(container_of(q, struct pending, q));
	struct conn *c = p->conn;
	struct bt_record rec = {0};
	int r;

	if (a->status != BT_OK) {
		reply_error(c, p->id, a->status, "%s", a->message);
	} else {
		r = bt_record_add_str(&rec, "identity", a->identity)
			?: bt_record_add_str(&rec, "resource", a->resource)
			?: bt_record_add_str(&rec, "fingerprint", a->fingerprint)
			?: bt_record_add_int(&rec, "expires", BT_FIELD_TIME, a->expires_on)
			?: bt_record_add_int(&rec, "refresh", BT_FIELD_TIME, a->refresh_at)
			?: bt_record_add_int(&rec, "watchers", BT_FIELD_INT, a->watchers)
			?: bt_encode_record_reply(&c->out, BT_REFRESH | BT_REPLY, p->id, &rec);
		bt_record_clear(&rec);
		check_encoded(c, r);
	}
	pending_done(p);
}

static void handle_refresh(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct bt_token_query q;
	struct pending *p;

	if (bt_decode_token_query(&f->body, &q) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed REFRESH request");
		return;
	}
	if ((p = pending_add(c, f))) {
		p->q.fn = on_refreshed;
		service_refresh(s, &c->peer, q.identity, q.resource, q.scope, &p->q);
	}
	bt_token_query_clear(&q);
}

static void handle_forget(struct service *s, struct conn *c, struct bt_frame *f)
{
	char msg[BT_MESSAGE_MAX];
	struct bt_record rec = {0};
	struct bt_forget m;
	unsigned n = 0;
	uint32_t status;
	bool all;

	if (bt_decode_forget(&f->body, &m) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed FORGET request");
		return;
	}
	all = m.flags & BT_FORGET_ALL;
	if ((m.flags & ~BT_FORGET_ALL) || (all && *m.identity)) {
		reply_error(c, f->id, BT_E_BAD_REQUEST,
			    "FORGET names one identity or, with the ALL flag, none");
	} else if ((status = service_forget(s, &c->peer, m.identity, all, &n, msg, sizeof(msg)))) {
		reply_error(c, f->id, status, "%s", msg);
	} else {
		int r = bt_record_add_int(&rec, "forgotten", BT_FIELD_INT, n)
			    ?: bt_encode_record_reply(&c->out, BT_FORGET | BT_REPLY, f->id, &rec);
		bt_record_clear(&rec);
		check_encoded(c, r);
	}
	bt_forget_clear(&m);
}

/* The client does not read its events: each of its watches ends, BUSY, and
 * the connection closes once that is read (or in SERVER_PARTIAL_TIMEOUT).
 * It holds no more of our memory than the backlog and these lines. */
static void drop_watches(struct conn *c)
{
	struct list *n, *tmp;
	struct log_ctx ctx = peer_ctx(c, NULL, NULL);

	if (ratelimit_log_uid(LOG_LIMIT_CLIENT, (long)c->peer.uid))
		log_msg(LOG_WARNING, &ctx,
			"pid %d uid %u left %zu bytes of watch events unread; ended its watches "
			"and closed the connection",
			(int)c->peer.pid, (unsigned)c->peer.uid, bt_buf_len(&c->out));
	list_for_each_safe(n, tmp, &c->pendings)
	{
		struct pending *p = list_entry(n, struct pending, node);
		if (p->type != BT_WATCH)
			continue;
		service_unwatch(&p->watch);
		pending_take(p);
		/* Too much is queued already for the encoder to refuse this. */
		bt_encode_error(&c->out, p->id, BT_E_BUSY,
				"the watch ended: its events were not read (more than 256 KiB "
				"waited); read them as they come, or watch again");
		pending_done(p);
	}
	conn_close_later(c);
}

static void on_watch_event(struct service_watch *w, const struct service_answer *a, bool final)
{
	struct pending *p = container_of(w, struct pending, watch);
	struct conn *c = p->conn;
	struct bt_watch_event ev = {.status = a->status,
				    .message = (char *)(a->status == BT_OK ? "" : a->message),
				    .t = {.access_token = (char *)(a->access_token ?: ""),
					  .expires_on = (uint64_t)a->expires_on,
					  .token_type = (char *)(a->token_type ?: ""),
					  .identity = (char *)(a->identity ?: ""),
					  .resource = (char *)(a->resource ?: ""),
					  .tenant = (char *)(a->tenant ?: "")},
				    .refresh_at = (uint64_t)a->refresh_at};

	if (final) {
		pending_take(p);
		reply_error(c, p->id, a->status, "%s", a->message);
		pending_done(p);
		return;
	}
	if (c->closing)
		return;
	if (bt_buf_len(&c->out) > WATCH_BACKLOG_MAX ||
	    bt_encode_watch_event(&c->out, p->id, &ev) < 0) {
		drop_watches(c);
		return;
	}
	if (a->status == BT_OK) {
		struct log_ctx ctx = peer_ctx(c, a->identity, a->resource);
		ctx.fingerprint = a->fingerprint;
		log_msg(LOG_DEBUG, &ctx, "pushed token %s for %s to pid %d uid %u", a->fingerprint,
			a->resource, (int)c->peer.pid, (unsigned)c->peer.uid);
	}
	conn_answered(c);
}

static void handle_watch(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct bt_token_query q;
	struct pending *p;

	if (bt_decode_token_query(&f->body, &q) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed WATCH request");
		return;
	}
	if (q.flags) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "a WATCH takes no flags (got %#x)",
			    (unsigned)q.flags);
	} else if ((p = pending_add(c, f))) {
		c->n_watches++;
		p->watch.fn = on_watch_event;
		/* May end (and free p) before it returns. */
		service_watch(s, &c->peer, q.identity, q.resource, q.scope, q.min_validity,
			      &p->watch);
	}
	bt_token_query_clear(&q);
}

static void handle_metrics(struct service *s, struct conn *c, struct bt_frame *f)
{
	char msg[BT_MESSAGE_MAX], *text = NULL;
	uint32_t status;
	size_t len = 0;

	if (bt_decode_empty(&f->body) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed METRICS request");
		return;
	}
	if ((status = service_metrics(s, &c->peer, &text, &len, msg, sizeof(msg)))) {
		reply_error(c, f->id, status, "%s", msg);
	} else if (len > BT_TOKEN_MAX) {
		reply_error(c, f->id, BT_E_INTERNAL,
			    "the metrics are %zu bytes, more than a reply holds (%d): read them "
			    "from metrics_listen",
			    len, BT_TOKEN_MAX);
	} else {
		check_encoded(c, bt_encode_text_reply(&c->out, BT_METRICS | BT_REPLY, f->id, text));
	}
	free(text);
}

static void handle_status(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct bt_record rec = {0};
	int r;

	if (bt_decode_empty(&f->body) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed STATUS request");
		return;
	}
	r = service_status(s, &c->peer, &rec);
	if (r == 0)
		r = bt_encode_record_reply(&c->out, BT_STATUS | BT_REPLY, f->id, &rec);
	bt_record_clear(&rec);
	if (r == -ENOBUFS)
		conn_close_after_flush(c);
	else if (r < 0)
		reply_error(c, f->id, BT_E_INTERNAL, "cannot describe the daemon: %s",
			    strerror(-r));
}

static void handle_reload(struct service *s, struct conn *c, struct bt_frame *f)
{
	char msg[BT_MESSAGE_MAX], *err = NULL;

	if (bt_decode_empty(&f->body) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed RELOAD request");
		return;
	}
	if (!service_admin_only(s, &c->peer, "reload", msg, sizeof(msg))) {
		reply_error(c, f->id, BT_E_DENIED, "%s", msg);
		return;
	}
	if (service_reload(s, &err) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "the new configuration was rejected: %s",
			    err ? err : "see the daemon's log");
		free(err);
		return;
	}
	check_encoded(c, bt_encode_empty(&c->out, BT_RELOAD | BT_REPLY, f->id));
}

static void on_signin_event(struct signin_waiter *w, const struct signin_event *ev)
{
	struct pending *p = pending_take(container_of(w, struct pending, sw));
	struct conn *c = p->conn;
	struct bt_record rec = {0};
	int r;

	if (ev->status != BT_OK) {
		reply_error(c, p->id, ev->status, "%s", ev->message);
	} else {
		r = bt_record_add_str(&rec, "identity", p->identity);
		if (r == 0 && ev->prompt)
			r = bt_record_add_str(&rec, "message", ev->prompt->message)
				?: bt_record_add_str(&rec, "user_code", ev->prompt->user_code)
				?: bt_record_add_str(&rec, "verification_uri",
						     ev->prompt->verification_uri)
				?: bt_record_add_int(&rec, "expires_in", BT_FIELD_INT,
						     ev->prompt->expires_in)
				?: bt_record_add_int(&rec, "interval", BT_FIELD_INT,
						     ev->prompt->interval);
		if (r == 0 && ev->user)
			r = bt_record_add_str(&rec, "user", ev->user);
		if (r == 0)
			r = bt_encode_record_reply(&c->out, p->type | BT_REPLY, p->id, &rec);
		bt_record_clear(&rec);
		check_encoded(c, r);
	}
	pending_done(p);
}

/* The device-code identity a sign-in request names, if the peer is an
 * administrator; otherwise replies and returns NULL. Rights come first: a
 * plain user learns nothing of which identities exist or their kinds. */
static const struct identity *signin_identity(struct service *s, struct conn *c,
					      const struct bt_frame *f, const char *name)
{
	char msg[BT_MESSAGE_MAX];
	const struct identity *id;
	uint32_t status;

	if (!service_admin_only(s, &c->peer, "signing in and out", msg, sizeof(msg))) {
		reply_error(c, f->id, BT_E_DENIED, "%s", msg);
		return NULL;
	}
	if (!(id = service_find(s, name, &status, msg, sizeof(msg)))) {
		reply_error(c, f->id, status, "%s", msg);
		return NULL;
	}
	if (!credential_for(id)->user_signs_in) {
		reply_error(c, f->id, BT_E_BAD_REQUEST,
			    "identity '%s' uses credential = %s; only device-code identities have "
			    "a user who signs in",
			    id->name, credential_for(id)->name);
		return NULL;
	}
	return id;
}

/* LOGIN, LOGIN_WAIT and LOGOUT change whom an identity's tokens speak for:
 * administrators only (in user mode that is the user). */
static void handle_signin(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct signin_store *signins = service_signins(s);
	const struct identity *id;
	struct pending *p;
	char *name = NULL;
	int r;

	if (bt_decode_name_request(&f->body, &name) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed %s request",
			    bt_type_name(f->type));
		return;
	}
	if (!(id = signin_identity(s, c, f, name)))
		goto out;
	if (f->type == BT_LOGOUT) {
		signin_logout(signins, id);
		check_encoded(c, bt_encode_empty(&c->out, BT_LOGOUT | BT_REPLY, f->id));
		goto out;
	}
	if (!(p = pending_add(c, f)))
		goto out;
	/* The config may be reloaded while the user signs in: keep the name. */
	if (!(p->identity = strdup(id->name))) {
		pending_take(p);
		reply_error(c, f->id, BT_E_INTERNAL, "out of memory");
		pending_done(p);
		goto out;
	}
	p->sw.fn = on_signin_event;
	p->sw.want_prompt = f->type == BT_LOGIN;
	/* Either may answer (and free p) before returning. */
	if (f->type == BT_LOGIN_WAIT) {
		signin_wait(signins, id, &p->sw);
	} else if ((r = signin_login(signins, id, &p->sw)) < 0) {
		pending_take(p);
		reply_error(c, f->id, BT_E_INTERNAL, "cannot start the sign-in: %s", strerror(-r));
		pending_done(p);
	}
out:
	free(name);
}

static void on_compat_allowed(struct service_request *q, const struct service_answer *a)
{
	struct pending *p = pending_take(container_of(q, struct pending, q));
	struct conn *c = p->conn;
	const struct config *cfg = service_config(q->s);
	char text[CAPABILITY_TEXT_SIZE];
	const char *url;
	int64_t expires_on;
	int r;

	if (a->status != BT_OK) {
		reply_error(c, p->id, a->status, "%s", a->message);
		goto out;
	}
	r = service_grant(q->s, &c->peer, a->identity, text, sizeof(text), &expires_on, &url);
	if (r == -EOPNOTSUPP) {
		reply_error(c, p->id, BT_E_UNSUPPORTED,
			    "the managed-identity compatible endpoint is off: an administrator "
			    "can set compat_endpoint = 127.0.0.1:PORT in batchtokd.conf and "
			    "restart batchtokd");
	} else if (r == -EPERM) {
		reply_error(c, p->id, BT_E_DENIED,
			    "identity %s is granted to programs (allow_units, allow_user_units, "
			    "allow_exes, allow_cgroups), and the compat endpoint cannot tell which "
			    "program sends a request (TCP carries no process credentials): it is "
			    "not served there; use 'batchtok get', 'batchtok exec' or libbatchtok",
			    a->identity);
	} else if (r == -EBUSY) {
		reply_error(c, p->id, BT_E_BUSY,
			    "uid %u already holds %d live compat capabilities, the most one user "
			    "may: each program under 'batchtok exec --compat' holds one until it "
			    "ends; end some, or wait for capabilities handed out otherwise to "
			    "expire (compat_lifetime, %us)",
			    (unsigned)c->peer.uid, CAPABILITY_PER_UID, cfg->compat_lifetime);
	} else if (r == -ENOSPC) {
		reply_error(c, p->id, BT_E_BUSY,
			    "batchtokd holds %d live compat capabilities, the most it keeps for "
			    "all users: try again when programs under 'batchtok exec --compat' "
			    "have ended",
			    CAPABILITY_MAX);
	} else if (r < 0) {
		reply_error(c, p->id, BT_E_INTERNAL, "cannot issue a capability: %s", strerror(-r));
	} else {
		struct bt_compat_reply m = {.capability = text,
					    .endpoint = (char *)url,
					    .identity = (char *)a->identity,
					    .expires_on = (uint64_t)expires_on};
		struct log_ctx ctx = peer_ctx(c, a->identity, NULL);
		log_msg(LOG_INFO, &ctx,
			"issued a compat capability for identity %s to pid %d uid %u, valid %us",
			a->identity, (int)c->peer.pid, (unsigned)c->peer.uid, cfg->compat_lifetime);
		check_encoded(c, bt_encode_compat_reply(&c->out, p->id, &m));
		explicit_bzero(text, sizeof(text));
	}
out:
	pending_done(p);
}

/* COMPAT: a capability for the compatible endpoint, for this peer and one
 * identity it may use. */
static void handle_compat(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct pending *p;
	char *name = NULL;

	if (bt_decode_name_request(&f->body, &name) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed COMPAT request");
		return;
	}
	if ((p = pending_add(c, f))) {
		p->q.fn = on_compat_allowed;
		service_authorize(s, &c->peer, name, &p->q);
	}
	free(name);
}

/* COMPAT_RENEW and COMPAT_REVOKE: the peer's own capability, kept alive
 * by the program that holds it (batchtok exec --compat, while its command
 * runs) or given back when it is done. */
static void handle_compat_ctl(struct service *s, struct conn *c, struct bt_frame *f)
{
	struct log_ctx ctx = peer_ctx(c, NULL, NULL);
	const char *what = f->type == BT_COMPAT_RENEW ? "renew" : "revoke";
	int64_t expires_on = 0;
	char *text = NULL;
	int r;

	if (bt_decode_capability_request(&f->body, &text) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed %s request",
			    bt_type_name(f->type));
		return;
	}
	r = f->type == BT_COMPAT_RENEW ? service_renew(s, &c->peer, text, &expires_on)
				       : service_revoke(s, &c->peer, text);
	bt_free_secret(text);
	if (r == -EOPNOTSUPP) {
		reply_error(c, f->id, BT_E_UNSUPPORTED,
			    "the managed-identity compatible endpoint is off: there is no "
			    "capability to %s",
			    what);
	} else if (r == -ENOENT) {
		reply_error(c, f->id, BT_E_BAD_REQUEST,
			    "the capability is not live (it expired, was given back, or was issued "
			    "before batchtokd restarted): get a new one with 'batchtok exec "
			    "--compat'");
	} else if (r == -EPERM) {
		if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)c->peer.uid))
			log_msg(LOG_WARNING, &ctx,
				"denied %s of another user's compat capability to pid %d uid %u",
				what, (int)c->peer.pid, (unsigned)c->peer.uid);
		reply_error(c, f->id, BT_E_DENIED,
			    "this capability was issued to another user: only its holder may %s it",
			    what);
	} else if (r < 0) {
		reply_error(c, f->id, BT_E_INTERNAL, "cannot %s the capability: %s", what,
			    strerror(-r));
	} else if (f->type == BT_COMPAT_RENEW) {
		log_msg(LOG_DEBUG, &ctx, "renewed a compat capability of pid %d uid %u until %lld",
			(int)c->peer.pid, (unsigned)c->peer.uid, (long long)expires_on);
		check_encoded(c, bt_encode_expiry_reply(&c->out, BT_COMPAT_RENEW | BT_REPLY, f->id,
							(uint64_t)expires_on));
	} else {
		log_msg(LOG_DEBUG, &ctx, "pid %d uid %u gave a compat capability back",
			(int)c->peer.pid, (unsigned)c->peer.uid);
		check_encoded(c, bt_encode_empty(&c->out, BT_COMPAT_REVOKE | BT_REPLY, f->id));
	}
}

static void handle_hello(struct conn *c, struct bt_frame *f)
{
	/* The request types dispatch_frame() answers, announced in the HELLO
	 * reply from protocol version 2 on: a type added to its switch is added
	 * here too, or version 2 clients will not send it. */
	static const uint64_t handled =
	    BT_V1_REQUESTS | BT_REQUEST_BIT(BT_COMPAT_RENEW) | BT_REQUEST_BIT(BT_COMPAT_REVOKE) |
	    BT_REQUEST_BIT(BT_WATCH) | BT_REQUEST_BIT(BT_REFRESH) | BT_REQUEST_BIT(BT_FORGET) |
	    BT_REQUEST_BIT(BT_CHALLENGE) | BT_REQUEST_BIT(BT_METRICS);
	struct bt_hello h;
	struct bt_hello_reply rep = {.server = "batchtokd " BATCHTOK_VERSION_STRING,
				     .requests = handled};

	/* The newest version both ends speak. A client from before version 2
	 * asks for 1..1 and gets version 1's reply, byte for byte. */
	if (bt_decode_hello(&f->body, &h) < 0 || h.min_version > h.max_version ||
	    h.min_version > BT_PROTO_VERSION_MAX || h.max_version < BT_PROTO_VERSION_MIN) {
		reply_error(c, f->id, BT_E_VERSION,
			    "this batchtokd speaks protocol versions %d to %d: use a matching "
			    "batchtok/libbatchtok",
			    BT_PROTO_VERSION_MIN, BT_PROTO_VERSION_MAX);
		conn_close_after_flush(c);
		return;
	}
	rep.version = h.max_version < BT_PROTO_VERSION_MAX ? h.max_version : BT_PROTO_VERSION_MAX;
	c->hello_done = true;
	check_encoded(c, bt_encode_hello_reply(&c->out, f->id, &rep));
}

void dispatch_frame(void *arg, struct conn *c, struct bt_frame *f)
{
	struct service *d = arg;

	if (!c->hello_done) {
		if (f->type == BT_HELLO) {
			handle_hello(c, f);
		} else {
			reply_error(c, f->id, BT_E_VERSION,
				    "the first request must be HELLO (protocol versions %d to %d)",
				    BT_PROTO_VERSION_MIN, BT_PROTO_VERSION_MAX);
			conn_close_after_flush(c);
		}
		return;
	}
	switch (f->type) {
	case BT_GET_TOKEN:
	case BT_INSPECT:
		handle_token_query(d, c, f);
		break;
	case BT_STATUS:
		handle_status(d, c, f);
		break;
	case BT_RELOAD:
		handle_reload(d, c, f);
		break;
	case BT_LOGIN:
	case BT_LOGIN_WAIT:
	case BT_LOGOUT:
		handle_signin(d, c, f);
		break;
	case BT_COMPAT:
		handle_compat(d, c, f);
		break;
	case BT_COMPAT_RENEW:
	case BT_COMPAT_REVOKE:
		handle_compat_ctl(d, c, f);
		break;
	case BT_WATCH:
		handle_watch(d, c, f);
		break;
	case BT_REFRESH:
		handle_refresh(d, c, f);
		break;
	case BT_FORGET:
		handle_forget(d, c, f);
		break;
	case BT_CHALLENGE:
		handle_challenge(d, c, f);
		break;
	case BT_METRICS:
		handle_metrics(d, c, f);
		break;
	case BT_PING:
		if (bt_decode_empty(&f->body) < 0)
			reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed PING request");
		else
			check_encoded(c,
				      bt_encode_text_reply(&c->out, BT_PING | BT_REPLY, f->id,
							   "batchtokd " BATCHTOK_VERSION_STRING));
		break;
	case BT_HELLO:
		reply_error(c, f->id, BT_E_BAD_REQUEST, "HELLO was already exchanged");
		break;
	default:
		/* Not announced in the HELLO reply either, so a version 2
		 * client never sends it; this answers older and foreign ones. */
		reply_error(c, f->id, BT_E_UNSUPPORTED,
			    "unknown request type %u: not supported by this batchtokd "
			    "(" BATCHTOK_VERSION_STRING "): upgrade batchtokd",
			    f->type);
	}
}

void dispatch_conn_stopping(void *arg, struct conn *c)
{
	struct list *n, *tmp;

	(void)arg;
	/* The requests stay on the list: dispatch_conn_closed() cancels them
	 * right after. */
	list_for_each_safe(n, tmp, &c->pendings)
	{
		struct pending *p = list_entry(n, struct pending, node);
		/* UNAVAILABLE: nothing is wrong with the request; asking again
		 * once batchtokd is back will do. */
		if (bt_encode_error(&c->out, p->id, BT_E_UNAVAILABLE,
				    "batchtokd is stopping: ask again once it is running "
				    "(systemctl start batchtokd)") < 0)
			break;
	}
}

void dispatch_conn_closed(void *arg, struct conn *c)
{
	struct pending *p;

	(void)arg;
	while ((p = list_first(&c->pendings, struct pending, node))) {
		if (p->type == BT_LOGIN || p->type == BT_LOGIN_WAIT)
			signin_waiter_cancel(&p->sw);
		else if (p->type == BT_WATCH)
			service_unwatch(&p->watch);
		else
			service_cancel(&p->q);
		list_del(&p->node);
		free(p->identity);
		free(p);
	}
	c->n_pending = c->n_watches = 0;
}
