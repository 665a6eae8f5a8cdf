/* conf_value.h - what the config parser and every credential kind share to
 * read a key: the list of problems found, each "FILE:LINE: what is wrong and
 * how to fix it", and the parsers of common kinds of value.
 *
 * Every parser returns 0; or reports the problem and returns -EINVAL; or
 * -ENOMEM. Reporting functions return 0 or -ENOMEM. */
#ifndef BATCHTOK_DAEMON_CONF_VALUE_H
#define BATCHTOK_DAEMON_CONF_VALUE_H

#include <stdbool.h>
#include <stddef.h>

#include "identity.h"

/* Problems found while loading, in file order. */
struct config_errors {
	char **msgs;
	size_t n;
	bool nomem; /* a message could not be kept: the list is incomplete */
};

/* Where a value was read, for messages. */
struct conf_pos {
	struct config_errors *errs;
	const char *file;
	int line;
};

int config_errors_add(struct config_errors *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void config_errors_clear(struct config_errors *e);

/* "FILE:LINE: " and the message. */
int conf_error(const struct conf_pos *at, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "FILE:LINE: [identity NAME]: " and the message, at the section's line;
 * returns -EINVAL, or -ENOMEM if it could not. */
int identity_error(struct config_errors *errs, const struct identity *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The index of key in a NULL-terminated table, or -1. */
int conf_key_index(const char *const *keys, const char *key);

/* Sets *dst to a copy of v, or to NULL if v is empty. */
int conf_set_string(char **dst, const char *v);
/* An absolute path, or empty. */
int conf_set_path(const struct conf_pos *at, const char *key, const char *v, char **dst);
int conf_parse_bool(const struct conf_pos *at, const char *key, const char *v, bool *ret);
/* Tenants and client ids go into URL paths and form bodies: only the
 * characters GUIDs and domain names use. */
int conf_check_id(const struct conf_pos *at, const char *key, const char *v);
/* A systemd credential name: a file name in $CREDENTIALS_DIRECTORY. */
int conf_check_credential_name(const struct conf_pos *at, const char *key, const char *v);

enum conf_url {
	CONF_URL_AUTHORITY, /* https://HOST[:PORT][/PATH] (ADFS authorities have a path) */
	CONF_URL_ENDPOINT,  /* http(s)://HOST[:PORT], no path: an API path is appended */
};
/* A base URL with no query, fragment or credentials; trailing slashes
 * dropped. Empty sets NULL. */
int conf_set_base_url(const struct conf_pos *at, const char *key, const char *v, enum conf_url kind,
		      char **dst);

#endif
