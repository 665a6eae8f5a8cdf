/* policy.c - the access decision for one peer and one identity, and its
 * explanation. */
#include "policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../lib/attest.h"
#include "../lib/pattern.h"

/* What a peer with no attestation is. */
#define COMPAT_CALLER "a client of the compat endpoint, which cannot tell which program is asking"

/* A line being written into a fixed buffer: what does not fit is cut and
 * the line ends in "...". Strings from outside (what a process or the
 * kernel says) go through put_text(), which keeps the line printable. */
struct line {
	char *buf;
	size_t size, len;
	bool full;
};

static void line_init(struct line *l, char *buf, size_t n)
{
	*l = (struct line){.buf = buf, .size = n};
	if (n)
		buf[0] = '\0';
	l->full = n == 0;
}

static void cut(struct line *l)
{
	l->full = true;
	l->len = l->size - 1;
	if (l->size >= 4)
		memcpy(l->buf + l->size - 4, "...", 4);
	else
		l->buf[l->len] = '\0';
}

static void put_byte(struct line *l, char c)
{
	if (l->full)
		return;
	if (l->len + 1 >= l->size) {
		cut(l);
		return;
	}
	l->buf[l->len++] = c;
	l->buf[l->len] = '\0';
}

/* s, with anything but printable ASCII as \xNN: a program's path or a
 * cgroup's name may hold any byte, and the line goes to logs and
 * terminals. */
static void put_text(struct line *l, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	for (; *s && !l->full; s++) {
		unsigned char c = (unsigned char)*s;
		/* A backslash is escaped too, so that a name holding "\x0a"
		 * reads apart from one holding a newline. */
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			put_byte(l, (char)c);
			continue;
		}
		if (l->len + 4 >= l->size) {
			cut(l);
			return;
		}
		put_byte(l, '\\');
		put_byte(l, 'x');
		put_byte(l, hex[c >> 4]);
		put_byte(l, hex[c & 15]);
	}
}

static void put(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct line *l, const char *fmt, ...)
{
	char tmp[POLICY_WHY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	put_text(l, tmp);
}

/* The patterns of one list, joined by " or ": prefix names their kind,
 * before the first or (every) before each. */
static void put_patterns(struct line *l, const struct pattern_list *list, const char *prefix,
			 bool every, bool *first)
{
	for (size_t i = 0; i < list->n; i++) {
		put_text(l, *first ? "" : " or ");
		if (i == 0 || every)
			put_text(l, prefix);
		put_text(l, list->v[i]);
		*first = false;
	}
}

/* Each kind of rule the identity has, joined by ", with ": a caller must
 * pass them all. */
static void describe_rules(struct line *l, const struct identity *id)
{
	int kinds = 0;
	bool first = true;

	if (id->allow_units.n || id->allow_user_units.n) {
		put_patterns(l, &id->allow_units, "", false, &first);
		put_patterns(l, &id->allow_user_units, "user unit ", true, &first);
		kinds++;
	}
	if (id->allow_exes.n) {
		put_text(l, kinds++ ? ", with " : "");
		first = true;
		put_patterns(l, &id->allow_exes, "exe ", false, &first);
	}
	if (id->allow_cgroups.n) {
		put_text(l, kinds++ ? ", with " : "");
		first = true;
		put_patterns(l, &id->allow_cgroups, "cgroup ", false, &first);
		put_text(l, " or below");
	}
}

bool policy_has_program_rules(const struct identity *id)
{
	return id->allow_units.n || id->allow_user_units.n || id->allow_exes.n ||
	       id->allow_cgroups.n;
}

bool policy_any_program_rules(const struct identity *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (policy_has_program_rules(&ids[i]))
			return true;
	return false;
}

void policy_describe_rules(const struct identity *id, char *buf, size_t n)
{
	struct line l;

	line_init(&l, buf, n);
	describe_rules(&l, id);
}

void policy_describe_caller(const struct peer *p, char *buf, size_t n)
{
	char raw[POLICY_WHY_MAX];
	struct line l;

	line_init(&l, buf, n);
	if (!p->att) {
		put_text(&l, COMPAT_CALLER);
		return;
	}
	attest_describe(p->att, raw, sizeof(raw));
	put_text(&l, raw);
}

bool policy_in_group(const struct peer *p, gid_t gid)
{
	if (p->gid == gid)
		return true;
	for (int i = 0; i < p->n_groups; i++)
		if (p->groups[i] == gid)
			return true;
	return false;
}

static bool user_allowed(const struct identity *id, const struct peer *p)
{
	for (size_t i = 0; i < id->n_allow_uids; i++)
		if (id->allow_uids[i] == p->uid)
			return true;
	for (size_t i = 0; i < id->n_allow_gids; i++)
		if (policy_in_group(p, id->allow_gids[i]))
			return true;
	return false;
}

static bool any_match(const struct pattern_list *list, enum pattern_kind kind, const char *name)
{
	for (size_t i = 0; i < list->n; i++)
		if (pattern_match(kind, list->v[i], name))
			return true;
	return false;
}

/* Whether the attested program passes every kind of program rule id has:
 * a unit (system or user: one allow-list), an executable, a cgroup. */
static bool program_allowed(const struct identity *id, const struct attestation *a)
{
	bool units = id->allow_units.n || id->allow_user_units.n;

	if (units && !any_match(&id->allow_units, PATTERN_UNIT, a->unit) &&
	    !any_match(&id->allow_user_units, PATTERN_UNIT, a->user_unit))
		return false;
	if (id->allow_exes.n && !any_match(&id->allow_exes, PATTERN_EXE, a->exe))
		return false;
	if (id->allow_cgroups.n && !any_match(&id->allow_cgroups, PATTERN_CGROUP, a->cgroup))
		return false;
	return true;
}

/* What the caller is, when its program cannot be judged: NULL if it can
 * (attested and alive). */
static const char *unknown_program(const struct peer *p, int alive, char *buf, size_t n)
{
	const struct attestation *a = p->att;

	if (!a)
		return COMPAT_CALLER;
	switch (alive) {
	case 0:
		return NULL;
	case -ENOPROTOOPT:
		snprintf(buf, n,
			 "pid %d, on a kernel that cannot pin a process to its socket "
			 "(SO_PEERPIDFD needs Linux 6.5), so which program it is cannot be "
			 "known",
			 (int)a->pid);
		break;
	case -ESRCH:
		snprintf(buf, n, "pid %d has exited (its PID may be another process's now)",
			 (int)a->pid);
		break;
	case -EBADF:
		snprintf(buf, n,
			 "pid %d, which connected while no identity had program rules, so "
			 "batchtokd did not keep it pinned: connect again",
			 (int)a->pid);
		break;
	case -EXDEV:
		if (a->lent_to > 0)
			snprintf(buf, n,
				 "pid %d, whose connection pid %d sent on (a connection handed to "
				 "another process is not attested for it)",
				 (int)a->pid, (int)a->lent_to);
		else
			snprintf(buf, n,
				 "pid %d, whose connection another process sent on (a connection "
				 "handed to another process is not attested for it)",
				 (int)a->pid);
		break;
	case -ESTALE:
		snprintf(buf, n,
			 "pid %d, which has executed another program since it connected "
			 "(it ran %s)",
			 (int)a->pid, a->exe);
		break;
	default:
		if (a->err)
			attest_describe(a, buf, n);
		else
			snprintf(buf, n, "pid %d, which cannot be checked (%s)", (int)a->pid,
				 strerror(-alive));
	}
	return buf;
}

static void explain_user(const struct identity *id, const struct peer *p, char *why, size_t n)
{
	struct line l;

	line_init(&l, why, n);
	put(&l, "uid %u: identity %s allows ", (unsigned)p->uid, id->name);
	if (!id->n_allow_uids && !id->n_allow_gids) {
		put_text(&l, "only root and batchtokd's own user (it has no allow_users, "
			     "allow_groups or program rules)");
		return;
	}
	for (size_t i = 0; i < id->n_allow_uids; i++)
		put(&l, "%suid %u", i ? " or " : "", (unsigned)id->allow_uids[i]);
	for (size_t i = 0; i < id->n_allow_gids; i++)
		put(&l, "%sgroup %u", i || id->n_allow_uids ? " or " : "",
		    (unsigned)id->allow_gids[i]);
}

static void explain_program(const struct identity *id, const char *caller, char *why, size_t n)
{
	struct line l;

	line_init(&l, why, n);
	put_text(&l, caller);
	put(&l, ": identity %s allows ", id->name);
	describe_rules(&l, id);
}

enum policy_verdict policy_decide(const struct identity *id, const struct peer *p, uid_t self,
				  char *why, size_t n)
{
	char caller[POLICY_WHY_MAX];
	const char *what;
	bool user_rules = id->n_allow_uids || id->n_allow_gids;
	int alive;

	if (p->uid == 0 || p->uid == self)
		return POLICY_ALLOW;
	if (!policy_has_program_rules(id)) {
		if (user_rules && user_allowed(id, p))
			return POLICY_ALLOW;
		explain_user(id, p, why, n);
		return POLICY_DENY_USER;
	}
	if (user_rules && !user_allowed(id, p)) {
		explain_user(id, p, why, n);
		return POLICY_DENY_USER;
	}
	/* Checked now, when the answer is given: what was read at accept is
	 * the peer's only while its process lives. */
	alive = p->att ? attest_alive(p->att) : -ENODATA;
	if (!(what = unknown_program(p, alive, caller, sizeof(caller)))) {
		if (program_allowed(id, p->att))
			return POLICY_ALLOW;
		attest_describe(p->att, caller, sizeof(caller));
		what = caller;
	}
	explain_program(id, what, why, n);
	return POLICY_DENY_PROGRAM;
}

/* Whether s is made of the characters of unit names, and '/' between a
 * system unit and a user unit. */
static bool plain_name(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr(":-_.\\@/*", *s)))
			return false;
	return true;
}

void policy_unit_name(const struct peer *p, char *buf, size_t n)
{
	const struct attestation *a = p->att;
	int k;

	if (!a)
		k = snprintf(buf, n, "(compat-endpoint)");
	else if (a->err)
		k = snprintf(buf, n, "(unattested)");
	/* Names a user can make up are folded, so that no user can fill the
	 * table: the units of a user's manager count as its user@UID.service,
	 * login sessions as one. */
	else if (a->unit && !strncmp(a->unit, "session-", 8) && strstr(a->unit, ".scope"))
		k = snprintf(buf, n, "session-*.scope");
	else if (a->unit)
		k = snprintf(buf, n, "%s", a->unit);
	else if (a->user_unit)
		k = snprintf(buf, n, "user@%ld.service",
			     a->user_unit_uid == (uid_t)-1 ? -1L : (long)a->user_unit_uid);
	else
		k = snprintf(buf, n, "(no-unit)");
	if (k < 0 || (size_t)k >= n ||
	    (a && !a->err && (a->unit || a->user_unit) && !plain_name(buf)))
		snprintf(buf, n, "(other)");
}

void policy_log_ctx(const struct peer *p, struct log_ctx *ctx)
{
	const struct attestation *a = p->att;

	ctx->uid = (long)p->uid;
	ctx->pid = (long)p->pid;
	if (!a)
		return;
	ctx->unit = a->unit;
	ctx->user_unit = a->user_unit;
	ctx->invocation_id = a->invocation_id[0] ? a->invocation_id : NULL;
	ctx->exe = a->exe;
}
