/* status_format.c - renders the STATUS record (daemon -> identities ->
 * tokens, PROTOCOL.md) for people and for programs. */
#include "status_format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The names PROTOCOL.md gives the child lists at each depth. */
static const char *const child_names[] = {"identities", "tokens", "items"};

static void relative(FILE *f, int64_t delta)
{
	int64_t a = delta < 0 ? -delta : delta;

	if (delta == 0) {
		fputs("now", f);
		return;
	}
	if (delta > 0)
		fputs("in ", f);
	if (a >= 86400)
		fprintf(f, "%" PRId64 "d %" PRId64 "h", a / 86400, a % 86400 / 3600);
	else if (a >= 3600)
		fprintf(f, "%" PRId64 "h %" PRId64 "m", a / 3600, a % 3600 / 60);
	else if (a >= 60)
		fprintf(f, "%" PRId64 "m %" PRId64 "s", a / 60, a % 60);
	else
		fprintf(f, "%" PRId64 "s", a);
	if (delta < 0)
		fputs(" ago", f);
}

static void text_field(FILE *f, const struct bt_field *fl, time_t now)
{
	char when[64];
	struct tm tm;
	time_t t;

	switch (fl->kind) {
	case BT_FIELD_STR:
		fputs(fl->str, f);
		break;
	case BT_FIELD_BOOL:
		fputs(fl->num ? "yes" : "no", f);
		break;
	case BT_FIELD_TIME:
		if (fl->num == 0) {
			fputs("never", f);
			break;
		}
		t = (time_t)fl->num;
		if (localtime_r(&t, &tm) &&
		    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm)) {
			fprintf(f, "%s (", when);
			relative(f, fl->num - (int64_t)now);
			fputc(')', f);
		} else {
			relative(f, fl->num - (int64_t)now);
		}
		break;
	default:
		fprintf(f, "%" PRId64, fl->num);
	}
}

/* unit_requests (PROTOCOL.md): "NAME=REQUESTS/DENIED" separated by
 * spaces. Each entry in turn: returns a pointer past it and sets the name
 * (*name, *len) and counts, or NULL at the end or at anything else. */
static const char *next_unit(const char *s, const char **name, size_t *len,
			     unsigned long long *requests, unsigned long long *denied)
{
	const char *end = strchr(s, ' '), *eq;
	int k = 0;

	if (!*s)
		return NULL;
	if (!end)
		end = s + strlen(s);
	for (eq = end; eq > s && eq[-1] != '='; eq--)
		;
	if (eq <= s + 1 || eq[0] < '0' || eq[0] > '9' ||
	    sscanf(eq, "%llu/%llu%n", requests, denied, &k) != 2 || eq + k != end)
		return NULL;
	*name = s;
	*len = (size_t)(eq - 1 - s);
	return *end ? end + 1 : end;
}

/* Whether the field is a unit_requests list this client can read: else it
 * is shown as it came, like any field. */
static bool unit_list(const struct bt_field *fl)
{
	const char *s, *name;
	size_t len;
	unsigned long long r, d;

	if (fl->kind != BT_FIELD_STR || strcmp(fl->key, "unit_requests") != 0 || !*fl->str)
		return false;
	for (s = fl->str; s && *s;)
		s = next_unit(s, &name, &len, &r, &d);
	return s != NULL;
}

static void text_units(FILE *f, const struct bt_field *fl, int indent)
{
	const char *s = fl->str, *name;
	size_t len;
	unsigned long long r, d;

	fprintf(f, "%*s%s:\n", indent, "", fl->key);
	while ((s = next_unit(s, &name, &len, &r, &d))) {
		fprintf(f, "%*s%.*s: %llu request%s", indent + 2, "", (int)len, name, r,
			r == 1 ? "" : "s");
		if (d)
			fprintf(f, ", %llu denied", d);
		fputc('\n', f);
	}
}

static void text_record(FILE *f, const struct bt_record *r, time_t now, int depth)
{
	int indent = depth * 2;
	uint32_t first = 0;

	/* A child's first field names it and heads its block. */
	if (depth > 0 && r->n_fields > 0) {
		fprintf(f, "%*s%s ", indent - 2, "", r->fields[0].key);
		text_field(f, &r->fields[0], now);
		fputc('\n', f);
		first = 1;
	}
	for (uint32_t i = first; i < r->n_fields; i++) {
		if (unit_list(&r->fields[i])) {
			text_units(f, &r->fields[i], indent);
			continue;
		}
		fprintf(f, "%*s%s: ", indent, "", r->fields[i].key);
		text_field(f, &r->fields[i], now);
		fputc('\n', f);
	}
	for (uint32_t i = 0; i < r->n_children; i++)
		text_record(f, &r->children[i], now, depth + 1);
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* A string of len bytes. */
static void json_string_n(FILE *f, const char *s, size_t len)
{
	char *copy = strndup(s, len);

	json_string(f, copy ? copy : "");
	free(copy);
}

static void json_units(FILE *f, const struct bt_field *fl)
{
	const char *s = fl->str, *name;
	size_t len;
	unsigned long long r, d;
	bool first = true;

	fputc('[', f);
	while ((s = next_unit(s, &name, &len, &r, &d))) {
		fputs(first ? "{\"unit\":" : ",{\"unit\":", f);
		json_string_n(f, name, len);
		fprintf(f, ",\"requests\":%llu,\"denied\":%llu}", r, d);
		first = false;
	}
	fputc(']', f);
}

static void json_record(FILE *f, const struct bt_record *r, int depth)
{
	fputc('{', f);
	for (uint32_t i = 0; i < r->n_fields; i++) {
		const struct bt_field *fl = &r->fields[i];
		if (i)
			fputc(',', f);
		json_string(f, fl->key);
		fputc(':', f);
		if (unit_list(fl))
			json_units(f, fl);
		else if (fl->kind == BT_FIELD_STR)
			json_string(f, fl->str);
		else if (fl->kind == BT_FIELD_BOOL)
			fputs(fl->num ? "true" : "false", f);
		else
			fprintf(f, "%" PRId64, fl->num);
	}
	if (r->n_children || depth < 2) {
		if (r->n_fields)
			fputc(',', f);
		json_string(f, child_names[depth < 2 ? depth : 2]);
		fputs(":[", f);
		for (uint32_t i = 0; i < r->n_children; i++) {
			if (i)
				fputc(',', f);
			json_record(f, &r->children[i], depth + 1);
		}
		fputc(']', f);
	}
	fputc('}', f);
}

static int render(const struct bt_record *r, time_t now, int json, char **ret)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);

	if (!f)
		return -ENOMEM;
	if (json) {
		json_record(f, r, 0);
		fputc('\n', f);
	} else {
		text_record(f, r, now, 0);
	}
	if (fclose(f) != 0) {
		free(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

int status_format_text(const struct bt_record *daemon, time_t now, char **ret)
{
	return render(daemon, now, 0, ret);
}

int status_format_json(const struct bt_record *daemon, char **ret)
{
	return render(daemon, 0, 1, ret);
}
