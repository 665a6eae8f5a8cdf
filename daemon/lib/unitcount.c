/* unitcount.c - per-unit request counts in a small array. */
#include "unitcount.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void count(struct unitcount_entry *e, bool denied)
{
	e->requests++;
	e->denied += denied;
}

void unitcount_add(struct unitcount *t, const char *name, bool denied)
{
	struct unitcount_entry *v;
	char *copy;

	/* A linear search: at most UNITCOUNT_MAX short names, once a request. */
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].name, name)) {
			count(&t->v[i], denied);
			return;
		}
	/* A name the list could not carry (unitcount_format()) is "other"
	 * too. */
	if (t->n >= UNITCOUNT_MAX || !*name || strpbrk(name, " =") ||
	    !strcmp(name, UNITCOUNT_OTHER) || !(copy = strdup(name))) {
		count(&t->other, denied);
		return;
	}
	if (!(v = realloc(t->v, (t->n + 1) * sizeof(*v)))) {
		free(copy);
		count(&t->other, denied);
		return;
	}
	t->v = v;
	v[t->n] = (struct unitcount_entry){.name = copy};
	count(&v[t->n++], denied);
}

static int by_requests(const void *a, const void *b)
{
	const struct unitcount_entry *x = *(const struct unitcount_entry *const *)a;
	const struct unitcount_entry *y = *(const struct unitcount_entry *const *)b;

	if (x->requests != y->requests)
		return x->requests > y->requests ? -1 : 1;
	return strcmp(x->name, y->name);
}

void unitcount_format(const struct unitcount *t, char *buf, size_t n)
{
	const struct unitcount_entry *order[UNITCOUNT_MAX];
	struct unitcount_entry other = t->other;
	size_t len = 0;
	bool full = false;

	buf[0] = '\0';
	for (size_t i = 0; i < t->n; i++)
		order[i] = &t->v[i];
	qsort(order, t->n, sizeof(order[0]), by_requests);
	for (size_t i = 0; i < t->n; i++) {
		const struct unitcount_entry *e = order[i];
		/* UNITCOUNT_FORMAT_MIN is kept for UNITCOUNT_OTHER. */
		size_t room = n - UNITCOUNT_FORMAT_MIN - len;
		int k = full ? -1
			     : snprintf(buf + len, room, "%s%s=%" PRIu64 "/%" PRIu64,
					len ? " " : "", e->name, e->requests, e->denied);
		if (k < 0 || (size_t)k >= room) {
			/* Once one is left out, every later one is: the list stays
			 * in order. */
			full = true;
			buf[len] = '\0';
			other.requests += e->requests;
			other.denied += e->denied;
			continue;
		}
		len += (size_t)k;
	}
	if (other.requests)
		snprintf(buf + len, n - len, "%s" UNITCOUNT_OTHER "=%" PRIu64 "/%" PRIu64,
			 len ? " " : "", other.requests, other.denied);
}

void unitcount_free(struct unitcount *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].name);
	free(t->v);
	memset(t, 0, sizeof(*t));
}
