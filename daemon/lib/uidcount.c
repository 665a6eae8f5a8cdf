/* uidcount.c - per-uid counts in a sorted array. */
#include "uidcount.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Room for this many uids at first: most hosts have few users connected. */
#define INITIAL_CAP 16

/* The index of uid, or where it would go; *found says which. */
static size_t find(const struct uidcount *t, uid_t uid, int *found)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->v[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < t->n && t->v[lo].uid == uid;
	return lo;
}

int uidcount_add(struct uidcount *t, uid_t uid, uint32_t max)
{
	int found;
	size_t i = find(t, uid, &found);

	if (found) {
		if (t->v[i].n >= max)
			return -EDQUOT;
		t->v[i].n++;
		return 0;
	}
	if (max == 0)
		return -EDQUOT;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : INITIAL_CAP;
		struct uidcount_entry *v = reallocarray(t->v, cap, sizeof(*v));
		if (!v)
			return -ENOMEM;
		t->v = v;
		t->cap = cap;
	}
	memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof(*t->v));
	t->v[i] = (struct uidcount_entry){.uid = uid, .n = 1};
	t->n++;
	return 0;
}

void uidcount_del(struct uidcount *t, uid_t uid)
{
	int found;
	size_t i = find(t, uid, &found);

	if (!found)
		return;
	if (--t->v[i].n > 0)
		return;
	memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof(*t->v));
	t->n--;
}

uint32_t uidcount_get(const struct uidcount *t, uid_t uid)
{
	int found;
	size_t i = find(t, uid, &found);

	return found ? t->v[i].n : 0;
}

void uidcount_free(struct uidcount *t)
{
	free(t->v);
	*t = (struct uidcount){0};
}
