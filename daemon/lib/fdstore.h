/* fdstore.h - systemd's file descriptor store: state handed to the service
 * manager at stop and taken back at the next start (sd_notify FDSTORE=1,
 * FileDescriptorStoreMax=), so a restart keeps what the daemon knew without
 * writing it to a file.
 *
 * The state travels as a sealed memfd: anonymous memory, never on a file
 * system, that nobody can change once sealed. systemd keeps it across
 * `systemctl restart` and drops it on a plain stop (systemd 252; 254 can be
 * told to keep it with FileDescriptorStorePreserve=). Outside systemd (no
 * $NOTIFY_SOCKET) nothing is stored and nothing comes back. */
#ifndef BATCHTOK_DAEMON_FDSTORE_H
#define BATCHTOK_DAEMON_FDSTORE_H

#include <stdbool.h>
#include <stddef.h>

/* The names the daemon stores state under: descriptors systemd passes
 * with these names are state, not sockets to listen on. */
#define FDSTORE_TOKENS "tokens"
bool fdstore_is_state(const char *name);

/* Takes what is stored under name out of the store (FDSTOREREMOVE=1), once
 * the start has succeeded, so that a later crash cannot bring back what this
 * run has moved on from. Nothing outside systemd. */
void fdstore_remove(const char *name);

/* Hands data (n bytes) to the service manager under name. Returns 0,
 * -ENOTCONN outside systemd, or a negative errno. data is copied into the
 * memfd and may be wiped by the caller after. */
int fdstore_put(const char *name, const void *data, size_t n);

/* Takes the state stored under name, if systemd passed it: 0 with *ret (n
 * bytes plus a NUL, in secure memory: secmem_free(*ret, *n + 1)), -ENOENT if
 * there is none, or a negative errno (a descriptor that is not a sealed
 * memfd of at most max bytes is refused: -EBADF, -EFBIG). The descriptor is
 * closed (its number holds /dev/null, for the server's sd_listen_fds()).
 * Reads the passed descriptors without consuming $LISTEN_FDS: the socket's
 * are still there for the server. The state stays in the store until
 * fdstore_remove(): a start that fails finds it again at the next one. */
int fdstore_take(const char *name, size_t max, char **ret, size_t *n);

#endif
