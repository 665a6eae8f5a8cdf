/* batchtok.h - libbatchtok, the client library of batchtokd.
 *
 * Asks a running batchtokd for Microsoft Entra ID access tokens over its Unix
 * socket. Needs libc only, does no logging, and never holds a credential: the
 * daemon does. A handle is one connection; use it from one thread at a time.
 *
 * A handle outlives the daemon's restarts (systemctl restart batchtokd) and
 * the daemon closing an idle connection. When the connection turns out to
 * be gone before a request's answer came (EPIPE, ECONNRESET, end of file),
 * the request is sent again, once, on a new connection to the same socket,
 * if it is safe to repeat: batchtok_get_token(), batchtok_get_token_claims(),
 * batchtok_inspect(), batchtok_status(), batchtok_metrics(), batchtok_ping(),
 * batchtok_refresh(), batchtok_forget(), batchtok_compat_renew() and
 * batchtok_compat_revoke(). The others (reload, the sign-in calls and
 * batchtok_compat_grant(), which would issue a second capability) fail with
 * -ECONNREFUSED instead; so does a repeat that fails too. Either way the
 * next call on the handle connects anew. The library never raises SIGPIPE.
 *
 * Every function returning int returns 0 on success or a negative errno code:
 *   -ECONNREFUSED  the daemon is not reachable (no socket, nobody listening)
 *   -EACCES        this user may not use the identity, or the request is
 *                  admin-only, or the socket itself is not accessible
 *   -ENOENT        unknown identity, or a resource it is not allowed
 *   -EKEYREJECTED  the token service rejected the identity's credential
 *   -EHOSTUNREACH  the token service is unavailable and no valid token is cached
 *   -ETIMEDOUT     no answer within the handle's timeout
 *   -EINVAL        bad arguments, or a request the daemon found malformed
 *   -EOPNOTSUPP    the daemon does not offer what was asked (compat_endpoint),
 *                  or is older than the request: "not supported by this
 *                  batchtokd (VERSION): upgrade batchtokd", nothing sent
 *   -EBUSY         the daemon has too many requests of this kind; retry later
 *   -EPROTO        the daemon sent something this library cannot read
 *   -ENOMEM, -EIO  as usual
 * After a failure batchtok_error() says what failed and what to do about it.
 */
#ifndef BATCHTOK_H
#define BATCHTOK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BATCHTOK_VERSION "0.3.0"

#define BATCHTOK_SYSTEM_SOCKET "/run/batchtok/batchtokd.sock"

typedef struct batchtok batchtok;

/* Skip the daemon's cache and fetch a new token (rate-limited there). */
#define BATCHTOK_FORCE_REFRESH 0x1u

struct batchtok_request {
	const char *identity;  /* NULL: the daemon's default identity */
	const char *resource;  /* NULL: the identity's default resource */
	const char *scope;     /* instead of resource: "RESOURCE/.default" */
	unsigned min_validity; /* seconds the token must stay valid; 0: daemon default */
	unsigned flags;	       /* BATCHTOK_FORCE_REFRESH */
};

struct batchtok_token {
	char *access_token; /* the bearer token: a secret */
	int64_t expires_on; /* Unix time */
	char *token_type;   /* "Bearer" */
	char *identity;	    /* the identity that answered */
	char *resource;
	char *tenant;
};

/* A new, unconnected handle in *ret. Default timeout: 60 s. */
int batchtok_new(batchtok **ret);

/* Connects to the daemon at path, or when path is NULL to the default:
 * $BATCHTOK_SOCKET, else $XDG_RUNTIME_DIR/batchtok/batchtokd.sock if it
 * exists, else BATCHTOK_SYSTEM_SOCKET. The protocol version is negotiated with
 * the first request, in the same round trip; the daemon's answer also says
 * which requests it knows, and one it does not know is refused unsent. */
int batchtok_connect(batchtok *bt, const char *path);

/* Milliseconds each call may wait for the daemon; 0 or less: forever. */
void batchtok_set_timeout(batchtok *bt, int timeout_ms);

/* Fetches a token. On success *ret is a new token; free it with
 * batchtok_token_free(). On failure *ret is untouched. A token or token type
 * holding spaces or control characters is never returned (-EPROTO): both go
 * into an HTTP header as they are. */
int batchtok_get_token(batchtok *bt, const struct batchtok_request *req,
		       struct batchtok_token **ret);

/* Fetches a new token that answers a claims challenge: a resource (such as
 * Microsoft Graph with continuous access evaluation) refused a token with
 * 401 and WWW-Authenticate: Bearer ..., error="insufficient_claims",
 * claims="BASE64". claims is the decoded JSON object of that parameter
 * (what azure-core passes to get_token(claims=...)), at most 8 KiB. The
 * daemon fetches once for every caller with the same claims, at most once
 * per 30 s per token (-EBUSY for other claims within that time), replaces
 * its cached token and pushes the new one to watchers. -EINVAL if the
 * daemon finds the claims no JSON object; -EOPNOTSUPP from a batchtokd
 * older than 0.3.0. *ret as batchtok_get_token(). */
int batchtok_get_token_claims(batchtok *bt, const struct batchtok_request *req, const char *claims,
			      struct batchtok_token **ret);

/* Wipes the token and frees it; accepts NULL. */
void batchtok_token_free(struct batchtok_token *t);

/* The current token's decoded header and claims as a JSON document (never
 * its signature) in *ret; free() it. */
int batchtok_inspect(batchtok *bt, const struct batchtok_request *req, char **ret);

/* The daemon's status, rendered as text or (json != 0) as a JSON document, in
 * *ret; free() it. */
int batchtok_status(batchtok *bt, int json, char **ret);

/* Asks the daemon to reload its configuration (admin only). */
int batchtok_reload(batchtok *bt);

/* A device-code sign-in's prompt: show message to the user. */
struct batchtok_login {
	char *identity;
	char *message; /* ready-to-show instructions naming the URL and code */
	char *user_code;
	char *verification_uri;
	unsigned expires_in; /* seconds the code stays valid */
	unsigned interval;   /* seconds between the daemon's polls */
};

/* Starts a device-code sign-in to identity (NULL: the default) in the
 * daemon, or joins the one already running, and returns its prompt in
 * *ret (batchtok_login_free()). Administrators only. */
int batchtok_login_start(batchtok *bt, const char *identity, struct batchtok_login **ret);
void batchtok_login_free(struct batchtok_login *l);

/* Waits for the sign-in to end; *ret (may be NULL; free()) names the user
 * who signed in. Set a timeout of at least the prompt's expires_in. */
int batchtok_login_wait(batchtok *bt, const char *identity, char **ret);

/* Signs the identity's user out: the daemon forgets the refresh token,
 * deletes its saved copy and stops serving that user's tokens. */
int batchtok_logout(batchtok *bt, const char *identity);

/* What a program needs to get tokens from the daemon's managed-identity
 * compatible endpoint as this user with one identity, the way Azure SDKs ask
 * App Service: IDENTITY_ENDPOINT = endpoint + "/msi/token", IDENTITY_HEADER
 * = capability. The capability is bound to this user and the identity and
 * expires; it works only from connections this user owns. */
struct batchtok_compat {
	char *endpoint;	    /* "http://127.0.0.1:PORT" */
	char *capability;   /* a secret */
	char *identity;	    /* the identity it is for */
	int64_t expires_on; /* Unix time */
};

/* Asks the daemon for a capability for identity (NULL: the default) in
 * *ret (batchtok_compat_free()). -EOPNOTSUPP if compat_endpoint is off;
 * -EBUSY if this user already holds too many live ones. It lives
 * compat_lifetime unless renewed, or revoked sooner: give it back with
 * batchtok_compat_revoke() when the program that uses it is done. */
int batchtok_compat_grant(batchtok *bt, const char *identity, struct batchtok_compat **ret);
/* Makes a live capability of this user's live for compat_lifetime from now,
 * and updates c->expires_on. -EINVAL if it is no longer live (expired,
 * revoked, or issued before batchtokd restarted); -EOPNOTSUPP if the daemon
 * is older than this call. */
int batchtok_compat_renew(batchtok *bt, struct batchtok_compat *c);
/* Gives a capability of this user's back: it stops working at once.
 * Revoking one that is no longer live succeeds. -EOPNOTSUPP if the daemon
 * is older than this call (the capability then expires on its own). */
int batchtok_compat_revoke(batchtok *bt, const struct batchtok_compat *c);
/* Wipes the capability and frees; accepts NULL. */
void batchtok_compat_free(struct batchtok_compat *c);

/* What batchtok_refresh() brought. Allocated by the library only, which may
 * add fields at the end. */
struct batchtok_refresh {
	char *identity; /* the identity that answered */
	char *resource;
	char *fingerprint;  /* "sha256:..." of the new token: never the token */
	int64_t expires_on; /* Unix time */
	int64_t refresh_at; /* when the daemon plans the next fetch; 0: not planned */
	unsigned watchers;  /* how many watches it was pushed to */
};

/* Administrators: the daemon fetches the token of req's identity and
 * resource anew now, whatever it has cached (once for all who ask while
 * the fetch is in flight, and not held back by the 30 s limit on
 * BATCHTOK_FORCE_REFRESH), and pushes it to the watchers. Answered once the
 * token came, with *ret (batchtok_refresh_free()). req's min_validity and
 * flags are ignored. A managed identity's metadata service may hand back a
 * token it cached itself. -EACCES for anyone but an administrator. */
int batchtok_refresh(batchtok *bt, const struct batchtok_request *req,
		     struct batchtok_refresh **ret);
void batchtok_refresh_free(struct batchtok_refresh *r);

/* batchtok_forget(): every identity's tokens, not one identity's. */
#define BATCHTOK_FORGET_ALL 0x1u

/* Administrators: the daemon drops the cached tokens of identity (flags 0)
 * or, with BATCHTOK_FORGET_ALL and identity NULL, of every identity, with
 * their remembered errors and backoff; *forgotten (may be NULL) counts the
 * tokens dropped. Nothing is revoked at Entra ID: a token already handed
 * out stays valid until it expires. Watched tokens are fetched anew at once
 * and pushed to their watchers. -EINVAL for no identity without
 * BATCHTOK_FORGET_ALL, or one with it; -EACCES for anyone but an
 * administrator. */
int batchtok_forget(batchtok *bt, const char *identity, unsigned flags, unsigned *forgotten);

/* The daemon's metrics as OpenMetrics text in *ret (free()), for root, the
 * daemon's user and members of admin_group or metrics_group (-EACCES for
 * others). */
int batchtok_metrics(batchtok *bt, char **ret);

/* Round trip; *ret (may be NULL) receives the daemon's version string. */
int batchtok_ping(batchtok *bt, char **ret);

/* What the last failed call on bt found wrong, as one sentence naming the
 * cause and the fix; "" if nothing failed. Never contains a secret. */
const char *batchtok_error(const batchtok *bt);

/* Closes the connection and frees the handle; accepts NULL. */
void batchtok_free(batchtok *bt);

/* Watches: the current token, then each replacement as soon as the daemon
 * has it (in normal operation at least min_validity before the old one
 * expires), for programs that keep a token for long: a connection to a
 * database or a cache that must authenticate again before its token ends.
 *
 * A watch has a connection of its own, which the daemon keeps open while
 * the watch lasts. It fits any event loop: poll batchtok_watch_fd() for
 * POLLIN and call batchtok_watch_next(w, 0, ...) when it is readable, or
 * call batchtok_watch_next() with a timeout from a thread of its own. Use a
 * watch from one thread at a time.
 *
 * The library reconnects by itself: when the connection is lost (the
 * daemon restarts, or is stopping) it connects again and subscribes anew,
 * at once and then after 0.1 s, doubling up to 5 s between attempts while
 * the daemon cannot be reached. A new subscription starts with the current
 * token; one the caller already has is not delivered twice.
 *
 * batchtok_watch_next() returns:
 *   0                a token in *ret (batchtok_token_free()), and when the
 *                    daemon plans the next one in *refresh_at (Unix time; 0:
 *                    not planned; refresh_at may be NULL)
 *   -EAGAIN          nothing within timeout_ms (0: do not wait; negative:
 *                    wait until there is something)
 *   -EINTR           a signal came while waiting
 *   an error event, after which the watch goes on and *ret is untouched:
 *     -EHOSTUNREACH, -EKEYREJECTED, -ETIMEDOUT, ...  fetching keeps failing
 *                    while the last token nears its end (the daemon retries;
 *                    the next token comes as an event)
 *     -ECONNREFUSED, -EACCES  the daemon cannot be reached (no socket, or
 *                    not this user's); tried again when due
 *     -EBUSY         the daemon dropped the watch because its events were
 *                    not read in time; subscribed anew (events in between
 *                    are lost: the next token is the current one)
 *     -EPROTO        the daemon sent something this library cannot read (a
 *                    token holding spaces or control characters, a broken
 *                    frame); on broken framing it connects anew
 *   the end of the watch: its errno (-EACCES: this user lost access at a
 *                    reload; -ENOENT: the identity or resource is gone or
 *                    was never there; -EOPNOTSUPP: batchtokd is older than
 *                    0.3.0 ...). batchtok_watch_ended() says so, and every
 *                    later call returns the same.
 * batchtok_watch_error() says what the last error was and what to do. */
typedef struct batchtok_watch batchtok_watch;

/* Starts a watch of req's identity and resource (NULL: the defaults; its
 * min_validity is a floor for the tokens delivered, its flags are ignored)
 * on the socket at path (NULL: the default socket, as batchtok_connect()
 * chooses it, once). Nothing is sent, nor waited for, until
 * batchtok_watch_next(): batchtok_watch_fd() is readable at once. Fails
 * only with -EINVAL (a socket path too long), -ENOMEM and -EMFILE or
 * -ENFILE (no descriptors left), *ret untouched. */
int batchtok_watch_start(const char *path, const struct batchtok_request *req,
			 batchtok_watch **ret);

/* The file descriptor to poll for POLLIN (epoll, libuv's uv_poll, GLib...).
 * It is the same for the life of the watch, through every reconnection, and
 * readable whenever batchtok_watch_next(w, 0, ...) has something to do: an
 * event arrived, the connection broke, a reconnection is due, or more
 * events are buffered. Close-on-exec; do not read it or close it. */
int batchtok_watch_fd(const batchtok_watch *w);

/* The next event, waiting at most timeout_ms; see above. Never blocks
 * longer, never raises SIGPIPE, and buffers at most one reply frame
 * (1 MiB). */
int batchtok_watch_next(batchtok_watch *w, int timeout_ms, struct batchtok_token **ret,
			int64_t *refresh_at);

/* 0 while the watch goes on; once it has ended, the negative errno it ended
 * with. */
int batchtok_watch_ended(const batchtok_watch *w);

/* What the last error of batchtok_watch_next() was, as one sentence naming
 * the cause and the fix; "" after an event that was a token. */
const char *batchtok_watch_error(const batchtok_watch *w);

/* Closes the connection and every descriptor of the watch, wipes the last
 * token it kept and frees; accepts NULL. */
void batchtok_watch_free(batchtok_watch *w);

#ifdef __cplusplus
}
#endif

#endif
