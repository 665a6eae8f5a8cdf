/* unixsock.h - a listening Unix stream socket at a configured path, made so
 * that no other user can have a hand in it: the directories on the way
 * belong to root or the daemon's user and only they may write the socket's
 * own directory (the last component is made if missing); nothing is
 * followed, chmod'ed or chown'ed through a path that could be redirected;
 * an existing file is replaced only if it is a socket of the daemon's user
 * that nobody answers on. The daemon's socket and metrics_listen use it. */
#ifndef BATCHTOK_DAEMON_UNIXSOCK_H
#define BATCHTOK_DAEMON_UNIXSOCK_H

#include <sys/types.h>

/* Listens at path (key: the config key naming it, for messages) with the
 * socket file's mode and group (gid (gid_t)-1: as created). Returns 0 with
 * the non-blocking, close-on-exec listening descriptor, an O_PATH
 * descriptor of its directory and its name there (free()), which remove it
 * with unlinkat(); or a negative errno: -EPERM for an unsafe directory,
 * -EADDRINUSE when a daemon answers there, -EEXIST for a file that is not
 * ours, with the cause and its fix logged. */
int unixsock_listen(const char *path, const char *key, mode_t mode, gid_t gid, int *ret_fd,
		    int *ret_dirfd, char **ret_base);

#endif
