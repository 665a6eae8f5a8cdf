/* service.c - the request path shared by every front end: lookup, resource
 * normalisation, access checks and the cache. */
#include "service.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "policy.h"
#include "../identity/credential.h"
#include "../identity/entra.h"
#include "../lib/attest.h"
#include "../lib/clock.h"
#include "../lib/counters.h"
#include "../lib/log.h"
#include "../lib/ratelimit.h"
#include "../lib/unitcount.h"
#include "../identity/signin.h"

/* The longest unit_requests status field: a STATUS string is at most
 * BT_MESSAGE_MAX bytes. */
#define UNIT_REQUESTS_MAX (BT_MESSAGE_MAX - 96)

struct service {
	struct cache *cache;
	struct signin_store *signins;
	struct usernames *usernames;
	const struct config *cfg;
	struct service_hooks hooks;
	struct unitcount units; /* requests per caller unit */
	uid_t self;		/* the daemon's own uid: read once, not per request */
	struct list watches;	/* admitted watches */
};

/* What the log says of a refused peer's program, kept while its user's
 * name is looked up. */
struct service_caller {
	char *unit, *user_unit, *exe;
	char invocation_id[ATTEST_ID_LEN + 1];
	char what[POLICY_WHY_MAX]; /* attest_describe(), made printable */
};

int service_new(struct cache *cache, struct signin_store *signins, struct usernames *usernames,
		const struct config *cfg, const struct service_hooks *hooks, struct service **ret)
{
	struct service *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	*s = (struct service){.cache = cache,
			      .signins = signins,
			      .usernames = usernames,
			      .cfg = cfg,
			      .hooks = *hooks,
			      .self = geteuid()};
	list_init(&s->watches);
	*ret = s;
	return 0;
}

void service_free(struct service *s)
{
	if (!s)
		return;
	unitcount_free(&s->units);
	free(s);
}

void service_set_config(struct service *s, const struct config *cfg)
{
	s->cfg = cfg;
}

const struct config *service_config(const struct service *s)
{
	return s->cfg;
}

int service_reload(struct service *s, char **ret_error)
{
	return s->hooks.reload(s->hooks.arg, ret_error);
}

int service_grant(struct service *s, const struct peer *p, const char *identity, char *text,
		  size_t n, int64_t *expires_on, const char **url)
{
	const struct identity *id = config_find_identity(s->cfg, identity);

	/* The compat endpoint's clients are TCP connections, which carry no
	 * process to attest: an identity bound to programs is not served
	 * there, rather than served to any program of the user. */
	if (id && policy_has_program_rules(id))
		return -EPERM;
	return s->hooks.grant(s->hooks.arg, p, identity, text, n, expires_on, url);
}

int service_renew(struct service *s, const struct peer *p, const char *text, int64_t *expires_on)
{
	return s->hooks.renew(s->hooks.arg, p, text, expires_on);
}

int service_revoke(struct service *s, const struct peer *p, const char *text)
{
	return s->hooks.revoke(s->hooks.arg, p, text);
}

struct signin_store *service_signins(const struct service *s)
{
	return s->signins;
}

/* What the identity's kind of credential shows, and its signed-in user. */
static int describe_credential(struct service *s, const struct identity *id, struct bt_record *irec)
{
	const struct credential_ops *ops = credential_for(id);
	const struct signin *si;
	int r = ops->describe ? ops->describe(id, irec) : 0;

	if (r == 0 && (si = signin_find(s->signins, id))) {
		r = bt_record_add_str(irec, "signed_in", *signin_user(si) ? signin_user(si) : "-");
		if (r == 0 && signin_time(si))
			r = bt_record_add_int(irec, "signed_in_at", BT_FIELD_TIME, signin_time(si));
		if (r == 0 && signin_pending(si))
			r = bt_record_add_int(irec, "login_pending", BT_FIELD_BOOL, 1);
	}
	return r;
}

static int describe_token(const struct token_entry *e, struct bt_record *t, bool admin)
{
	int r = bt_record_add_str(t, "token", e->resource)
		    ?: bt_record_add_str(t, "state",
					 e->fetch	   ? "fetching"
					 : e->token	   ? "valid"
					 : e->error_status ? "error"
							   : "none");

	if (r == 0 && e->token)
		r = bt_record_add_str(t, "fingerprint", e->fingerprint)
			?: bt_record_add_int(t, "expires", BT_FIELD_TIME, e->expires_on)
			?: bt_record_add_int(t, "refresh", BT_FIELD_TIME, e->refresh_at);
	if (r == 0 && e->error_status)
		r = bt_record_add_str(t, "last_error", e->error)
			?: bt_record_add_int(t, "last_error_at", BT_FIELD_TIME, e->error_at);
	if (r == 0 && e->retry_at)
		r = bt_record_add_int(t, "next_retry", BT_FIELD_TIME, e->retry_at);
	if (r == 0 && e->n_watchers)
		r = bt_record_add_int(t, "watchers", BT_FIELD_INT, (int64_t)e->n_watchers);
	if (r == 0 && admin)
		r = bt_record_add_int(t, "upstream_requests", BT_FIELD_INT, (int64_t)e->fetches)
			?: bt_record_add_int(t, "served", BT_FIELD_INT, (int64_t)e->served);
	return r;
}

/* The identity's program rules as written, for an administrator. */
static int describe_rules(const struct identity *id, struct bt_record *irec)
{
	const struct {
		const char *key;
		const struct pattern_list *list;
	} lists[] = {
	    {"allow_units", &id->allow_units},
	    {"allow_user_units", &id->allow_user_units},
	    {"allow_exes", &id->allow_exes},
	    {"allow_cgroups", &id->allow_cgroups},
	};
	char text[BT_MESSAGE_MAX];
	int r = 0;

	for (size_t i = 0; r == 0 && i < sizeof(lists) / sizeof(lists[0]); i++) {
		const struct pattern_list *l = lists[i].list;
		size_t len = 0;
		if (!l->n)
			continue;
		text[0] = '\0';
		/* A list too long for a status field is cut. */
		for (size_t k = 0; k < l->n && len < sizeof(text); k++)
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s",
						k ? " " : "", l->v[k]);
		r = bt_record_add_str(irec, lists[i].key, text);
	}
	return r;
}

static int describe_identity(struct service *s, const struct identity *id, struct bt_record *irec,
			     bool admin)
{
	char resources[BT_MESSAGE_MAX] = "";
	int r;

	for (size_t k = 0; k < id->n_resources; k++)
		snprintf(resources + strlen(resources), sizeof(resources) - strlen(resources),
			 "%s%s", k ? ", " : "", id->resources[k]);
	r = bt_record_add_str(irec, "identity", id->name)
	    ?: bt_record_add_str(irec, "credential", credential_for(id)->name)
	    ?: bt_record_add_str(irec, "tenant", id->tenant)
	    ?: bt_record_add_str(irec, "client_id", id->client_id)
	    ?: bt_record_add_str(irec, "authority", id->authority)
	    ?: bt_record_add_str(irec, "resources", resources)
	    ?: bt_record_add_int(irec, "default", BT_FIELD_BOOL, id == s->cfg->default_identity)
	    ?: bt_record_add_int(irec, "prefetch", BT_FIELD_BOOL, id->prefetch)
	    ?: describe_credential(s, id, irec);
	if (r == 0 && admin)
		r = describe_rules(id, irec);
	for (struct token_entry *e = cache_first(s->cache); r == 0 && e; e = cache_next(e)) {
		struct bt_record *t;
		if (e->id == id)
			r = bt_record_add_child(irec, &t) ?: describe_token(e, t, admin);
	}
	return r;
}

int service_status(struct service *s, const struct peer *p, struct bt_record *rec)
{
	bool admin = service_peer_is_admin(s, p);
	int r = s->hooks.describe(s->hooks.arg, rec, admin);
	char units[UNIT_REQUESTS_MAX];

	if (r == 0 && admin) {
		unitcount_format(&s->units, units, sizeof(units));
		if (*units)
			r = bt_record_add_str(rec, "unit_requests", units);
	}

	for (size_t i = 0; r == 0 && i < s->cfg->n_identities; i++) {
		const struct identity *id = &s->cfg->identities[i];
		struct bt_record *irec;
		if (admin || service_peer_may_use(s, p, id))
			r = bt_record_add_child(rec, &irec)
				?: describe_identity(s, id, irec, admin);
	}
	return r;
}

bool service_peer_reads_metrics(const struct service *s, const struct peer *p)
{
	if (service_peer_is_admin(s, p) ||
	    (s->cfg->metrics_gid != (gid_t)-1 && policy_in_group(p, s->cfg->metrics_gid)))
		return true;
	/* A TCP client (no process, no groups): the members the group
	 * database listed at load. */
	for (size_t i = 0; p->pid < 0 && !p->groups && i < s->cfg->n_metrics_uids; i++)
		if (s->cfg->metrics_uids[i] == p->uid)
			return true;
	return false;
}

uint32_t service_metrics(struct service *s, const struct peer *p, char **text, size_t *len,
			 char *msg, size_t n)
{
	struct metrics_input in = {.cfg = s->cfg,
				   .cache = s->cache,
				   .units = &s->units,
				   .now = clock_wall_now(),
				   .extra = s->hooks.metrics,
				   .extra_arg = s->hooks.arg};

	if (!service_peer_reads_metrics(s, p)) {
		counters.denials[DENY_ADMIN]++;
		if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)p->uid))
			log_msg(LOG_WARNING, &(struct log_ctx){.uid = (long)p->uid, .pid = p->pid},
				"denied metrics to pid %d uid %u", (int)p->pid, (unsigned)p->uid);
		snprintf(msg, n,
			 "metrics are for administrators and metrics_group: run it as root, as "
			 "the daemon's user, or as a member of admin_group or metrics_group");
		return BT_E_DENIED;
	}
	if (metrics_render(&in, text, len) < 0) {
		snprintf(msg, n, "out of memory");
		return BT_E_INTERNAL;
	}
	return BT_OK;
}

bool service_peer_is_admin(const struct service *s, const struct peer *p)
{
	return p->uid == 0 || p->uid == s->self ||
	       (s->cfg->admin_gid != (gid_t)-1 && policy_in_group(p, s->cfg->admin_gid));
}

bool service_peer_may_use(const struct service *s, const struct peer *p, const struct identity *id)
{
	char why[POLICY_WHY_MAX];

	return policy_decide(id, p, s->self, why, sizeof(why)) == POLICY_ALLOW;
}

const struct identity *service_find(const struct service *s, const char *name, uint32_t *status,
				    char *msg, size_t n)
{
	const struct identity *id;

	if (name && *name) {
		if ((id = config_find_identity(s->cfg, name)))
			return id;
		snprintf(msg, n,
			 "no identity named '%s': 'batchtok status' lists the ones you may use",
			 name);
	} else {
		if ((id = s->cfg->default_identity))
			return id;
		snprintf(msg, n,
			 "no default identity is configured: name one with -i (see 'batchtok "
			 "status'), or set default = yes on one");
	}
	*status = BT_E_UNKNOWN_IDENTITY;
	return NULL;
}

static void caller_free(struct service_caller *c)
{
	if (!c)
		return;
	free(c->unit);
	free(c->user_unit);
	free(c->exe);
	free(c);
}

/* Calls q->fn with a, then frees what q held: the callback may free q, so
 * nothing of q is touched after it. a may point into q's strings. */

static void finish(struct service_request *q, const struct service_answer *a)
{
	char *identity = q->identity, *resource = q->resource;
	struct service_caller *caller = q->caller;

	q->identity = q->resource = NULL;
	q->caller = NULL;
	q->fn(q, a);
	free(identity);
	free(resource);
	caller_free(caller);
}

static void answer_error(struct service_request *q, uint32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void answer_error(struct service_request *q, uint32_t status, const char *fmt, ...)
{
	char msg[BT_MESSAGE_MAX];
	struct service_answer a = {.status = status, .message = msg};
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	finish(q, &a);
}

/* Answers q with the current config's names for its identity (and the
 * token, if t). */
static void answer_ok(struct service_request *q, const struct cache_answer *t)
{
	const struct identity *id = config_find_identity(q->s->cfg, q->identity);
	struct service_answer a = {.status = BT_OK};

	if (!id) {
		answer_error(q, BT_E_UNKNOWN_IDENTITY,
			     "identity '%s' was removed by a configuration reload", q->identity);
		return;
	}
	a.identity = id->name;
	a.tenant = id->tenant;
	a.client_id = id->client_id;
	a.resource = q->resource;
	if (t) {
		/* An administrator's refresh is told of the token, not given it. */
		a.access_token = q->token ? t->access_token : NULL;
		a.token_type = t->token_type;
		a.fingerprint = t->fingerprint;
		a.expires_on = t->expires_on;
		a.refresh_at = t->refresh_at;
		a.watchers = t->watchers;
	}
	finish(q, &a);
}

static void on_cache(struct cache_waiter *w, const struct cache_answer *t)
{
	struct service_request *q = container_of(w, struct service_request, w);

	q->caching = false;
	/* A reload that removed the identity dropped its tokens: say so, as a
	 * request for it made now would be told. */
	if (t->status != BT_OK && !config_find_identity(q->s->cfg, q->identity))
		answer_error(q, BT_E_UNKNOWN_IDENTITY,
			     "identity '%s' was removed by a configuration reload", q->identity);
	else if (t->status != BT_OK)
		answer_error(q, t->status, "%s", t->message);
	else
		answer_ok(q, t);
}

/* What p's attestation says, kept for a log line written later; NULL
 * when it has nothing to say, or there is no memory (the line then says
 * less). */
static struct service_caller *caller_save(const struct peer *p)
{
	const struct attestation *a = p->att;
	struct service_caller *c;

	if (!a || a->err || !(c = calloc(1, sizeof(*c))))
		return NULL;
	if ((a->unit && !(c->unit = strdup(a->unit))) ||
	    (a->user_unit && !(c->user_unit = strdup(a->user_unit))) ||
	    (a->exe && !(c->exe = strdup(a->exe)))) {
		caller_free(c);
		return NULL;
	}
	memcpy(c->invocation_id, a->invocation_id, sizeof(c->invocation_id));
	c->invocation_id[ATTEST_ID_LEN] = '\0';
	policy_describe_caller(p, c->what, sizeof(c->what));
	return c;
}

static void tell_denied(struct service_request *q, uid_t uid, const char *name)
{
	struct log_ctx ctx = {.identity = q->identity, .uid = (long)uid, .pid = q->pid};
	const struct service_caller *c = q->caller;
	char who[USERNAME_DESCRIBE_SIZE];

	if (c) {
		ctx.unit = c->unit;
		ctx.user_unit = c->user_unit;
		ctx.exe = c->exe;
		ctx.invocation_id = c->invocation_id[0] ? c->invocation_id : NULL;
	}
	usernames_describe(who, sizeof(who), uid, name);
	/* A user may ask again and again: the log says so once a burst, then
	 * sums up. */
	if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)uid)) {
		if (q->pid > 0)
			log_msg(LOG_WARNING, &ctx, "denied identity %s to pid %d, %s%s%s%s",
				q->identity, (int)q->pid, who, c ? " (" : "", c ? c->what : "",
				c ? ")" : "");
		else
			log_msg(LOG_WARNING, &ctx, "denied identity %s to %s", q->identity, who);
	}
	answer_error(q, BT_E_DENIED,
		     "%s may not use identity '%s': an administrator can add the user to its "
		     "allow_users or allow_groups",
		     who, q->identity);
}

static void on_user_name(struct username_waiter *w, uid_t uid, const char *name)
{
	struct service_request *q = container_of(w, struct service_request, uw);

	q->naming = false;
	tell_denied(q, uid, name);
}

/* Refuses q's identity to p's uid, naming the user: from the cache, or
 * after the thread pool has looked the name up (NSS may block; the loop
 * must not). */
static void deny_user(struct service_request *q, const struct peer *p)
{
	const char *name;

	q->caller = caller_save(p);
	if (usernames_peek(q->s->usernames, p->uid, &name)) {
		tell_denied(q, p->uid, name);
		return;
	}
	q->uw.fn = on_user_name;
	q->naming = usernames_lookup(q->s->usernames, p->uid, &q->uw) == 0;
	if (!q->naming)
		tell_denied(q, p->uid, NULL);
}

/* Refuses q's identity to p's program, saying what it is and what the
 * identity allows (why, from policy_decide()). */
static void deny_program(struct service_request *q, const struct peer *p, const char *why)
{
	struct log_ctx ctx = {.identity = q->identity};

	policy_log_ctx(p, &ctx);
	if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)p->uid)) {
		if (p->pid > 0)
			log_msg(LOG_WARNING, &ctx, "denied identity %s to pid %d uid %u: %s",
				q->identity, (int)p->pid, (unsigned)p->uid, why);
		else
			log_msg(LOG_WARNING, &ctx, "denied identity %s to uid %u: %s", q->identity,
				(unsigned)p->uid, why);
	}
	answer_error(q, BT_E_DENIED, "%s", why);
}

static void begin(struct service *s, const struct peer *p, struct service_request *q);

/* Finds and authorises q's identity; answers q and returns NULL if the
 * request cannot go on. */
static const struct identity *admit(struct service *s, const struct peer *p, const char *name,
				    struct service_request *q)
{
	char msg[BT_MESSAGE_MAX], why[POLICY_WHY_MAX], unit[POLICY_UNIT_NAME_MAX];
	const struct identity *id;
	enum policy_verdict v;
	uint32_t status;

	begin(s, p, q);
	if (!(id = service_find(s, name, &status, msg, sizeof(msg)))) {
		answer_error(q, status, "%s", msg);
		return NULL;
	}
	if (!(q->identity = strdup(id->name))) {
		answer_error(q, BT_E_INTERNAL, "out of memory");
		return NULL;
	}
	v = policy_decide(id, p, s->self, why, sizeof(why));
	policy_unit_name(p, unit, sizeof(unit));
	unitcount_add(&s->units, unit, v != POLICY_ALLOW);
	if (v == POLICY_DENY_USER)
		counters.denials[DENY_USER]++, deny_user(q, p);
	else if (v == POLICY_DENY_PROGRAM)
		counters.denials[DENY_PROGRAM]++, deny_program(q, p, why);
	return v == POLICY_ALLOW ? id : NULL;
}

void service_authorize(struct service *s, const struct peer *p, const char *identity,
		       struct service_request *q)
{
	q->token = false;
	if (admit(s, p, identity, q))
		answer_ok(q, NULL);
}

/* Sets q up to be answered: the service's fields, nothing held yet. */
static void begin(struct service *s, const struct peer *p, struct service_request *q)
{
	q->s = s;
	q->pid = p->pid;
	q->caching = q->naming = false;
	q->identity = q->resource = NULL;
	q->caller = NULL;
}

/* The resource (or scope) of id a request names; NULL with q answered if
 * id does not serve it. On success q holds its name and waits on the cache
 * once the caller has queued q->w there. */
static const char *pick_resource(const struct identity *id, const char *resource, const char *scope,
				 struct service_request *q)
{
	const char *res = identity_resource(id, resource, scope);

	if (!res) {
		answer_error(q, BT_E_RESOURCE_NOT_ALLOWED,
			     "identity '%s' does not serve %s '%s' (its resources: %s%s): ask for "
			     "one of those, or add it to resources =",
			     id->name, scope && *scope ? "scope" : "resource",
			     scope && *scope ? scope : resource, id->resources[0],
			     id->n_resources > 1 ? ", ..." : "");
		return NULL;
	}
	if (!(q->resource = strdup(res))) {
		answer_error(q, BT_E_INTERNAL, "out of memory");
		return NULL;
	}
	q->w.fn = on_cache;
	q->caching = true;
	return res;
}

/* What a cache call queuing q returned: an error answers q. */
static void queued(struct service_request *q, int r)
{
	if (r >= 0)
		return;
	q->caching = false;
	answer_error(q, r == -EBUSY ? BT_E_BUSY : BT_E_INTERNAL, "%s",
		     r == -EBUSY ? "too many clients are waiting for this token; try again"
				 : "out of memory");
}

void service_get_token(struct service *s, const struct peer *p, const char *identity,
		       const char *resource, const char *scope, uint32_t min_validity, bool force,
		       struct service_request *q)
{
	const struct identity *id;
	const char *res;

	q->token = true;
	if (!(id = admit(s, p, identity, q)) || !(res = pick_resource(id, resource, scope, q)))
		return;
	/* cache_get() may answer (through on_cache) before it returns. */
	queued(q, cache_get(s->cache, id, res, min_validity, force, &q->w));
}

void service_challenge(struct service *s, const struct peer *p, const char *identity,
		       const char *resource, const char *scope, uint32_t min_validity,
		       const char *claims, struct service_request *q)
{
	const struct identity *id;
	char why[200], *canon = NULL;
	const char *res;
	int r;

	q->token = true;
	if (!(id = admit(s, p, identity, q)) || !(res = pick_resource(id, resource, scope, q)))
		return;
	if ((r = entra_canonical_claims(claims, &canon, why, sizeof(why))) < 0) {
		q->caching = false;
		if (r == -EINVAL)
			answer_error(q, BT_E_BAD_REQUEST,
				     "%s: pass the claims of the resource's WWW-Authenticate "
				     "challenge, base64-decoded",
				     why);
		else
			answer_error(q, BT_E_INTERNAL, "out of memory");
		return;
	}
	/* Logged by the cache when it fetches: a challenge answered from
	 * the cache or refused is no news, and callers choose how often. */
	queued(q, cache_challenge(s->cache, id, res, canon, min_validity, &q->w));
	free(canon);
}

bool service_admin_only(struct service *s, const struct peer *p, const char *what, char *msg,
			size_t n)
{
	if (service_peer_is_admin(s, p))
		return true;
	counters.denials[DENY_ADMIN]++;
	if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)p->uid))
		log_msg(LOG_WARNING, &(struct log_ctx){.uid = (long)p->uid, .pid = p->pid},
			"denied %s to pid %d uid %u", what, (int)p->pid, (unsigned)p->uid);
	snprintf(msg, n,
		 "%s is for administrators: run it as root, as the daemon's user or as a member "
		 "of admin_group",
		 what);
	return false;
}

void service_refresh(struct service *s, const struct peer *p, const char *identity,
		     const char *resource, const char *scope, struct service_request *q)
{
	char msg[BT_MESSAGE_MAX];
	const struct identity *id;
	const char *res;
	uint32_t status;

	begin(s, p, q);
	q->token = false;
	if (!service_admin_only(s, p, "refresh", msg, sizeof(msg))) {
		answer_error(q, BT_E_DENIED, "%s", msg);
		return;
	}
	if (!(id = service_find(s, identity, &status, msg, sizeof(msg)))) {
		answer_error(q, status, "%s", msg);
		return;
	}
	if (!(q->identity = strdup(id->name))) {
		answer_error(q, BT_E_INTERNAL, "out of memory");
		return;
	}
	if (!(res = pick_resource(id, resource, scope, q)))
		return;
	log_msg(LOG_NOTICE,
		&(struct log_ctx){
		    .identity = id->name, .resource = res, .uid = (long)p->uid, .pid = p->pid},
		"identity %s: pid %d uid %u asks for a new token for %s now", id->name, (int)p->pid,
		(unsigned)p->uid, res);
	queued(q, cache_refresh(s->cache, id, res, &q->w));
}

uint32_t service_forget(struct service *s, const struct peer *p, const char *identity, bool all,
			unsigned *n, char *msg, size_t size)
{
	const struct identity *id = NULL;
	uint32_t status;

	if (!service_admin_only(s, p, "forget", msg, size))
		return BT_E_DENIED;
	if (!all && !(id = service_find(s, identity, &status, msg, size)))
		return status;
	*n = cache_forget(s->cache, id);
	log_msg(
	    LOG_NOTICE,
	    &(struct log_ctx){.identity = id ? id->name : NULL, .uid = (long)p->uid, .pid = p->pid},
	    "pid %d uid %u dropped %u cached token%s of %s%s (nothing is revoked at the token "
	    "service)",
	    (int)p->pid, (unsigned)p->uid, *n, *n == 1 ? "" : "s", id ? "identity " : "",
	    id ? id->name : "every identity");
	return BT_OK;
}

void service_cancel(struct service_request *q)
{
	if (q->caching)
		cache_waiter_cancel(&q->w);
	if (q->naming)
		usernames_waiter_cancel(&q->uw);
	q->caching = q->naming = false;
	free(q->identity);
	free(q->resource);
	caller_free(q->caller);
	q->identity = q->resource = NULL;
	q->caller = NULL;
}

/* Ends w: it is unlinked and holds nothing when its callback, which may
 * free it, is told why. */
static void watch_end(struct service_watch *w, uint32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void watch_end(struct service_watch *w, uint32_t status, const char *fmt, ...)
{
	char msg[BT_MESSAGE_MAX];
	struct service_answer a = {.status = status, .message = msg};
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	service_unwatch(w);
	w->fn(w, &a, true);
}

static void on_watch_event(struct cache_watcher *cw, const struct cache_answer *t)
{
	struct service_watch *w = container_of(cw, struct service_watch, cw);
	struct service *s = w->q.s;
	const struct identity *id = config_find_identity(s->cfg, w->identity);
	char why[POLICY_WHY_MAX];
	struct service_answer a = {.status = t->status, .message = t->message};

	if (!id) {
		watch_end(w, BT_E_UNKNOWN_IDENTITY,
			  "identity '%s' was removed by a configuration reload", w->identity);
		return;
	}
	/* A program may have ended or become another since the last token. */
	if (t->status == BT_OK && policy_has_program_rules(id) &&
	    policy_decide(id, w->peer, s->self, why, sizeof(why)) != POLICY_ALLOW) {
		struct log_ctx ctx = {.identity = id->name, .resource = w->resource};
		policy_log_ctx(w->peer, &ctx);
		if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)w->peer->uid))
			log_msg(LOG_WARNING, &ctx,
				"ended the watch of identity %s by pid %d uid %u: %s", id->name,
				(int)w->peer->pid, (unsigned)w->peer->uid, why);
		watch_end(w, BT_E_DENIED, "%s", why);
		return;
	}
	a.identity = id->name;
	a.tenant = id->tenant;
	a.client_id = id->client_id;
	a.resource = w->resource;
	if (t->status == BT_OK) {
		a.access_token = t->access_token;
		a.token_type = t->token_type;
		a.fingerprint = t->fingerprint;
		a.expires_on = t->expires_on;
		a.refresh_at = t->refresh_at;
	}
	w->fn(w, &a, false);
}

/* Watches w's token of id; ends w if the cache cannot. */
static void attach(struct service_watch *w, const struct identity *id)
{
	int r = cache_watch(w->q.s->cache, id, w->resource, w->min_validity, &w->cw);

	if (r == -EBUSY)
		watch_end(w, BT_E_BUSY, "too many clients watch this token; try again later");
	else if (r == -ERANGE)
		watch_end(w, BT_E_BAD_REQUEST,
			  "identity %s: no token for %s stays valid for the %u s asked for (the "
			  "token service's tokens are shorter): ask for less with min_validity",
			  w->identity, w->resource, w->min_validity);
	else if (r < 0)
		watch_end(w, BT_E_INTERNAL, "out of memory");
}

/* The admission failed (refused, unknown, out of memory): the watch ends
 * before it began. */
static void on_watch_refused(struct service_request *q, const struct service_answer *a)
{
	struct service_watch *w = container_of(q, struct service_watch, q);

	w->fn(w, a, true);
}

void service_watch(struct service *s, const struct peer *p, const char *identity,
		   const char *resource, const char *scope, uint32_t min_validity,
		   struct service_watch *w)
{
	struct service_request *q = &w->q;
	const struct identity *id;
	const char *res;

	w->peer = p;
	w->min_validity = min_validity;
	w->identity = w->resource = NULL;
	w->active = false;
	w->cw.entry = NULL;
	w->cw.fn = on_watch_event;
	list_init(&w->node);
	q->fn = on_watch_refused;
	q->token = true;
	if (!(id = admit(s, p, identity, q)) || !(res = pick_resource(id, resource, scope, q)))
		return;
	q->caching = false; /* w waits on the cache, not q */
	w->identity = q->identity;
	w->resource = q->resource;
	q->identity = q->resource = NULL;
	service_cancel(q);
	w->active = true;
	list_add_tail(&s->watches, &w->node);
	log_msg(LOG_DEBUG,
		&(struct log_ctx){.identity = w->identity,
				  .resource = w->resource,
				  .uid = (long)p->uid,
				  .pid = p->pid},
		"pid %d uid %u watches identity %s token for %s", (int)p->pid, (unsigned)p->uid,
		w->identity, w->resource);
	attach(w, id);
}

void service_unwatch(struct service_watch *w)
{
	service_cancel(&w->q);
	if (!w->active)
		return;
	w->active = false;
	list_del(&w->node);
	cache_unwatch(&w->cw);
	free(w->identity);
	free(w->resource);
	w->identity = w->resource = NULL;
}

/* One watch after a reload: still allowed, still served, still watching. */
static void recheck(struct service *s, struct service_watch *w)
{
	const struct identity *id = config_find_identity(s->cfg, w->identity);
	char why[POLICY_WHY_MAX];

	if (!id) {
		watch_end(w, BT_E_UNKNOWN_IDENTITY,
			  "identity '%s' was removed by a configuration reload", w->identity);
	} else if (policy_decide(id, w->peer, s->self, why, sizeof(why)) != POLICY_ALLOW) {
		struct log_ctx ctx = {.identity = id->name, .resource = w->resource};
		policy_log_ctx(w->peer, &ctx);
		/* One line a burst per user, however many watches they had. */
		if (ratelimit_log_uid(LOG_LIMIT_DENIAL, (long)w->peer->uid))
			log_msg(
			    LOG_WARNING, &ctx,
			    "ended the watch of identity %s by pid %d uid %u: no longer allowed "
			    "after a configuration reload",
			    id->name, (int)w->peer->pid, (unsigned)w->peer->uid);
		watch_end(w, BT_E_DENIED,
			  "uid %u may no longer use identity '%s' after a configuration reload: an "
			  "administrator can add the user to its allow_users or allow_groups",
			  (unsigned)w->peer->uid, id->name);
	} else if (!identity_resource(id, w->resource, NULL)) {
		watch_end(w, BT_E_RESOURCE_NOT_ALLOWED,
			  "identity '%s' no longer serves %s after a configuration reload",
			  id->name, w->resource);
	} else if (!w->cw.entry) {
		attach(w, id);
	}
}

void service_recheck_watches(struct service *s)
{
	struct service_watch *w;
	struct list todo;

	/* Each watch goes back on the list before it is checked: ending one
	 * may end others (their connection closes), wherever they are. */
	list_init(&todo);
	while ((w = list_first(&s->watches, struct service_watch, node))) {
		list_del(&w->node);
		list_add_tail(&todo, &w->node);
	}
	while ((w = list_first(&todo, struct service_watch, node))) {
		list_del(&w->node);
		list_add_tail(&s->watches, &w->node);
		recheck(s, w);
	}
}
