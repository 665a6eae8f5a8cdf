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

#include "../lib/fileio.h"
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

int keyfile_read(const struct identity *id, const struct keyfile *f, const char *credentials_dir,
		 char **ret, size_t *ret_len, struct config_errors *errs)
{
	char path[PATH_MAX], why[512], *buf = NULL;
	struct stat st;
	size_t n = 0;
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
	/* Nobody else may have chosen the file: not through a directory on
	 * the way, a link, or a FIFO put in its place. */
	if ((fd = fileio_open_trusted(path, why, sizeof(why))) == -ENOMEM)
		return fd;
	if (fd < 0)
		return identity_error(errs, id, "cannot %s %s %s: %s",
				      fd == -EPERM || fd == -EINVAL ? "use" : "open", f->what, path,
				      why);
	/* Nor read it, as ssh insists for its keys. */
	if (fstat(fd, &st) < 0)
		r = identity_error(errs, id, "cannot read %s %s: %s", f->what, path,
				   strerror(errno));
	else if (st.st_mode & 0027)
		r = identity_error(errs, id,
				   "%s %s is accessible by others (mode %04o): run chmod 600 %s",
				   f->what, path, st.st_mode & 07777, path);
	else if ((r = fileio_read_secret(fd, f->max, &buf, &n)) == -EINVAL)
		r = identity_error(errs, id, "%s %s is larger than %zu bytes", f->what, path,
				   f->max);
	else if (r < 0 && r != -ENOMEM)
		r = identity_error(errs, id, "cannot read %s %s: %s", f->what, path, strerror(-r));
	close(fd);
	if (r < 0)
		return r;
	/* Editors and echo leave a newline; it is never part of a secret. */
	*ret_len = n;
	while (!f->binary && *ret_len > 0 &&
	       (buf[*ret_len - 1] == '\n' || buf[*ret_len - 1] == '\r' || buf[*ret_len - 1] == ' '))
		(*ret_len)--;
	*ret = *ret_len ? secmem_strndup(buf, *ret_len) : NULL;
	secmem_free(buf, n + 1);
	if (!*ret_len)
		return identity_error(errs, id, "%s %s is empty", f->what, path);
	return *ret ? 0 : -ENOMEM;
}
