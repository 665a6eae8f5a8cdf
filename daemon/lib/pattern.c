/* pattern.c - checking and matching the patterns that name programs. */
#include "pattern.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The types a unit name ends in (systemd.unit(5)). */
static const char *const unit_types[] = {"service",   "socket", "device", "mount",
					 "automount", "swap",	"target", "path",
					 "timer",     "slice",	"scope"};

static bool is_control(char c)
{
	return (unsigned char)c < 0x20 || c == 0x7f;
}

/* The characters of unit names: letters, digits, ":-_.\" and '@' between
 * a template's name and its instance. */
static bool unit_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr(":-_.\\@", c));
}

static bool path_char(char c)
{
	return !is_control(c) && c != '/';
}

/* The ']' closing the bracket expression that starts at s ('['), if every
 * character in it is one ok() takes (or '-' of a range, '!' or '^' first);
 * else NULL. */
static const char *bracket_end(const char *s, bool (*ok)(char))
{
	const char *p = s + 1;

	if (*p == '!' || *p == '^')
		p++;
	if (*p == ']')
		return NULL; /* empty, or a literal ']' no name has */
	for (; *p && *p != ']'; p++)
		if (!ok(*p) && *p != '-')
			return NULL;
	return *p == ']' ? p : NULL;
}

static int fail(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

static int check_unit(const char *s, char *why, size_t n)
{
	const char *dot = NULL, *end;
	char c;

	if (strlen(s) > PATTERN_UNIT_MAX)
		return fail(why, n, "is longer than %d characters, the longest unit name",
			    PATTERN_UNIT_MAX);
	for (const char *p = s; (c = *p); p++) {
		if (c == '/')
			return fail(why, n,
				    "has a '/', which unit names do not (an executable goes in "
				    "allow_exes, a cgroup in allow_cgroups)");
		if (c == '[') {
			if (!(end = bracket_end(p, unit_char)))
				return fail(why, n,
					    "has a '[' without its ']', or characters in [...] "
					    "that unit names do not have");
			p = end;
			continue;
		}
		if (c == '.')
			dot = p;
		if (c == '*' || c == '?' || unit_char(c))
			continue;
		if (is_control(c) || (unsigned char)c >= 0x80)
			return fail(why, n,
				    "has the byte 0x%02x, which unit names do not (they use ASCII "
				    "letters, digits and : - _ . \\ @)",
				    (unsigned char)c);
		return fail(why, n,
			    "has '%c', which unit names do not (they use letters, digits and "
			    ": - _ . \\ @)",
			    c);
	}
	if (!dot || dot == s)
		return fail(why, n,
			    "is not NAME.TYPE: write the unit's type too, such as %s.service (or "
			    ".socket, .timer, .scope, .slice, ...; .* for any)",
			    *s && !dot ? s : "NAME");
	if (has_glob(dot + 1))
		return 0;
	for (size_t i = 0; i < sizeof(unit_types) / sizeof(unit_types[0]); i++)
		if (!strcmp(dot + 1, unit_types[i]))
			return 0;
	return fail(why, n,
		    "ends in '.%s', which is not a unit type (.service, .socket, .timer, .scope, "
		    ".slice, ...)",
		    dot + 1);
}

static int check_path(enum pattern_kind kind, const char *s, char *why, size_t n)
{
	size_t len = strlen(s);
	const char *end;

	if (*s != '/')
		return fail(why, n, "is not an absolute path: it must start with '/'");
	if (len > PATTERN_PATH_MAX)
		return fail(why, n, "is longer than %d characters, the longest path",
			    PATTERN_PATH_MAX);
	for (const char *p = s; *p; p++) {
		if (is_control(*p))
			return fail(why, n, "has a control character");
		if (*p == '[') {
			if (!(end = bracket_end(p, path_char)))
				return fail(why, n,
					    "has a '[' without its ']', or a '/' inside [...], "
					    "which never matches");
			p = end;
		}
	}
	if (strstr(s, "//"))
		return fail(why, n, "has '//': write the path with one '/' between names");
	if (strstr(s, "/./") || (len >= 2 && !strcmp(s + len - 2, "/.")))
		return fail(why, n, "has a '.' component: write the path without it");
	if (strstr(s, "/../") || (len >= 3 && !strcmp(s + len - 3, "/..")))
		return fail(why, n, "has a '..' component: write the path it leads to");
	if (s[len - 1] == '/')
		return fail(why, n, "ends in '/': %s without the '/' at the end",
			    kind == PATTERN_EXE ? "name the executable file" : "write the cgroup");
	return 0;
}

int pattern_check(enum pattern_kind kind, const char *s, char *why, size_t n)
{
	if (!*s)
		return fail(why, n, "is empty");
	return kind == PATTERN_UNIT ? check_unit(s, why, n) : check_path(kind, s, why, n);
}

/* A cgroup pattern with k '/' matches the first k components of a cgroup
 * path: with FNM_PATHNAME no wildcard crosses a '/', and a checked
 * pattern has none in brackets, so those are the only ones it can. */
static bool match_cgroup(const char *pattern, const char *name)
{
	char prefix[PATTERN_PATH_MAX + 1];
	size_t slashes = 0, len;

	for (const char *p = pattern; *p; p++)
		slashes += *p == '/';
	for (len = 0; name[len]; len++)
		if (name[len] == '/' && slashes-- == 0)
			break;
	if (len >= sizeof(prefix))
		return false; /* longer than any pattern: fail closed */
	memcpy(prefix, name, len);
	prefix[len] = '\0';
	return fnmatch(pattern, prefix, FNM_PATHNAME | FNM_NOESCAPE) == 0;
}

bool pattern_match(enum pattern_kind kind, const char *pattern, const char *name)
{
	if (!name)
		return false;
	switch (kind) {
	case PATTERN_UNIT:
		return fnmatch(pattern, name, FNM_NOESCAPE) == 0;
	case PATTERN_EXE:
		return fnmatch(pattern, name, FNM_PATHNAME | FNM_NOESCAPE) == 0;
	case PATTERN_CGROUP:
		return match_cgroup(pattern, name);
	}
	return false;
}
