/* capability.h - capabilities for the managed-identity compatible endpoint.
 *
 * A capability is what a program presents as IDENTITY_HEADER: 32 random
 * bytes, written "bt1_" + base64url. The daemon issues one over its Unix
 * socket to a peer allowed an identity, and keeps only its SHA-256 beside
 * that peer's credentials (uid, gid, groups), the identity's name and an
 * expiry. A presented value is hashed and compared with every hash in
 * constant time, so neither the store nor the comparison leaks it.
 *
 * A capability lives until it expires, unless its holder renews it (for
 * compat_lifetime from then) or gives it back sooner (revokes it). An
 * expired one is freed at the store's next use; only its hash stays, in a
 * small ring of recently expired ones that counts against no quota, so its
 * holder is told "expired" rather than "unknown" until the ring forgets it.
 * Everything is bounded: live capabilities per uid, so that one user cannot
 * fill the store for the others, and in all. Capabilities live in memory
 * only: a restart revokes them all. */
#ifndef BATCHTOK_DAEMON_CAPABILITY_H
#define BATCHTOK_DAEMON_CAPABILITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../lib/list.h"

#define CAPABILITY_PREFIX    "bt1_"
#define CAPABILITY_TEXT_SIZE 48 /* "bt1_" + 43 base64url characters + NUL */
/* Live capabilities in all: a program under `batchtok exec --compat` holds
 * one, so this is how many such programs a host may run at once. */
#define CAPABILITY_MAX 8192
/* Live ones one uid may hold: an eighth of the store, so one user cannot
 * take it from the others. */
#define CAPABILITY_PER_UID 1024
/* Recently expired ones remembered, to tell their holders "expired": their
 * hashes only, about 40 KiB. */
#define CAPABILITY_RECENT 1024

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
	struct list caps; /* live ones, oldest first */
	size_t n;
	/* A ring of the hashes of the last CAPABILITY_RECENT that expired. */
	unsigned char recent[CAPABILITY_RECENT][32];
	size_t n_recent, next_recent;
};

void capability_store_init(struct capability_store *s);
/* Forgets every capability; the store can be used again. */
void capability_store_clear(struct capability_store *s);

/* Issues a capability for uid (with its gid and supplementary groups) and
 * identity, valid for lifetime seconds from now, and writes its text to
 * text. Returns 0; -EBUSY when uid already holds CAPABILITY_PER_UID live
 * ones; -ENOSPC when the store holds CAPABILITY_MAX; -ENOMEM; or -EIO
 * without randomness. */
int capability_issue(struct capability_store *s, uid_t uid, gid_t gid, const gid_t *groups,
		     int n_groups, const char *identity, int64_t now, uint32_t lifetime,
		     char text[CAPABILITY_TEXT_SIZE], const struct capability **ret);

/* The live capability whose text is value[0..len): 0 with *ret; or
 * -EKEYEXPIRED if it expired recently; or -ENOENT (never issued, revoked,
 * or expired long ago). */
int capability_find(struct capability_store *s, const char *value, size_t len, int64_t now,
		    const struct capability **ret);

/* Makes uid's live capability value[0..len) live for lifetime seconds from
 * now; *expires_on is its new expiry. Returns 0, -ENOENT if it is not live,
 * or -EPERM if it was issued to another uid. */
int capability_renew(struct capability_store *s, const char *value, size_t len, uid_t uid,
		     int64_t now, uint32_t lifetime, int64_t *expires_on);

/* Forgets uid's capability value[0..len) at once. Returns 0 (also when it
 * is not live: it is gone either way), or -EPERM if it was issued to
 * another uid. */
int capability_revoke(struct capability_store *s, const char *value, size_t len, uid_t uid,
		      int64_t now);

/* Live capabilities, expired ones freed first. */
size_t capability_count(struct capability_store *s, int64_t now);

#endif
