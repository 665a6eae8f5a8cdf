/* cache.h - the token cache and its refresh schedule.
 *
 * One entry per (identity, resource). A request is answered from the entry
 * when its token stays valid for long enough; otherwise it waits on the
 * entry, and all waiters share one fetch (single flight). Tokens are
 * refreshed ahead of expiry off the request path, failures are retried with
 * backoff honouring Retry-After, hard credential errors are remembered for a
 * short while so a bad secret does not hammer the token service, and tokens
 * nobody asked for in idle_timeout are no longer refreshed.
 *
 * The cache does no I/O of its own: fetching, the clock, randomness and the
 * wake-up timer come through cache_ops, so tests drive it with fake time.
 * Expiry is judged by the wall clock, so a suspended laptop that resumes
 * sees its tokens as expired, not as still fresh. */
#ifndef BATCHTOK_DAEMON_CACHE_H
#define BATCHTOK_DAEMON_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "../../proto/msg.h"
#include "../identity/config.h"
#include "../identity/entra.h"
#include "../lib/list.h"

/* How long a hard credential error is answered from memory (MSAL replays
 * HTTP 400 answers for 60 s). */
#define CACHE_NEGATIVE_TTL 60
/* A client's forced refresh is honoured at most this often per entry; Entra
 * guards against loops with AADSTS50196. */
#define CACHE_FORCE_INTERVAL 30
/* Clients wait for a retry that is due within this many seconds; a longer
 * backoff (a Retry-After of a minute) is answered at once as unavailable. */
#define CACHE_WAIT_FOR_RETRY 10
/* A waiting client sees at most this many failed attempts before it is told. */
#define CACHE_WAITER_ATTEMPTS 3
/* Waiters one entry holds; each is a client request, bounded by max_clients
 * times the per-connection limit anyway, but an entry gets its own cap. */
#define CACHE_WAITERS_MAX 65536
/* The same for watchers. */
#define CACHE_WATCHERS_MAX 65536

struct cache;
struct token_entry;
struct cache_waiter;
struct cache_watcher;

struct cache_answer {
	uint32_t status;	  /* BT_OK or a BT_E_* code */
	const char *message;	  /* errors: one line naming cause and fix */
	const char *access_token; /* BT_OK */
	const char *token_type;
	int64_t expires_on;
	const char *fingerprint;
	int64_t refresh_at; /* BT_OK: when the next token is planned; 0: not planned */
	unsigned watchers;  /* BT_OK: how many watch the token */
};

typedef void (*cache_waiter_fn)(struct cache_waiter *w, const struct cache_answer *a);
typedef void (*cache_watcher_fn)(struct cache_watcher *w, const struct cache_answer *a);

/* Embedded in whatever waits (a client's pending request). */
struct cache_waiter {
	struct list node;
	struct token_entry *entry; /* NULL when not waiting */
	uint32_t min_validity;
	bool claims; /* waits for the claims challenge's fetch, not any */
	cache_waiter_fn fn;
};

/* Embedded in whatever watches an entry (a client's WATCH): told of each
 * token the entry gets, and of a failure once the last token it was told of
 * is no longer valid for min_validity. Detached (entry NULL) without being
 * told when a reload drops the entry: cache_rebind()'s caller watches anew. */
struct cache_watcher {
	struct list node;
	struct token_entry *entry; /* NULL when not watching */
	uint32_t min_validity;
	int64_t told_expires;  /* expires_on of the last token told; 0: none */
	int64_t told_error_at; /* error_at of the last failure told; 0: none */
	cache_watcher_fn fn;
};

struct cache_ops {
	/* Starts fetching e's token; cache_fetch_done() must follow later,
	 * never from inside this call. Returns 0, or a negative errno with err
	 * saying why when err->status is set. */
	int (*fetch)(void *arg, struct token_entry *e, struct token_result *err);
	/* Abandons e's fetch; cache_fetch_done() will not follow. */
	void (*cancel)(void *arg, struct token_entry *e);
	/* Asks for cache_tick() at wall time `due` (INT64_MAX: never). */
	void (*arm)(void *arg, int64_t due);
	int64_t (*now)(void *arg);
	uint32_t (*random)(void *arg);
};

struct cache_settings {
	uint32_t min_validity; /* daemon-wide floor, seconds */
	uint32_t idle_timeout;
};

struct token_entry {
	struct list node;
	struct cache *cache;
	const struct identity *id;
	char *resource;
	bool prefetch;
	/* The token, if any. */
	char *token; /* secure memory */
	char token_type[16];
	char fingerprint[24];
	int64_t obtained, expires_on, refresh_at;
	/* The longest a token of this entry was valid when it came: a request
	 * for at least that long cannot be met, and is refused without asking
	 * the token service. 0: none has come yet. */
	int64_t lifetime;
	/* Fetching and failures. */
	void *fetch;	   /* the fetcher's handle while a request is in flight */
	unsigned attempts; /* consecutive failures */
	int64_t retry_at;  /* 0: no retry scheduled */
	uint32_t error_status;
	char error[600];
	char aadsts[32];
	int64_t error_at;
	int64_t hard_error_until;
	/* Claims challenges: the claims of the last one (canonical JSON), when
	 * it came, whether the fetch in flight carries them, whether the token
	 * was fetched with them, and the retry the challenge's fetch put off.
	 * A challenge's failure is its challengers' alone: the entry's errors,
	 * backoff and schedule stay as they were. */
	char *claims;
	int64_t challenged_at;
	bool fetching_claims;
	bool token_has_claims;
	int64_t saved_retry_at;
	/* Use. */
	int64_t last_used;
	int64_t last_forced;
	uint64_t fetches;
	uint64_t served;
	struct list waiters;
	unsigned n_waiters;
	struct list watchers;
	unsigned n_watchers;
	uint32_t watch_validity;   /* the largest min_validity of the watchers */
	bool watch_validity_stale; /* a watcher that had it left: recount */
};

int cache_new(const struct cache_ops *ops, void *arg, const struct cache_settings *s,
	      struct cache **ret);
void cache_configure(struct cache *c, const struct cache_settings *s);
/* Fails every waiter (BT_E_UNAVAILABLE, "shutting down"), cancels fetches,
 * wipes tokens and frees everything. Accepts NULL. */
void cache_free(struct cache *c);

/* Answers a request for id's token for resource (an identity's own resource
 * string). min_validity 0 means the daemon's. Either calls w->fn before
 * returning (cached token, remembered error) or queues w and calls it when
 * the fetch ends. A min_validity no token of the entry can meet (one at
 * least as long as the longest lifetime the token service gave it) is
 * answered BT_E_BAD_REQUEST at once, naming when the token ends, and costs
 * no token request; fetching ahead of schedule because the cached token is
 * valid, only not long enough, is limited like a forced refresh. Returns
 * 0, or -EBUSY when the entry has too many waiters (w is then not queued
 * and not called), or -ENOMEM. */
int cache_get(struct cache *c, const struct identity *id, const char *resource,
	      uint32_t min_validity, bool force, struct cache_waiter *w);

/* Removes a queued waiter (its client went away); w->fn is not called. */
void cache_waiter_cancel(struct cache_waiter *w);

/* Fetches id's token for resource anew now, whatever is cached and however
 * recently that was done (an administrator asked): joins a fetch in flight,
 * skips backoff and remembered errors. w is answered as cache_get()'s. */
int cache_refresh(struct cache *c, const struct identity *id, const char *resource,
		  struct cache_waiter *w);

/* Answers a claims challenge (claims: canonical JSON): a token fetched
 * with those claims, once for every request with the same claims; at most
 * one such fetch per CACHE_FORCE_INTERVAL, within which other claims are
 * answered BT_E_BUSY naming when to try again. Returns as cache_get(). */
int cache_challenge(struct cache *c, const struct identity *id, const char *resource,
		    const char *claims, uint32_t min_validity, struct cache_waiter *w);

/* Watches id's token for resource: w->fn is called with the current token
 * (at once if one is cached, after fetching otherwise), then with each new
 * one, and with the failure when fetching fails while the last token told
 * is no longer valid for min_validity (0: the daemon's). A watched token is
 * kept fresh. Returns 0, -EBUSY (too many watchers), -ERANGE (no token of
 * the entry lasts min_validity: the service's tokens have been shorter) or
 * -ENOMEM. w->fn may be called before this returns. */
int cache_watch(struct cache *c, const struct identity *id, const char *resource,
		uint32_t min_validity, struct cache_watcher *w);
/* Stops watching; harmless if w is not. */
void cache_unwatch(struct cache_watcher *w);

/* The number of tokens dropped from id's entries (NULL: every identity's),
 * with their remembered errors and backoff; nothing is revoked. Fetches in
 * flight go on; watched tokens are fetched anew. */
unsigned cache_forget(struct cache *c, const struct identity *id);

/* A token kept from before a restart (tokensnap.h): cached for id and
 * resource as if just fetched at obtained, with the longest lifetime seen;
 * its refresh is scheduled as a fetched one's. Takes token (secure memory).
 * -EEXIST if the entry holds a token already, -ENOMEM. */
int cache_restore(struct cache *c, const struct identity *id, const char *resource, char *token,
		  const char *token_type, int64_t expires_on, int64_t obtained, int64_t lifetime);

/* Keeps id's token for resource fresh whether or not anyone asks. */
int cache_prefetch(struct cache *c, const struct identity *id, const char *resource);

/* The fetcher reports the result of a fetch started through ops.fetch.
 * Takes the token out of r (r->access_token is NULL afterwards). */
void cache_fetch_done(struct cache *c, struct token_entry *e, struct token_result *r);

/* Does what is due now: refreshes, retries, expiry; then re-arms. */
void cache_tick(struct cache *c);

/* After a reload: entries of identities whose credential is unchanged move
 * to the new identity (keeping their tokens); the others are dropped and
 * their waiters told. resolve returns the new identity for a name, or NULL. */
void cache_rebind(struct cache *c,
		  const struct identity *(*resolve)(void *, const struct identity *), void *arg);

/* Drops every token and remembered error of id and cancels its fetches,
 * telling waiters why: its signed-in user changed. Watchers stay; their
 * tokens are fetched anew. */
void cache_forget_identity(struct cache *c, const struct identity *id, const char *why);

/* Iteration for status output. */
struct token_entry *cache_first(struct cache *c);
struct token_entry *cache_next(struct token_entry *e);
uint64_t cache_fetch_count(const struct cache *c);

#endif
