/* unitcount.h - requests counted per caller unit, for an administrator's
 * `batchtok status`: which units ask for tokens and how often they are
 * refused.
 *
 * Local users can start transient units of any name, so the table keeps at
 * most UNITCOUNT_MAX names; requests from units beyond them are counted
 * together as UNITCOUNT_OTHER. */
#ifndef BATCHTOK_DAEMON_UNITCOUNT_H
#define BATCHTOK_DAEMON_UNITCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Distinct names kept: a host's services and then some. */
#define UNITCOUNT_MAX 256
/* The name of everything else; no unit name has parentheses. */
#define UNITCOUNT_OTHER "(other)"

struct unitcount_entry {
	char *name;
	uint64_t requests, denied;
};

/* Zero-initialised is empty. */
struct unitcount {
	struct unitcount_entry *v;
	size_t n;
	struct unitcount_entry other; /* its name is NULL */
};

/* Counts a request of unit name, denied or not. Never fails: a name that
 * finds no room (the table is full, or memory is short), or that is empty
 * or has a space or '=', counts as UNITCOUNT_OTHER. */
void unitcount_add(struct unitcount *t, const char *name, bool denied);
/* The counts as "NAME=REQUESTS/DENIED" separated by spaces, most requests
 * first, in at most n - 1 bytes: names that do not fit are added to
 * UNITCOUNT_OTHER, which comes last. "" if nothing was counted. n must be
 * at least UNITCOUNT_FORMAT_MIN. */
#define UNITCOUNT_FORMAT_MIN 64
void unitcount_format(const struct unitcount *t, char *buf, size_t n);
/* Frees the table and leaves it empty. */
void unitcount_free(struct unitcount *t);

#endif
