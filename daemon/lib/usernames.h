/* usernames.h - the names of local users, by uid, for messages that name
 * who was refused. Looking a name up may block (NSS: sssd, LDAP), so it is
 * done in libuv's thread pool, never on the loop, and remembered for a while
 * in a small bounded cache. Nothing is decided by these names: access is
 * decided by uid and groups alone. */
#ifndef BATCHTOK_DAEMON_USERNAMES_H
#define BATCHTOK_DAEMON_USERNAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "list.h"

/* Longer names (or names with unprintable characters) are not shown. */
#define USERNAME_MAX 64
/* "user NAME (uid N)": what usernames_describe() writes at most. */
#define USERNAME_DESCRIBE_SIZE (USERNAME_MAX + 32)

struct usernames;

struct username_waiter {
	/* Called on the loop when the lookup has ended; name is NULL when uid
	 * has none (or it could not be looked up). The waiter is off the
	 * lookup by then and may be freed. */
	void (*fn)(struct username_waiter *w, uid_t uid, const char *name);
	struct list node; /* on its lookup while it waits */
};

/* Writes uid's name into name (n bytes) and returns true, or returns false;
 * runs in a pool thread. */
typedef bool usernames_resolver(uid_t uid, char *name, size_t n);

int usernames_new(uv_loop_t *loop, struct usernames **ret);
/* For tests: looks names up with resolve instead of getpwuid_r, and bounds
 * waits at wait_ms. */
void usernames_set_resolver(struct usernames *u, usernames_resolver *resolve, unsigned wait_ms);
/* Frees u (NULL is fine). Lookups still running in the thread pool end on
 * their own and call no waiter: cancel or forget them before. */
void usernames_free(struct usernames *u);

/* Whether uid's name is cached: true, with *ret_name the name or NULL if
 * uid has none (valid until the next call into u). No I/O. */
bool usernames_peek(struct usernames *u, uid_t uid, const char **ret_name);

/* Looks uid up in the thread pool, joining a lookup of the same uid that is
 * already running; w->fn is called on the loop when it ends or after a
 * second at most (then with NULL: the lookup goes on and fills the cache),
 * never before this returns. Returns 0 or a negative errno, and then w is
 * not waiting. */
int usernames_lookup(struct usernames *u, uid_t uid, struct username_waiter *w);

/* Stops w waiting; harmless if it is not waiting. */
void usernames_waiter_cancel(struct username_waiter *w);

/* "user NAME (uid N)", or "uid N" without a name, into buf (at least
 * USERNAME_DESCRIBE_SIZE bytes); returns buf. */
const char *usernames_describe(char *buf, size_t n, uid_t uid, const char *name);

#endif
