/* config.c - reads the INI file with libinih, validates every key, resolves
 * users and groups, and loads secrets into secure memory. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../proto/duration.h"
#include "log.h"
#include "secmem.h"

/* A config file is a page of text; refuse anything absurd before reading. */
#define CONFIG_SIZE_MAX (1024 * 1024)
/* A client secret is about 40 characters; leave room for odd ones. */
#define SECRET_SIZE_MAX (64 * 1024)
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
	char section[128];
	char **user_names; /* allow_users entries resolved after parsing */
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

const char *credential_kind_name(enum credential_kind k)
{
	return k == CRED_SECRET ? "secret" : "unknown";
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
	free(c);
}

/* --- value parsers: each returns 0 or reports the problem and returns -1 --- */

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
		return perr(p, "%s: '%s' is not yes or no", key, v) ?: -1;
	return 0;
}

static int parse_secs(struct parser *p, const char *key, const char *v, uint32_t *ret)
{
	uint64_t s;

	if (bt_parse_duration(v, DURATION_LIMIT, &s) < 0)
		return perr(p, "%s: '%s' is not a duration up to 7d (like 90, 90s, 5m, 1h)", key, v)
			   ?: -1;
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
		return perr(p, "%s: '%s' is not a number from %u to %u", key, v, min, max) ?: -1;
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
			   ?: -1;
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
				   ?: -1;
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

	if (isdigit((unsigned char)*item)) {
		if (parse_uint(p, key, item, 0, UINT32_MAX - 1, 10, &uid) < 0)
			return -1;
	} else if (getpwnam_r(item, &pw, buf, sizeof(buf), &res) == 0 && res) {
		uid = res->pw_uid;
	} else {
		return perr(p, "%s: no user named '%s' (check the name, or use a numeric uid)", key,
			    item)
			   ?: -1;
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

	if (resolve_group(p, key, item, &gid) < 0)
		return -1;
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
		return perr(p, "%s: must not be empty", key) ?: -1;
	for (const char *s = v; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_')
			return perr(p, "%s: '%s' is not a GUID or domain name", key, v) ?: -1;
	return 0;
}

static int daemon_key(struct parser *p, const char *key, const char *v)
{
	struct config *c = p->c;
	uint32_t n;

	if (!strcmp(key, "socket")) {
		if (*v && *v != '/')
			return perr(p, "socket: '%s' must be an absolute path", v);
		return set_string(&c->socket, v);
	}
	if (!strcmp(key, "socket_mode"))
		return parse_uint(p, key, v, 0, 0777, 8, &n) ?: (c->socket_mode = n, 0);
	if (!strcmp(key, "socket_group"))
		return *v ? resolve_group(p, key, v, &c->socket_gid) : 0;
	if (!strcmp(key, "admin_group"))
		return *v ? resolve_group(p, key, v, &c->admin_gid) : 0;
	if (!strcmp(key, "log_level")) {
		if (log_parse_level(v, &c->log_level) < 0)
			return perr(p, "log_level: '%s' is not error, warning, info or debug", v);
		return 0;
	}
	if (!strcmp(key, "min_validity"))
		return parse_secs(p, key, v, &c->min_validity);
	if (!strcmp(key, "request_timeout"))
		return parse_secs(p, key, v, &c->request_timeout)
			   ?: (c->request_timeout
				   ? 0
				   : perr(p, "request_timeout: must be at least 1s"));
	if (!strcmp(key, "idle_timeout"))
		return parse_secs(p, key, v, &c->idle_timeout);
	if (!strcmp(key, "max_clients"))
		return parse_uint(p, key, v, 1, MAX_CLIENTS_LIMIT, 10, &c->max_clients);
	if (!strcmp(key, "fetch_concurrency"))
		return parse_uint(p, key, v, 1, FETCH_CONCURRENCY_LIMIT, 10, &c->fetch_concurrency);
	if (!strcmp(key, "ca_file"))
		return set_string(&c->ca_file, v);
	if (!strcmp(key, "proxy"))
		return set_string(&c->proxy, v);
	if (!strcmp(key, "compat_endpoint")) {
		if (*v)
			return perr(p, "compat_endpoint: the managed-identity compatible endpoint "
				       "is not available in this version; leave it empty");
		return 0;
	}
	return perr(p, "unknown key '%s' in [daemon]", key);
}

static int identity_key(struct parser *p, const char *key, const char *v)
{
	struct identity *id = p->cur;
	uint32_t n;

	if (!strcmp(key, "credential")) {
		if (!strcmp(v, "secret")) {
			id->kind = CRED_SECRET;
			return 0;
		}
		if (!strcmp(v, "certificate") || !strcmp(v, "managed-identity") ||
		    !strcmp(v, "federated") || !strcmp(v, "device-code"))
			return perr(p,
				    "credential: '%s' is not available in this version of "
				    "batchtokd; use credential = secret",
				    v);
		return perr(p,
			    "credential: '%s' is not one of secret, certificate, "
			    "managed-identity, federated, device-code",
			    v);
	}
	if (!strcmp(key, "tenant"))
		return check_id_chars(p, key, v) ?: set_string(&id->tenant, v);
	if (!strcmp(key, "client_id"))
		return check_id_chars(p, key, v) ?: set_string(&id->client_id, v);
	if (!strcmp(key, "secret_file")) {
		if (*v != '/')
			return perr(p, "secret_file: '%s' must be an absolute path", v);
		return set_string(&id->secret_file, v);
	}
	if (!strcmp(key, "secret_credential")) {
		if (!*v || strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))
			return perr(p, "secret_credential: '%s' is not a credential name", v);
		return set_string(&id->secret_credential, v);
	}
	if (!strcmp(key, "resources")) {
		for (size_t i = 0; i < id->n_resources; i++)
			free(id->resources[i]);
		id->n_resources = 0;
		return each_item(p, key, v, add_resource, id);
	}
	if (!strcmp(key, "cloud")) {
		if (!strcmp(v, "public"))
			id->cloud = CLOUD_PUBLIC;
		else if (!strcmp(v, "usgov"))
			id->cloud = CLOUD_USGOV;
		else if (!strcmp(v, "china"))
			id->cloud = CLOUD_CHINA;
		else
			return perr(p, "cloud: '%s' is not public, usgov or china", v);
		return 0;
	}
	if (!strcmp(key, "authority_host")) {
		size_t len = strlen(v);
		if (!*v)
			return set_string(&id->authority, v);
		if (strncmp(v, "https://", 8) != 0 || len < 9 || strpbrk(v + 8, "?#@ \t"))
			return perr(p, "authority_host: '%s' must be an https:// URL with no query",
				    v);
		while (len > 8 && v[len - 1] == '/')
			len--;
		free(id->authority);
		return (id->authority = strndup(v, len)) ? 0 : -ENOMEM;
	}
	if (!strcmp(key, "token_version"))
		return parse_uint(p, key, v, 1, 2, 10, &n) ?: (id->token_version = (int)n, 0);
	if (!strcmp(key, "allow_users"))
		return each_item(p, key, v, add_user, id);
	if (!strcmp(key, "allow_groups"))
		return each_item(p, key, v, add_group, id);
	if (!strcmp(key, "prefetch"))
		return parse_bool(p, key, v, &id->prefetch);
	if (!strcmp(key, "default")) {
		int r = parse_bool(p, key, v, &id->is_default);
		if (r == 0 && id->is_default)
			p->default_line = p->line;
		return r;
	}
	return perr(p, "unknown key '%s' in [identity %s]", key, id->name);
}

static int check_name(struct parser *p, const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > IDENTITY_NAME_MAX)
		return perr(p, "[identity]: a name of 1 to %d characters is needed",
			    IDENTITY_NAME_MAX)
			   ?: -1;
	for (const char *s = name; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.@", *s))
			return perr(p, "[identity %s]: names use letters, digits and - _ . @", name)
				   ?: -1;
	return 0;
}

static int begin_section(struct parser *p, const char *section)
{
	struct config *c = p->c;
	struct identity *v;
	const char *name;

	snprintf(p->section, sizeof(p->section), "%s", section);
	p->cur = NULL;
	if (!strcmp(section, "daemon"))
		return 0;
	if (strncmp(section, "identity ", 9) != 0)
		return perr(p, "unknown section [%s]: use [daemon] or [identity NAME]", section);
	name = section + 9;
	while (*name == ' ')
		name++;
	if (check_name(p, name) < 0)
		return 0;
	if (config_find_identity(c, name))
		return perr(p, "[identity %s] is defined twice", name);
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

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parser *p = user;
	int r;

	if (p->long_line) {
		/* Reported once by the reader; the fragment is not a key. */
		return 1;
	}
	if (strcmp(section, p->section) != 0 && (r = begin_section(p, section)) == -ENOMEM)
		return 0;
	if (!strcmp(section, "daemon"))
		r = daemon_key(p, key, value);
	else if (p->cur)
		r = identity_key(p, key, value);
	else
		r = 0; /* the section was already reported */
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

/* Reads a secret file or systemd credential and checks who may read it. */
static int load_secret(struct identity *id, struct config_errors *errs)
{
	const char *credentials = getenv("CREDENTIALS_DIRECTORY");
	char path[4096], *buf = NULL;
	struct stat st;
	ssize_t n = 0;
	int fd, r = 0;

	if (id->secret_credential) {
		if (!credentials || !*credentials)
			return add_error(errs,
					 "%s:%d: [identity %s]: secret_credential = %s needs "
					 "LoadCredential=%s:PATH in the service unit "
					 "($CREDENTIALS_DIRECTORY is not set)",
					 id->file, id->line, id->name, id->secret_credential,
					 id->secret_credential)
				   ?: -EINVAL;
		snprintf(path, sizeof(path), "%s/%s", credentials, id->secret_credential);
	} else {
		snprintf(path, sizeof(path), "%s", id->secret_file);
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return add_error(errs, "%s:%d: [identity %s]: cannot open secret %s: %s", id->file,
				 id->line, id->name, path, strerror(errno))
			   ?: -EINVAL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = add_error(errs, "%s:%d: [identity %s]: secret %s is not a regular file",
			      id->file, id->line, id->name, path)
			?: -EINVAL;
	} else if (st.st_mode & 0027) {
		r = add_error(
			errs,
			"%s:%d: [identity %s]: secret %s is accessible by others (mode %04o): "
			"run chmod 600 %s",
			id->file, id->line, id->name, path, st.st_mode & 07777, path)
			?: -EINVAL;
	} else if (st.st_uid != geteuid() && st.st_uid != 0) {
		r = add_error(errs,
			      "%s:%d: [identity %s]: secret %s is owned by uid %u, not by root or "
			      "the daemon's user (uid %u): chown it",
			      id->file, id->line, id->name, path, st.st_uid, geteuid())
			?: -EINVAL;
	} else if (st.st_size > SECRET_SIZE_MAX) {
		r = add_error(errs, "%s:%d: [identity %s]: secret %s is larger than %d bytes",
			      id->file, id->line, id->name, path, SECRET_SIZE_MAX)
			?: -EINVAL;
	} else if (!(buf = secmem_alloc((size_t)st.st_size + 1))) {
		r = -ENOMEM;
	} else {
		n = read(fd, buf, (size_t)st.st_size);
		/* Editors and echo leave a newline; it is never part of a secret. */
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			buf[--n] = 0;
		if (n <= 0)
			r = add_error(errs,
				      "%s:%d: [identity %s]: secret %s is empty or unreadable",
				      id->file, id->line, id->name, path)
				?: -EINVAL;
	}
	close(fd);
	if (r < 0) {
		secmem_free(buf, buf ? (size_t)st.st_size + 1 : 0);
		return r;
	}
	id->secret = secmem_strndup(buf, (size_t)n);
	secmem_free(buf, (size_t)st.st_size + 1);
	return id->secret ? 0 : -ENOMEM;
}

static int validate(struct parser *p, bool load_secrets)
{
	struct config *c = p->c;
	int r = 0, defaults = 0;

	for (size_t i = 0; i < c->n_identities; i++) {
		struct identity *id = &c->identities[i];
		int before = (int)p->errs->n;
		p->line = id->line;
		if (!id->kind)
			perr(p, "[identity %s]: credential = is missing (secret)", id->name);
		if (!id->tenant)
			perr(p, "[identity %s]: tenant = is missing (your directory's tenant id)",
			     id->name);
		if (!id->client_id)
			perr(p, "[identity %s]: client_id = is missing (the application id)",
			     id->name);
		if (id->kind == CRED_SECRET && !id->secret_file == !id->secret_credential)
			perr(p,
			     "[identity %s]: give exactly one of secret_file = or "
			     "secret_credential =",
			     id->name);
		if (!id->authority && !(id->authority = strdup(cloud_authority(id->cloud))))
			return -ENOMEM;
		if (id->n_resources == 0) {
			r = add_resource(p, "resources", cloud_batch_resource(id->cloud), id);
			if (r < 0)
				return r;
		}
		if (id->is_default)
			defaults++;
		if ((int)p->errs->n == before && load_secrets && id->kind == CRED_SECRET &&
		    (r = load_secret(id, p->errs)) == -ENOMEM)
			return r;
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

static int parse_text(const char *text, const char *name, const char *default_socket,
		      bool load_secrets, struct config **ret, struct config_errors *errs)
{
	struct parser p = {.errs = errs, .name = name, .text = text, .pos = text};
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
	p.c = c;
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
	return parse_text(text, name, NULL, false, ret, errs);
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
	r = parse_text(text, opts->path, opts->default_socket, true, ret, errs);
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
	       str_eq(a->client_id, b->client_id) &&
	       (a->secret == b->secret ||
		(a->secret && b->secret && secmem_equal(a->secret, b->secret)));
}

const char *identity_resource(const struct identity *id, const char *resource, const char *scope)
{
	static const char suffix[] = "/.default";
	size_t n;

	if (scope && *scope) {
		n = strlen(scope);
		if (n <= sizeof(suffix) - 1 ||
		    strcmp(scope + n - (sizeof(suffix) - 1), suffix) != 0)
			return NULL;
		n -= sizeof(suffix) - 1;
		for (size_t i = 0; i < id->n_resources; i++)
			if (strlen(id->resources[i]) == n && !strncmp(id->resources[i], scope, n))
				return id->resources[i];
		return NULL;
	}
	if (!resource || !*resource)
		return id->resources[0];
	for (size_t i = 0; i < id->n_resources; i++)
		if (strcmp(id->resources[i], resource) == 0)
			return id->resources[i];
	return NULL;
}
