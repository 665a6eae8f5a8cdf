/* uidcount.h - how many of something each uid holds, with a cap: the
 * connections one local user may keep open on a listener
 * (max_clients_per_uid), so that one user cannot take every slot.
 *
 * A sorted array of the uids that hold at least one; a uid whose count falls
 * to 0 is forgotten, so the table never holds more entries than there are
 * users with something open. */
#ifndef BATCHTOK_DAEMON_UIDCOUNT_H
#define BATCHTOK_DAEMON_UIDCOUNT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct uidcount_entry {
	uid_t uid;
	uint32_t n;
};

/* Zero-initialised is empty. */
struct uidcount {
	struct uidcount_entry *v;
	size_t n, cap;
};

/* Counts one more for uid if it holds fewer than max. Returns 0, -EDQUOT
 * when it holds max already, or -ENOMEM; on failure nothing changes. */
int uidcount_add(struct uidcount *t, uid_t uid, uint32_t max);
/* Counts one less for uid; a uid that holds nothing is left alone. */
void uidcount_del(struct uidcount *t, uid_t uid);
uint32_t uidcount_get(const struct uidcount *t, uid_t uid);
/* Frees the table and leaves it empty. */
void uidcount_free(struct uidcount *t);

#endif
