/* pattern.h - shell-style patterns that name programs: systemd unit names,
 * executables and cgroups, as an identity's allow_units, allow_user_units,
 * allow_exes and allow_cgroups write them. Checked once when the config is
 * read; matched against what attest.h read of a caller.
 *
 * Patterns are fnmatch(3)'s: '*', '?' and '[...]' (negated by '!' or '^').
 * A backslash is an ordinary character, not an escape: unit names spell
 * '-' in a path as "\x2d". */
#ifndef BATCHTOK_DAEMON_PATTERN_H
#define BATCHTOK_DAEMON_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

enum pattern_kind {
	/* A unit name ("etl@*.service"): '*' and '?' match any character. */
	PATTERN_UNIT,
	/* An executable's absolute path ("/opt/etl/bin/x*"): '*', '?' and
	 * brackets never match a '/', so a pattern names files of one
	 * directory. */
	PATTERN_EXE,
	/* A cgroup path ("/machine.slice/app-*.scope"), as for PATTERN_EXE; it
	 * matches that cgroup and every cgroup below it. */
	PATTERN_CGROUP,
};

/* systemd's longest unit name (UNIT_NAME_MAX less its NUL). */
#define PATTERN_UNIT_MAX 255
/* The longest path pattern: a path the kernel takes (PATH_MAX less NUL). */
#define PATTERN_PATH_MAX 4095

/* 0 if s is a pattern of that kind; else -EINVAL and, in why (n bytes),
 * what is wrong and how to write it instead, a phrase that follows
 * "'PATTERN' " in a message ("has no unit type: write ..."). */
int pattern_check(enum pattern_kind kind, const char *s, char *why, size_t n);

/* Whether name matches pattern, a pattern that pattern_check() took; a
 * NULL name (nothing known) matches nothing. */
bool pattern_match(enum pattern_kind kind, const char *pattern, const char *name);

#endif
