/* fuzz_policy.c - libFuzzer target for the program rules: the pattern
 * parser (lib/pattern), the config keys that read them, and the decision
 * and its explanation (core/policy) against any attestation.
 *
 * The input is lines: allow_units, allow_user_units, allow_exes and
 * allow_cgroups values; then the caller's unit, user unit, exe and cgroup;
 * then a line whose bytes choose the uid, the attestation's state and
 * which fields are unknown. Invariants: nothing crashes; a refused pattern
 * says why; a pattern without wildcards matches exactly its name (a cgroup
 * also what is below it); every explanation is one bounded line of
 * printable ASCII; a decision for root is always yes. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

#include "../../daemon/core/policy.h"
#include "../../daemon/identity/config.h"
#include "../../daemon/lib/attest.h"
#include "../../daemon/lib/pattern.h"
#include "../../daemon/lib/unitcount.h"

#define FIELDS 9
#define SELF   999 /* the daemon's own uid, as the target pretends */

static void check_line(const char *s, size_t n)
{
	size_t len = strnlen(s, n);

	if (len >= n)
		abort(); /* not NUL-terminated within its buffer */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
			abort();
}

static bool has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* What a pattern without wildcards must match: the name itself, and for a
 * cgroup what is below it. */
static bool literal_match(enum pattern_kind kind, const char *pattern, const char *name)
{
	size_t n = strlen(pattern);

	if (!strcmp(pattern, name))
		return true;
	return kind == PATTERN_CGROUP && !strncmp(pattern, name, n) && name[n] == '/';
}

/* Splits v as the config does and keeps what pattern_check() takes, after
 * checking each item against every name. */
static void take(struct pattern_list *l, enum pattern_kind kind, char *v, char *const *names)
{
	char why[512], *save = NULL;

	for (char *t = strtok_r(v, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
		why[0] = '\0';
		if (pattern_check(kind, t, why, sizeof(why)) < 0) {
			if (!why[0] || strnlen(why, sizeof(why)) >= sizeof(why))
				abort();
			continue;
		}
		for (int i = 4; i < 8; i++)
			if (names[i] && !has_glob(t) &&
			    pattern_match(kind, t, names[i]) != literal_match(kind, t, names[i]))
				abort();
		l->v[l->n++] = t;
	}
}

/* The fields as a config, through the whole parser. */
static void parse_config(char *const *f)
{
	struct config_errors errs = {0};
	struct config *c = NULL;
	char *text = NULL;

	if (asprintf(&text,
		     "[identity f]\ncredential = managed-identity\nallow_users = 1000\n"
		     "allow_units = %s\nallow_user_units = %s\nallow_exes = %s\n"
		     "allow_cgroups = %s\n",
		     f[0], f[1], f[2], f[3]) < 0)
		return;
	if (config_parse_string(text, "fuzz.conf", &c, &errs) == 0)
		config_free(c);
	else if (errs.n == 0)
		abort(); /* a failure always says why */
	config_errors_clear(&errs);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int errs[] = {0, -ENOPROTOOPT, -ESRCH, -EACCES};
	static int self_pidfd = -2;
	char *copy, *f[FIELDS] = {0}, *p, why[POLICY_WHY_MAX], name[POLICY_UNIT_NAME_MAX];
	char **items;
	struct identity id = {.name = (char *)"f"};
	struct attestation a = {.pidfd = -1, .user_unit_uid = 1000};
	struct unitcount counts = {0};
	struct peer peer = {.gid = 1000};
	uid_t allowed[] = {1000}, uids[] = {0, SELF, 1000, 1001};
	unsigned char flags;
	size_t n_items;

	if (size > 16 * 1024)
		return 0;
	if (self_pidfd == -2)
		self_pidfd = pidfd_open(getpid(), 0);
	if (!(copy = malloc(size + 1)))
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	p = copy;
	for (int i = 0; i < FIELDS; i++) {
		f[i] = p;
		if ((p = strchr(p, '\n')))
			*p++ = '\0';
		else
			p = copy + size; /* the rest are empty */
	}
	flags = (unsigned char)f[8][0];
	/* Some fields unknown, as attest.h leaves them. */
	for (int i = 4; i < 8; i++)
		if (flags & (1u << i))
			f[i] = NULL;

	parse_config(f);

	/* At most one item per two bytes of input. */
	n_items = size / 2 + 1;
	if (!(items = calloc(4 * n_items, sizeof(*items))))
		goto out;
	id.allow_units.v = items;
	id.allow_user_units.v = items + n_items;
	id.allow_exes.v = items + 2 * n_items;
	id.allow_cgroups.v = items + 3 * n_items;
	take(&id.allow_units, PATTERN_UNIT, f[0], f);
	take(&id.allow_user_units, PATTERN_UNIT, f[1], f);
	take(&id.allow_exes, PATTERN_EXE, f[2], f);
	take(&id.allow_cgroups, PATTERN_CGROUP, f[3], f);
	if (flags & 0x04) {
		id.allow_uids = allowed;
		id.n_allow_uids = 1;
	}

	a.err = errs[flags & 3];
	a.pidfd = a.err ? -1 : self_pidfd;
	a.pid = getpid();
	a.unit = f[4];
	a.user_unit = f[5];
	a.exe = f[6];
	a.exe_err = f[6] ? 0 : -EACCES;
	a.cgroup = f[7];
	snprintf(a.invocation_id, sizeof(a.invocation_id), "%s", f[8]);
	peer.pid = a.pid;
	peer.att = (flags & 0x08) ? NULL : &a;
	if (a.err == 0 && !a.cgroup)
		a.cgroup = (char *)"/";

	/* Root, the daemon's user (SELF), an allowed uid, another. */
	for (size_t i = 0; i < sizeof(uids) / sizeof(uids[0]); i++) {
		enum policy_verdict v;
		peer.uid = uids[i];
		snprintf(why, sizeof(why), "-");
		v = policy_decide(&id, &peer, SELF, why, sizeof(why));
		if (v == POLICY_ALLOW ? strcmp(why, "-") != 0 : uids[i] == 0 || uids[i] == SELF)
			abort(); /* yes leaves why alone; root and SELF always pass */
		if (v != POLICY_ALLOW)
			check_line(why, sizeof(why));
		/* Small buffers are cut, still one line. */
		policy_decide(&id, &peer, SELF, why, 8);
		check_line(why, 8);
	}
	policy_describe_rules(&id, why, sizeof(why));
	check_line(why, sizeof(why));
	policy_describe_caller(&peer, why, sizeof(why));
	check_line(why, sizeof(why));
	policy_unit_name(&peer, name, sizeof(name));
	check_line(name, sizeof(name));
	unitcount_add(&counts, name, flags & 1);
	unitcount_format(&counts, why, UNITCOUNT_FORMAT_MIN + 16);
	check_line(why, UNITCOUNT_FORMAT_MIN + 16);
	unitcount_free(&counts);
	free(items);
out:
	free(copy);
	return 0;
}
