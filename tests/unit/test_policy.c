/* test_policy.c - program patterns (lib/pattern), the access decision and
 * its explanation (core/policy), and per-unit request counts
 * (lib/unitcount). Attestations are built by hand: a live one is pinned to
 * this process by a pidfd, a dead one to a child that has exited. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../daemon/core/policy.h"
#include "../../daemon/identity/config.h"
#include "../../daemon/lib/attest.h"
#include "../../daemon/lib/pattern.h"
#include "../../daemon/lib/unitcount.h"

#define SELF	 999  /* the daemon's own uid, as the tests pretend */
#define ALLOWED	 1000 /* in allow_users where there is one */
#define STRANGER 4242

/* --- patterns --- */

static void test_unit_patterns(void **state)
{
	(void)state;
	assert_true(pattern_match(PATTERN_UNIT, "etl@*.service", "etl@1.service"));
	assert_true(pattern_match(PATTERN_UNIT, "etl@*.service", "etl@a.b.service"));
	assert_false(pattern_match(PATTERN_UNIT, "etl@*.service", "etl.service"));
	assert_false(pattern_match(PATTERN_UNIT, "etl@*.service", "etl@1.service.d"));
	assert_true(pattern_match(PATTERN_UNIT, "backup.service", "backup.service"));
	assert_false(pattern_match(PATTERN_UNIT, "backup.service", "backup.servicex"));
	assert_true(pattern_match(PATTERN_UNIT, "run-u[0-9]*.scope", "run-u42.scope"));
	assert_false(pattern_match(PATTERN_UNIT, "run-u[!0-9]*.scope", "run-u42.scope"));
	assert_true(pattern_match(PATTERN_UNIT, "?.service", "a.service"));
	/* A backslash is itself, as unit names spell '-' of a path. */
	assert_true(pattern_match(PATTERN_UNIT, "foo\\x2dbar.service", "foo\\x2dbar.service"));
	assert_false(pattern_match(PATTERN_UNIT, "foo\\x2dbar.service", "foox2dbar.service"));
	/* Nothing known matches nothing. */
	assert_false(pattern_match(PATTERN_UNIT, "*.service", NULL));
}

static void test_exe_patterns(void **state)
{
	(void)state;
	assert_true(pattern_match(PATTERN_EXE, "/usr/bin/python3", "/usr/bin/python3"));
	assert_false(pattern_match(PATTERN_EXE, "/usr/bin/python3", "/usr/bin/python3.11"));
	assert_true(pattern_match(PATTERN_EXE, "/usr/bin/python3*", "/usr/bin/python3.11"));
	assert_true(pattern_match(PATTERN_EXE, "/opt/etl/bin/*", "/opt/etl/bin/run"));
	/* A wildcard never crosses a '/': one directory's files only. */
	assert_false(pattern_match(PATTERN_EXE, "/opt/etl/bin/*", "/opt/etl/bin/sub/run"));
	assert_false(pattern_match(PATTERN_EXE, "/opt/etl/bin/*", "/opt/etl/bin"));
	assert_false(pattern_match(PATTERN_EXE, "/opt/*/run", "/opt/a/b/run"));
	assert_true(pattern_match(PATTERN_EXE, "/opt/*/run", "/opt/a/run"));
	assert_false(pattern_match(PATTERN_EXE, "/opt/etl/bin/?un", "/opt/etl/bin//un"));
	assert_false(pattern_match(PATTERN_EXE, "/usr/bin/*", NULL));
}

static void test_cgroup_patterns(void **state)
{
	(void)state;
	/* The cgroup and any below it, at a '/'. */
	assert_true(pattern_match(PATTERN_CGROUP, "/system.slice", "/system.slice"));
	assert_true(pattern_match(PATTERN_CGROUP, "/system.slice", "/system.slice/a.service"));
	assert_true(pattern_match(PATTERN_CGROUP, "/system.slice", "/system.slice/a.service/x"));
	assert_false(pattern_match(PATTERN_CGROUP, "/system.slice", "/system.slicex"));
	assert_false(pattern_match(PATTERN_CGROUP, "/system.slice", "/"));
	assert_false(pattern_match(PATTERN_CGROUP, "/system.slice/a.service", "/system.slice"));
	/* Wildcards stay within a component. */
	assert_true(pattern_match(PATTERN_CGROUP, "/machine.slice/app-*.scope",
				  "/machine.slice/app-1.scope"));
	assert_true(pattern_match(PATTERN_CGROUP, "/machine.slice/app-*.scope",
				  "/machine.slice/app-1.scope/payload/init.scope"));
	assert_false(pattern_match(PATTERN_CGROUP, "/machine.slice/app-*.scope",
				   "/machine.slice/app-1.scopeX/payload"));
	assert_false(pattern_match(PATTERN_CGROUP, "/machine.slice/*", "/machine.slice"));
	assert_true(
	    pattern_match(PATTERN_CGROUP, "/user.slice/*/user@*.service",
			  "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service"));
	assert_false(pattern_match(PATTERN_CGROUP, "/user.slice/*", NULL));
}

static void test_pattern_check(void **state)
{
	static const struct {
		enum pattern_kind kind;
		const char *pattern;
		const char *why; /* NULL: accepted; else in the reason */
	} cases[] = {
	    {PATTERN_UNIT, "etl@*.service", NULL},
	    {PATTERN_UNIT, "backup.service", NULL},
	    {PATTERN_UNIT, "*.scope", NULL},
	    {PATTERN_UNIT, "user@1000.service", NULL},
	    {PATTERN_UNIT, "foo\\x2dbar.service", NULL},
	    {PATTERN_UNIT, "run-u[0-9]*.scope", NULL},
	    {PATTERN_UNIT, "app:x_y-z.slice", NULL},
	    {PATTERN_UNIT, "backup.*", NULL},
	    {PATTERN_UNIT, "backup.s?rvice", NULL},
	    {PATTERN_UNIT, "", "is empty"},
	    {PATTERN_UNIT, "etl@*",
	     "is not NAME.TYPE: write the unit's type too, such as "
	     "etl@*.service"},
	    {PATTERN_UNIT, ".service", "is not NAME.TYPE"},
	    {PATTERN_UNIT, "backup.bogus", "ends in '.bogus', which is not a unit type"},
	    {PATTERN_UNIT, "/usr/bin/x", "has a '/'"},
	    {PATTERN_UNIT, "a b.service", "has ' ', which unit names do not"},
	    {PATTERN_UNIT, "a\tb.service", "has the byte 0x09"},
	    {PATTERN_UNIT, "caf\xc3\xa9.service", "has the byte 0xc3"},
	    {PATTERN_UNIT, "run-[0-9.scope", "without its ']'"},
	    {PATTERN_UNIT, "run-[].scope", "without its ']'"},
	    {PATTERN_UNIT, "run-].scope", "has ']'"},
	    {PATTERN_EXE, "/usr/bin/python3", NULL},
	    {PATTERN_EXE, "/opt/etl/bin/*", NULL},
	    {PATTERN_EXE, "/opt/[ab]in/x", NULL},
	    {PATTERN_EXE, "/opt/caf\xc3\xa9/x", NULL},
	    {PATTERN_EXE, "/.hidden/x", NULL},
	    {PATTERN_EXE, "python3", "is not an absolute path"},
	    {PATTERN_EXE, "/", "ends in '/': name the executable file"},
	    {PATTERN_EXE, "/usr//bin/x", "has '//'"},
	    {PATTERN_EXE, "/usr/./bin/x", "has a '.' component"},
	    {PATTERN_EXE, "/usr/bin/.", "has a '.' component"},
	    {PATTERN_EXE, "/usr/../bin/x", "has a '..' component"},
	    {PATTERN_EXE, "/usr/bin/..", "has a '..' component"},
	    {PATTERN_EXE, "/usr/\x7f", "has a control character"},
	    {PATTERN_EXE, "/usr/[/]x", "a '/' inside [...]"},
	    {PATTERN_CGROUP, "/system.slice", NULL},
	    {PATTERN_CGROUP, "/machine.slice/app-*.scope", NULL},
	    {PATTERN_CGROUP, "/system.slice/", "ends in '/': write the cgroup"},
	    {PATTERN_CGROUP, "system.slice", "is not an absolute path"},
	};
	char why[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;
		why[0] = '\0';
		r = pattern_check(cases[i].kind, cases[i].pattern, why, sizeof(why));
		if (!cases[i].why && r != 0)
			fail_msg("'%s' refused: %s", cases[i].pattern, why);
		if (cases[i].why && (r != -EINVAL || !strstr(why, cases[i].why)))
			fail_msg("'%s': got %d '%s', want '%s'", cases[i].pattern, r, why,
				 cases[i].why);
	}
	/* Lengths: systemd's longest unit name, the kernel's longest path. */
	{
		char unit[PATTERN_UNIT_MAX + 2], path[PATTERN_PATH_MAX + 2];
		memset(unit, 'a', sizeof(unit));
		memcpy(unit + PATTERN_UNIT_MAX - 8, ".service", sizeof(".service"));
		assert_int_equal(pattern_check(PATTERN_UNIT, unit, why, sizeof(why)), 0);
		memcpy(unit + PATTERN_UNIT_MAX - 7, ".service", sizeof(".service"));
		assert_int_equal(pattern_check(PATTERN_UNIT, unit, why, sizeof(why)), -EINVAL);
		assert_non_null(strstr(why, "longer than 255"));
		memset(path, 'a', sizeof(path));
		path[0] = '/';
		path[PATTERN_PATH_MAX] = '\0';
		assert_int_equal(pattern_check(PATTERN_EXE, path, why, sizeof(why)), 0);
		path[PATTERN_PATH_MAX] = 'a';
		path[PATTERN_PATH_MAX + 1] = '\0';
		assert_int_equal(pattern_check(PATTERN_EXE, path, why, sizeof(why)), -EINVAL);
		assert_non_null(strstr(why, "longer than 4095"));
	}
}

/* --- attestations and identities made by hand --- */

static char *dup_or_null(const char *s)
{
	char *d = s ? strdup(s) : NULL;

	assert_true(!s || d);
	return d;
}

/* This process, alive, in unit (or user_unit of uid 1000's manager) with
 * exe and cgroup as given. */
static void attest_self(struct attestation *a, const char *unit, const char *user_unit,
			const char *exe, const char *cgroup)
{
	memset(a, 0, sizeof(*a));
	a->pid = getpid();
	a->pidfd = pidfd_open(getpid(), 0);
	assert_true(a->pidfd >= 0);
	a->unit = dup_or_null(user_unit ? "user@1000.service" : unit);
	a->user_unit = dup_or_null(user_unit);
	a->user_unit_uid = user_unit ? 1000 : (uid_t)-1;
	a->exe = dup_or_null(exe);
	a->exe_err = exe ? 0 : -EACCES;
	a->cgroup = dup_or_null(cgroup ? cgroup : "/system.slice/x.service");
	snprintf(a->invocation_id, sizeof(a->invocation_id), "0123456789abcdef0123456789abcdef");
}

/* A child that has exited, its pidfd readable: what was read of it may be
 * another process's now. */
static void attest_dead(struct attestation *a)
{
	pid_t child = fork();
	int status;

	assert_true(child >= 0);
	if (child == 0)
		_exit(0);
	attest_self(a, "etl@1.service", NULL, "/usr/bin/python3", NULL);
	close(a->pidfd);
	a->pidfd = pidfd_open(child, 0);
	assert_true(a->pidfd >= 0);
	a->pid = child;
	assert_int_equal(waitpid(child, &status, 0), child);
}

static struct config *cfg;

/* The identity etl with rules (lines of "key = value"). */
static const struct identity *identity_with(const char *rules)
{
	struct config_errors e = {0};
	char text[4096];

	config_free(cfg);
	cfg = NULL;
	snprintf(text, sizeof(text), "[identity etl]\ncredential = managed-identity\n%s", rules);
	if (config_parse_string(text, "t.conf", &cfg, &e) < 0)
		fail_msg("config: %s", e.n ? e.msgs[0] : "?");
	return config_find_identity(cfg, "etl");
}

static int teardown_cfg(void **state)
{
	(void)state;
	config_free(cfg);
	cfg = NULL;
	return 0;
}

static struct peer peer_of(uid_t uid, const struct attestation *a)
{
	return (struct peer){.uid = uid, .gid = uid, .pid = a ? a->pid : -1, .att = a};
}

static enum policy_verdict decide(const struct identity *id, uid_t uid, const struct attestation *a,
				  char *why)
{
	struct peer p = peer_of(uid, a);

	snprintf(why, POLICY_WHY_MAX, "untouched");
	return policy_decide(id, &p, SELF, why, POLICY_WHY_MAX);
}

/* --- the decision --- */

/* uid and group rules alone: as before program rules. */
static void test_uid_rules_alone(void **state)
{
	const struct identity *id = identity_with("allow_users = 1000\nallow_groups = 50\n");
	char why[POLICY_WHY_MAX];
	gid_t groups[] = {7, 50};
	struct peer p = {.uid = 2000, .gid = 2000, .pid = 1, .groups = groups, .n_groups = 2};

	(void)state;
	assert_int_equal(decide(id, ALLOWED, NULL, why), POLICY_ALLOW);
	assert_string_equal(why, "untouched");
	assert_int_equal(decide(id, STRANGER, NULL, why), POLICY_DENY_USER);
	assert_string_equal(why, "uid 4242: identity etl allows uid 1000 or group 50");
	/* A supplementary group. */
	assert_int_equal(policy_decide(id, &p, SELF, why, sizeof(why)), POLICY_ALLOW);
	p.n_groups = 1;
	assert_int_equal(policy_decide(id, &p, SELF, why, sizeof(why)), POLICY_DENY_USER);
}

/* No rules: root and the daemon's user only. */
static void test_no_rules(void **state)
{
	const struct identity *id = identity_with("");
	char why[POLICY_WHY_MAX];

	(void)state;
	assert_int_equal(decide(id, ALLOWED, NULL, why), POLICY_DENY_USER);
	assert_string_equal(why, "uid 1000: identity etl allows only root and batchtokd's own user "
				 "(it has no allow_users, allow_groups or program rules)");
	assert_int_equal(decide(id, 0, NULL, why), POLICY_ALLOW);
	assert_int_equal(decide(id, SELF, NULL, why), POLICY_ALLOW);
}

/* Program rules alone decide, for any uid (a DynamicUser= service). */
static void test_program_rules_alone(void **state)
{
	const struct identity *id = identity_with("allow_units = etl@*.service\n");
	struct attestation in, out;
	char why[POLICY_WHY_MAX];

	(void)state;
	attest_self(&in, "etl@7.service", NULL, "/usr/bin/python3", NULL);
	attest_self(&out, "backup.service", NULL, "/usr/bin/curl", NULL);
	assert_int_equal(decide(id, 61234, &in, why), POLICY_ALLOW);
	assert_int_equal(decide(id, STRANGER, &in, why), POLICY_ALLOW);
	assert_int_equal(decide(id, STRANGER, &out, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit backup.service, exe /usr/bin/curl: identity etl allows "
				 "etl@*.service");
	attest_clear(&in);
	attest_clear(&out);
}

/* Both kinds: a caller must pass both; the uid is judged first. */
static void test_both_rules(void **state)
{
	const struct identity *id =
	    identity_with("allow_users = 1000\nallow_units = etl@*.service\n");
	struct attestation in, out;
	char why[POLICY_WHY_MAX];

	(void)state;
	attest_self(&in, "etl@1.service", NULL, "/usr/bin/python3", NULL);
	attest_self(&out, "backup.service", NULL, "/usr/bin/curl", NULL);
	assert_int_equal(decide(id, ALLOWED, &in, why), POLICY_ALLOW);
	assert_int_equal(decide(id, ALLOWED, &out, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit backup.service, exe /usr/bin/curl: identity etl allows "
				 "etl@*.service");
	assert_int_equal(decide(id, STRANGER, &in, why), POLICY_DENY_USER);
	assert_string_equal(why, "uid 4242: identity etl allows uid 1000");
	attest_clear(&in);
	attest_clear(&out);
}

/* Root and the daemon's user pass everything, even unattested. */
static void test_root_and_self_bypass(void **state)
{
	const struct identity *id =
	    identity_with("allow_users = 1000\nallow_exes = /usr/bin/python3\n");
	struct attestation none = {.err = -ENOPROTOOPT, .pidfd = -1, .pid = 1};
	char why[POLICY_WHY_MAX];

	(void)state;
	assert_int_equal(decide(id, 0, NULL, why), POLICY_ALLOW);
	assert_int_equal(decide(id, SELF, NULL, why), POLICY_ALLOW);
	assert_int_equal(decide(id, 0, &none, why), POLICY_ALLOW);
	assert_string_equal(why, "untouched");
}

/* Which program cannot be known: refused, saying why (fail closed). */
static void test_unknown_programs_are_refused(void **state)
{
	const struct identity *id = identity_with("allow_units = etl@*.service\n");
	struct attestation none = {.err = -ENOPROTOOPT, .pidfd = -1, .pid = 321};
	struct attestation gone = {.err = -ESRCH, .pidfd = -1, .pid = 322};
	struct attestation unreadable = {.err = -EACCES, .pidfd = -1, .pid = 323};
	struct attestation dead;
	char why[POLICY_WHY_MAX], want[POLICY_WHY_MAX];

	(void)state;
	assert_int_equal(decide(id, STRANGER, &none, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "pid 321, on a kernel that cannot pin a process to its socket "
				 "(SO_PEERPIDFD needs Linux 6.5), so which program it is cannot "
				 "be known: identity etl allows etl@*.service");
	assert_int_equal(decide(id, STRANGER, &gone, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "pid 322 has exited (its PID may be another process's now): "
				 "identity etl allows etl@*.service");
	assert_int_equal(decide(id, STRANGER, &unreadable, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "pid 323, whose unit cannot be read: Permission denied: identity "
				 "etl allows etl@*.service");
	/* Attested in a unit it allows, but exited before the answer. */
	attest_dead(&dead);
	assert_int_equal(decide(id, STRANGER, &dead, why), POLICY_DENY_PROGRAM);
	snprintf(want, sizeof(want),
		 "pid %d has exited (its PID may be another process's now): identity etl "
		 "allows etl@*.service",
		 (int)dead.pid);
	assert_string_equal(why, want);
	attest_clear(&dead);
	/* The compat endpoint's clients have no attestation. */
	assert_int_equal(decide(id, STRANGER, NULL, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "a client of the compat endpoint, which cannot tell which "
				 "program is asking: identity etl allows etl@*.service");
	/* An identity without program rules does not ask. */
	id = identity_with("allow_users = 4242\n");
	assert_int_equal(decide(id, STRANGER, &none, why), POLICY_ALLOW);
	assert_int_equal(decide(id, STRANGER, NULL, why), POLICY_ALLOW);
}

static void test_exe_rules(void **state)
{
	const struct identity *id = identity_with("allow_exes = /opt/etl/bin/* /usr/bin/python3\n");
	struct attestation a;
	char why[POLICY_WHY_MAX];

	(void)state;
	attest_self(&a, "etl@1.service", NULL, "/opt/etl/bin/run", NULL);
	assert_int_equal(decide(id, STRANGER, &a, why), POLICY_ALLOW);
	free(a.exe);
	a.exe = strdup("/opt/etl/bin/sub/run");
	assert_int_equal(decide(id, STRANGER, &a, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit etl@1.service, exe /opt/etl/bin/sub/run: identity etl "
				 "allows exe /opt/etl/bin/* or /usr/bin/python3");
	/* An executable that cannot be read matches nothing. */
	free(a.exe);
	a.exe = NULL;
	a.exe_err = -EACCES;
	assert_int_equal(decide(id, STRANGER, &a, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit etl@1.service, exe unknown (Permission denied): identity "
				 "etl allows exe /opt/etl/bin/* or /usr/bin/python3");
	attest_clear(&a);
}

/* System and user units are one allow-list, each matched against its own
 * kind of unit. */
static void test_user_unit_rules(void **state)
{
	const struct identity *id = identity_with("allow_users = 1000\n"
						  "allow_units = backup.service\n"
						  "allow_user_units = dev.service\n");
	struct attestation a;
	char why[POLICY_WHY_MAX];

	(void)state;
	attest_self(&a, NULL, "dev.service", "/usr/bin/python3", NULL);
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_ALLOW);
	free(a.user_unit);
	a.user_unit = strdup("backup.service");
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "user unit backup.service of uid 1000, exe /usr/bin/python3: "
				 "identity etl allows backup.service or user unit dev.service");
	attest_clear(&a);
	attest_self(&a, "backup.service", NULL, "/usr/bin/curl", NULL);
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_ALLOW);
	attest_clear(&a);
	/* A system unit is not a user unit of the same name. */
	attest_self(&a, "dev.service", NULL, "/usr/bin/curl", NULL);
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_DENY_PROGRAM);
	attest_clear(&a);
}

static void test_cgroup_rules(void **state)
{
	const struct identity *id = identity_with("allow_cgroups = /machine.slice/app-*.scope\n");
	struct attestation a;
	char why[POLICY_WHY_MAX];

	(void)state;
	attest_self(&a, NULL, NULL, "/usr/bin/python3", "/machine.slice/app-1.scope/payload");
	assert_int_equal(decide(id, STRANGER, &a, why), POLICY_ALLOW);
	free(a.cgroup);
	a.cgroup = strdup("/machine.slice/app-1.scopeX");
	assert_int_equal(decide(id, STRANGER, &a, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "no unit (cgroup /machine.slice/app-1.scopeX), exe "
				 "/usr/bin/python3: identity etl allows cgroup "
				 "/machine.slice/app-*.scope or below");
	attest_clear(&a);
}

/* Every kind of rule must pass; the denial lists them all. */
static void test_every_kind_must_pass(void **state)
{
	const struct identity *id = identity_with("allow_users = 1000\n"
						  "allow_units = etl@*.service backup.service\n"
						  "allow_user_units = dev.service\n"
						  "allow_exes = /usr/bin/python3 /opt/etl/bin/*\n"
						  "allow_cgroups = /system.slice\n");
	struct attestation a;
	char why[POLICY_WHY_MAX];

	(void)state;
	attest_self(&a, "etl@1.service", NULL, "/usr/bin/python3", "/system.slice/etl@1.service");
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_ALLOW);
	free(a.exe);
	a.exe = strdup("/usr/bin/curl");
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit etl@1.service, exe /usr/bin/curl: identity etl allows "
				 "etl@*.service or backup.service or user unit dev.service, with "
				 "exe /usr/bin/python3 or /opt/etl/bin/*, with cgroup "
				 "/system.slice or below");
	free(a.exe);
	a.exe = strdup("/usr/bin/python3");
	free(a.cgroup);
	a.cgroup = strdup("/user.slice/etl@1.service");
	assert_int_equal(decide(id, ALLOWED, &a, why), POLICY_DENY_PROGRAM);
	attest_clear(&a);
}

/* The explanation is one printable line, cut to its buffer. */
static void test_explanation_is_bounded_and_printable(void **state)
{
	const struct identity *id = identity_with("allow_exes = /usr/bin/python3\n");
	struct attestation a;
	struct peer p;
	char why[POLICY_WHY_MAX], small[24];

	(void)state;
	attest_self(&a, "etl@1.service", NULL, "/tmp/x\nbatchtokd: info: granted\x1b[31m\xff",
		    NULL);
	p = peer_of(STRANGER, &a);
	assert_int_equal(policy_decide(id, &p, SELF, why, sizeof(why)), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit etl@1.service, exe /tmp/x\\x0abatchtokd: info: "
				 "granted\\x1b[31m\\xff: identity etl allows exe /usr/bin/python3");
	assert_int_equal(policy_decide(id, &p, SELF, small, sizeof(small)), POLICY_DENY_PROGRAM);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_string_equal(small, "unit etl@1.service, ...");
	attest_clear(&a);
	/* A name that spells an escape is told apart from the escape. */
	attest_self(&a, "etl@1.service", NULL, "/tmp/x\\x0ay", NULL);
	p = peer_of(STRANGER, &a);
	assert_int_equal(policy_decide(id, &p, SELF, why, sizeof(why)), POLICY_DENY_PROGRAM);
	assert_string_equal(why, "unit etl@1.service, exe /tmp/x\\x5cx0ay: identity etl allows "
				 "exe /usr/bin/python3");
	attest_clear(&a);
	/* Many patterns: cut, still a string. */
	{
		char rules[2400] = "";
		for (int i = 0; i < 60; i++)
			snprintf(rules + strlen(rules), sizeof(rules) - strlen(rules),
				 "allow_exes = /opt/tool-%02d/bin/*\n", i);
		id = identity_with(rules);
	}
	attest_self(&a, "etl@1.service", NULL, "/usr/bin/curl", NULL);
	p = peer_of(STRANGER, &a);
	assert_int_equal(policy_decide(id, &p, SELF, why, sizeof(why)), POLICY_DENY_PROGRAM);
	assert_int_equal(strlen(why), sizeof(why) - 1);
	assert_string_equal(why + sizeof(why) - 4, "...");
	attest_clear(&a);
}

static void test_describe_rules(void **state)
{
	char buf[POLICY_WHY_MAX];

	(void)state;
	policy_describe_rules(identity_with("allow_users = 1000\n"), buf, sizeof(buf));
	assert_string_equal(buf, "");
	assert_false(policy_has_program_rules(identity_with("allow_users = 1000\n")));
	policy_describe_rules(identity_with("allow_cgroups = /a /b\nallow_exes = /x\n"), buf,
			      sizeof(buf));
	assert_string_equal(buf, "exe /x, with cgroup /a or /b or below");
	assert_true(policy_has_program_rules(identity_with("allow_cgroups = /a\n")));
}

/* --- per-unit counts and log fields --- */

static void test_unit_names(void **state)
{
	struct attestation a, err = {.err = -ENOPROTOOPT, .pidfd = -1};
	struct peer p;
	char name[POLICY_UNIT_NAME_MAX];

	(void)state;
	p = peer_of(STRANGER, NULL);
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "(compat-endpoint)");
	p = peer_of(STRANGER, &err);
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "(unattested)");
	attest_self(&a, "etl@1.service", NULL, "/usr/bin/python3", NULL);
	p = peer_of(STRANGER, &a);
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "etl@1.service");
	/* Too long for the buffer. */
	policy_unit_name(&p, name, 10);
	assert_string_equal(name, "(other)");
	attest_clear(&a);
	attest_self(&a, NULL, "dev.service", "/usr/bin/python3", NULL);
	p = peer_of(STRANGER, &a);
	/* A user names the units of their own manager: counted as it. */
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "user@1000.service");
	attest_clear(&a);
	attest_self(&a, "session-42.scope", NULL, "/usr/bin/python3", NULL);
	p = peer_of(STRANGER, &a);
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "session-*.scope");
	attest_clear(&a);
	attest_self(&a, NULL, NULL, "/usr/bin/python3", NULL);
	p = peer_of(STRANGER, &a);
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "(no-unit)");
	/* Not a unit name: what a status line could be confused by. */
	free(a.unit);
	a.unit = strdup("a=1 b.service");
	policy_unit_name(&p, name, sizeof(name));
	assert_string_equal(name, "(other)");
	attest_clear(&a);
}

static void test_log_ctx(void **state)
{
	struct attestation a;
	struct log_ctx ctx = {.identity = "etl"};
	struct peer p;

	(void)state;
	attest_self(&a, NULL, "dev.service", "/usr/bin/python3", NULL);
	p = peer_of(ALLOWED, &a);
	policy_log_ctx(&p, &ctx);
	assert_string_equal(ctx.identity, "etl");
	assert_int_equal(ctx.uid, ALLOWED);
	assert_int_equal(ctx.pid, getpid());
	assert_string_equal(ctx.unit, "user@1000.service");
	assert_string_equal(ctx.user_unit, "dev.service");
	assert_string_equal(ctx.exe, "/usr/bin/python3");
	assert_string_equal(ctx.invocation_id, "0123456789abcdef0123456789abcdef");
	attest_clear(&a);
	ctx = (struct log_ctx){0};
	p = peer_of(ALLOWED, NULL);
	policy_log_ctx(&p, &ctx);
	assert_int_equal(ctx.pid, -1);
	assert_null(ctx.unit);
	assert_null(ctx.exe);
	assert_null(ctx.invocation_id);
}

static void test_unitcount(void **state)
{
	struct unitcount t = {0};
	char buf[4000], name[32];

	(void)state;
	unitcount_format(&t, buf, sizeof(buf));
	assert_string_equal(buf, "");
	unitcount_add(&t, "b.service", false);
	unitcount_add(&t, "a.service", true);
	unitcount_add(&t, "c.service", false);
	unitcount_add(&t, "c.service", true);
	unitcount_add(&t, UNITCOUNT_OTHER, false);
	unitcount_add(&t, "a b.service", false);
	unitcount_add(&t, "a=1", true);
	unitcount_add(&t, "", false);
	unitcount_format(&t, buf, sizeof(buf));
	/* Most requests first, then by name; (other) last. */
	assert_string_equal(buf, "c.service=2/1 a.service=1/1 b.service=1/0 (other)=4/1");
	/* At most UNITCOUNT_MAX names: the rest is (other). */
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "run-u%d.scope", i);
		unitcount_add(&t, name, i % 2);
	}
	assert_int_equal(t.n, UNITCOUNT_MAX);
	assert_int_equal(t.other.requests, 4 + 300 - (UNITCOUNT_MAX - 3));
	/* What does not fit joins (other), which always does. */
	unitcount_format(&t, buf, 200);
	assert_true(strlen(buf) < 200);
	assert_non_null(strstr(buf, "c.service=2/1 "));
	assert_non_null(strstr(buf, " (other)="));
	assert_null(strstr(buf, "run-u299"));
	unitcount_format(&t, buf, sizeof(buf));
	assert_true(strlen(buf) < sizeof(buf));
	{
		/* Every request is in the list once. */
		unsigned long long sum = 0, r, d;
		for (char *s = buf; (s = strchr(s, '=')); s++)
			if (sscanf(s, "=%llu/%llu", &r, &d) == 2)
				sum += r;
		assert_int_equal(sum, 8 + 300);
	}
	unitcount_free(&t);
	assert_int_equal(t.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unit_patterns),
	    cmocka_unit_test(test_exe_patterns),
	    cmocka_unit_test(test_cgroup_patterns),
	    cmocka_unit_test(test_pattern_check),
	    cmocka_unit_test_teardown(test_uid_rules_alone, teardown_cfg),
	    cmocka_unit_test_teardown(test_no_rules, teardown_cfg),
	    cmocka_unit_test_teardown(test_program_rules_alone, teardown_cfg),
	    cmocka_unit_test_teardown(test_both_rules, teardown_cfg),
	    cmocka_unit_test_teardown(test_root_and_self_bypass, teardown_cfg),
	    cmocka_unit_test_teardown(test_unknown_programs_are_refused, teardown_cfg),
	    cmocka_unit_test_teardown(test_exe_rules, teardown_cfg),
	    cmocka_unit_test_teardown(test_user_unit_rules, teardown_cfg),
	    cmocka_unit_test_teardown(test_cgroup_rules, teardown_cfg),
	    cmocka_unit_test_teardown(test_every_kind_must_pass, teardown_cfg),
	    cmocka_unit_test_teardown(test_explanation_is_bounded_and_printable, teardown_cfg),
	    cmocka_unit_test_teardown(test_describe_rules, teardown_cfg),
	    cmocka_unit_test(test_unit_names),
	    cmocka_unit_test(test_log_ctx),
	    cmocka_unit_test(test_unitcount),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
