/* unixsock.c - listening Unix sockets made safely (unixsock.h). */
#include "unixsock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* The directory the daemon makes for a socket: anyone may pass through;
 * the socket's own mode and group decide who may connect. */
#define SOCKET_DIR_MODE 0755

/* What to make, and the config key that named it (for messages). */
struct where {
	const char *path, *key;
	mode_t mode;
	gid_t gid;
};

/* Why a directory on the way to the socket is unsafe, or NULL. Only root
 * and our own user may own it; nobody else may write the socket's own
 * directory (they could replace the socket or put a fake one there while we
 * are down), and a directory above it only if it is sticky (then they cannot
 * move what we own out of it). */
static const char *unsafe_dir(const struct stat *st, bool last)
{
	if (!S_ISDIR(st->st_mode))
		return "is not a directory";
	if (st->st_uid != 0 && st->st_uid != geteuid())
		return "belongs to another user";
	if ((st->st_mode & 022) && (last || !(st->st_mode & S_ISVTX)))
		return last ? "is writable by its group or others"
			    : "is writable by its group or others and not sticky";
	return NULL;
}

/* Opens the socket's directory (made if missing, the last component only)
 * without following a symbolic link anywhere on its resolved path, checking
 * each directory on the way (unsafe_dir()). Returns an O_PATH descriptor
 * with *ret_dir the resolved directory (free()), or a negative errno with
 * the cause and its fix logged. */
static int open_socket_dir(const struct where *o, char **ret_dir)
{
	char dir[PATH_MAX], *real = NULL, *comp, *save = NULL, *walk = NULL;
	mode_t mask;
	int fd = -1, r;

	snprintf(dir, sizeof(dir), "%s", o->path);
	comp = strrchr(dir, '/');
	if (!comp) {
		log_error("%s = %s is not an absolute path: set an absolute one", o->key, o->path);
		return -EINVAL;
	}
	*(comp == dir ? comp + 1 : comp) = 0;
	/* The daemon's umask is 0077; those the socket's own mode admits must
	 * be able to reach it. The runtime directory above belongs to systemd
	 * or the user: only the last component is made. */
	mask = umask(0022);
	r = mkdir(dir, SOCKET_DIR_MODE) < 0 && errno != EEXIST ? -errno : 0;
	umask(mask);
	if (r < 0 || !(real = realpath(dir, NULL)) || !(walk = strdup(real))) {
		r = r ?: -errno;
		log_error("cannot make or find the socket's directory %s: %s", dir, strerror(-r));
		goto fail;
	}
	if ((fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		r = -errno;
		goto fail;
	}
	comp = strtok_r(walk, "/", &save);
	for (;;) {
		struct stat st;
		const char *why;
		char *next = comp ? strtok_r(NULL, "/", &save) : NULL;
		if (fstat(fd, &st) < 0) {
			r = -errno;
			goto fail;
		}
		if ((why = unsafe_dir(&st, comp == NULL))) {
			log_error("the socket's directory %s, or one above it, %s (uid %u, mode "
				  "%04o): another user could replace the socket or put a fake "
				  "one there; choose a %s = in a directory that only root or "
				  "batchtokd's user can write, such as /run/batchtok, or fix the "
				  "owner and mode of that directory",
				  real, why, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
				  o->key);
			r = -EPERM;
			goto fail;
		}
		if (!comp)
			break;
		/* No symbolic link is followed: one that appears after realpath()
		 * fails here. */
		r = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (r < 0) {
			r = -errno;
			log_error("the socket's directory %s changed while batchtokd checked it "
				  "(%s): make sure nobody else can change it",
				  real, strerror(-r));
			goto fail;
		}
		close(fd);
		fd = r;
		comp = next;
	}
	free(walk);
	*ret_dir = real;
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	free(walk);
	free(real);
	return r;
}

/* Binds the socket's name in the directory dirfd (at the address sa): its
 * mode is given before bind() so that the file never exists with a wider
 * one, and its group is set on the name without following a link. */
static int bind_at(int fd, int dirfd, const char *base, const struct sockaddr_un *sa,
		   const struct where *o)
{
	mode_t mask;
	int r;

	/* bind() makes the file with the socket inode's mode less the umask. */
	if (fchmod(fd, o->mode) < 0)
		return -errno;
	mask = umask(~o->mode & 0777);
	r = bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 ? -errno : 0;
	umask(mask);
	if (r < 0)
		return r;
	if (o->gid != (gid_t)-1 &&
	    fchownat(dirfd, base, (uid_t)-1, o->gid, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		unlinkat(dirfd, base, 0);
		return r;
	}
	return 0;
}

/* Binds the socket in the checked directory dirfd (resolved path dir),
 * replacing a stale socket of ours but never a live daemon's, nor anything
 * that is not our socket. Returns 0 with *ret the listening descriptor, or
 * a negative errno with the cause logged. */
static int bind_socket(const struct where *o, int dirfd, const char *dir, const char *base,
		       int *ret)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r, k;

	k = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", strcmp(dir, "/") ? dir : "", base);
	if (k < 0 || (size_t)k >= sizeof(sa.sun_path)) {
		log_error("%s = %s is too long for a Unix socket (%zu bytes at most): choose a "
			  "shorter path",
			  o->key, o->path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = bind_at(fd, dirfd, base, &sa, o);
	if (r == -EADDRINUSE) {
		/* Something is there: if a daemon answers, leave it. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		if (probe >= 0)
			close(probe);
		if (live) {
			log_error("another batchtokd is already listening on %s: stop it first, or "
				  "set a different %s =",
				  o->path, o->key);
			close(fd);
			return -EADDRINUSE;
		}
		if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
		} else if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid()) {
			log_error("%s exists and is not a socket of batchtokd's user (it is a %s "
				  "owned by uid %u): batchtokd removes only its own stale sockets; "
				  "remove it if it is yours to remove, or choose another %s =",
				  o->path,
				  S_ISSOCK(st.st_mode)	? "socket"
				  : S_ISLNK(st.st_mode) ? "symbolic link"
				  : S_ISDIR(st.st_mode) ? "directory"
				  : S_ISREG(st.st_mode) ? "regular file"
							: "special file",
				  (unsigned)st.st_uid, o->key);
			close(fd);
			return -EEXIST;
		} else if (unlinkat(dirfd, base, 0) < 0) {
			r = -errno;
		} else {
			r = bind_at(fd, dirfd, base, &sa, o);
		}
	}
	if (r == 0 && listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		unlinkat(dirfd, base, 0);
	}
	if (r < 0) {
		log_error("cannot listen on %s: %s", o->path, strerror(-r));
		close(fd);
		return r;
	}
	*ret = fd;
	return 0;
}

int unixsock_listen(const char *path, const char *key, mode_t mode, gid_t gid, int *ret_fd,
		    int *ret_dirfd, char **ret_base)
{
	const struct where w = {.path = path, .key = key, .mode = mode, .gid = gid}, *o = &w;
	const char *slash = strrchr(o->path, '/');
	char *dir = NULL, *base;
	int dirfd, fd = -1, r;

	if (!slash || !slash[1]) {
		log_error("%s = %s does not name a socket file: set an absolute path such as "
			  "/run/batchtok/batchtokd.sock",
			  o->key, o->path);
		return -EINVAL;
	}
	if ((dirfd = open_socket_dir(o, &dir)) < 0)
		return dirfd;
	if (!(base = strdup(slash + 1))) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = bind_socket(o, dirfd, dir, base, &fd)) < 0)
		goto fail;
	free(dir);
	*ret_fd = fd;
	*ret_dirfd = dirfd;
	*ret_base = base;
	return 0;
fail:
	free(base);
	free(dir);
	close(dirfd);
	return r;
}
