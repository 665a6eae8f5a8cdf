/* capability.h - capabilities for the managed-identity compatible endpoint.
 *
 * A capability is what a program presents as IDENTITY_HEADER: 32 random
 * bytes, written "bt1_" + base64url. The daemon issues one over its Unix
 * socket to a peer allowed an identity, and keeps only its SHA-256 beside
 * that peer's credentials (uid, gid, groups), the identity's name and an
 * expiry. A presented value is hashed and compared with every live hash in
 * constant time, so neither the store nor the comparison leaks it. Expired
 * capabilities are remembered for a while, so their holder is told "expired"
 * rather than "unknown", then forgotten. Everything is bounded: capabilities
 * per uid and in all. Capabilities live in memory only: a restart revokes
 * them all. */
#ifndef BATCHTOK_DAEMON_CAPABILITY_H
#define BATCHTOK_DAEMON_CAPABILITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../lib/list.h"

#define CAPABILITY_PREFIX     "bt1_"
#define CAPABILITY_TEXT_SIZE  48 /* "bt1_" + 43 base64url characters + NUL */
#define CAPABILITY_MAX	      8192
#define CAPABILITY_PER_UID    1024
#define CAPABILITY_KEEP_AFTER 86400 /* seconds an expired one is still recognised */

struct capability {
	struct list node;
	unsigned char hash[32];
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int n_groups;
	char *identity;
	int64_t issued, expires_on;
};

struct capability_store {
	struct list caps; /* oldest first */
	size_t n;
};

void capability_store_init(struct capability_store *s);
/* Forgets every capability; the store can be used again. */
void capability_store_clear(struct capability_store *s);

/* Issues a capability for uid (with its gid and supplementary groups) and
 * identity, valid for lifetime seconds from now, and writes its text to
 * text. Returns 0, -EBUSY when uid already holds CAPABILITY_PER_UID live
 * ones or the store is full, -ENOMEM, or -EIO without randomness. */
int capability_issue(struct capability_store *s, uid_t uid, gid_t gid, const gid_t *groups,
		     int n_groups, const char *identity, int64_t now, uint32_t lifetime,
		     char text[CAPABILITY_TEXT_SIZE], const struct capability **ret);

/* The capability whose text is value[0..len), or NULL if there is none.
 * An expired one is returned too; the caller checks expires_on. */
const struct capability *capability_find(struct capability_store *s, const char *value, size_t len,
					 int64_t now);

#endif
