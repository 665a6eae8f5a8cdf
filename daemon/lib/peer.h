/* peer.h - who is on the other end of a request, as the kernel says: the
 * credentials access is decided by. */
#ifndef BATCHTOK_DAEMON_PEER_H
#define BATCHTOK_DAEMON_PEER_H

#include <sys/types.h>

struct attestation;

struct peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;     /* -1 where there is no process to name */
	gid_t *groups; /* supplementary groups, from SO_PEERGROUPS */
	int n_groups;
	/* The program, for Unix socket peers (attest.h); NULL where none can
	 * be attested (the compat endpoint's TCP clients). */
	const struct attestation *att;
};

/* The uid, gid, pid (SO_PEERCRED) and supplementary groups
 * (SO_PEERGROUPS, into p->groups: free()) of the peer of the Unix socket
 * fd; p->att is left alone. 0 or a negative errno. */
int peer_read(int fd, struct peer *p);

#endif
