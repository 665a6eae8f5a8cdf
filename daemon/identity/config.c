/* config.c - reads the INI file with libinih, validates every key, resolves
 * users and groups, and loads secrets into secure memory. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <grp.h>
#include <limits.h>
#include <ini.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../proto/duration.h"
#include "../lib/certificate.h"
#include "../lib/log.h"
#include "../lib/secmem.h"

/* A config file is a page of text; refuse anything absurd before reading. */
#define CONFIG_SIZE_MAX (1024 * 1024)
/* A client secret is about 40 characters; leave room for odd ones. */
#define SECRET_SIZE_MAX (64 * 1024)
/* A certificate file with its chain and key, PEM or PKCS#12. */
#define CERTIFICATE_SIZE_MAX (256 * 1024)
/* Identity names travel in requests and logs; keep them short and plain. */
#define IDENTITY_NAME_MAX 64
/* Upper bounds that keep a typo from configuring something absurd. */
#define MAX_CLIENTS_LIMIT	1000000
#define FETCH_CONCURRENCY_LIMIT 256
#define DURATION_LIMIT		(7 * 86400)

#define DEFAULT_MIN_VALIDITY	  300
#define DEFAULT_MAX_CLIENTS	  4096
#define DEFAULT_FETCH_CONCURRENCY 8
#define DEFAULT_REQUEST_TIMEOUT	  30
#define DEFAULT_IDLE_TIMEOUT	  3600
#define DEFAULT_UID_CLIENTS	  256
#define DEFAULT_CLIENT_IDLE	  300
#define DEFAULT_COMPAT_LIFETIME	  (12 * 3600)
#define DEFAULT_SOCKET_MODE	  0660

struct parser {
	struct config *c;
	struct config_errors *errs;
	const char *name; /* file name for messages */
	const char *text; /* the file, NUL-terminated */
	const char *pos;
	int line;
	int long_line; /* the line being read did not fit inih's buffer */
	struct identity *cur;
	int default_line;
	int socket_line; /* of [daemon] socket =; 0: the default socket */
	char section[128];
	char **user_names;	     /* allow_users entries resolved after parsing */
	const char *credentials_dir; /* config_options.credentials_dir */
};

static int add_error(struct config_errors *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int add_error(struct config_errors *e, const char *fmt, ...)
{
	char *msg, **v;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	v = realloc(e->msgs, (e->n + 1) * sizeof(*v));
	if (!v) {
		free(msg);
		return -ENOMEM;
	}
	e->msgs = v;
	e->msgs[e->n++] = msg;
	return 0;
}

#define perr(p, fmt, ...) add_error((p)->errs, "%s:%d: " fmt, (p)->name, (p)->line, ##__VA_ARGS__)

void config_errors_clear(struct config_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->msgs[i]);
	free(e->msgs);
	e->msgs = NULL;
	e->n = 0;
}

/* ENTRA.md section 7. Batch's resource keeps its trailing slash. */
static const struct {
	const char *authority;
	const char *batch;
} clouds[] = {
    [CLOUD_PUBLIC] = {"https://login.microsoftonline.com", "https://batch.core.windows.net/"},
    [CLOUD_USGOV] = {"https://login.microsoftonline.us", "https://batch.core.usgovcloudapi.net/"},
    [CLOUD_CHINA] = {"https://login.chinacloudapi.cn", "https://batch.chinacloudapi.cn/"},
};

const char *cloud_authority(enum cloud c)
{
	return clouds[c].authority;
}

const char *cloud_batch_resource(enum cloud c)
{
	return clouds[c].batch;
}

static const char *const kind_names[] = {
    [CRED_SECRET] = "secret",
    [CRED_CERTIFICATE] = "certificate",
    [CRED_MANAGED_IDENTITY] = "managed-identity",
    [CRED_FEDERATED] = "federated",
    [CRED_DEVICE_CODE] = "device-code",
};

const char *credential_kind_name(enum credential_kind k)
{
	return k >= CRED_SECRET && k <= CRED_DEVICE_CODE ? kind_names[k] : "unknown";
}

static void identity_clear(struct identity *id)
{
	free(id->name);
	free(id->file);
	free(id->tenant);
	free(id->client_id);
	free(id->secret_file);
	free(id->secret_credential);
	secmem_free_str(id->secret);
	free(id->certificate_file);
	free(id->certificate_credential);
	free(id->key_file);
	free(id->passphrase_file);
	free(id->passphrase_credential);
	certificate_free(id->cert);
	free(id->object_id);
	free(id->resource_id);
	free(id->imds_endpoint);
	free(id->federated_token_file);
	for (size_t i = 0; i < id->n_resources; i++)
		free(id->resources[i]);
	free(id->resources);
	free(id->authority);
	free(id->allow_uids);
	free(id->allow_gids);
	memset(id, 0, sizeof(*id));
}

void config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_identities; i++)
		identity_clear(&c->identities[i]);
	free(c->identities);
	free(c->path);
	free(c->socket);
	free(c->ca_file);
	free(c->proxy);
	free(c->compat_endpoint);
	free(c->state_dir);
	free(c->state_key_credential);
	free(c);
}

/* --- value parsers: each returns 0, or reports the problem and returns -EINVAL
 * (-ENOMEM when it cannot) --- */

static int set_string(char **dst, const char *value)
{
	char *s;

	if (!*value) {
		free(*dst);
		*dst = NULL;
		return 0;
	}
	if (!(s = strdup(value)))
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int parse_bool(struct parser *p, const char *key, const char *v, bool *ret)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
		*ret = true;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
		*ret = false;
	else
		return perr(p, "%s: '%s' is not yes or no", key, v) ?: -EINVAL;
	return 0;
}

static int parse_secs(struct parser *p, const char *key, const char *v, uint32_t *ret)
{
	uint64_t s;

	if (bt_parse_duration(v, DURATION_LIMIT, &s) < 0)
		return perr(p, "%s: '%s' is not a duration up to 7d (like 90, 90s, 5m, 1h)", key, v)
			   ?: -EINVAL;
	*ret = (uint32_t)s;
	return 0;
}

static int parse_uint(struct parser *p, const char *key, const char *v, uint32_t min, uint32_t max,
		      int base, uint32_t *ret)
{
	unsigned long n;
	char *end;

	errno = 0;
	n = strtoul(v, &end, base);
	if (!*v || *end || errno || n < min || n > max || *v == '-')
		return perr(p, "%s: '%s' is not a number from %u to %u", key, v, min, max)
			   ?: -EINVAL;
	*ret = (uint32_t)n;
	return 0;
}

static int resolve_group(struct parser *p, const char *key, const char *name, gid_t *ret)
{
	struct group gr, *res = NULL;
	char buf[4096];
	uint32_t n;

	if (isdigit((unsigned char)*name))
		return parse_uint(p, key, name, 0, UINT32_MAX - 1, 10, &n) ?: (*ret = n, 0);
	if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || !res)
		return perr(p, "%s: no group named '%s' (create it, or use a numeric gid)", key,
			    name)
			   ?: -EINVAL;
	*ret = res->gr_gid;
	return 0;
}

/* Splits a comma- or space-separated list; calls fn for each item. */
static int each_item(struct parser *p, const char *key, const char *v,
		     int (*fn)(struct parser *, const char *, const char *, void *), void *arg)
{
	char *copy = strdup(v), *save = NULL;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *t = strtok_r(copy, ", \t", &save); t && r == 0;
	     t = strtok_r(NULL, ", \t", &save))
		r = fn(p, key, t, arg);
	free(copy);
	return r;
}

static int add_resource(struct parser *p, const char *key, const char *item, void *arg)
{
	struct identity *id = arg;
	char **v;

	for (const char *s = item; *s; s++)
		if (!isgraph((unsigned char)*s))
			return perr(p, "%s: '%s' has a character not allowed in a resource URI",
				    key, item)
				   ?: -EINVAL;
	v = realloc(id->resources, (id->n_resources + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	id->resources = v;
	if (!(v[id->n_resources] = strdup(item)))
		return -ENOMEM;
	id->n_resources++;
	return 0;
}

static int add_user(struct parser *p, const char *key, const char *item, void *arg)
{
	struct identity *id = arg;
	struct passwd pw, *res = NULL;
	char buf[4096];
	uid_t *v;
	uint32_t uid;
	int r;

	if (isdigit((unsigned char)*item)) {
		if ((r = parse_uint(p, key, item, 0, UINT32_MAX - 1, 10, &uid)) < 0)
			return r;
	} else if (getpwnam_r(item, &pw, buf, sizeof(buf), &res) == 0 && res) {
		uid = res->pw_uid;
	} else {
		return perr(p, "%s: no user named '%s' (check the name, or use a numeric uid)", key,
			    item)
			   ?: -EINVAL;
	}
	v = realloc(id->allow_uids, (id->n_allow_uids + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	id->allow_uids = v;
	v[id->n_allow_uids++] = uid;
	return 0;
}

static int add_group(struct parser *p, const char *key, const char *item, void *arg)
{
	struct identity *id = arg;
	gid_t gid, *v;
	int r;

	if ((r = resolve_group(p, key, item, &gid)) < 0)
		return r;
	v = realloc(id->allow_gids, (id->n_allow_gids + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	id->allow_gids = v;
	v[id->n_allow_gids++] = gid;
	return 0;
}

/* Tenants and client ids go into URL paths and form bodies: allow only the
 * characters GUIDs and domain names use. */
static int check_id_chars(struct parser *p, const char *key, const char *v)
{
	if (!*v || strlen(v) > 256)
		return perr(p, "%s: must not be empty", key) ?: -EINVAL;
	for (const char *s = v; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_')
			return perr(p, "%s: '%s' is not a GUID or domain name", key, v) ?: -EINVAL;
	return 0;
}

/* systemd credential names are file names in $CREDENTIALS_DIRECTORY. */
static int check_credential_name(struct parser *p, const char *key, const char *v)
{
	if (!*v)
		return 0;
	/* The value is not repeated: it might be a secret pasted by mistake. */
	if (strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))
		return perr(p, "%s: not a credential name (a file name, no '/')", key) ?: -EINVAL;
	return 0;
}

static int set_path(struct parser *p, const char *key, const char *v, char **dst)
{
	if (*v && *v != '/')
		return perr(p, "%s: '%s' must be an absolute path", key, v) ?: -EINVAL;
	return set_string(dst, v);
}

enum url_kind {
	URL_AUTHORITY, /* https://HOST[:PORT][/PATH] (ADFS-style authorities have a path) */
	URL_IMDS,      /* http(s)://HOST[:PORT], no path: the API path is appended */
};

/* A base URL with no query, fragment or credentials; trailing slashes
 * dropped. */
static int set_base_url(struct parser *p, const char *key, const char *v, enum url_kind kind,
			char **dst)
{
	size_t len = strlen(v), skip;

	if (!*v)
		return set_string(dst, v);
	skip = !strncmp(v, "https://", 8)		       ? 8
	       : kind == URL_IMDS && !strncmp(v, "http://", 7) ? 7
							       : 0;
	while (len > skip && v[len - 1] == '/')
		len--;
	if (!skip || len == skip || strpbrk(v + skip, "?#@ \t") ||
	    (kind == URL_IMDS && memchr(v + skip, '/', len - skip)))
		return perr(p, "%s: '%s' must be an %s", key, v,
			    kind == URL_IMDS ? "http:// or https:// URL with a host and no path"
					     : "https:// URL with no query")
			   ?: -EINVAL;
	free(*dst);
	return (*dst = strndup(v, len)) ? 0 : -ENOMEM;
}

/* compat_endpoint: 127.0.0.1:PORT, [::1]:PORT, or empty (off). Only a
 * loopback address: the endpoint serves tokens over plain HTTP. */
static int parse_loopback(struct parser *p, const char *key, const char *v, struct config *c)
{
	struct sockaddr_in *in = (struct sockaddr_in *)&c->compat_addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&c->compat_addr;
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon = strrchr(v, ':'), *written = v;
	size_t hlen;
	uint32_t port;
	int r;

	memset(&c->compat_addr, 0, sizeof(c->compat_addr));
	free(c->compat_endpoint);
	c->compat_endpoint = NULL;
	if (!*v)
		return 0;
	if (!colon || colon == v)
		goto bad;
	hlen = (size_t)(colon - v);
	if (v[0] == '[') {
		if (hlen < 3 || v[hlen - 1] != ']')
			goto bad;
		v++, hlen -= 2;
	}
	if (hlen >= sizeof(host))
		goto bad;
	memcpy(host, v, hlen);
	host[hlen] = '\0';
	if ((r = parse_uint(p, key, colon + 1, 0, 65535, 10, &port)) < 0)
		return r;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		if ((ntohl(in->sin_addr.s_addr) >> 24) != 127)
			goto not_loopback;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			goto not_loopback;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
	} else {
		goto bad;
	}
	return set_string(&c->compat_endpoint, written);
not_loopback:
	memset(&c->compat_addr, 0, sizeof(c->compat_addr));
	return perr(p,
		    "%s: '%s' is not a loopback address: the endpoint speaks plain HTTP, so it "
		    "listens on 127.0.0.1 or [::1] only",
		    key, host)
		   ?: -EINVAL;
bad:
	memset(&c->compat_addr, 0, sizeof(c->compat_addr));
	return perr(p, "%s: '%s' is not ADDRESS:PORT, like 127.0.0.1:50342 or [::1]:50342", key,
		    written)
		   ?: -EINVAL;
}

/* --- the keys: one table per section, which the parser's switch and the
 * "did you mean" hints both use, so the two cannot drift apart: a name added
 * to an enum needs its case (-Wswitch) and its entry in the table (the unit
 * test checks every entry is non-NULL and accepted). --- */

enum daemon_key_id {
	DK_SOCKET,
	DK_SOCKET_MODE,
	DK_SOCKET_GROUP,
	DK_ADMIN_GROUP,
	DK_LOG_LEVEL,
	DK_MIN_VALIDITY,
	DK_REQUEST_TIMEOUT,
	DK_IDLE_TIMEOUT,
	DK_MAX_CLIENTS,
	DK_FETCH_CONCURRENCY,
	DK_CA_FILE,
	DK_PROXY,
	DK_STATE_DIR,
	DK_STATE_KEY_CREDENTIAL,
	DK_COMPAT_ENDPOINT,
	DK_COMPAT_LIFETIME,
	DK_MAX_CLIENTS_PER_UID,
	DK_CLIENT_IDLE_TIMEOUT,
	DK_COUNT, /* not a key: the name is unknown */
};

static const char *const daemon_keys[DK_COUNT] = {
    [DK_SOCKET] = "socket",
    [DK_SOCKET_MODE] = "socket_mode",
    [DK_SOCKET_GROUP] = "socket_group",
    [DK_ADMIN_GROUP] = "admin_group",
    [DK_LOG_LEVEL] = "log_level",
    [DK_MIN_VALIDITY] = "min_validity",
    [DK_REQUEST_TIMEOUT] = "request_timeout",
    [DK_IDLE_TIMEOUT] = "idle_timeout",
    [DK_MAX_CLIENTS] = "max_clients",
    [DK_FETCH_CONCURRENCY] = "fetch_concurrency",
    [DK_CA_FILE] = "ca_file",
    [DK_PROXY] = "proxy",
    [DK_STATE_DIR] = "state_dir",
    [DK_STATE_KEY_CREDENTIAL] = "state_key_credential",
    [DK_COMPAT_ENDPOINT] = "compat_endpoint",
    [DK_COMPAT_LIFETIME] = "compat_lifetime",
    [DK_MAX_CLIENTS_PER_UID] = "max_clients_per_uid",
    [DK_CLIENT_IDLE_TIMEOUT] = "client_idle_timeout",
};

enum identity_key_id {
	IK_CREDENTIAL,
	IK_TENANT,
	IK_CLIENT_ID,
	IK_SECRET_FILE,
	IK_SECRET_CREDENTIAL,
	IK_CERTIFICATE_FILE,
	IK_CERTIFICATE_CREDENTIAL,
	IK_KEY_FILE,
	IK_CERTIFICATE_PASSPHRASE_FILE,
	IK_CERTIFICATE_PASSPHRASE_CREDENTIAL,
	IK_SEND_X5C,
	IK_ASSERTION_ALGORITHM,
	IK_OBJECT_ID,
	IK_RESOURCE_ID,
	IK_IMDS_ENDPOINT,
	IK_FEDERATED_TOKEN_FILE,
	IK_RESOURCES,
	IK_CLOUD,
	IK_AUTHORITY_HOST,
	IK_TOKEN_VERSION,
	IK_ALLOW_USERS,
	IK_ALLOW_GROUPS,
	IK_PREFETCH,
	IK_DEFAULT,
	IK_COUNT, /* not a key: the name is unknown */
};

static const char *const identity_keys[IK_COUNT] = {
    [IK_CREDENTIAL] = "credential",
    [IK_TENANT] = "tenant",
    [IK_CLIENT_ID] = "client_id",
    [IK_SECRET_FILE] = "secret_file",
    [IK_SECRET_CREDENTIAL] = "secret_credential",
    [IK_CERTIFICATE_FILE] = "certificate_file",
    [IK_CERTIFICATE_CREDENTIAL] = "certificate_credential",
    [IK_KEY_FILE] = "key_file",
    [IK_CERTIFICATE_PASSPHRASE_FILE] = "certificate_passphrase_file",
    [IK_CERTIFICATE_PASSPHRASE_CREDENTIAL] = "certificate_passphrase_credential",
    [IK_SEND_X5C] = "send_x5c",
    [IK_ASSERTION_ALGORITHM] = "assertion_algorithm",
    [IK_OBJECT_ID] = "object_id",
    [IK_RESOURCE_ID] = "resource_id",
    [IK_IMDS_ENDPOINT] = "imds_endpoint",
    [IK_FEDERATED_TOKEN_FILE] = "federated_token_file",
    [IK_RESOURCES] = "resources",
    [IK_CLOUD] = "cloud",
    [IK_AUTHORITY_HOST] = "authority_host",
    [IK_TOKEN_VERSION] = "token_version",
    [IK_ALLOW_USERS] = "allow_users",
    [IK_ALLOW_GROUPS] = "allow_groups",
    [IK_PREFETCH] = "prefetch",
    [IK_DEFAULT] = "default",
};

/* The index of key in a table of n names, or n if it is not there. */
static size_t key_index(const char *const *keys, size_t n, const char *key)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(keys[i], key))
			break;
	return i;
}

/* Levenshtein distance between a and b, ignoring case; b is a known key
 * (short), a is what was written, compared only when it is short too. */
#define KEY_HINT_LEN 64
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[KEY_HINT_LEN + 1], diag, up;

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cost =
			    tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			up = row[j];
			row[j] = diag + cost;
			if (up + 1 < row[j])
				row[j] = up + 1;
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			diag = up;
		}
	}
	return row[lb];
}

/* The known key closest to key, if one is close: at most two edits away
 * (fewer edits than key has characters), else one that key begins (at least
 * three characters of it); NULL if none. */
static const char *closest_key(const char *const *keys, size_t n, const char *key)
{
	size_t len = strlen(key), best_d = SIZE_MAX;
	const char *best = NULL;

	if (len == 0 || len > KEY_HINT_LEN)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t d = strlen(keys[i]) > KEY_HINT_LEN ? SIZE_MAX : edit_distance(key, keys[i]);
		if (d > 2 || d >= len)
			d = len >= 3 && !strncasecmp(keys[i], key, len) ? 3 : SIZE_MAX;
		if (d < best_d) {
			best_d = d;
			best = keys[i];
		}
	}
	return best;
}

/* Reports key as unknown in section ("[daemon]", "[identity NAME]"), with
 * the section it belongs in if it is the other section's, else the closest
 * key of this one. */
static int unknown_key(struct parser *p, const char *section, const char *key,
		       const char *const *keys, size_t n, const char *const *other, size_t n_other,
		       const char *other_section)
{
	const char *hint;

	if (key_index(other, n_other, key) < n_other)
		return perr(p, "unknown key '%s' in %s: %s = belongs in %s", key, section, key,
			    other_section)
			   ?: -EINVAL;
	if ((hint = closest_key(keys, n, key)))
		return perr(p, "unknown key '%s' in %s: did you mean %s?", key, section, hint)
			   ?: -EINVAL;
	return perr(p, "unknown key '%s' in %s", key, section) ?: -EINVAL;
}

const char *const *config_keys(bool identity, size_t *ret_n)
{
	*ret_n = identity ? IK_COUNT : DK_COUNT;
	return identity ? identity_keys : daemon_keys;
}

/* daemon_key() and identity_key() set one key from its value: 0, or
 * -EINVAL once the problem is reported, or -ENOMEM. */
static int daemon_key(struct parser *p, const char *key, const char *v)
{
	struct config *c = p->c;
	uint32_t n;

	switch ((enum daemon_key_id)key_index(daemon_keys, DK_COUNT, key)) {
	case DK_SOCKET:
		p->socket_line = p->line;
		return set_path(p, key, v, &c->socket);
	case DK_SOCKET_MODE:
		return parse_uint(p, key, v, 0, 0777, 8, &n) ?: (c->socket_mode = n, 0);
	case DK_SOCKET_GROUP:
		return *v ? resolve_group(p, key, v, &c->socket_gid) : 0;
	case DK_ADMIN_GROUP:
		return *v ? resolve_group(p, key, v, &c->admin_gid) : 0;
	case DK_LOG_LEVEL:
		if (log_parse_level(v, &c->log_level) < 0)
			return perr(p, "log_level: '%s' is not error, warning, info or debug", v)
				   ?: -EINVAL;
		return 0;
	case DK_MIN_VALIDITY:
		return parse_secs(p, key, v, &c->min_validity);
	case DK_REQUEST_TIMEOUT:
		return parse_secs(p, key, v, &c->request_timeout)
			   ?: (c->request_timeout
				   ? 0
				   : (perr(p, "request_timeout: must be at least 1s") ?: -EINVAL));
	case DK_IDLE_TIMEOUT:
		return parse_secs(p, key, v, &c->idle_timeout);
	case DK_MAX_CLIENTS:
		return parse_uint(p, key, v, 1, MAX_CLIENTS_LIMIT, 10, &c->max_clients);
	case DK_FETCH_CONCURRENCY:
		return parse_uint(p, key, v, 1, FETCH_CONCURRENCY_LIMIT, 10, &c->fetch_concurrency);
	case DK_CA_FILE:
		return set_string(&c->ca_file, v);
	case DK_PROXY:
		return set_string(&c->proxy, v);
	case DK_STATE_DIR:
		return set_path(p, key, v, &c->state_dir);
	case DK_STATE_KEY_CREDENTIAL:
		return check_credential_name(p, key, v) ?: set_string(&c->state_key_credential, v);
	case DK_COMPAT_ENDPOINT:
		return parse_loopback(p, key, v, c);
	case DK_COMPAT_LIFETIME:
		return parse_secs(p, key, v, &c->compat_lifetime)
			   ?: (c->compat_lifetime
				   ? 0
				   : (perr(p, "compat_lifetime: must be at least 1s") ?: -EINVAL));
	case DK_MAX_CLIENTS_PER_UID:
		return parse_uint(p, key, v, 1, MAX_CLIENTS_LIMIT, 10, &c->max_clients_per_uid);
	case DK_CLIENT_IDLE_TIMEOUT:
		return parse_secs(p, key, v, &c->client_idle_timeout)
			   ?: (c->client_idle_timeout
				   ? 0
				   : (perr(p, "client_idle_timeout: must be at least 1s")
					  ?: -EINVAL));
	case DK_COUNT:
		break;
	}
	return unknown_key(p, "[daemon]", key, daemon_keys, DK_COUNT, identity_keys, IK_COUNT,
			   "an [identity NAME] section");
}

static int identity_key(struct parser *p, const char *key, const char *v)
{
	struct identity *id = p->cur;
	char section[IDENTITY_NAME_MAX + 16];
	uint32_t n;

	switch ((enum identity_key_id)key_index(identity_keys, IK_COUNT, key)) {
	case IK_CREDENTIAL:
		id->credential_line = p->line;
		for (int k = CRED_SECRET; k <= CRED_DEVICE_CODE; k++)
			if (!strcmp(v, kind_names[k])) {
				id->kind = (enum credential_kind)k;
				return 0;
			}
		return perr(p,
			    "credential: '%s' is not one of secret, certificate, "
			    "managed-identity, federated, device-code",
			    v)
			   ?: -EINVAL;
	case IK_TENANT:
		return check_id_chars(p, key, v) ?: set_string(&id->tenant, v);
	case IK_CLIENT_ID:
		return check_id_chars(p, key, v) ?: set_string(&id->client_id, v);
	case IK_SECRET_FILE:
		return set_path(p, key, v, &id->secret_file);
	case IK_SECRET_CREDENTIAL:
		return check_credential_name(p, key, v) ?: set_string(&id->secret_credential, v);
	case IK_CERTIFICATE_FILE:
		return set_path(p, key, v, &id->certificate_file);
	case IK_CERTIFICATE_CREDENTIAL:
		return check_credential_name(p, key, v)
			   ?: set_string(&id->certificate_credential, v);
	case IK_KEY_FILE:
		return set_path(p, key, v, &id->key_file);
	case IK_CERTIFICATE_PASSPHRASE_FILE:
		return set_path(p, key, v, &id->passphrase_file);
	case IK_CERTIFICATE_PASSPHRASE_CREDENTIAL:
		return check_credential_name(p, key, v)
			   ?: set_string(&id->passphrase_credential, v);
	case IK_SEND_X5C:
		return parse_bool(p, key, v, &id->send_x5c);
	case IK_ASSERTION_ALGORITHM:
		if (!strcmp(v, "PS256"))
			id->assertion_alg = ASSERTION_PS256;
		else if (!strcmp(v, "RS256"))
			id->assertion_alg = ASSERTION_RS256;
		else
			return perr(p, "assertion_algorithm: '%s' is not PS256 or RS256", v)
				   ?: -EINVAL;
		return 0;
	case IK_OBJECT_ID:
		return check_id_chars(p, key, v) ?: set_string(&id->object_id, v);
	case IK_RESOURCE_ID:
		if (*v != '/' || strpbrk(v, " \t?#&%"))
			return perr(p,
				    "resource_id: '%s' is not an Azure resource ID "
				    "(/subscriptions/.../userAssignedIdentities/NAME)",
				    v)
				   ?: -EINVAL;
		return set_string(&id->resource_id, v);
	case IK_IMDS_ENDPOINT:
		return set_base_url(p, key, v, URL_IMDS, &id->imds_endpoint);
	case IK_FEDERATED_TOKEN_FILE:
		return set_path(p, key, v, &id->federated_token_file);
	case IK_RESOURCES: /* each occurrence adds to the list (PRODUCT.md) */
		return each_item(p, key, v, add_resource, id);
	case IK_CLOUD:
		if (!strcmp(v, "public"))
			id->cloud = CLOUD_PUBLIC;
		else if (!strcmp(v, "usgov"))
			id->cloud = CLOUD_USGOV;
		else if (!strcmp(v, "china"))
			id->cloud = CLOUD_CHINA;
		else
			return perr(p, "cloud: '%s' is not public, usgov or china", v) ?: -EINVAL;
		return 0;
	case IK_AUTHORITY_HOST:
		return set_base_url(p, key, v, URL_AUTHORITY, &id->authority);
	case IK_TOKEN_VERSION:
		return parse_uint(p, key, v, 1, 2, 10, &n) ?: (id->token_version = (int)n, 0);
	case IK_ALLOW_USERS:
		return each_item(p, key, v, add_user, id);
	case IK_ALLOW_GROUPS:
		return each_item(p, key, v, add_group, id);
	case IK_PREFETCH:
		return parse_bool(p, key, v, &id->prefetch);
	case IK_DEFAULT: {
		int r = parse_bool(p, key, v, &id->is_default);
		if (r == 0 && id->is_default)
			p->default_line = p->line;
		return r;
	}
	case IK_COUNT:
		break;
	}
	snprintf(section, sizeof(section), "[identity %s]", id->name);
	return unknown_key(p, section, key, identity_keys, IK_COUNT, daemon_keys, DK_COUNT,
			   "[daemon]");
}

static int check_name(struct parser *p, const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > IDENTITY_NAME_MAX)
		return perr(p, "[identity]: a name of 1 to %d characters is needed",
			    IDENTITY_NAME_MAX)
			   ?: -EINVAL;
	for (const char *s = name; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.@", *s))
			return perr(p, "[identity %s]: names use letters, digits and - _ . @", name)
				   ?: -EINVAL;
	return 0;
}

static int begin_section(struct parser *p, const char *section)
{
	struct config *c = p->c;
	struct identity *v;
	const char *name;
	int r;

	snprintf(p->section, sizeof(p->section), "%s", section);
	p->cur = NULL;
	if (!strcmp(section, "daemon"))
		return 0;
	if (strncmp(section, "identity ", 9) != 0)
		return perr(p, "unknown section [%s]: use [daemon] or [identity NAME]", section)
			   ?: -EINVAL;
	name = section + 9;
	while (*name == ' ')
		name++;
	if ((r = check_name(p, name)) < 0)
		return r;
	if (config_find_identity(c, name))
		return perr(p, "[identity %s] is defined twice", name) ?: -EINVAL;
	v = realloc(c->identities, (c->n_identities + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	c->identities = v;
	p->cur = &v[c->n_identities++];
	memset(p->cur, 0, sizeof(*p->cur));
	p->cur->line = p->line;
	p->cur->token_version = 2;
	p->cur->cloud = CLOUD_PUBLIC;
	if (!(p->cur->name = strdup(name)) || !(p->cur->file = strdup(p->name)))
		return -ENOMEM;
	return 0;
}

/* The length of value without a trailing '#' comment. inih as distributions
 * build it ends a value only at a ';' that follows whitespace; PRODUCT.md
 * promises '#' too, so its rule is applied here for '#': a '#' after
 * whitespace, or first in the value (inih has skipped the whitespace after
 * the '='), starts a comment; a '#' inside a word does not. The whitespace
 * before the comment goes with it, as inih strips it before a ';'. */
static size_t value_length(const char *value)
{
	size_t end = 0;

	for (size_t i = 0; value[i]; i++) {
		if (value[i] == '#' && (i == 0 || isspace((unsigned char)value[i - 1])))
			break;
		if (!isspace((unsigned char)value[i]))
			end = i + 1;
	}
	return end;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parser *p = user;
	size_t n = value_length(value);
	char *v = NULL;
	int r;

	if (p->long_line) {
		/* Reported once by the reader; the fragment is not a key. */
		return 1;
	}
	if (strcmp(section, p->section) != 0 && (r = begin_section(p, section)) == -ENOMEM)
		return 0;
	if (value[n] && !(v = strndup(value, n)))
		return 0;
	if (!strcmp(section, "daemon"))
		r = daemon_key(p, key, v ? v : value);
	else if (p->cur)
		r = identity_key(p, key, v ? v : value);
	else
		r = 0; /* the section was already reported */
	free(v);
	return r == -ENOMEM ? 0 : 1;
}

/* inih calls no handler for a section without keys, so an empty
 * [identity NAME] would vanish silently; headers are opened here, as the
 * line goes by, exactly as inih will read them (text between [ and ]). */
static void section_header(struct parser *p, const char *line)
{
	char name[sizeof(p->section)];
	const char *end;
	size_t n;

	while (*line == ' ' || *line == '\t')
		line++;
	if (*line != '[' || !(end = strchr(line, ']')))
		return;
	n = (size_t)(end - line - 1);
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	memcpy(name, line + 1, n);
	name[n] = 0;
	if (begin_section(p, name) == -ENOMEM)
		perr(p, "out of memory");
}

/* inih's reader: hands out the in-memory file one line at a time, which is
 * how we know the line number of every key (inih's own is compiled out). */
static char *reader(char *str, int num, void *stream)
{
	struct parser *p = stream;
	const char *nl;
	size_t n;

	if (!*p->pos)
		return NULL;
	nl = strchr(p->pos, '\n');
	n = nl ? (size_t)(nl - p->pos) + 1 : strlen(p->pos);
	p->line++;
	p->long_line = 0;
	if (n > (size_t)num - 1) {
		perr(p, "line longer than %d characters", num - 2);
		p->long_line = 1;
		n = 0;
		str[n++] = '\n';
		str[n] = 0;
		p->pos = nl ? nl + 1 : p->pos + strlen(p->pos);
		return str;
	}
	memcpy(str, p->pos, n);
	str[n] = 0;
	p->pos += n;
	section_header(p, str);
	return str;
}

/* A file holding key material: a path, or a systemd credential name. */
struct protected_file {
	const char *what; /* "secret", "certificate", ... for messages */
	const char *path;
	const char *credential;
	size_t max;
	bool binary; /* keep trailing whitespace (PKCS#12) */
};

#define id_error(errs, id, fmt, ...)                                                               \
	(add_error((errs), "%s:%d: [identity %s]: " fmt, (id)->file, (id)->line, (id)->name,       \
		   ##__VA_ARGS__)                                                                  \
	     ?: -EINVAL)

/* Where the systemd credential NAME is: in $CREDENTIALS_DIRECTORY inside the
 * unit; outside it, with credentials_dir set (root checking the installed
 * config), where the packaged unit's LoadCredential= takes batchtok_FILE
 * from: credentials_dir/FILE. Messages repeat a name only when a file of
 * that name exists: a value that names nothing may be a secret pasted by
 * mistake. */
static int credential_path(const struct identity *id, const struct protected_file *f,
			   const char *credentials_dir, char *buf, size_t n,
			   struct config_errors *errs)
{
	static const char prefix[] = CREDENTIAL_PREFIX;
	const char *env = getenv("CREDENTIALS_DIRECTORY"), *name = f->credential;
	const char *rest = name + sizeof(prefix) - 1;
	bool prefixed = !strncmp(name, prefix, sizeof(prefix) - 1);
	char guess[4096];
	int k;

	if (env && *env) {
		k = snprintf(buf, n, "%s/%s", env, name);
		snprintf(guess, sizeof(guess), "%s/%s%s", env, prefix, name);
	} else if (credentials_dir && prefixed) {
		if (!*rest || !strcmp(rest, ".") || !strcmp(rest, ".."))
			return id_error(errs, id, "%s_credential = %s: no file name after %s",
					f->what, name, prefix);
		k = snprintf(buf, n, "%s/%s", credentials_dir, rest);
	} else if (credentials_dir) {
		k = snprintf(buf, n, "%s/%s", credentials_dir, name);
		if (k > 0 && (size_t)k < n && access(buf, F_OK) == 0)
			return id_error(errs, id,
					"%s_credential = %s: the unit passes %s as %s%s: write "
					"that name",
					f->what, name, buf, prefix, name);
		return id_error(errs, id,
				"%s_credential: the packaged unit passes each file FILE in %s as "
				"%sFILE: put the file there and write that name",
				f->what, credentials_dir, prefix);
	} else {
		return id_error(errs, id,
				"%s_credential needs LoadCredential= in the service unit "
				"($CREDENTIALS_DIRECTORY is not set); run by hand, use "
				"%s_file = PATH",
				f->what, f->what);
	}
	if (k <= 0 || (size_t)k >= n)
		return id_error(errs, id, "%s_credential: the name is too long", f->what);
	/* The name the unit gives is batchtok_FILE; FILE alone is a common
	 * slip. */
	if (env && *env && !prefixed && access(buf, F_OK) < 0 && access(guess, F_OK) == 0)
		return id_error(errs, id,
				"%s_credential = %s: no such credential; the unit passes it as "
				"%s%s: write that name",
				f->what, name, prefix, name);
	return 0;
}

/* Reads a key-material file into secure memory after checking, as ssh does,
 * that nobody but its owner (and group, for 0640) may read it and that it
 * belongs to root or the daemon's user. *ret is NUL-terminated. */
static int read_protected(const struct identity *id, const struct protected_file *f,
			  const char *credentials_dir, char **ret, size_t *ret_len,
			  struct config_errors *errs)
{
	char path[4096], *buf = NULL;
	struct stat st;
	ssize_t n = 0;
	int fd, r = 0;

	if (f->credential) {
		if ((r = credential_path(id, f, credentials_dir, path, sizeof(path), errs)) < 0)
			return r;
	} else {
		snprintf(path, sizeof(path), "%s", f->path);
	}
	/* systemd passes regular files alone as credentials, never what a
	 * symlink points to: read the same outside the unit. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (f->credential ? O_NOFOLLOW : 0));
	if (fd < 0 && errno == ELOOP && f->credential)
		return id_error(errs, id,
				"%s %s is a symbolic link: systemd passes only regular files as "
				"credentials",
				f->what, path);
	if (fd < 0)
		return id_error(errs, id, "cannot open %s %s: %s", f->what, path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		r = id_error(errs, id, "%s %s is not a regular file", f->what, path);
	else if (st.st_mode & 0027)
		r = id_error(errs, id,
			     "%s %s is accessible by others (mode %04o): run chmod 600 %s", f->what,
			     path, st.st_mode & 07777, path);
	else if (st.st_uid != geteuid() && st.st_uid != 0)
		r = id_error(errs, id,
			     "%s %s is owned by uid %u, not by root or the daemon's user (uid %u): "
			     "chown it",
			     f->what, path, st.st_uid, geteuid());
	else if ((size_t)st.st_size > f->max)
		r = id_error(errs, id, "%s %s is larger than %zu bytes", f->what, path, f->max);
	else if (!(buf = secmem_alloc((size_t)st.st_size + 1)))
		r = -ENOMEM;
	else {
		n = read(fd, buf, (size_t)st.st_size);
		/* Editors and echo leave a newline; it is never part of a secret. */
		while (!f->binary && n > 0 &&
		       (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			n--;
		if (n <= 0)
			r = id_error(errs, id, "%s %s is empty or unreadable", f->what, path);
		else
			buf[n] = 0;
	}
	close(fd);
	if (r < 0) {
		secmem_free(buf, buf ? (size_t)st.st_size + 1 : 0);
		return r;
	}
	*ret = secmem_strndup(buf, (size_t)n);
	*ret_len = (size_t)n;
	secmem_free(buf, (size_t)st.st_size + 1);
	return *ret ? 0 : -ENOMEM;
}

static int load_secret(struct identity *id, const char *credentials_dir, struct config_errors *errs)
{
	struct protected_file f = {"secret", id->secret_file, id->secret_credential,
				   SECRET_SIZE_MAX, false};
	size_t n;

	return read_protected(id, &f, credentials_dir, &id->secret, &n, errs);
}

/* Loads the certificate, its key and passphrase: --check-config proves they
 * load and match. */
static int load_certificate(struct identity *id, const char *credentials_dir,
			    struct config_errors *errs)
{
	struct protected_file cf = {"certificate", id->certificate_file, id->certificate_credential,
				    CERTIFICATE_SIZE_MAX, true};
	struct protected_file kf = {"key", id->key_file, NULL, CERTIFICATE_SIZE_MAX, false};
	struct protected_file pf = {"certificate_passphrase", id->passphrase_file,
				    id->passphrase_credential, SECRET_SIZE_MAX, false};
	char *data = NULL, *key = NULL, *pass = NULL, err[512] = "";
	size_t data_len = 0, key_len = 0, n;
	int r;

	r = read_protected(id, &cf, credentials_dir, &data, &data_len, errs);
	if (r == 0 && id->key_file)
		r = read_protected(id, &kf, credentials_dir, &key, &key_len, errs);
	if (r == 0 && (id->passphrase_file || id->passphrase_credential))
		r = read_protected(id, &pf, credentials_dir, &pass, &n, errs);
	if (r == 0) {
		/* A secure-heap string may be longer than what it holds. */
		r = certificate_load(data, data_len, key, key_len, pass, &id->cert, err,
				     sizeof(err));
		if (r == -ENOMEM)
			;
		else if (r < 0)
			r = id_error(errs, id, "certificate %s: %s",
				     id->certificate_file ? id->certificate_file
							  : id->certificate_credential,
				     err);
	}
	secmem_free(data, data_len + 1);
	secmem_free(key, key_len + 1);
	secmem_free_str(pass);
	return r;
}

/* Environment defaults for federated credentials, as the AKS workload
 * identity webhook injects them (ENTRA.md section 5). */
static int federated_defaults(struct parser *p, struct identity *id)
{
	const char *v;

	if (!id->tenant && (v = getenv("AZURE_TENANT_ID")) && *v && !(id->tenant = strdup(v)))
		return -ENOMEM;
	if (!id->client_id && (v = getenv("AZURE_CLIENT_ID")) && *v && !(id->client_id = strdup(v)))
		return -ENOMEM;
	if (!id->federated_token_file && (v = getenv("AZURE_FEDERATED_TOKEN_FILE")) && *v == '/' &&
	    !(id->federated_token_file = strdup(v)))
		return -ENOMEM;
	/* The webhook sets it, sometimes with a trailing slash. */
	if (!id->authority && (v = getenv("AZURE_AUTHORITY_HOST")) && *v)
		return set_base_url(p, "AZURE_AUTHORITY_HOST", v, URL_AUTHORITY, &id->authority) ==
			       -ENOMEM
			   ? -ENOMEM
			   : 0;
	return 0;
}

/* Keys that make sense for one kind of credential only. */
static void check_not_for(struct parser *p, const struct identity *id, const char *key,
			  const void *set, enum credential_kind only)
{
	if (set && id->kind && id->kind != only)
		perr(p, "[identity %s]: %s = applies to credential = %s, not %s", id->name, key,
		     credential_kind_name(only), credential_kind_name(id->kind));
}

static int check_identity(struct parser *p, struct identity *id)
{
	const char *n = id->name;

	check_not_for(p, id, "secret_file", id->secret_file, CRED_SECRET);
	check_not_for(p, id, "secret_credential", id->secret_credential, CRED_SECRET);
	check_not_for(p, id, "certificate_file", id->certificate_file, CRED_CERTIFICATE);
	check_not_for(p, id, "certificate_credential", id->certificate_credential,
		      CRED_CERTIFICATE);
	check_not_for(p, id, "key_file", id->key_file, CRED_CERTIFICATE);
	check_not_for(p, id, "certificate_passphrase_file", id->passphrase_file, CRED_CERTIFICATE);
	check_not_for(p, id, "certificate_passphrase_credential", id->passphrase_credential,
		      CRED_CERTIFICATE);
	check_not_for(p, id, "object_id", id->object_id, CRED_MANAGED_IDENTITY);
	check_not_for(p, id, "resource_id", id->resource_id, CRED_MANAGED_IDENTITY);
	check_not_for(p, id, "imds_endpoint", id->imds_endpoint, CRED_MANAGED_IDENTITY);
	check_not_for(p, id, "federated_token_file", id->federated_token_file, CRED_FEDERATED);

	switch (id->kind) {
	case CRED_SECRET:
		if (!id->secret_file == !id->secret_credential)
			perr(p,
			     "[identity %s]: give exactly one of secret_file = or "
			     "secret_credential =",
			     n);
		break;
	case CRED_CERTIFICATE:
		if (!id->certificate_file == !id->certificate_credential)
			perr(p,
			     "[identity %s]: give exactly one of certificate_file = or "
			     "certificate_credential =",
			     n);
		if (id->passphrase_file && id->passphrase_credential)
			perr(p,
			     "[identity %s]: give at most one of certificate_passphrase_file = "
			     "or certificate_passphrase_credential =",
			     n);
		break;
	case CRED_MANAGED_IDENTITY:
		if (!!id->client_id + !!id->object_id + !!id->resource_id > 1)
			perr(p,
			     "[identity %s]: a user-assigned identity is chosen by one of "
			     "client_id =, object_id = or resource_id =, not several",
			     n);
		if (!id->imds_endpoint && !(id->imds_endpoint = strdup(IMDS_DEFAULT_ENDPOINT)))
			return -ENOMEM;
		return 0; /* no tenant or authority: IMDS knows them */
	case CRED_FEDERATED:
		if (federated_defaults(p, id) < 0)
			return -ENOMEM;
		if (!id->federated_token_file)
			perr(p,
			     "[identity %s]: federated_token_file = is missing (or set "
			     "AZURE_FEDERATED_TOKEN_FILE in the daemon's environment)",
			     n);
		break;
	case CRED_DEVICE_CODE:
		if (id->token_version != 2)
			perr(p, "[identity %s]: device-code sign-in needs token_version = 2", n);
		if (!id->tenant && !(id->tenant = strdup("organizations")))
			return -ENOMEM;
		if (!id->client_id && !(id->client_id = strdup(AZURE_CLI_CLIENT_ID)))
			return -ENOMEM;
		break;
	}
	if (!id->tenant)
		perr(p, "[identity %s]: tenant = is missing (your directory's tenant id)", n);
	if (!id->client_id)
		perr(p, "[identity %s]: client_id = is missing (the application id)", n);
	return 0;
}

static int validate(struct parser *p, bool load_secrets)
{
	struct config *c = p->c;
	int r = 0, defaults = 0;

	for (size_t i = 0; i < c->n_identities; i++) {
		struct identity *id = &c->identities[i];
		int before = (int)p->errs->n;
		p->line = id->line;
		/* A credential = whose value was wrong is reported where it is. */
		if (!id->kind && !id->credential_line)
			perr(p,
			     "[identity %s]: credential = is missing (secret, certificate, "
			     "managed-identity, federated or device-code)",
			     id->name);
		if ((r = check_identity(p, id)) < 0)
			return r;
		if (!id->authority && !(id->authority = strdup(cloud_authority(id->cloud))))
			return -ENOMEM;
		if (id->n_resources == 0) {
			r = add_resource(p, "resources", cloud_batch_resource(id->cloud), id);
			if (r < 0)
				return r;
		}
		if (id->is_default)
			defaults++;
		if ((int)p->errs->n == before && load_secrets) {
			if (id->kind == CRED_SECRET)
				r = load_secret(id, p->credentials_dir, p->errs);
			else if (id->kind == CRED_CERTIFICATE)
				r = load_certificate(id, p->credentials_dir, p->errs);
			else if (id->kind == CRED_FEDERATED &&
				 access(id->federated_token_file, R_OK))
				r = id_error(p->errs, id,
					     "cannot read federated_token_file %s: %s (is the "
					     "projected service-account token mounted?)",
					     id->federated_token_file, strerror(errno));
			if (r == -ENOMEM)
				return r;
			r = 0;
		}
	}
	if (defaults > 1) {
		p->line = p->default_line;
		perr(p, "more than one identity says default = yes; keep one");
	}
	for (size_t i = 0; i < c->n_identities; i++)
		if (c->identities[i].is_default)
			c->default_identity = &c->identities[i];
	if (!c->default_identity && c->n_identities == 1)
		c->default_identity = &c->identities[0];
	if (c->n_identities == 0)
		add_error(p->errs,
			  "%s: no [identity NAME] section: add one (see batchtokd.conf(5))",
			  p->name);
	return p->errs->n ? -EINVAL : 0;
}

/* The daemon makes only the last directory of its socket's path: the one
 * above it belongs to systemd (/run) or the user ($XDG_RUNTIME_DIR). A path
 * whose directory and the directory above are both missing would fail at
 * bind; say so now, with the line and the fix. Under socket activation the
 * path is not bound, but the packaged socket unit's directory exists then.
 * A directory that cannot be searched is not reported: whoever checks may
 * not be the daemon's user. */
static void check_socket_dir(struct parser *p, const char *socket)
{
	char dir[PATH_MAX], parent[PATH_MAX], where[PATH_MAX + 64], *slash;
	const char *fix = p->socket_line ? "choose" : "set socket = in [daemon] to";
	struct stat st;
	int err;

	if (!socket || snprintf(dir, sizeof(dir), "%s", socket) >= (int)sizeof(dir) ||
	    !(slash = strrchr(dir, '/')) || slash == dir)
		return;
	*slash = 0;
	snprintf(parent, sizeof(parent), "%s", dir);
	slash = strrchr(parent, '/');
	if (slash == parent)
		slash[1] = 0; /* the root */
	else
		*slash = 0;
	if (p->socket_line)
		snprintf(where, sizeof(where), "%s:%d: socket", p->name, p->socket_line);
	else
		snprintf(where, sizeof(where), "%s: the default socket %s", p->name, socket);
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return;
	err = stat(parent, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
	if (err == 0 && access(dir, F_OK) < 0)
		return; /* the daemon makes dir */
	if (err == 0)
		add_error(p->errs, "%s: %s is not a directory: %s a socket in a directory", where,
			  dir, fix);
	else if (err == ENOENT)
		add_error(p->errs,
			  "%s: the directory %s does not exist, nor %s above it, and batchtokd "
			  "creates only the last one: create %s (mkdir -p %s), or %s a socket in "
			  "an existing directory",
			  where, dir, parent, parent, parent, fix);
	else if (err == ENOTDIR)
		add_error(p->errs,
			  "%s: %s cannot be a directory: a part of its path is a file: %s a socket "
			  "in a directory",
			  where, dir, fix);
}

/* opts NULL: a config in memory, whose secrets are not read. */
static int parse_text(const char *text, const char *name, const struct config_options *opts,
		      struct config **ret, struct config_errors *errs)
{
	struct parser p = {.errs = errs, .name = name, .text = text, .pos = text};
	bool load_secrets = opts != NULL;
	const char *default_socket = opts ? opts->default_socket : NULL;
	const char *default_state_dir = opts ? opts->default_state_dir : NULL;
	struct config *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	c->socket_mode = DEFAULT_SOCKET_MODE;
	c->socket_gid = (gid_t)-1;
	c->admin_gid = (gid_t)-1;
	c->log_level = LOG_INFO;
	c->min_validity = DEFAULT_MIN_VALIDITY;
	c->max_clients = DEFAULT_MAX_CLIENTS;
	c->fetch_concurrency = DEFAULT_FETCH_CONCURRENCY;
	c->request_timeout = DEFAULT_REQUEST_TIMEOUT;
	c->idle_timeout = DEFAULT_IDLE_TIMEOUT;
	c->compat_lifetime = DEFAULT_COMPAT_LIFETIME;
	c->max_clients_per_uid = DEFAULT_UID_CLIENTS;
	c->client_idle_timeout = DEFAULT_CLIENT_IDLE;
	p.c = c;
	p.credentials_dir = opts ? opts->credentials_dir : NULL;
	if (!(c->path = strdup(name)))
		goto nomem;
	r = ini_parse_stream(reader, &p, handler, &p);
	if (r == -2)
		goto nomem;
	if (r > 0) {
		p.line = r;
		perr(&p, "syntax error: expected [section] or key = value");
	}
	if (validate(&p, load_secrets) == -ENOMEM)
		goto nomem;
	if (!c->socket && default_socket && !(c->socket = strdup(default_socket)))
		goto nomem;
	if (opts)
		check_socket_dir(&p, c->socket);
	if (!c->state_dir && default_state_dir && !(c->state_dir = strdup(default_state_dir)))
		goto nomem;
	if (errs->n) {
		config_free(c);
		return -EINVAL;
	}
	*ret = c;
	return 0;
nomem:
	config_free(c);
	add_error(errs, "%s: out of memory", name);
	return -ENOMEM;
}

int config_parse_string(const char *text, const char *name, struct config **ret,
			struct config_errors *errs)
{
	return parse_text(text, name, NULL, ret, errs);
}

int config_load(const struct config_options *opts, struct config **ret, struct config_errors *errs)
{
	struct stat st;
	char *text;
	ssize_t n;
	int fd, r;

	fd = open(opts->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		add_error(errs, "%s: cannot open the config file: %s", opts->path, strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_SIZE_MAX) {
		close(fd);
		add_error(errs, "%s: not a regular file of at most 1 MiB", opts->path);
		return -EINVAL;
	}
	if (st.st_mode & 0002) {
		close(fd);
		add_error(errs, "%s: the config file is writable by anyone: run chmod o-w %s",
			  opts->path, opts->path);
		return -EINVAL;
	}
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -ENOMEM;
	}
	n = read(fd, text, (size_t)st.st_size);
	close(fd);
	if (n < 0) {
		r = -errno;
		add_error(errs, "%s: cannot read the config file: %s", opts->path, strerror(errno));
		free(text);
		return r;
	}
	text[n] = 0;
	if (memchr(text, 0, (size_t)n)) {
		add_error(errs, "%s: the config file holds a NUL byte; it is not text", opts->path);
		free(text);
		return -EINVAL;
	}
	r = parse_text(text, opts->path, opts, ret, errs);
	free(text);
	return r;
}

struct identity *config_find_identity(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_identities; i++)
		if (c->identities[i].name && strcmp(c->identities[i].name, name) == 0)
			return &c->identities[i];
	return NULL;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool identity_same_credential(const struct identity *a, const struct identity *b)
{
	return a->kind == b->kind && a->token_version == b->token_version &&
	       str_eq(a->authority, b->authority) && str_eq(a->tenant, b->tenant) &&
	       str_eq(a->client_id, b->client_id) && str_eq(a->object_id, b->object_id) &&
	       str_eq(a->resource_id, b->resource_id) &&
	       str_eq(a->imds_endpoint, b->imds_endpoint) &&
	       str_eq(a->federated_token_file, b->federated_token_file) &&
	       a->send_x5c == b->send_x5c && a->assertion_alg == b->assertion_alg &&
	       certificate_equal(a->cert, b->cert) &&
	       (a->secret == b->secret ||
		(a->secret && b->secret && secmem_equal(a->secret, b->secret)));
}

/* The configured resource equal to want[0, n), or differing from it only by
 * one trailing slash on either side. */
static const char *resource_match(const struct identity *id, const char *want, size_t n)
{
	for (size_t i = 0; i < id->n_resources; i++)
		if (strlen(id->resources[i]) == n && !strncmp(id->resources[i], want, n))
			return id->resources[i];
	for (size_t i = 0; n && i < id->n_resources; i++) {
		const char *have = id->resources[i];
		size_t h = strlen(have);
		if ((h == n + 1 && have[n] == '/' && !strncmp(have, want, n)) ||
		    (n == h + 1 && want[h] == '/' && !strncmp(have, want, h)))
			return have;
	}
	return NULL;
}

const char *identity_resource(const struct identity *id, const char *resource, const char *scope)
{
	static const char suffix[] = "/.default";
	size_t n;

	if (scope && *scope) {
		n = strlen(scope);
		if (n <= sizeof(suffix) - 1 || strcmp(scope + n - (sizeof(suffix) - 1), suffix))
			return NULL;
		return resource_match(id, scope, n - (sizeof(suffix) - 1));
	}
	if (!resource || !*resource)
		return id->resources[0];
	return resource_match(id, resource, strlen(resource));
}
