/* conf_value.c - problem lists and the value parsers every section shares. */
#include "conf_value.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_msg(struct config_errors *e, char *msg)
{
	char **v;

	if (!msg) {
		e->nomem = true;
		return -ENOMEM;
	}
	v = realloc(e->msgs, (e->n + 1) * sizeof(*v));
	if (!v) {
		free(msg);
		e->nomem = true;
		return -ENOMEM;
	}
	e->msgs = v;
	e->msgs[e->n++] = msg;
	return 0;
}

/* prefix, then fmt: one message. */
static int add_vmsg(struct config_errors *e, const char *prefix, const char *fmt, va_list ap)
{
	char *body, *msg;
	int r;

	if (vasprintf(&body, fmt, ap) < 0)
		return -ENOMEM;
	r = asprintf(&msg, "%s%s", prefix, body);
	free(body);
	return add_msg(e, r < 0 ? NULL : msg);
}

int config_errors_add(struct config_errors *e, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = add_vmsg(e, "", fmt, ap);
	va_end(ap);
	return r;
}

void config_errors_clear(struct config_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->msgs[i]);
	free(e->msgs);
	e->msgs = NULL;
	e->n = 0;
	e->nomem = false;
}

int conf_error(const struct conf_pos *at, const char *fmt, ...)
{
	char prefix[4200];
	va_list ap;
	int r;

	snprintf(prefix, sizeof(prefix), "%s:%d: ", at->file, at->line);
	va_start(ap, fmt);
	r = add_vmsg(at->errs, prefix, fmt, ap);
	va_end(ap);
	return r;
}

int identity_error(struct config_errors *errs, const struct identity *id, const char *fmt, ...)
{
	char prefix[4200];
	va_list ap;
	int r;

	snprintf(prefix, sizeof(prefix), "%s:%d: [identity %s]: ", id->file, id->line, id->name);
	va_start(ap, fmt);
	r = add_vmsg(errs, prefix, fmt, ap);
	va_end(ap);
	return r ?: -EINVAL;
}

int conf_key_index(const char *const *keys, const char *key)
{
	for (int i = 0; keys && keys[i]; i++)
		if (!strcmp(keys[i], key))
			return i;
	return -1;
}

int conf_set_string(char **dst, const char *v)
{
	char *s = NULL;

	if (*v && !(s = strdup(v)))
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

int conf_set_path(const struct conf_pos *at, const char *key, const char *v, char **dst)
{
	if (*v && *v != '/')
		return conf_error(at, "%s: '%s' must be an absolute path", key, v) ?: -EINVAL;
	return conf_set_string(dst, v);
}

int conf_parse_bool(const struct conf_pos *at, const char *key, const char *v, bool *ret)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
		*ret = true;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
		*ret = false;
	else
		return conf_error(at, "%s: '%s' is not yes or no", key, v) ?: -EINVAL;
	return 0;
}

int conf_check_id(const struct conf_pos *at, const char *key, const char *v)
{
	if (!*v || strlen(v) > 256)
		return conf_error(at, "%s: must not be empty", key) ?: -EINVAL;
	for (const char *s = v; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_')
			return conf_error(at, "%s: '%s' is not a GUID or domain name", key, v)
				   ?: -EINVAL;
	return 0;
}

int conf_check_credential_name(const struct conf_pos *at, const char *key, const char *v)
{
	if (!*v)
		return 0;
	/* The value is not repeated: it might be a secret pasted by mistake. */
	if (strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))
		return conf_error(at, "%s: not a credential name (a file name, no '/')", key)
			   ?: -EINVAL;
	return 0;
}

int conf_set_base_url(const struct conf_pos *at, const char *key, const char *v, enum conf_url kind,
		      char **dst)
{
	size_t len = strlen(v), skip;

	if (!*v)
		return conf_set_string(dst, v);
	skip = !strncmp(v, "https://", 8)				? 8
	       : kind == CONF_URL_ENDPOINT && !strncmp(v, "http://", 7) ? 7
									: 0;
	while (len > skip && v[len - 1] == '/')
		len--;
	if (!skip || len == skip || strpbrk(v + skip, "?#@ \t") ||
	    (kind == CONF_URL_ENDPOINT && memchr(v + skip, '/', len - skip)))
		return conf_error(at, "%s: '%s' must be an %s", key, v,
				  kind == CONF_URL_ENDPOINT
				      ? "http:// or https:// URL with a host and no path"
				      : "https:// URL with no query")
			   ?: -EINVAL;
	free(*dst);
	return (*dst = strndup(v, len)) ? 0 : -ENOMEM;
}
