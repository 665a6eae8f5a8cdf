/* daemon_conn.h - what every connection of libbatchtok to batchtokd shares:
 * finding the socket, connecting with a message that names the fix, the
 * wire status to errno mapping, and the check of a token before it is
 * handed out. Internal to the library: not installed. */
#ifndef BATCHTOK_CLIENT_DAEMON_CONN_H
#define BATCHTOK_CLIENT_DAEMON_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct batchtok_token;
struct bt_token_reply;

/* The socket batchtok_connect() uses for a NULL path: $BATCHTOK_SOCKET, else
 * $XDG_RUNTIME_DIR/batchtok/batchtokd.sock if it exists (written into buf),
 * else BATCHTOK_SYSTEM_SOCKET. */
const char *daemon_conn_default_path(char *buf, size_t n);

/* A new Unix stream socket (SOCK_CLOEXEC and the given extra type flags,
 * such as SOCK_NONBLOCK) connected to path, in *ret_fd. On failure nothing
 * is left open, msg (n bytes) says what failed and what to do, and the
 * result is -EACCES (the socket or a directory on its way shuts this user
 * out), -ECONNREFUSED (nobody listens there, or no such socket), -EINVAL (a
 * path too long) or another -errno. */
int daemon_conn_open(const char *path, int flags, int *ret_fd, char *msg, size_t n);

/* The errno a wire status (enum bt_status) stands for in the API. */
int daemon_conn_status_errno(uint32_t status);

/* Whether s is a non-empty run of printable ASCII without spaces: what an
 * RFC 6750 token and its type are. Anything else is never returned. */
bool daemon_conn_printable(const char *s);

/* Moves a decoded token reply into a new struct batchtok_token in *ret;
 * m is left empty either way. -EPROTO when the token or its type is not
 * printable (daemon_conn_printable()), -ENOMEM. */
int daemon_conn_take_token(struct bt_token_reply *m, struct batchtok_token **ret);

#endif
