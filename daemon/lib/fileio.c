/* fileio.c - whole-file I/O for small files and the trust check for what
 * batchtokd reads on someone's behalf. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secmem.h"

ssize_t fileio_read_all(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = read(fd, (char *)buf + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

int fileio_write_all(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = write(fd, (const char *)buf + done, n - done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		done += (size_t)k;
	}
	return 0;
}

int fileio_sync_dir(const char *path)
{
	char *copy = strdup(path), *slash;
	const char *dir;
	int fd, r = 0;

	if (!copy)
		return -ENOMEM;
	slash = strrchr(copy, '/');
	if (!slash)
		dir = ".";
	else if (slash == copy)
		dir = "/";
	else {
		*slash = 0;
		dir = copy;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	free(copy);
	return r;
}

int fileio_read_secret(int fd, size_t max, char **ret, size_t *ret_len)
{
	struct stat st;
	size_t size;
	ssize_t k;
	char *buf, *shrunk;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || (unsigned long long)st.st_size > max)
		return -EINVAL;
	size = (size_t)st.st_size;
	if (!(buf = secmem_alloc(size + 1)))
		return -ENOMEM;
	k = fileio_read_all(fd, buf, size);
	if (k < 0) {
		secmem_free(buf, size + 1);
		return (int)k;
	}
	if ((size_t)k < size) {
		/* Truncated since fstat(): the allocation must be what the
		 * caller will free. */
		shrunk = secmem_strndup(buf, (size_t)k);
		secmem_free(buf, size + 1);
		if (!shrunk)
			return -ENOMEM;
		buf = shrunk;
	}
	buf[k] = 0;
	*ret = buf;
	*ret_len = (size_t)k;
	return 0;
}

static bool trusted_owner(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* Every directory above path, up to the root (or the working directory for
 * a relative path), is owned by root or us and writable by nobody else
 * unless sticky. */
static int check_dirs(const char *path, char *why, size_t n)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir)) {
		snprintf(why, n, "the path is too long");
		return -ENAMETOOLONG;
	}
	for (;;) {
		slash = strrchr(dir, '/');
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == dir)
			dir[1] = 0;
		else
			*slash = 0;
		if (stat(dir, &st) < 0) {
			snprintf(why, n, "cannot check the directory %s: %s", dir, strerror(errno));
			return -errno;
		}
		if (!trusted_owner(st.st_uid)) {
			snprintf(
			    why, n,
			    "the directory %s is owned by uid %u, neither root nor batchtokd's "
			    "user (uid %u), who could put anything there: keep the file in "
			    "directories only root or batchtokd's user can change",
			    dir, (unsigned)st.st_uid, (unsigned)geteuid());
			return -EPERM;
		}
		if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
			snprintf(
			    why, n,
			    "the directory %s is writable by its group or by others, who could "
			    "put anything there: chmod go-w %s, or keep the file elsewhere",
			    dir, dir);
			return -EPERM;
		}
		if (!strcmp(dir, "/") || !strcmp(dir, "."))
			return 0;
	}
}

int fileio_open_trusted(const char *path, char *why, size_t n)
{
	char proc[64], real[PATH_MAX];
	struct stat st, lst;
	ssize_t k;
	int fd, r;

	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer,
	 * forever, in a thread pool that shutdown waits for. */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		snprintf(why, n, "%s", strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, n, "%s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, n,
			 "it is not a regular file (a FIFO, a device or a directory): point it at "
			 "the file itself");
		r = -EINVAL;
		goto fail;
	}
	if (!trusted_owner(st.st_uid)) {
		snprintf(why, n,
			 "it is owned by uid %u, neither root nor batchtokd's user (uid %u): chown "
			 "it, or have it written by root",
			 (unsigned)st.st_uid, (unsigned)geteuid());
		r = -EPERM;
		goto fail;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(why, n,
			 "it is writable by its group or by others, who could change what is sent: "
			 "chmod go-w %s",
			 path);
		r = -EPERM;
		goto fail;
	}
	/* A link in a sticky directory (/tmp) may be anyone's; elsewhere its
	 * directory's check below covers it. */
	if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) && !trusted_owner(lst.st_uid)) {
		snprintf(why, n,
			 "it is a symlink owned by uid %u, neither root nor batchtokd's user (uid "
			 "%u): whoever made it chose what is read",
			 (unsigned)lst.st_uid, (unsigned)geteuid());
		r = -EPERM;
		goto fail;
	}
	if ((r = check_dirs(path, why, n)) < 0)
		goto fail;
	/* Where the links led: the file that was opened, not the path's
	 * present state. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	k = readlink(proc, real, sizeof(real) - 1);
	if (k > 0 && real[0] == '/') {
		real[k] = 0;
	} else if (!realpath(path, real)) {
		r = -errno;
		snprintf(why, n, "cannot resolve it: %s", strerror(errno));
		goto fail;
	}
	if (strcmp(real, path) != 0 && (r = check_dirs(real, why, n)) < 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return r;
}
