/* service.h - the one request path every front end goes through (the Unix
 * socket's dispatcher, the compat endpoint, and whatever comes next): find
 * the identity a request names, normalise the resource or scope it asks
 * for, decide whether the peer may use it, and answer from the cache.
 *
 * Front ends do framing and shapes only. Nothing a request keeps across the
 * loop points into the config: a reload frees it. A request holds names,
 * and an answer carries the names (and tenant) of what it is for, valid
 * during the callback alone. */
#ifndef BATCHTOK_DAEMON_SERVICE_H
#define BATCHTOK_DAEMON_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cache.h"
#include "../identity/config.h"
#include "../lib/peer.h"
#include "../lib/usernames.h"

struct service;

struct signin_store;
struct bt_record;

/* What the daemon does for the service that the service cannot: reloading
 * (which replaces the config), describing the daemon itself, and issuing a
 * compat endpoint capability (the endpoint is a front end). */
struct service_hooks {
	void *arg;
	int (*reload)(void *arg, char **ret_error);
	int (*describe)(void *arg, struct bt_record *rec, bool admin);
	/* -EOPNOTSUPP: the endpoint is off; -EBUSY: too many live for the
	 * peer's uid; -ENOSPC: too many in all. */
	int (*grant)(void *arg, const struct peer *p, const char *identity, char *text, size_t n,
		     int64_t *expires_on, const char **url);
	/* A capability of the peer's uid (its text): made live for
	 * compat_lifetime from now, or given back. -EOPNOTSUPP: the endpoint
	 * is off; -ENOENT: not live (renew only); -EPERM: another uid's. */
	int (*renew)(void *arg, const struct peer *p, const char *text, int64_t *expires_on);
	int (*revoke)(void *arg, const struct peer *p, const char *text);
	/* Metrics families of the daemon's own modules (may be NULL). */
	void (*metrics)(void *arg, FILE *f);
};

struct service_answer {
	uint32_t status;     /* BT_OK or a BT_E_* code */
	const char *message; /* errors: one line naming the cause and the fix */
	/* BT_OK: the identity's name, tenant and client, and the resource, as
	 * the current config has them; for a token, the token too. */
	const char *identity, *tenant, *client_id, *resource;
	const char *access_token, *token_type, *fingerprint;
	int64_t expires_on;
	int64_t refresh_at; /* a token: when the next is planned; 0: not planned */
	unsigned watchers;  /* REFRESH: how many watch the token */
};

struct service_request;
struct service_caller;
typedef void (*service_fn)(struct service_request *q, const struct service_answer *a);

/* Embedded in a front end's request; fn is called exactly once (possibly
 * before service_get_token() returns) unless service_cancel() comes first. */
struct service_request {
	service_fn fn;
	/* The service's own. */
	struct service *s;
	struct cache_waiter w;
	struct username_waiter uw;
	char *identity; /* a name: the config may change while the request waits */
	char *resource;
	pid_t pid; /* the peer's, for the log; -1: none */
	/* Its program, for the log of a denial that waits for a user's
	 * name: the peer may be gone by then. NULL: none known. */
	struct service_caller *caller;
	bool token;   /* a token is wanted, not only the right to use it */
	bool caching; /* waiting on the cache */
	bool naming;  /* waiting for a refused user's name */
};

struct service_watch;
/* One event of a watch: a token, or (status not BT_OK) a failure. final:
 * the watch has ended (the callback may free w; nothing else comes). */
typedef void (*service_watch_fn)(struct service_watch *w, const struct service_answer *a,
				 bool final);

/* Embedded in a front end's watch (WATCH). */
struct service_watch {
	service_watch_fn fn;
	/* The service's own. */
	struct service_request q; /* admission */
	struct cache_watcher cw;
	struct list node; /* on the service's list, once admitted */
	const struct peer *peer;
	uint32_t min_validity;
	char *identity, *resource; /* names: the config may change */
	bool active;
};

int service_new(struct cache *cache, struct signin_store *signins, struct usernames *usernames,
		const struct config *cfg, const struct service_hooks *hooks, struct service **ret);
void service_free(struct service *s);
/* After a reload: requests from now on see cfg. */
void service_set_config(struct service *s, const struct config *cfg);

/* The current config, valid until control returns to the loop: read it, do
 * not keep it. */
const struct config *service_config(const struct service *s);

/* Is the peer root, the daemon's own user, or in admin_group? */
bool service_peer_is_admin(const struct service *s, const struct peer *p);
/* Whether p may make an administrator's request (what, for the log and
 * msg); if not, the refusal is counted and logged, and msg (n bytes) says
 * who may. */
bool service_admin_only(struct service *s, const struct peer *p, const char *what, char *msg,
			size_t n);
/* May the peer use identity id? Its uid and group rules and its program
 * rules (policy.h) against p and p->att, as a token request would be
 * judged now. */
bool service_peer_may_use(const struct service *s, const struct peer *p, const struct identity *id);

/* The identity called name ("" or NULL: the default). NULL with *status and
 * msg (n bytes) saying why if there is none. Valid as service_config(). */
const struct identity *service_find(const struct service *s, const char *name, uint32_t *status,
				    char *msg, size_t n);

/* Answers q->fn with a token of identity (name) for resource or scope, if
 * peer p may have it; min_validity 0 is the daemon's. Every front end gets
 * the cache's rule for a min_validity no token can meet: BT_E_BAD_REQUEST
 * at once, naming when the token ends, and no token request (cache.h). */
void service_get_token(struct service *s, const struct peer *p, const char *identity,
		       const char *resource, const char *scope, uint32_t min_validity, bool force,
		       struct service_request *q);
/* Answers q->fn with BT_OK and the identity's names if peer p may use it
 * (no token): for requests that act on an identity (COMPAT). */
void service_authorize(struct service *s, const struct peer *p, const char *identity,
		       struct service_request *q);
/* Stops q waiting; q->fn will not be called. Harmless if it is not. */
void service_cancel(struct service_request *q);

/* A claims challenge: as service_get_token(), but the token is fetched
 * anew with claims (the decoded JSON a resource's 401 named), once for
 * every request with the same claims (cache_challenge()). */
void service_challenge(struct service *s, const struct peer *p, const char *identity,
		       const char *resource, const char *scope, uint32_t min_validity,
		       const char *claims, struct service_request *q);

/* For administrators: fetches the token anew now and answers q with its
 * fingerprint and times (access_token NULL) and the number of watchers. */
void service_refresh(struct service *s, const struct peer *p, const char *identity,
		     const char *resource, const char *scope, struct service_request *q);

/* For administrators: drops the cached tokens of identity (all: of every
 * identity); *n says how many. 0, or a BT_E_* status with msg saying why. */
uint32_t service_forget(struct service *s, const struct peer *p, const char *identity, bool all,
			unsigned *n, char *msg, size_t size);

/* Watches a token for peer p, which must stay valid until the watch ends:
 * w->fn gets the current token, then each new one, and a failure when no
 * token comes in time (cache_watch()). Access is checked now, at every
 * reload (service_recheck_watches()), and, for an identity with program
 * rules, before each token. A watch that ends calls w->fn with final set. */
void service_watch(struct service *s, const struct peer *p, const char *identity,
		   const char *resource, const char *scope, uint32_t min_validity,
		   struct service_watch *w);
/* Ends a watch without telling it; harmless on one that ended. */
void service_unwatch(struct service_watch *w);
/* After a reload: ends the watches their peers may no longer have, and
 * watches again those whose tokens the reload dropped. */
void service_recheck_watches(struct service *s);

/* Reloads the config through the daemon; *ret_error (free()) on failure. */
int service_reload(struct service *s, char **ret_error);
/* The daemon, and every identity the peer may see (all, for an admin),
 * with its credential and tokens, into rec; for an admin, the identities'
 * program rules and the requests counted per caller unit too. */
int service_status(struct service *s, const struct peer *p, struct bt_record *rec);
/* A compat endpoint capability for identity, which p may use (checked by
 * the caller through service_authorize). -EPERM for an identity with
 * program rules: the endpoint cannot attest a program. */
int service_grant(struct service *s, const struct peer *p, const char *identity, char *text,
		  size_t n, int64_t *expires_on, const char **url);
/* Renews or revokes a compat endpoint capability of p's uid (see
 * service_hooks). No identity check: a renewed capability is checked at
 * each use, and giving one back is always allowed. */
int service_renew(struct service *s, const struct peer *p, const char *text, int64_t *expires_on);
int service_revoke(struct service *s, const struct peer *p, const char *text);
/* OpenMetrics text in *text (free()), *len bytes, for root, the daemon's
 * user and members of admin_group or metrics_group: BT_OK, or a BT_E_*
 * status with msg (n bytes) saying why not. */
uint32_t service_metrics(struct service *s, const struct peer *p, char **text, size_t *len,
			 char *msg, size_t n);
/* Whether p may read metrics (service_metrics()'s rule). */
bool service_peer_reads_metrics(const struct service *s, const struct peer *p);

/* The sign-ins of device-code identities. */
struct signin_store *service_signins(const struct service *s);

#endif
