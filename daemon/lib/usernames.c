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
/* How long a waiter waits for a name. Local files and sssd's cache answer
 * in microseconds; an NSS server that does not answer must not turn a
 * denial into a client's timeout. The lookup goes on and fills the cache. */
#define USERNAME_WAIT_MS 1000
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
	uv_timer_t timer;    /* bounds the wait of the waiters */
	int refs;	     /* the work and the timer handle; freed at 0 */
	struct usernames *u; /* NULL once u is freed or the work has ended */
	struct list node;    /* on u->lookups while the work runs */
	struct list waiters;
	uid_t uid;
	usernames_resolver *resolve;
	/* Written by the worker thread, read on the loop after it ends. */
	bool found;
	char name[USERNAME_MAX + 1];
};

struct usernames {
	uv_loop_t *loop;
	struct list lookups;
	usernames_resolver *resolve;
	unsigned wait_ms;
	size_t next; /* the slot replaced next when all are used */
	struct cached cache[USERNAMES_CACHED];
};

/* getpwuid_r: NSS, which may take its time. */
static bool resolve_passwd(uid_t uid, char *name, size_t n)
{
	struct passwd pw, *res = NULL;
	size_t size = PASSWD_BUF_MIN;
	char *buf = NULL;
	bool found = false;
	int r = 0;

	do {
		char *b = realloc(buf, size);
		if (!b)
			break;
		buf = b;
		r = getpwuid_r(uid, &pw, buf, size, &res);
		size *= 2;
	} while (r == ERANGE && size <= PASSWD_BUF_MAX);
	if (buf && res && res->pw_name && strlen(res->pw_name) < n) {
		snprintf(name, n, "%s", res->pw_name);
		found = true;
	}
	free(buf);
	return found;
}

int usernames_new(uv_loop_t *loop, struct usernames **ret)
{
	struct usernames *u = calloc(1, sizeof(*u));

	if (!u)
		return -ENOMEM;
	u->loop = loop;
	u->resolve = resolve_passwd;
	u->wait_ms = USERNAME_WAIT_MS;
	list_init(&u->lookups);
	*ret = u;
	return 0;
}

void usernames_set_resolver(struct usernames *u, usernames_resolver *resolve, unsigned wait_ms)
{
	u->resolve = resolve;
	u->wait_ms = wait_ms;
}

static void lookup_unref(struct lookup *l)
{
	if (--l->refs == 0)
		free(l);
}

static void on_timer_closed(uv_handle_t *h)
{
	lookup_unref(h->data);
}

/* The lookup's waiters stop waiting: with the name, or NULL. */
static void answer(struct lookup *l, const char *name)
{
	struct username_waiter *w;

	while ((w = list_first(&l->waiters, struct username_waiter, node))) {
		list_del(&w->node);
		w->fn(w, l->uid, name);
	}
}

/* Detaches a lookup from u: it calls nobody any more. */
static void lookup_detach(struct lookup *l)
{
	struct list *w, *tmp;

	list_for_each_safe(w, tmp, &l->waiters) list_del(w);
	list_del(&l->node);
	l->u = NULL;
	uv_close((uv_handle_t *)&l->timer, on_timer_closed);
}

void usernames_free(struct usernames *u)
{
	struct list *pos, *tmp;

	if (!u)
		return;
	/* A running lookup cannot be stopped: its end frees it. */
	list_for_each_safe(pos, tmp, &u->lookups)
	    lookup_detach(list_entry(pos, struct lookup, node));
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

/* In a pool thread. */
static void lookup_work(uv_work_t *req)
{
	struct lookup *l = req->data;

	l->found = l->resolve(l->uid, l->name, sizeof(l->name)) && l->name[0];
	/* Names go into replies and logs: printable ASCII only. */
	for (const char *s = l->name; l->found && *s; s++)
		if (*s <= ' ' || *s > '~')
			l->found = false;
}

static void lookup_done(uv_work_t *req, int status)
{
	struct lookup *l = req->data;
	struct usernames *u = l->u;
	bool found = status == 0 && l->found;

	if (u) {
		/* Off the list first: a waiter asking again starts anew. */
		list_del(&l->node);
		remember(u, l->uid, found, l->name);
		answer(l, found ? l->name : NULL);
		lookup_detach(l);
	}
	lookup_unref(l);
}

/* The wait is over for those waiting now; the lookup goes on. */
static void on_timeout(uv_timer_t *t)
{
	answer(t->data, NULL);
}

int usernames_lookup(struct usernames *u, uid_t uid, struct username_waiter *w)
{
	struct lookup *l = NULL;
	struct list *pos;
	int r;

	for (pos = u->lookups.next; pos != &u->lookups && !l; pos = pos->next)
		if (list_entry(pos, struct lookup, node)->uid == uid)
			l = list_entry(pos, struct lookup, node);
	if (l) {
		/* Joining a lookup whose waiters have given up: a new wait. */
		if (list_empty(&l->waiters))
			uv_timer_start(&l->timer, on_timeout, u->wait_ms, 0);
		list_add_tail(&l->waiters, &w->node);
		return 0;
	}
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	l->u = u;
	l->uid = uid;
	l->resolve = u->resolve;
	l->req.data = l;
	list_init(&l->waiters);
	if ((r = uv_queue_work(u->loop, &l->req, lookup_work, lookup_done)) < 0) {
		free(l);
		return r;
	}
	uv_timer_init(u->loop, &l->timer);
	l->timer.data = l;
	l->refs = 2;
	uv_timer_start(&l->timer, on_timeout, u->wait_ms, 0);
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
