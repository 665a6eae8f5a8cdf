/* keyfile.c - reads key material the way ssh reads keys. */
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/secmem.h"

/* Where the systemd credential NAME is: in $CREDENTIALS_DIRECTORY inside the
 * unit; outside it, with credentials_dir set (root checking the installed
 * config), where the packaged unit's LoadCredential= takes batchtok_FILE
 * from: credentials_dir/FILE. Messages repeat a name only when a file of
 * that name exists: a value that names nothing may be a secret pasted by
 * mistake. */
static int credential_path(const struct identity *id, const struct keyfile *f,
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
			return identity_error(errs, id, "%s_credential = %s: no file name after %s",
					      f->what, name, prefix);
		k = snprintf(buf, n, "%s/%s", credentials_dir, rest);
	} else if (credentials_dir) {
		k = snprintf(buf, n, "%s/%s", credentials_dir, name);
		if (k > 0 && (size_t)k < n && access(buf, F_OK) == 0)
			return identity_error(
			    errs, id,
			    "%s_credential = %s: the unit passes %s as %s%s: write "
			    "that name",
			    f->what, name, buf, prefix, name);
		return identity_error(
		    errs, id,
		    "%s_credential: the packaged unit passes each file FILE in %s as "
		    "%sFILE: put the file there and write that name",
		    f->what, credentials_dir, prefix);
	} else {
		return identity_error(errs, id,
				      "%s_credential needs LoadCredential= in the service unit "
				      "($CREDENTIALS_DIRECTORY is not set); run by hand, use "
				      "%s_file = PATH",
				      f->what, f->what);
	}
	if (k <= 0 || (size_t)k >= n)
		return identity_error(errs, id, "%s_credential: the name is too long", f->what);
	/* The name the unit gives is batchtok_FILE; FILE alone is a common
	 * slip. */
	if (env && *env && !prefixed && access(buf, F_OK) < 0 && access(guess, F_OK) == 0)
		return identity_error(
		    errs, id,
		    "%s_credential = %s: no such credential; the unit passes it as "
		    "%s%s: write that name",
		    f->what, name, prefix, name);
	return 0;
}

/* Every directory from the root to real (a resolved path) belongs to root or
 * the daemon's user and nobody else may write it, except a sticky one like
 * /tmp, where nobody can rename what is ours. Otherwise whoever may write
 * there could swap the file, or a directory on the way, for their own. */
static int check_dirs(const struct identity *id, const struct keyfile *f, const char *real,
		      struct config_errors *errs)
{
	const char *last = strrchr(real, '/');
	char dir[PATH_MAX];
	struct stat st;
	size_t len = 0;

	/* "/", then each longer prefix that ends before a '/', to the parent. */
	for (;;) {
		size_t n = len ? len : 1;
		memcpy(dir, real, n);
		dir[n] = 0;
		if (lstat(dir, &st) < 0)
			return identity_error(errs, id, "cannot check %s, on the way to %s %s: %s",
					      dir, f->what, real, strerror(errno));
		if (st.st_uid != 0 && st.st_uid != geteuid())
			return identity_error(errs, id,
					      "%s, on the way to %s %s, is owned by uid %u: the "
					      "directories above key material must belong to root "
					      "or the daemon's user (uid %u): move the file",
					      dir, f->what, real, st.st_uid, geteuid());
		if ((st.st_mode & 0022) && !(st.st_mode & S_ISVTX))
			return identity_error(
			    errs, id,
			    "%s, on the way to %s %s, is writable by others (mode "
			    "%04o): run chmod go-w %s, or move the file",
			    dir, f->what, real, st.st_mode & 07777, dir);
		if (real + len == last)
			return 0;
		len = (size_t)(strchr(real + len + 1, '/') - real);
	}
}

/* No symbolic link on the way to path belongs to anyone but root or the
 * daemon's user: one that another user made could point anywhere, at
 * /etc/shadow for one. (The kernel's fs.protected_symlinks refuses to follow
 * such links in sticky directories; this holds where it is off too.) */
static int check_links(const struct identity *id, const struct keyfile *f, const char *path,
		       struct config_errors *errs)
{
	char prefix[PATH_MAX];
	struct stat st;
	size_t n = strlen(path);

	for (size_t i = 1; i <= n && n < sizeof(prefix); i++) {
		if (i < n && path[i] != '/')
			continue;
		memcpy(prefix, path, i);
		prefix[i] = 0;
		if (lstat(prefix, &st) == 0 && S_ISLNK(st.st_mode) && st.st_uid != 0 &&
		    st.st_uid != geteuid())
			return identity_error(
			    errs, id,
			    "%s, on the way to %s %s, is a symbolic link owned by "
			    "uid %u: only root or the daemon's user (uid %u) may "
			    "own links to key material",
			    prefix, f->what, path, st.st_uid, geteuid());
	}
	return 0;
}

/* Reads all of a regular file of size bytes, which nobody may be writing. */
static ssize_t read_all(int fd, char *buf, size_t size)
{
	size_t got = 0;

	while (got < size) {
		ssize_t n = read(fd, buf + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int keyfile_read(const struct identity *id, const struct keyfile *f, const char *credentials_dir,
		 char **ret, size_t *ret_len, struct config_errors *errs)
{
	char path[PATH_MAX], real[PATH_MAX], *buf = NULL;
	struct stat st;
	ssize_t n = 0;
	int fd, r = 0;

	if (f->credential) {
		if ((r = credential_path(id, f, credentials_dir, path, sizeof(path), errs)) < 0)
			return r;
		/* systemd passes regular files alone as credentials, never
		 * what a symlink points to: read the same outside the unit. */
		if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			return identity_error(errs, id,
					      "%s %s is a symbolic link: systemd passes only "
					      "regular files as credentials",
					      f->what, path);
	} else {
		snprintf(path, sizeof(path), "%s", f->path);
	}
	if ((r = check_links(id, f, path, errs)) < 0)
		return r;
	if (!realpath(path, real))
		return identity_error(errs, id, "cannot open %s %s: %s", f->what, path,
				      strerror(errno));
	if ((r = check_dirs(id, f, real, errs)) < 0)
		return r;
	/* O_NONBLOCK: a FIFO put there must not hang the daemon. */
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return identity_error(errs, id, "cannot open %s %s: %s", f->what, path,
				      strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		r = identity_error(errs, id, "%s %s is not a regular file", f->what, path);
	else if (st.st_mode & 0027)
		r = identity_error(errs, id,
				   "%s %s is accessible by others (mode %04o): run chmod 600 %s",
				   f->what, path, st.st_mode & 07777, path);
	else if (st.st_uid != geteuid() && st.st_uid != 0)
		r = identity_error(errs, id,
				   "%s %s is owned by uid %u, not by root or the daemon's user "
				   "(uid %u): chown it",
				   f->what, path, st.st_uid, geteuid());
	else if ((size_t)st.st_size > f->max)
		r = identity_error(errs, id, "%s %s is larger than %zu bytes", f->what, path,
				   f->max);
	else if (!(buf = secmem_alloc((size_t)st.st_size + 1)))
		r = -ENOMEM;
	else {
		n = read_all(fd, buf, (size_t)st.st_size);
		/* Editors and echo leave a newline; it is never part of a secret. */
		while (!f->binary && n > 0 &&
		       (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			n--;
		if (n <= 0)
			r = identity_error(errs, id, "%s %s is empty or unreadable", f->what, path);
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
