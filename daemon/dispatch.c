/* dispatch.c - one handler per message type: decode, authorise against the
 * peer's credentials, answer (now or when the cache has a token), encode. */
#include "dispatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certificate.h"
#include "jwt.h"
#include "log.h"

/* A request waiting for the cache, a sign-in or the name of a refused
 * user: the waiter and where the answer goes. */
struct pending {
	struct cache_waiter w; /* first: the callback recovers the pending */
	struct signin_waiter sw;
	struct username_waiter uw;
	char *denied;	  /* the identity refused, while uw waits */
	struct list node; /* on its connection's pending list */
	struct conn *conn;
	uint32_t id;
	uint8_t type;
	const struct identity *identity;
	char *resource;
};

static struct log_ctx peer_ctx(const struct conn *c, const char *identity, const char *resource)
{
	return (struct log_ctx){.identity = identity,
				.resource = resource,
				.uid = (long)c->peer.uid,
				.pid = (long)c->peer.pid};
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

static void pending_free(struct pending *p)
{
	list_del(&p->node);
	free(p->resource);
	free(p->denied);
	free(p);
}

/* A request that will be answered later, queued on its connection; NULL
 * (and the client told) when out of memory. */
static struct pending *pending_add(struct conn *c, const struct bt_frame *f,
				   const struct identity *ident, const char *resource)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p || (resource && !(p->resource = strdup(resource)))) {
		free(p);
		reply_error(c, f->id, BT_E_INTERNAL, "out of memory");
		return NULL;
	}
	p->conn = c;
	p->id = f->id;
	p->type = f->type;
	p->identity = ident;
	list_init(&p->sw.node);
	list_add_tail(&c->pendings, &p->node);
	c->n_pending++;
	return p;
}

/* Takes back a pending request that could not be queued anywhere. */
static void pending_drop(struct pending *p)
{
	p->conn->n_pending--;
	pending_free(p);
}

static void answer_token(struct pending *p, const struct cache_answer *a)
{
	struct conn *c = p->conn;
	struct bt_token_reply m = {
	    .access_token = (char *)a->access_token,
	    .expires_on = (uint64_t)a->expires_on,
	    .token_type = (char *)a->token_type,
	    .identity = p->identity->name,
	    .resource = p->resource,
	    .tenant = p->identity->tenant,
	};
	struct log_ctx ctx = peer_ctx(c, p->identity->name, p->resource);

	ctx.fingerprint = a->fingerprint;
	log_msg(LOG_DEBUG, &ctx, "handed token %s for %s to pid %d uid %u", a->fingerprint,
		p->resource, (int)c->peer.pid, (unsigned)c->peer.uid);
	check_encoded(c, bt_encode_token_reply(&c->out, p->id, &m));
}

static void answer_inspect(struct pending *p, const struct cache_answer *a)
{
	struct conn *c = p->conn;
	char *json;

	if (jwt_describe(a->access_token, &json) < 0) {
		reply_error(c, p->id, BT_E_UNSUPPORTED,
			    "the token for %s is not a JWT; there are no claims to show",
			    p->resource);
		return;
	}
	check_encoded(c, bt_encode_text_reply(&c->out, BT_INSPECT | BT_REPLY, p->id, json));
	free(json);
}

static void on_answer(struct cache_waiter *w, const struct cache_answer *a)
{
	struct pending *p = (struct pending *)w;
	struct conn *c = p->conn;

	if (a->status != BT_OK)
		reply_error(c, p->id, a->status, "%s", a->message);
	else if (p->type == BT_INSPECT)
		answer_inspect(p, a);
	else
		answer_token(p, a);
	pending_free(p);
	conn_request_done(c);
}

/* Tells the peer it may not use identity, naming the user if name is
 * known, and logs it. */
static void send_denial(struct conn *c, uint32_t id, const char *identity, const char *name)
{
	struct log_ctx ctx = peer_ctx(c, identity, NULL);
	char who[USERNAME_DESCRIBE_SIZE];

	usernames_describe(who, sizeof(who), c->peer.uid, name);
	log_msg(LOG_WARNING, &ctx, "denied identity %s to pid %d, %s", identity, (int)c->peer.pid,
		who);
	reply_error(c, id, BT_E_DENIED,
		    "%s may not use identity '%s': an administrator can add the user to its "
		    "allow_users or allow_groups",
		    who, identity);
}

static void on_user_name(struct username_waiter *w, uid_t uid, const char *name)
{
	struct pending *p = container_of(w, struct pending, uw);
	struct conn *c = p->conn;

	(void)uid;
	send_denial(c, p->id, p->denied, name);
	pending_free(p);
	conn_request_done(c);
}

/* Refuses ident to the peer. The user's name comes from the cache, or the
 * request waits while the thread pool looks it up (NSS may block; the loop
 * must not). */
static void deny(struct daemon *d, struct conn *c, const struct bt_frame *f,
		 const struct identity *ident)
{
	const char *name;
	struct pending *p;

	if (usernames_peek(d->usernames, c->peer.uid, &name)) {
		send_denial(c, f->id, ident->name, name);
		return;
	}
	if (!(p = pending_add(c, f, NULL, NULL)))
		return;
	p->uw.fn = on_user_name;
	if (!(p->denied = strdup(ident->name)) ||
	    usernames_lookup(d->usernames, c->peer.uid, &p->uw) < 0) {
		pending_drop(p);
		send_denial(c, f->id, ident->name, NULL);
	}
}

/* The identity a request names (empty: the default), if the peer may use
 * it; otherwise replies with the error itself (or has the reply follow) and
 * returns NULL. */
static const struct identity *usable_identity(struct daemon *d, struct conn *c,
					      const struct bt_frame *f, const char *name)
{
	uint32_t id = f->id;

	const struct identity *ident;

	if (*name) {
		ident = config_find_identity(d->cfg, name);
		if (!ident) {
			reply_error(c, id, BT_E_UNKNOWN_IDENTITY,
				    "no identity named '%s': 'batchtok status' lists the ones you "
				    "may use",
				    name);
			return NULL;
		}
	} else if (!(ident = d->cfg->default_identity)) {
		reply_error(c, id, BT_E_UNKNOWN_IDENTITY,
			    "no default identity is configured: name one with -i (see "
			    "'batchtok status'), or set default = yes on one");
		return NULL;
	}
	if (!daemon_peer_may_use(d, &c->peer, ident)) {
		deny(d, c, f, ident);
		return NULL;
	}
	return ident;
}

/* Resolves and authorises a token query; replies with the error itself and
 * returns NULL if the request cannot go on. */
static const struct identity *authorise(struct daemon *d, struct conn *c, const struct bt_frame *f,
					const struct bt_token_query *q, const char **ret_resource)
{
	const struct identity *ident = usable_identity(d, c, f, q->identity);
	uint32_t id = f->id;
	const char *resource;

	if (!ident)
		return NULL;
	resource = identity_resource(ident, q->resource, q->scope);
	if (!resource) {
		reply_error(c, id, BT_E_RESOURCE_NOT_ALLOWED,
			    "identity '%s' does not serve %s '%s' (its resources: %s%s): ask for "
			    "one of those, or add it to resources =",
			    ident->name, *q->scope ? "scope" : "resource",
			    *q->scope ? q->scope : q->resource, ident->resources[0],
			    ident->n_resources > 1 ? ", ..." : "");
		return NULL;
	}
	*ret_resource = resource;
	return ident;
}

static void handle_token_query(struct daemon *d, struct conn *c, struct bt_frame *f)
{
	struct bt_token_query q;
	const struct identity *ident;
	const char *resource;
	struct pending *p;
	int r;

	if (bt_decode_token_query(&f->body, &q) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed %s request",
			    bt_type_name(f->type));
		return;
	}
	ident = authorise(d, c, f, &q, &resource);
	if (!ident)
		goto out;
	if (!(p = pending_add(c, f, ident, resource)))
		goto out;
	p->w.fn = on_answer;
	/* cache_get() may answer (and free p) before it returns. */
	r = cache_get(d->cache, ident, resource, q.min_validity, q.flags & BT_GET_FORCE_REFRESH,
		      &p->w);
	if (r < 0) {
		pending_drop(p);
		reply_error(c, f->id, r == -EBUSY ? BT_E_BUSY : BT_E_INTERNAL,
			    r == -EBUSY ? "too many clients are waiting for this token; try again"
					: "out of memory");
	}
out:
	bt_token_query_clear(&q);
}

/* What each kind of credential adds to an identity's status. */
static int describe_credential(struct daemon *d, const struct identity *id, struct bt_record *irec)
{
	const struct signin *si;
	int r = 0;

	if (id->cert)
		r = bt_record_add_str(irec, "certificate", certificate_subject(id->cert))
			?: bt_record_add_str(irec, "thumbprint", certificate_thumbprint(id->cert))
			?: bt_record_add_int(irec, "certificate_expires", BT_FIELD_TIME,
					     certificate_not_after(id->cert));
	if (r == 0 && id->kind == CRED_MANAGED_IDENTITY)
		r = bt_record_add_str(irec, "imds_endpoint", id->imds_endpoint);
	if (r == 0 && id->object_id)
		r = bt_record_add_str(irec, "object_id", id->object_id);
	if (r == 0 && id->resource_id)
		r = bt_record_add_str(irec, "resource_id", id->resource_id);
	if (r == 0 && id->federated_token_file)
		r = bt_record_add_str(irec, "federated_token_file", id->federated_token_file);
	if (r == 0 && (si = signin_find(d->signins, id))) {
		r = bt_record_add_str(irec, "signed_in", *signin_user(si) ? signin_user(si) : "-");
		if (r == 0 && signin_time(si))
			r = bt_record_add_int(irec, "signed_in_at", BT_FIELD_TIME, signin_time(si));
		if (r == 0 && signin_pending(si))
			r = bt_record_add_int(irec, "login_pending", BT_FIELD_BOOL, 1);
	}
	return r;
}

static int describe_daemon(struct daemon *d, const struct conn *c, struct bt_record *rec)
{
	bool admin = daemon_peer_is_admin(d, &c->peer);
	int r;

	r = bt_record_add_str(rec, "daemon", "batchtokd " BATCHTOK_VERSION_STRING)
	    ?: bt_record_add_int(rec, "pid", BT_FIELD_INT, getpid())
	    ?: bt_record_add_int(rec, "started", BT_FIELD_TIME, d->started)
	    ?: bt_record_add_str(rec, "config", d->cfg->path)
	    ?: bt_record_add_int(rec, "clients", BT_FIELD_INT, server_client_count(d->server))
	    ?: bt_record_add_int(rec, "upstream_requests", BT_FIELD_INT,
				 (int64_t)cache_fetch_count(d->cache))
	    ?: bt_record_add_int(rec, "reloads", BT_FIELD_INT, (int64_t)d->reloads);
	if (r == 0 && d->compat)
		r = bt_record_add_str(rec, "compat_endpoint", compat_url(d->compat))
			?: bt_record_add_int(rec, "compat_clients", BT_FIELD_INT,
					     compat_client_count(d->compat))
			?: bt_record_add_int(rec, "compat_capabilities", BT_FIELD_INT,
					     (int64_t)compat_capability_count(d->compat));
	for (size_t i = 0; r == 0 && i < d->cfg->n_identities; i++) {
		const struct identity *id = &d->cfg->identities[i];
		struct bt_record *irec;
		char resources[BT_MESSAGE_MAX] = "";
		if (!admin && !daemon_peer_may_use(d, &c->peer, id))
			continue;
		for (size_t k = 0; k < id->n_resources; k++)
			snprintf(resources + strlen(resources),
				 sizeof(resources) - strlen(resources), "%s%s", k ? ", " : "",
				 id->resources[k]);
		if ((r = bt_record_add_child(rec, &irec)) < 0)
			break;
		r = bt_record_add_str(irec, "identity", id->name)
		    ?: bt_record_add_str(irec, "credential", credential_kind_name(id->kind))
		    ?: bt_record_add_str(irec, "tenant", id->tenant)
		    ?: bt_record_add_str(irec, "client_id", id->client_id)
		    ?: bt_record_add_str(irec, "authority", id->authority)
		    ?: bt_record_add_str(irec, "resources", resources)
		    ?: bt_record_add_int(irec, "default", BT_FIELD_BOOL, id == d->cfg->default_identity)
		    ?: bt_record_add_int(irec, "prefetch", BT_FIELD_BOOL, id->prefetch)
		    ?: describe_credential(d, id, irec);
		for (struct token_entry *e = cache_first(d->cache); r == 0 && e;
		     e = cache_next(e)) {
			struct bt_record *t;
			if (e->id != id)
				continue;
			if ((r = bt_record_add_child(irec, &t)) < 0)
				break;
			r = bt_record_add_str(t, "token", e->resource)
				?: bt_record_add_str(t, "state",
						     e->fetch	       ? "fetching"
						     : e->token	       ? "valid"
						     : e->error_status ? "error"
								       : "none");
			if (r == 0 && e->token)
				r = bt_record_add_str(t, "fingerprint", e->fingerprint)
				    ?: bt_record_add_int(t, "expires", BT_FIELD_TIME, e->expires_on)
				    ?: bt_record_add_int(t, "refresh", BT_FIELD_TIME, e->refresh_at);
			if (r == 0 && e->error_status)
				r = bt_record_add_str(t, "last_error", e->error)
					?: bt_record_add_int(t, "last_error_at", BT_FIELD_TIME,
							     e->error_at);
			if (r == 0 && e->retry_at)
				r = bt_record_add_int(t, "next_retry", BT_FIELD_TIME, e->retry_at);
			if (r == 0)
				r = bt_record_add_int(t, "upstream_requests", BT_FIELD_INT,
						      (int64_t)e->fetches)
					?: bt_record_add_int(t, "served", BT_FIELD_INT,
							     (int64_t)e->served);
		}
	}
	return r;
}

static void handle_status(struct daemon *d, struct conn *c, struct bt_frame *f)
{
	struct bt_record rec = {0};
	int r;

	if (bt_decode_empty(&f->body) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed STATUS request");
		return;
	}
	r = describe_daemon(d, c, &rec);
	if (r == 0)
		r = bt_encode_record_reply(&c->out, BT_STATUS | BT_REPLY, f->id, &rec);
	bt_record_clear(&rec);
	if (r == -ENOBUFS)
		conn_close_after_flush(c);
	else if (r < 0)
		reply_error(c, f->id, BT_E_INTERNAL, "cannot describe the daemon: %s",
			    strerror(-r));
}

static void handle_reload(struct daemon *d, struct conn *c, struct bt_frame *f)
{
	char *err = NULL;

	if (bt_decode_empty(&f->body) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed RELOAD request");
		return;
	}
	if (!daemon_peer_is_admin(d, &c->peer)) {
		struct log_ctx ctx = peer_ctx(c, NULL, NULL);
		log_msg(LOG_WARNING, &ctx, "denied reload to pid %d uid %u", (int)c->peer.pid,
			(unsigned)c->peer.uid);
		reply_error(c, f->id, BT_E_DENIED,
			    "reload is for administrators: run it as root or as a member of "
			    "admin_group");
		return;
	}
	if (daemon_reload(d, &err) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "the new configuration was rejected: %s",
			    err ? err : "see the daemon's log");
		free(err);
		return;
	}
	check_encoded(c, bt_encode_empty(&c->out, BT_RELOAD | BT_REPLY, f->id));
}

static void on_signin_event(struct signin_waiter *w, const struct signin_event *ev)
{
	struct pending *p = container_of(w, struct pending, sw);
	struct conn *c = p->conn;
	struct bt_record rec = {0};
	int r;

	if (ev->status != BT_OK) {
		reply_error(c, p->id, ev->status, "%s", ev->message);
	} else {
		r = bt_record_add_str(&rec, "identity", p->identity->name);
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
	pending_free(p);
	conn_request_done(c);
}

/* LOGIN, LOGIN_WAIT and LOGOUT change whom an identity's tokens speak for:
 * administrators only (in user mode that is the user). */
static void handle_signin(struct daemon *d, struct conn *c, struct bt_frame *f)
{
	const struct identity *ident;
	struct pending *p;
	char *name = NULL;
	int r;

	if (bt_decode_name_request(&f->body, &name) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed %s request",
			    bt_type_name(f->type));
		return;
	}
	ident = *name ? config_find_identity(d->cfg, name) : d->cfg->default_identity;
	if (!ident) {
		reply_error(c, f->id, BT_E_UNKNOWN_IDENTITY,
			    "no identity named '%s': 'batchtok status' lists them", name);
		goto out;
	}
	if (ident->kind != CRED_DEVICE_CODE) {
		reply_error(c, f->id, BT_E_BAD_REQUEST,
			    "identity '%s' uses credential = %s; only device-code identities have "
			    "a user who signs in",
			    ident->name, credential_kind_name(ident->kind));
		goto out;
	}
	if (!daemon_peer_is_admin(d, &c->peer)) {
		struct log_ctx ctx = peer_ctx(c, ident->name, NULL);
		log_msg(LOG_WARNING, &ctx, "denied %s of identity %s to pid %d uid %u",
			bt_type_name(f->type), ident->name, (int)c->peer.pid,
			(unsigned)c->peer.uid);
		reply_error(c, f->id, BT_E_DENIED,
			    "signing in and out is for administrators: run it as root, as the "
			    "daemon's user or as a member of admin_group");
		goto out;
	}
	if (f->type == BT_LOGOUT) {
		signin_logout(d->signins, ident);
		check_encoded(c, bt_encode_empty(&c->out, BT_LOGOUT | BT_REPLY, f->id));
		goto out;
	}
	if (!(p = pending_add(c, f, ident, NULL)))
		goto out;
	p->sw.fn = on_signin_event;
	p->sw.want_prompt = f->type == BT_LOGIN;
	/* Either may answer (and free p) before returning. */
	if (f->type == BT_LOGIN_WAIT) {
		signin_wait(d->signins, ident, &p->sw);
	} else if ((r = signin_login(d->signins, ident, &p->sw)) < 0) {
		pending_drop(p);
		reply_error(c, f->id, BT_E_INTERNAL, "cannot start the sign-in: %s", strerror(-r));
	}
out:
	free(name);
}

/* COMPAT: a capability for the compatible endpoint, for this peer and one
 * identity it may use. */
static void handle_compat(struct daemon *d, struct conn *c, struct bt_frame *f)
{
	char *name = NULL, text[CAPABILITY_TEXT_SIZE];
	const struct identity *ident;
	int64_t expires_on;
	int r;

	if (bt_decode_name_request(&f->body, &name) < 0) {
		reply_error(c, f->id, BT_E_BAD_REQUEST, "malformed COMPAT request");
		return;
	}
	if (!(ident = usable_identity(d, c, f, name)))
		goto out;
	if (!d->compat) {
		reply_error(c, f->id, BT_E_UNSUPPORTED,
			    "the managed-identity compatible endpoint is off: an administrator "
			    "can set compat_endpoint = 127.0.0.1:PORT in batchtokd.conf and "
			    "restart batchtokd");
		goto out;
	}
	r = compat_grant(d->compat, &c->peer, ident, text, &expires_on);
	if (r == -EBUSY) {
		reply_error(c, f->id, BT_E_BUSY,
			    "too many compat capabilities are live for uid %u; they expire after "
			    "compat_lifetime (%us)",
			    (unsigned)c->peer.uid, d->cfg->compat_lifetime);
		goto out;
	}
	if (r < 0) {
		reply_error(c, f->id, BT_E_INTERNAL, "cannot issue a capability: %s", strerror(-r));
		goto out;
	}
	{
		struct bt_compat_reply m = {.capability = text,
					    .endpoint = (char *)compat_url(d->compat),
					    .identity = ident->name,
					    .expires_on = (uint64_t)expires_on};
		struct log_ctx ctx = peer_ctx(c, ident->name, NULL);
		log_msg(LOG_INFO, &ctx,
			"issued a compat capability for identity %s to pid %d uid %u, valid %us",
			ident->name, (int)c->peer.pid, (unsigned)c->peer.uid,
			d->cfg->compat_lifetime);
		check_encoded(c, bt_encode_compat_reply(&c->out, f->id, &m));
		explicit_bzero(text, sizeof(text));
	}
out:
	free(name);
}

static void handle_hello(struct conn *c, struct bt_frame *f)
{
	struct bt_hello h;
	struct bt_hello_reply rep = {BT_PROTO_VERSION, "batchtokd " BATCHTOK_VERSION_STRING};

	if (bt_decode_hello(&f->body, &h) < 0 || h.min_version > BT_PROTO_VERSION ||
	    h.max_version < BT_PROTO_VERSION) {
		reply_error(c, f->id, BT_E_VERSION,
			    "this batchtokd speaks protocol version %d only: use a matching "
			    "batchtok/libbatchtok",
			    BT_PROTO_VERSION);
		conn_close_after_flush(c);
		return;
	}
	c->hello_done = true;
	check_encoded(c, bt_encode_hello_reply(&c->out, f->id, &rep));
}

void dispatch_frame(void *arg, struct conn *c, struct bt_frame *f)
{
	struct daemon *d = arg;

	if (!c->hello_done) {
		if (f->type == BT_HELLO) {
			handle_hello(c, f);
		} else {
			reply_error(c, f->id, BT_E_VERSION,
				    "the first request must be HELLO (protocol version %d)",
				    BT_PROTO_VERSION);
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
		reply_error(
		    c, f->id, BT_E_UNSUPPORTED,
		    "unknown request type %u: this batchtokd is version " BATCHTOK_VERSION_STRING,
		    f->type);
	}
}

void dispatch_conn_closed(void *arg, struct conn *c)
{
	struct pending *p;

	(void)arg;
	while ((p = list_first(&c->pendings, struct pending, node))) {
		if (p->denied)
			usernames_waiter_cancel(&p->uw);
		else if (p->type == BT_LOGIN || p->type == BT_LOGIN_WAIT)
			signin_waiter_cancel(&p->sw);
		else
			cache_waiter_cancel(&p->w);
		pending_free(p);
	}
	c->n_pending = 0;
}
