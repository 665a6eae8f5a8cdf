/* usernames.c - user names by uid, looked up in the thread pool and kept in
 * a small cache, for messages. */
#include "usernames.h"

#include <errno.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Users who are refused are few on a host; past this many the oldest entry
 * is replaced, so a flood of uids cannot grow the daemon. */
#define USERNAMES_CACHED 256
/* How long a name (or its absence) is trusted, as nscd keeps passwd
 * entries: a new or renamed user shows within minutes. */
#define USERNAME_TTL_MS (10 * 60 * 1000)
/* getpwuid_r's buffer: a passwd entry is small; an odd one gets up to this. */
#define PASSWD_BUF_MIN 4096
#define PASSWD_BUF_MAX (1024 * 1024)

struct cached {
	bool used;
	bool found;
	uid_t uid;
	uint64_t at; /* uv_now() when looked up */
	char name[USERNAME_MAX + 1];
};

struct lookup {
	uv_work_t req;
	struct usernames *u; /* NULL once u is freed */
	struct list node;    /* on u->lookups */
	struct list waiters;
	uid_t uid;
	/* Written by the worker thread, read on the loop after it ends. */
	bool found;
	char name[USERNAME_MAX + 1];
};

struct usernames {
	uv_loop_t *loop;
	struct list lookups;
	size_t next; /* the slot replaced next when all are used */
	struct cached cache[USERNAMES_CACHED];
};

int usernames_new(uv_loop_t *loop, struct usernames **ret)
{
	struct usernames *u = calloc(1, sizeof(*u));

	if (!u)
		return -ENOMEM;
	u->loop = loop;
	list_init(&u->lookups);
	*ret = u;
	return 0;
}

void usernames_free(struct usernames *u)
{
	struct list *pos, *tmp, *w, *wtmp;

	if (!u)
		return;
	/* A running lookup cannot be stopped: detach it, and its end frees it
	 * without calling anyone. */
	list_for_each_safe(pos, tmp, &u->lookups)
	{
		struct lookup *l = list_entry(pos, struct lookup, node);
		list_for_each_safe(w, wtmp, &l->waiters) list_del(w);
		l->u = NULL;
		list_del(&l->node);
	}
	free(u);
}

static struct cached *find(struct usernames *u, uid_t uid)
{
	for (size_t i = 0; i < USERNAMES_CACHED; i++)
		if (u->cache[i].used && u->cache[i].uid == uid)
			return &u->cache[i];
	return NULL;
}

bool usernames_peek(struct usernames *u, uid_t uid, const char **ret_name)
{
	struct cached *e = find(u, uid);

	if (!e || uv_now(u->loop) - e->at > USERNAME_TTL_MS)
		return false;
	*ret_name = e->found ? e->name : NULL;
	return true;
}

static void remember(struct usernames *u, uid_t uid, bool found, const char *name)
{
	struct cached *e = find(u, uid);

	if (!e) {
		e = &u->cache[u->next];
		u->next = (u->next + 1) % USERNAMES_CACHED;
	}
	e->used = true;
	e->uid = uid;
	e->found = found;
	e->at = uv_now(u->loop);
	snprintf(e->name, sizeof(e->name), "%s", found ? name : "");
}

/* In a pool thread: NSS may take its time here. */
static void lookup_work(uv_work_t *req)
{
	struct lookup *l = req->data;
	struct passwd pw, *res = NULL;
	size_t size = PASSWD_BUF_MIN;
	char *buf = NULL;
	int r = 0;

	do {
		char *b = realloc(buf, size);
		if (!b)
			break;
		buf = b;
		r = getpwuid_r(l->uid, &pw, buf, size, &res);
		size *= 2;
	} while (r == ERANGE && size <= PASSWD_BUF_MAX);
	l->found = false;
	if (buf && res && res->pw_name && *res->pw_name && strlen(res->pw_name) <= USERNAME_MAX) {
		/* Names go into replies and logs: printable ASCII only. */
		l->found = true;
		for (const char *s = res->pw_name; *s; s++)
			if (*s <= ' ' || *s > '~')
				l->found = false;
		if (l->found)
			snprintf(l->name, sizeof(l->name), "%s", res->pw_name);
	}
	free(buf);
}

static void lookup_done(uv_work_t *req, int status)
{
	struct lookup *l = req->data;
	struct usernames *u = l->u;
	struct username_waiter *w;

	if (u) {
		list_del(&l->node);
		if (status == 0)
			remember(u, l->uid, l->found, l->name);
		while ((w = list_first(&l->waiters, struct username_waiter, node))) {
			list_del(&w->node);
			w->fn(w, l->uid, status == 0 && l->found ? l->name : NULL);
		}
	}
	free(l);
}

int usernames_lookup(struct usernames *u, uid_t uid, struct username_waiter *w)
{
	struct lookup *l;
	struct list *pos;
	int r;

	for (pos = u->lookups.next; pos != &u->lookups; pos = pos->next) {
		l = list_entry(pos, struct lookup, node);
		if (l->uid == uid) {
			list_add_tail(&l->waiters, &w->node);
			return 0;
		}
	}
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	l->u = u;
	l->uid = uid;
	l->req.data = l;
	list_init(&l->waiters);
	if ((r = uv_queue_work(u->loop, &l->req, lookup_work, lookup_done)) < 0) {
		free(l);
		return r;
	}
	list_add_tail(&u->lookups, &l->node);
	list_add_tail(&l->waiters, &w->node);
	return 0;
}

void usernames_waiter_cancel(struct username_waiter *w)
{
	/* A waiter never queued is zeroed, not self-linked. */
	if (w->node.next)
		list_del(&w->node);
}

const char *usernames_describe(char *buf, size_t n, uid_t uid, const char *name)
{
	if (name)
		snprintf(buf, n, "user %s (uid %u)", name, (unsigned)uid);
	else
		snprintf(buf, n, "uid %u", (unsigned)uid);
	return buf;
}
