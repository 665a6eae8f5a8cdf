/* sockdiag.h - who owns the other end of a loopback TCP connection.
 *
 * The compat endpoint listens on loopback, where any local process can
 * connect. For each connection the daemon asks the kernel's socket
 * diagnostics (NETLINK_SOCK_DIAG, inet_diag) for the peer socket, found by
 * its exact address and port pair, and reads the uid that owns it: the TCP
 * counterpart of a Unix socket's SO_PEERCRED. The query is answered by the
 * kernel within the send, so it never waits on anything outside. */
#ifndef BATCHTOK_DAEMON_SOCKDIAG_H
#define BATCHTOK_DAEMON_SOCKDIAG_H

#include <sys/socket.h>
#include <sys/types.h>

/* A NETLINK_SOCK_DIAG socket (non-blocking, close-on-exec), or -errno. */
int sockdiag_open(void);

/* The uid owning the TCP socket whose local address is peer and whose
 * remote address is local: that is, the client end of a connection this
 * process accepted, as getpeername() and getsockname() describe it.
 * Returns 0, -ENOENT if the kernel knows no such socket, -EAFNOSUPPORT for
 * a family other than AF_INET/AF_INET6, or another -errno. */
int sockdiag_tcp_owner(int fd, const struct sockaddr_storage *peer,
		       const struct sockaddr_storage *local, uid_t *ret);

#endif
