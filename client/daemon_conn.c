/* daemon_conn.c - reaching batchtokd's socket and reading its answers, for
 * handles and watches alike. */
#include "daemon_conn.h"

#include "batchtok.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../proto/msg.h"

const char *daemon_conn_default_path(char *buf, size_t n)
{
	const char *env = getenv("BATCHTOK_SOCKET");
	struct stat st;

	if (env && *env)
		return env;
	env = getenv("XDG_RUNTIME_DIR");
	if (env && *env) {
		int k = snprintf(buf, n, "%s/batchtok/batchtokd.sock", env);
		if (k > 0 && (size_t)k < n && stat(buf, &st) == 0 && S_ISSOCK(st.st_mode))
			return buf;
	}
	return BATCHTOK_SYSTEM_SOCKET;
}

/* Whether the caller is in group g, as the kernel sees it. */
static bool in_group(gid_t g)
{
	int n = getgroups(0, NULL);
	gid_t *groups = n > 0 ? calloc((size_t)n, sizeof(*groups)) : NULL;
	bool in = getegid() == g;

	if (groups && (n = getgroups(n, groups)) > 0)
		for (int i = 0; i < n && !in; i++)
			in = groups[i] == g;
	free(groups);
	return in;
}

/* The first directory on the way to path that the caller cannot search, into
 * buf; false if every one can be searched. */
static bool unsearchable_dir(const char *path, char *buf, size_t n)
{
	const char *slash = path;

	while ((slash = strchr(slash + 1, '/'))) {
		int k = snprintf(buf, n, "%.*s", (int)(slash - path), path);
		if (k <= 0 || (size_t)k >= n)
			return false;
		if (access(buf, X_OK) < 0 && errno == EACCES)
			return true;
	}
	return false;
}

/* The name of group g, or its number. */
static void group_name(gid_t g, char *buf, size_t n)
{
	char tmp[4096];
	struct group gr, *res = NULL;

	if (getgrgid_r(g, &gr, tmp, sizeof(tmp), &res) == 0 && res)
		snprintf(buf, n, "%s", res->gr_name);
	else
		snprintf(buf, n, "%u", (unsigned)g);
}

/* connect() said EACCES: tell a directory that cannot be entered from a
 * socket group one is not in (or is in, while the mode shuts it out). */
static int denied(const char *path, char *msg, size_t n)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], grp[64];
	struct stat st;

	if (unsearchable_dir(path, dir, sizeof(dir)))
		snprintf(msg, n,
			 "cannot enter %s, on the way to the socket %s: ask the administrator "
			 "to let you through (chmod 755 %s)",
			 dir, path, dir);
	else if (stat(path, &st) < 0)
		snprintf(msg, n, "permission denied on %s", path);
	else {
		group_name(st.st_gid, grp, sizeof(grp));
		if (in_group(st.st_gid))
			snprintf(msg, n,
				 "permission denied on %s although you are in its group %s: its "
				 "mode %04o does not let the group connect (socket_mode = 0660)",
				 path, grp, (unsigned)(st.st_mode & 07777));
		else
			snprintf(msg, n,
				 "permission denied on %s: ask the administrator to add you to its "
				 "group %s (then log in again)",
				 path, grp);
	}
	return -EACCES;
}

int daemon_conn_open(const char *path, int flags, int *ret_fd, char *msg, size_t n)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(msg, n, "socket path too long: %s", path);
		return -EINVAL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	if (fd < 0) {
		r = errno;
		snprintf(msg, n, "cannot create a socket: %s", strerror(r));
		return -r;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = errno;
		close(fd);
		if (r == EACCES || r == EPERM)
			return denied(path, msg, n);
		snprintf(msg, n,
			 "cannot reach batchtokd at %s (%s): is the daemon running? "
			 "(systemctl status batchtokd; or set -S/BATCHTOK_SOCKET)",
			 path, strerror(r));
		return -ECONNREFUSED;
	}
	*ret_fd = fd;
	return 0;
}

int daemon_conn_status_errno(uint32_t status)
{
	switch (status) {
	case BT_E_DENIED:
		return -EACCES;
	case BT_E_UNKNOWN_IDENTITY:
	case BT_E_RESOURCE_NOT_ALLOWED:
		return -ENOENT;
	case BT_E_CREDENTIAL_REJECTED:
		return -EKEYREJECTED;
	case BT_E_UNAVAILABLE:
		return -EHOSTUNREACH;
	case BT_E_TIMEOUT:
		return -ETIMEDOUT;
	case BT_E_BAD_REQUEST:
		return -EINVAL;
	case BT_E_UNSUPPORTED:
		return -EOPNOTSUPP;
	case BT_E_VERSION:
		return -EPROTO;
	case BT_E_BUSY:
		return -EBUSY;
	}
	return -EIO;
}

/* The daemon refuses anything that is not an RFC 6750 token already; this
 * is the second line, because the token goes into an HTTP header and onto a
 * terminal as it is. */
bool daemon_conn_printable(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

int daemon_conn_take_token(struct bt_token_reply *m, struct batchtok_token **ret)
{
	struct batchtok_token *t;

	if (!daemon_conn_printable(m->access_token) || !daemon_conn_printable(m->token_type)) {
		bt_token_reply_clear(m);
		return -EPROTO;
	}
	if (!(t = calloc(1, sizeof(*t)))) {
		bt_token_reply_clear(m);
		return -ENOMEM;
	}
	/* The strings move over as they are; their allocations are ours now. */
	t->access_token = m->access_token;
	t->expires_on = (int64_t)m->expires_on;
	t->token_type = m->token_type;
	t->identity = m->identity;
	t->resource = m->resource;
	t->tenant = m->tenant;
	memset(m, 0, sizeof(*m));
	*ret = t;
	return 0;
}
