/* config.c - reads the INI file and its drop-ins with libinih, validates
 * every key, resolves users and groups, and has each identity's kind of
 * credential read its own keys and load its key material. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
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
#include <sys/un.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "../../proto/duration.h"
#include "credential.h"
#include "../lib/fileio.h"
#include "../lib/guard.h"
#include "../lib/log.h"
#include "../lib/pattern.h"

/* A config file is a page of text; refuse anything absurd before reading. */
#define CONFIG_SIZE_MAX (1024 * 1024)
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
/* The managed identity service's published limits per machine: 20 requests
 * a second and 5 at once (ENTRA.md 3.1). Entra publishes none for the token
 * endpoint: its caps are a guard against a runaway, the same rate, and as
 * many at once as the fetcher pool runs by default. */
#define DEFAULT_IMDS_RATE	  20
#define DEFAULT_IMDS_CONCURRENCY  5
#define DEFAULT_ENTRA_RATE	  20
#define DEFAULT_ENTRA_CONCURRENCY 8

/* File names below point into c->files, which lives as long as the config. */
struct parser {
	struct config *c;
	struct config_errors *errs;
	const char *name; /* the file being read (or checked), for messages */
	const char *text; /* the file, NUL-terminated */
	const char *pos;
	int line;
	int long_line; /* the line being read did not fit inih's buffer */
	struct identity *cur;
	const char *default_file; /* of the last default = yes */
	int default_line;
	const char *socket_file; /* of [daemon] socket = */
	int socket_line;	 /* 0: the default socket */
	bool unread;		 /* a drop-in could not be read */
	char section[128];
	const char *credentials_dir; /* config_options.credentials_dir */
	/* Keys of a kind of credential, set once the section's kind is known. */
	struct pending_key {
		size_t identity; /* index in c->identities */
		const char *file;
		int line;
		char *key, *value;
	} * pending;
	size_t n_pending;
};

/* Where the parser is, for the value parsers that the kinds share. */
#define AT(p)		  (&(struct conf_pos){(p)->errs, (p)->name, (p)->line})
#define perr(p, fmt, ...) conf_error(AT(p), fmt, ##__VA_ARGS__)
#define add_error	  config_errors_add

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

static void patterns_clear(struct pattern_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static void identity_clear(struct identity *id)
{
	free(id->name);
	free(id->file);
	if (id->cred_data)
		id->cred->clear(id->cred_data);
	free(id->cred_data);
	free(id->tenant);
	free(id->client_id);
	for (size_t i = 0; i < id->n_resources; i++)
		free(id->resources[i]);
	free(id->resources);
	free(id->authority);
	free(id->allow_uids);
	free(id->allow_gids);
	patterns_clear(&id->allow_units);
	patterns_clear(&id->allow_user_units);
	patterns_clear(&id->allow_exes);
	patterns_clear(&id->allow_cgroups);
	memset(id, 0, sizeof(*id));
}

void config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_identities; i++)
		identity_clear(&c->identities[i]);
	free(c->identities);
	for (size_t i = 0; i < c->n_files; i++)
		free(c->files[i]);
	free(c->files);
	free(c->path);
	free(c->socket);
	free(c->ca_file);
	free(c->proxy);
	free(c->compat_endpoint);
	free(c->metrics_listen);
	free(c->metrics_path);
	free(c->metrics_uids);
	free(c->state_dir);
	free(c->state_key_credential);
	free(c);
}

/* --- value parsers: each returns 0, or reports the problem and returns -EINVAL
 * (-ENOMEM when it cannot) --- */

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

/* A group's entry lists its members: a big group needs a big buffer. */
#define NSS_BUF_MAX (16 * 1024 * 1024)

/* The gid (group) or uid of name: 0, -ENOENT if there is none, or the
 * lookup's own error. */
static int lookup_name(bool group, const char *name, uint32_t *ret)
{
	struct passwd pw, *pres = NULL;
	struct group gr, *gres = NULL;
	size_t size = 4096;
	char *buf = NULL;
	int r;

	do {
		char *b = realloc(buf, size);
		if (!b) {
			free(buf);
			return -ENOMEM;
		}
		buf = b;
		r = group ? getgrnam_r(name, &gr, buf, size, &gres)
			  : getpwnam_r(name, &pw, buf, size, &pres);
		size *= 2;
	} while (r == ERANGE && size <= NSS_BUF_MAX);
	free(buf);
	if (r)
		return -r;
	if (group ? !gres : !pres)
		return -ENOENT;
	*ret = group ? gres->gr_gid : pres->pw_uid;
	return 0;
}

/* A user (group false) or group, by name or number. */
static int resolve_name(struct parser *p, bool group, const char *key, const char *name,
			uint32_t *ret)
{
	const char *what = group ? "group" : "user";
	int r;

	if (isdigit((unsigned char)*name))
		return parse_uint(p, key, name, 0, UINT32_MAX - 1, 10, ret);
	r = lookup_name(group, name, ret);
	if (r == -ENOENT)
		return perr(p, "%s: no %s named '%s' (check the name, or use a numeric %s)", key,
			    what, name, group ? "gid" : "uid")
			   ?: -EINVAL;
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return perr(p,
			    "%s: cannot look up the %s '%s': %s (check nsswitch.conf and the "
			    "name service)",
			    key, what, name, strerror(-r))
			   ?: -EINVAL;
	return 0;
}

static int resolve_group(struct parser *p, const char *key, const char *name, gid_t *ret)
{
	uint32_t n = 0;

	return resolve_name(p, true, key, name, &n) ?: (*ret = n, 0);
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
	uid_t *v;
	uint32_t uid;
	int r;

	if ((r = resolve_name(p, false, key, item, &uid)) < 0)
		return r;
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
	gid_t gid = 0, *v;
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

/* client_capabilities: what the identity's callers can do, declared to the
 * token service. Entra knows one, cp1 (claims challenges, ENTRA.md 8). */
static int add_capability(struct parser *p, const char *key, const char *item, void *arg)
{
	struct identity *id = arg;

	if (strcasecmp(item, "cp1") != 0)
		return perr(p,
			    "%s: unknown capability '%s': the one Entra ID knows is cp1 (the "
			    "callers answer claims challenges)",
			    key, item);
	id->cp1 = true;
	return 0;
}

/* A list key of patterns naming programs, and what its patterns name. */
struct pattern_key {
	struct pattern_list *list;
	enum pattern_kind kind;
};

static int add_pattern(struct parser *p, const char *key, const char *item, void *arg)
{
	const struct pattern_key *k = arg;
	char why[512];
	char **v;

	if (pattern_check(k->kind, item, why, sizeof(why)) < 0)
		return perr(p, "%s: '%s' %s", key, item, why) ?: -EINVAL;
	v = realloc(k->list->v, (k->list->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	k->list->v = v;
	if (!(v[k->list->n] = strdup(item)))
		return -ENOMEM;
	k->list->n++;
	return 0;
}

static int add_patterns(struct parser *p, const char *key, const char *v, struct pattern_list *l,
			enum pattern_kind kind)
{
	struct pattern_key k = {l, kind};

	return each_item(p, key, v, add_pattern, &k);
}

/* compat_endpoint and metrics_listen: 127.0.0.1:PORT, [::1]:PORT, or
 * empty (off) into *addr and *text. Only a loopback address: both speak
 * plain HTTP. */
static int parse_loopback(struct parser *p, const char *key, const char *v,
			  struct sockaddr_storage *addr, char **text)
{
	struct sockaddr_in *in = (struct sockaddr_in *)addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon = strrchr(v, ':'), *written = v;
	size_t hlen;
	uint32_t port;
	int r;

	memset(addr, 0, sizeof(*addr));
	free(*text);
	*text = NULL;
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
	return conf_set_string(text, written);
not_loopback:
	memset(addr, 0, sizeof(*addr));
	return perr(p,
		    "%s: '%s' is not a loopback address: it speaks plain HTTP, so it listens on "
		    "127.0.0.1 or [::1] only",
		    key, host)
		   ?: -EINVAL;
bad:
	memset(addr, 0, sizeof(*addr));
	return perr(p, "%s: '%s' is not ADDRESS:PORT, like 127.0.0.1:50342 or [::1]:50342", key,
		    written)
		   ?: -EINVAL;
}

/* metrics_listen: an absolute path (a Unix socket) or a loopback address. */
static int parse_metrics_listen(struct parser *p, const char *key, const char *v, struct config *c)
{
	free(c->metrics_path);
	c->metrics_path = NULL;
	if (*v == '/') {
		memset(&c->metrics_addr, 0, sizeof(c->metrics_addr));
		free(c->metrics_listen);
		c->metrics_listen = NULL;
		if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return perr(p, "%s: '%s' is too long for a Unix socket path", key, v)
				   ?: -EINVAL;
		return conf_set_path(AT(p), key, v, &c->metrics_path)
			   ?: conf_set_string(&c->metrics_listen, v);
	}
	return parse_loopback(p, key, v, &c->metrics_addr, &c->metrics_listen);
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
	DK_METRICS_LISTEN,
	DK_METRICS_GROUP,
	DK_IMDS_RATE,
	DK_IMDS_CONCURRENCY,
	DK_ENTRA_RATE,
	DK_ENTRA_CONCURRENCY,
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
    [DK_METRICS_LISTEN] = "metrics_listen",
    [DK_METRICS_GROUP] = "metrics_group",
    [DK_IMDS_RATE] = "imds_rate",
    [DK_IMDS_CONCURRENCY] = "imds_concurrency",
    [DK_ENTRA_RATE] = "entra_rate",
    [DK_ENTRA_CONCURRENCY] = "entra_concurrency",
};

/* The keys every identity takes; each kind of credential adds its own
 * (credential.h). */
enum identity_key_id {
	IK_CREDENTIAL,
	IK_TENANT,
	IK_CLIENT_ID,
	IK_RESOURCES,
	IK_CLOUD,
	IK_AUTHORITY_HOST,
	IK_TOKEN_VERSION,
	IK_ALLOW_USERS,
	IK_ALLOW_GROUPS,
	IK_ALLOW_UNITS,
	IK_ALLOW_USER_UNITS,
	IK_ALLOW_EXES,
	IK_ALLOW_CGROUPS,
	IK_CLIENT_CAPABILITIES,
	IK_PREFETCH,
	IK_DEFAULT,
	IK_COUNT, /* not a key: the name is unknown */
};

static const char *const identity_keys[IK_COUNT] = {
    [IK_CREDENTIAL] = "credential",
    [IK_TENANT] = "tenant",
    [IK_CLIENT_ID] = "client_id",
    [IK_RESOURCES] = "resources",
    [IK_CLOUD] = "cloud",
    [IK_AUTHORITY_HOST] = "authority_host",
    [IK_TOKEN_VERSION] = "token_version",
    [IK_ALLOW_USERS] = "allow_users",
    [IK_ALLOW_GROUPS] = "allow_groups",
    [IK_ALLOW_UNITS] = "allow_units",
    [IK_ALLOW_USER_UNITS] = "allow_user_units",
    [IK_ALLOW_EXES] = "allow_exes",
    [IK_ALLOW_CGROUPS] = "allow_cgroups",
    [IK_CLIENT_CAPABILITIES] = "client_capabilities",
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
/* ...or any number above 2 once it must be: a hint is at most 2 edits. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[KEY_HINT_LEN + 1], diag, up, least;

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = least = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cost =
			    tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			up = row[j];
			row[j] = diag + cost;
			if (up + 1 < row[j])
				row[j] = up + 1;
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			if (row[j] < least)
				least = row[j];
			diag = up;
		}
		if (least > 2)
			return least; /* no row gets smaller */
	}
	return row[lb];
}

/* The known key closest to what was written, if one is close: at most two
 * edits away (fewer edits than it has characters), else one that it begins
 * (at least three characters of it). */
struct hint {
	const char *written;
	size_t d;
	const char *key; /* NULL: none is close */
};

/* Considers the first n keys of a table (or up to its NULL). */
static void closest_key(struct hint *h, const char *const *keys, size_t n)
{
	size_t len = strlen(h->written);

	if (len == 0 || len > KEY_HINT_LEN)
		return;
	for (size_t i = 0; i < n && keys[i]; i++) {
		size_t k = strlen(keys[i]);
		/* Lengths more than two apart are more than two edits apart. */
		size_t d = k > KEY_HINT_LEN || k > len + 2 || len > k + 2
			       ? SIZE_MAX
			       : edit_distance(h->written, keys[i]);
		if (d > 2 || d >= len)
			d = len >= 3 && !strncasecmp(keys[i], h->written, len) ? 3 : SIZE_MAX;
		if (d < h->d) {
			h->d = d;
			h->key = keys[i];
		}
	}
}

/* Whether an [identity NAME] section takes key: its own or a kind's. */
static bool is_identity_key(const char *key)
{
	return key_index(identity_keys, IK_COUNT, key) < IK_COUNT || credential_owning_key(key);
}

/* Reports key as unknown in section ("[daemon]", "[identity NAME]"), with
 * the section it belongs in if it is the other section's, else the closest
 * key of this one. */
static int unknown_key(struct parser *p, const char *section, const char *key)
{
	bool in_identity = section[1] == 'i';
	struct hint h = {key, SIZE_MAX, NULL};
	const struct credential_ops *k;

	if (in_identity ? key_index(daemon_keys, DK_COUNT, key) < DK_COUNT : is_identity_key(key))
		return perr(p, "unknown key '%s' in %s: %s = belongs in %s", key, section, key,
			    in_identity ? "[daemon]" : "an [identity NAME] section")
			   ?: -EINVAL;
	if (in_identity) {
		closest_key(&h, identity_keys, IK_COUNT);
		for (size_t i = 0; (k = credential_kind(i)); i++)
			closest_key(&h, k->keys, SIZE_MAX);
	} else {
		closest_key(&h, daemon_keys, DK_COUNT);
	}
	if (h.key)
		return perr(p, "unknown key '%s' in %s: did you mean %s?", key, section, h.key)
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
		p->socket_file = p->name;
		p->socket_line = p->line;
		return conf_set_path(AT(p), key, v, &c->socket);
	case DK_SOCKET_MODE:
		return parse_uint(p, key, v, 0, 0777, 8, &n) ?: (c->socket_mode = n, 0);
	/* Empty: back to the default, as for every key (a drop-in can take
	 * back what the main file set). */
	case DK_SOCKET_GROUP:
		return *v ? resolve_group(p, key, v, &c->socket_gid)
			  : (c->socket_gid = (gid_t)-1, 0);
	case DK_ADMIN_GROUP:
		return *v ? resolve_group(p, key, v, &c->admin_gid) : (c->admin_gid = (gid_t)-1, 0);
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
		return conf_set_string(&c->ca_file, v);
	case DK_PROXY:
		return conf_set_string(&c->proxy, v);
	case DK_STATE_DIR:
		return conf_set_path(AT(p), key, v, &c->state_dir);
	case DK_STATE_KEY_CREDENTIAL:
		return conf_check_credential_name(AT(p), key, v)
			   ?: conf_set_string(&c->state_key_credential, v);
	case DK_COMPAT_ENDPOINT:
		return parse_loopback(p, key, v, &c->compat_addr, &c->compat_endpoint);
	case DK_METRICS_LISTEN:
		return parse_metrics_listen(p, key, v, c);
	case DK_METRICS_GROUP:
		return *v ? resolve_group(p, key, v, &c->metrics_gid)
			  : (c->metrics_gid = (gid_t)-1, 0);
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
	/* 0: no cap. */
	case DK_IMDS_RATE:
		return parse_uint(p, key, v, 0, GUARD_RATE_MAX, 10, &c->imds_rate);
	case DK_IMDS_CONCURRENCY:
		return parse_uint(p, key, v, 0, GUARD_CONCURRENCY_MAX, 10, &c->imds_concurrency);
	case DK_ENTRA_RATE:
		return parse_uint(p, key, v, 0, GUARD_RATE_MAX, 10, &c->entra_rate);
	case DK_ENTRA_CONCURRENCY:
		return parse_uint(p, key, v, 0, GUARD_CONCURRENCY_MAX, 10, &c->entra_concurrency);
	case DK_COUNT:
		break;
	}
	return unknown_key(p, "[daemon]", key);
}

/* credential = NAME: the kind's settings start afresh. */
static int set_kind(struct parser *p, struct identity *id, const char *v)
{
	const struct credential_ops *k = credential_find(v);
	void *data = NULL;
	char names[256];

	if (!k)
		return perr(p, "credential: '%s' is not one of %s", v,
			    credential_names(names, sizeof(names)))
			   ?: -EINVAL;
	if (k->data_size && !(data = calloc(1, k->data_size)))
		return -ENOMEM;
	if (id->cred_data)
		id->cred->clear(id->cred_data);
	free(id->cred_data);
	id->cred_data = data;
	id->cred = k;
	return 0;
}

/* A key of some kind of credential: kept until the section's kind is
 * known, for the kind to read or for a message that it does not apply. */
static int defer_key(struct parser *p, const char *key, const char *v)
{
	struct pending_key *n = realloc(p->pending, (p->n_pending + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	p->pending = n;
	n += p->n_pending;
	*n = (struct pending_key){(size_t)(p->cur - p->c->identities), p->name, p->line,
				  strdup(key), strdup(v)};
	if (!n->key || !n->value) {
		free(n->key);
		free(n->value);
		return -ENOMEM;
	}
	p->n_pending++;
	return 0;
}

static int identity_key(struct parser *p, const char *key, const char *v)
{
	struct identity *id = p->cur;
	char section[IDENTITY_NAME_MAX + 16];
	uint32_t n;

	switch ((enum identity_key_id)key_index(identity_keys, IK_COUNT, key)) {
	case IK_CREDENTIAL:
		id->credential_line = p->line;
		return set_kind(p, id, v);
	case IK_TENANT:
		return conf_check_id(AT(p), key, v) ?: conf_set_string(&id->tenant, v);
	case IK_CLIENT_ID:
		return conf_check_id(AT(p), key, v) ?: conf_set_string(&id->client_id, v);
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
		return conf_set_base_url(AT(p), key, v, CONF_URL_AUTHORITY, &id->authority);
	case IK_TOKEN_VERSION:
		return parse_uint(p, key, v, 1, 2, 10, &n) ?: (id->token_version = (int)n, 0);
	case IK_ALLOW_USERS:
		return each_item(p, key, v, add_user, id);
	case IK_ALLOW_GROUPS:
		return each_item(p, key, v, add_group, id);
	case IK_ALLOW_UNITS: /* each occurrence adds, as for every list key */
		return add_patterns(p, key, v, &id->allow_units, PATTERN_UNIT);
	case IK_ALLOW_USER_UNITS:
		return add_patterns(p, key, v, &id->allow_user_units, PATTERN_UNIT);
	case IK_ALLOW_EXES:
		return add_patterns(p, key, v, &id->allow_exes, PATTERN_EXE);
	case IK_ALLOW_CGROUPS:
		return add_patterns(p, key, v, &id->allow_cgroups, PATTERN_CGROUP);
	case IK_CLIENT_CAPABILITIES:
		return each_item(p, key, v, add_capability, id);
	case IK_PREFETCH:
		return conf_parse_bool(AT(p), key, v, &id->prefetch);
	case IK_DEFAULT: {
		int r = conf_parse_bool(AT(p), key, v, &id->is_default);
		if (r == 0 && id->is_default) {
			p->default_file = p->name;
			p->default_line = p->line;
		}
		return r;
	}
	case IK_COUNT:
		break;
	}
	if (credential_owning_key(key))
		return defer_key(p, key, v);
	snprintf(section, sizeof(section), "[identity %s]", id->name);
	return unknown_key(p, section, key);
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
	struct identity *v, *prev;
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
	/* Not merged: which file's credential and allow-list would win is
	 * not something to leave to the order of file names. */
	if ((prev = config_find_identity(c, name)))
		return perr(p,
			    "[identity %s] is defined twice, first at %s:%d: define each identity "
			    "in one section of one file (remove one, or rename it)",
			    name, prev->file, prev->line)
			   ?: -EINVAL;
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
	if ((strcmp(section, p->section) != 0 && begin_section(p, section) == -ENOMEM) ||
	    (value[n] && !(v = strndup(value, n)))) {
		p->errs->nomem = true;
		return 1;
	}
	if (!strcmp(section, "daemon"))
		r = daemon_key(p, key, v ? v : value);
	else if (p->cur)
		r = identity_key(p, key, v ? v : value);
	else if (!*section)
		/* Before the first header: inih names no section, and the key
		 * would be dropped without a word. Every file starts so: a
		 * drop-in's keys never land in the section the file before it
		 * ended in. */
		r = perr(p,
			 "%s = is outside any section: put it under [daemon] or an "
			 "[identity NAME] header",
			 key);
	else
		r = 0; /* the section was already reported */
	free(v);
	if (r == -ENOMEM)
		p->errs->nomem = true;
	return 1;
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
		p->errs->nomem = true;
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
		perr(p,
		     "line longer than %d characters: split a long list over several lines, "
		     "repeating the key (resources = A, B on one, resources = C, D on the "
		     "next): each occurrence adds to the list",
		     num - 2);
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

/* Messages about the identity from here on name its section's file and
 * line: it may come from a drop-in. */
static void at_identity(struct parser *p, const struct identity *id)
{
	p->name = id->file;
	p->line = id->line;
}

/* Hands the identity's deferred keys to its kind, at the lines they were
 * written. */
static int apply_kind_keys(struct parser *p, struct identity *id)
{
	size_t index = (size_t)(id - p->c->identities);
	int r = 0;

	for (size_t i = 0; i < p->n_pending && r != -ENOMEM; i++) {
		const struct pending_key *k = &p->pending[i];
		if (k->identity != index || !id->cred)
			continue;
		p->name = k->file;
		p->line = k->line;
		if (conf_key_index(id->cred->keys, k->key) >= 0)
			r = id->cred->set_key(id, AT(p), k->key, k->value);
		else
			r = perr(p, "[identity %s]: %s = applies to credential = %s, not %s",
				 id->name, k->key, credential_owning_key(k->key)->name,
				 id->cred->name);
	}
	at_identity(p, id);
	return r == -ENOMEM ? r : 0;
}

static int check_identity(struct parser *p, struct identity *id)
{
	char names[256];
	int r;

	at_identity(p, id);
	/* A credential = whose value was wrong is reported where it is. */
	if (!id->cred) {
		if (!id->credential_line)
			return perr(p, "[identity %s]: credential = is missing (%s)", id->name,
				    credential_names(names, sizeof(names)));
		return 0;
	}
	if ((r = apply_kind_keys(p, id)) < 0 ||
	    (id->cred->check && (r = id->cred->check(id, AT(p))) < 0))
		return r;
	if (id->cp1 && id->cred->no_application)
		return perr(p,
			    "[identity %s]: client_capabilities = cp1 does not apply to credential "
			    "= %s: the token service takes no claims from it (continuous access "
			    "evaluation does not cover managed identities); remove the line",
			    id->name, id->cred->name);
	if (id->cred->no_application)
		return 0;
	if (!id->tenant &&
	    (r = perr(p, "[identity %s]: tenant = is missing (your directory's tenant id)",
		      id->name)) < 0)
		return r;
	if (!id->client_id)
		return perr(p, "[identity %s]: client_id = is missing (the application id)",
			    id->name);
	return 0;
}

/* The names of user units are their users' to choose: any user can start
 * a "backup.service" of their own. Such a rule says which program, never
 * whose, so it needs uid or group rules beside it. */
static int check_access(struct parser *p, const struct identity *id)
{
	at_identity(p, id);
	if (id->allow_user_units.n && !id->n_allow_uids && !id->n_allow_gids)
		return perr(p,
			    "[identity %s]: allow_user_units = needs allow_users or allow_groups "
			    "beside it: every user names the units of their own manager, so "
			    "allow_user_units says which program and allow_users whose (a caller "
			    "must pass both)",
			    id->name);
	return 0;
}

/* The users listed as members of group gid in the group database, added
 * to c->metrics_uids: a TCP client of metrics_listen carries no groups, so
 * its uid is checked against these. Looked up here, at load, because the
 * loop must not wait on NSS per connection. Users whose primary group it
 * is are not listed by the group database and are not added. */
static int add_members(struct config *c, gid_t gid)
{
	struct group gr, *grp = NULL;
	char *buf = NULL;
	size_t size = 4096;
	int r;

	for (;;) {
		char *b = realloc(buf, size);
		if (!b) {
			free(buf);
			return -ENOMEM;
		}
		buf = b;
		r = getgrgid_r(gid, &gr, buf, size, &grp);
		if (r != ERANGE || size >= 1 << 20)
			break;
		size *= 2;
	}
	for (char **m = grp ? grp->gr_mem : NULL; m && *m; m++) {
		struct passwd pw, *pwp = NULL;
		char pbuf[4096];
		uid_t *v;
		if (getpwnam_r(*m, &pw, pbuf, sizeof(pbuf), &pwp) != 0 || !pwp)
			continue;
		if (!(v = realloc(c->metrics_uids, (c->n_metrics_uids + 1) * sizeof(*v)))) {
			free(buf);
			return -ENOMEM;
		}
		c->metrics_uids = v;
		v[c->n_metrics_uids++] = pwp->pw_uid;
	}
	free(buf);
	return 0;
}

static int validate(struct parser *p, bool load_secrets)
{
	struct config *c = p->c;
	int r = 0, defaults = 0;

	for (size_t i = 0; i < c->n_identities; i++) {
		struct identity *id = &c->identities[i];
		int before = (int)p->errs->n;
		at_identity(p, id);
		if ((r = check_identity(p, id)) < 0 || (r = check_access(p, id)) < 0)
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
		if ((int)p->errs->n == before && load_secrets && id->cred && id->cred->load &&
		    id->cred->load(id, p->credentials_dir, p->errs) == -ENOMEM)
			return -ENOMEM;
	}
	if (defaults > 1) {
		p->name = p->default_file;
		p->line = p->default_line;
		perr(p, "more than one identity says default = yes; keep one");
	}
	for (size_t i = 0; i < c->n_identities; i++)
		if (c->identities[i].is_default)
			c->default_identity = &c->identities[i];
	if (!c->default_identity && c->n_identities == 1)
		c->default_identity = &c->identities[0];
	if (c->metrics_addr.ss_family &&
	    ((c->metrics_gid != (gid_t)-1 && (r = add_members(c, c->metrics_gid)) < 0) ||
	     (c->admin_gid != (gid_t)-1 && (r = add_members(c, c->admin_gid)) < 0)))
		return r;
	/* Not when a drop-in could not be read: the identities may be there. */
	if (c->n_identities == 0 && !p->unread)
		add_error(p->errs,
			  "%s: no [identity NAME] section: add one (see batchtokd.conf(5))",
			  c->path);
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
		snprintf(where, sizeof(where), "%s:%d: socket", p->socket_file, p->socket_line);
	else
		snprintf(where, sizeof(where), "%s: the default socket %s", p->c->path, socket);
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

/* Starts p->c: a config with every default set, for the file at path and
 * its drop-ins. Returns 0 or -ENOMEM. */
static int parse_begin(struct parser *p, const char *path)
{
	struct config *c = calloc(1, sizeof(*c));

	if (!c) {
		add_error(p->errs, "%s: out of memory", path);
		return -ENOMEM;
	}
	c->socket_mode = DEFAULT_SOCKET_MODE;
	c->socket_gid = (gid_t)-1;
	c->admin_gid = (gid_t)-1;
	c->metrics_gid = (gid_t)-1;
	c->log_level = LOG_INFO;
	c->min_validity = DEFAULT_MIN_VALIDITY;
	c->max_clients = DEFAULT_MAX_CLIENTS;
	c->fetch_concurrency = DEFAULT_FETCH_CONCURRENCY;
	c->request_timeout = DEFAULT_REQUEST_TIMEOUT;
	c->idle_timeout = DEFAULT_IDLE_TIMEOUT;
	c->compat_lifetime = DEFAULT_COMPAT_LIFETIME;
	c->max_clients_per_uid = DEFAULT_UID_CLIENTS;
	c->client_idle_timeout = DEFAULT_CLIENT_IDLE;
	c->imds_rate = DEFAULT_IMDS_RATE;
	c->imds_concurrency = DEFAULT_IMDS_CONCURRENCY;
	c->entra_rate = DEFAULT_ENTRA_RATE;
	c->entra_concurrency = DEFAULT_ENTRA_CONCURRENCY;
	p->c = c;
	if (!(c->path = strdup(path))) {
		config_free(c);
		p->c = NULL;
		add_error(p->errs, "%s: out of memory", path);
		return -ENOMEM;
	}
	return 0;
}

/* Reads one file's text into p->c, as if it followed the files before it,
 * except that it starts outside any section and counts its own lines.
 * Returns 0 (its problems are in p->errs) or -ENOMEM. */
static int parse_file(struct parser *p, const char *text, const char *name)
{
	struct config *c = p->c;
	char **v = realloc(c->files, (c->n_files + 1) * sizeof(*v));
	int r;

	if (!v)
		return -ENOMEM;
	c->files = v;
	if (!(v[c->n_files] = strdup(name)))
		return -ENOMEM;
	p->name = v[c->n_files++];
	p->text = p->pos = text;
	p->line = 0;
	p->long_line = 0;
	p->cur = NULL;
	p->section[0] = 0;
	r = ini_parse_stream(reader, p, handler, p);
	if (r > 0) {
		p->line = r;
		perr(p, "syntax error: expected [section] or key = value");
	}
	return r == -2 || p->errs->nomem ? -ENOMEM : 0;
}

/* After the last file (r: how reading them went, 0 or -ENOMEM): validates
 * the whole, fills in the defaults that depend on the mode, and hands the
 * config to *ret or frees it. opts NULL: a config in memory, whose secrets
 * are not read and whose paths are not checked. */
static int parse_end(struct parser *p, const struct config_options *opts, int r,
		     struct config **ret)
{
	struct config *c = p->c;
	struct config_errors *errs = p->errs;
	const char *default_socket = opts ? opts->default_socket : NULL;
	const char *default_state_dir = opts ? opts->default_state_dir : NULL;

	if (r == 0)
		r = validate(p, opts != NULL);
	for (size_t i = 0; i < p->n_pending; i++) {
		free(p->pending[i].key);
		free(p->pending[i].value);
	}
	free(p->pending);
	if (r == -ENOMEM || errs->nomem)
		goto nomem;
	if (!c->socket && default_socket && !(c->socket = strdup(default_socket)))
		goto nomem;
	if (opts)
		check_socket_dir(p, c->socket);
	if (!c->state_dir && default_state_dir && !(c->state_dir = strdup(default_state_dir)))
		goto nomem;
	if (errs->nomem)
		goto nomem;
	if (errs->n) {
		config_free(c);
		return -EINVAL;
	}
	*ret = c;
	return 0;
nomem:
	add_error(errs, "%s: out of memory", c->path);
	config_free(c);
	return -ENOMEM;
}

int config_parse_string(const char *text, const char *name, struct config **ret,
			struct config_errors *errs)
{
	struct parser p = {.errs = errs};
	int r;

	if ((r = parse_begin(&p, name)) < 0)
		return r;
	return parse_end(&p, NULL, parse_file(&p, text, name), ret);
}

/* Whether the config file is one only root or the daemon's user can have
 * written: it says who gets which tokens. */
static int check_config_file(const char *path, const struct stat *st, struct config_errors *errs)
{
	if (!S_ISREG(st->st_mode) || st->st_size > CONFIG_SIZE_MAX)
		return add_error(errs, "%s: not a regular file of at most 1 MiB", path) ?: -EINVAL;
	if (st->st_mode & 0022)
		return add_error(errs,
				 "%s: the config file is writable by %s (mode %04o): run chmod "
				 "go-w %s",
				 path, st->st_mode & 0002 ? "anyone" : "its group",
				 st->st_mode & 07777, path)
			   ?: -EINVAL;
	if (st->st_uid != 0 && st->st_uid != geteuid())
		return add_error(errs,
				 "%s: the config file is owned by uid %u, not by root or the "
				 "daemon's user (uid %u): chown it",
				 path, st->st_uid, geteuid())
			   ?: -EINVAL;
	return 0;
}

/* Reads the config file open at fd whole, once check_config_file() accepts
 * what was opened, and closes fd. Returns 0 with *ret the NUL-terminated
 * text (free() it); -ENOMEM; or another negative errno once errs says why. */
static int read_config_fd(int fd, const char *path, struct config_errors *errs, char **ret)
{
	struct stat st;
	char *text = NULL;
	ssize_t k;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		add_error(errs, "%s: cannot read the config file: %s", path, strerror(errno));
		goto out;
	}
	if ((r = check_config_file(path, &st, errs)) < 0)
		goto out;
	if (!(text = malloc((size_t)st.st_size + 1))) {
		r = -ENOMEM;
		goto out;
	}
	if ((k = fileio_read_all(fd, text, (size_t)st.st_size)) < 0) {
		r = (int)k;
		add_error(errs, "%s: cannot read the config file: %s", path, strerror((int)-k));
		goto out;
	}
	text[k] = 0;
	if (memchr(text, 0, (size_t)k)) {
		r = add_error(errs, "%s: the config file holds a NUL byte; it is not text", path)
			?: -EINVAL;
		goto out;
	}
	*ret = text;
	text = NULL;
	r = 0;
out:
	free(text);
	close(fd);
	return r;
}

/* A drop-in is checked as the main file is, and opened as key files are: it
 * is judged by stat() first, so that a FIFO or a device put there is never
 * opened, then opened through fileio_open_trusted(), which follows a
 * symlink only if the link is root's or the daemon's user's and leads
 * through directories nobody else can change. Returns as read_config_fd(). */
static int read_dropin(const char *path, struct config_errors *errs, char **ret)
{
	char why[512];
	struct stat st;
	int fd, r;

	if (stat(path, &st) < 0) {
		r = -errno;
		return add_error(errs, "%s: cannot open the drop-in: %s", path, strerror(-r)) ?: r;
	}
	if ((r = check_config_file(path, &st, errs)) < 0)
		return r;
	fd = fileio_open_trusted(path, why, sizeof(why));
	if (fd < 0)
		return add_error(errs, "%s: cannot %s the drop-in: %s", path,
				 fd == -EPERM || fd == -EINVAL ? "use" : "open", why)
			   ?: fd;
	return read_config_fd(fd, path, errs, ret);
}

static bool is_dropin_name(const char *name)
{
	size_t n = strlen(name);

	return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".conf") == 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether the drop-in directory open at fd is one only root or the daemon's
 * user can add files to: a file put there configures the daemon. Sticky is
 * not enough, since anyone may add a file to a sticky directory. */
static int check_dropin_dir(int fd, const char *dir, struct config_errors *errs)
{
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		return add_error(errs, "%s: cannot read the drop-in directory: %s", dir,
				 strerror(-r))
			   ?: r;
	}
	if (st.st_mode & 0022)
		return add_error(errs,
				 "%s: the drop-in directory is writable by %s (mode %04o), who "
				 "could add an identity to the config: run chmod go-w %s",
				 dir, st.st_mode & 0002 ? "anyone" : "its group",
				 st.st_mode & 07777, dir)
			   ?: -EINVAL;
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return add_error(errs,
				 "%s: the drop-in directory is owned by uid %u, not by root or the "
				 "daemon's user (uid %u): chown it",
				 dir, st.st_uid, geteuid())
			   ?: -EINVAL;
	return 0;
}

/* The names of the drop-ins in dir (*.conf, not starting with '.'), sorted
 * by strcmp(): *ret holds *ret_n strings, the array and each free()d by the
 * caller. A missing directory holds none. Returns 0; -ENOMEM; or another
 * negative errno once errs says what is wrong with the directory. */
static int list_dropins(const char *dir, struct config_errors *errs, char ***ret, size_t *ret_n)
{
	char **names = NULL, **v;
	size_t n = 0, found = 0;
	struct dirent *e;
	DIR *d;
	int fd, r = 0;

	/* O_NONBLOCK: a FIFO of that name fails as not a directory, at once. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0 && errno == ENOTDIR)
		return add_error(errs,
				 "%s: not a directory: drop-ins go in a directory of that name; "
				 "move the file away",
				 dir)
			   ?: -ENOTDIR;
	if (fd < 0) {
		r = -errno;
		return add_error(errs, "%s: cannot read the drop-in directory: %s", dir,
				 strerror(-r))
			   ?: r;
	}
	if ((r = check_dropin_dir(fd, dir, errs)) < 0) {
		close(fd);
		return r;
	}
	if (!(d = fdopendir(fd))) {
		r = -errno;
		close(fd);
		return r == -ENOMEM ? r
				    : add_error(errs, "%s: cannot read the drop-in directory: %s",
						dir, strerror(-r))
					  ?: r;
	}
	for (;;) {
		errno = 0;
		if (!(e = readdir(d))) {
			r = -errno;
			break;
		}
		if (!is_dropin_name(e->d_name) || ++found > CONFIG_DROPIN_MAX)
			continue;
		if (!(v = realloc(names, (n + 1) * sizeof(*v)))) {
			r = -ENOMEM;
			break;
		}
		names = v;
		if (!(names[n] = strdup(e->d_name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (r == 0 && found > CONFIG_DROPIN_MAX)
		r = add_error(errs,
			      "%s: %zu drop-ins (*.conf), more than the %d that batchtokd reads: "
			      "merge some of them",
			      dir, found, CONFIG_DROPIN_MAX)
			?: -E2BIG;
	else if (r < 0 && r != -ENOMEM)
		r = add_error(errs, "%s: cannot read the drop-in directory: %s", dir, strerror(-r))
			?: r;
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return r;
	}
	if (n)
		qsort(names, n, sizeof(*names), compare_names);
	*ret = names;
	*ret_n = n;
	return 0;
}

/* Reads the drop-ins of the main file at path into p->c, in order. A
 * drop-in or a directory that cannot be used is reported and the others
 * are still read, so that one --check-config shows every problem. Returns
 * 0 or -ENOMEM. */
static int parse_dropins(struct parser *p, const char *path)
{
	char dir[PATH_MAX], file[PATH_MAX], *text, **names = NULL;
	size_t n = 0;
	int r;

	if (snprintf(dir, sizeof(dir), "%s" CONFIG_DROPIN_SUFFIX, path) >= (int)sizeof(dir)) {
		p->unread = true;
		return add_error(p->errs, "%s: the path is too long to have drop-ins beside it",
				 path);
	}
	if ((r = list_dropins(dir, p->errs, &names, &n)) < 0) {
		p->unread = true;
		return r == -ENOMEM ? r : 0;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		text = NULL;
		if (snprintf(file, sizeof(file), "%s/%s", dir, names[i]) >= (int)sizeof(file))
			r = add_error(p->errs, "%s/%s: the path is too long", dir, names[i])
				?: -ENAMETOOLONG;
		else
			r = read_dropin(file, p->errs, &text);
		if (r == 0) {
			r = parse_file(p, text, file);
		} else if (r != -ENOMEM) {
			p->unread = true; /* said why; the next may still be read */
			r = 0;
		}
		free(text);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

int config_load(const struct config_options *opts, struct config **ret, struct config_errors *errs)
{
	struct parser p = {.errs = errs, .credentials_dir = opts->credentials_dir};
	char *text = NULL;
	int fd, r;

	/* O_NONBLOCK: a FIFO in its place must not hang the start. */
	fd = open(opts->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		add_error(errs, "%s: cannot open the config file: %s", opts->path, strerror(errno));
		return r;
	}
	if ((r = read_config_fd(fd, opts->path, errs, &text)) < 0)
		return r;
	if ((r = parse_begin(&p, opts->path)) < 0) {
		free(text);
		return r;
	}
	r = parse_file(&p, text, opts->path);
	free(text);
	if (r == 0)
		r = parse_dropins(&p, opts->path);
	return parse_end(&p, opts, r, ret);
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

int identity_token_key(const struct identity *id, char out[IDENTITY_KEY_LEN + 1])
{
	static const enum azure_selector sel[] = {SELECT_CLIENT_ID, SELECT_OBJECT_ID,
						  SELECT_RESOURCE_ID};
	unsigned char md[32];
	unsigned int len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char ver[16];
	int ok;

	if (!ctx)
		return -ENOMEM;
	snprintf(ver, sizeof(ver), "%d", id->token_version);
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	/* Each field with its terminating NUL, so that fields cannot run into
	 * each other. */
	const char *fields[] = {id->cred->name,
				ver,
				id->cp1 ? "cp1" : "",
				id->authority ? id->authority : "",
				id->tenant ? id->tenant : "",
				id->client_id ? id->client_id : ""};
	for (size_t i = 0; ok && i < sizeof(fields) / sizeof(fields[0]); i++)
		ok = EVP_DigestUpdate(ctx, fields[i], strlen(fields[i]) + 1);
	for (size_t i = 0; ok && i < sizeof(sel) / sizeof(sel[0]); i++) {
		const char *v = identity_selector(id, sel[i]);
		ok = EVP_DigestUpdate(ctx, v ? v : "", strlen(v ? v : "") + 1);
	}
	/* And what the kind's same() compares: the digest changes where a
	 * reload would drop the tokens. */
	if (ok && id->cred->key) {
		struct credential_key k = {.ctx = ctx, .ok = true};
		id->cred->key(id, &k);
		ok = k.ok;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, md, &len) && len == sizeof(md);
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -EIO;
	for (size_t i = 0; i < sizeof(md); i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

bool identity_same_credential(const struct identity *a, const struct identity *b)
{
	return a->cred == b->cred && a->token_version == b->token_version && a->cp1 == b->cp1 &&
	       str_eq(a->authority, b->authority) && str_eq(a->tenant, b->tenant) &&
	       str_eq(a->client_id, b->client_id) && (!a->cred->same || a->cred->same(a, b));
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
