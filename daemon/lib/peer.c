/* peer.c - a Unix socket peer's credentials (peer.h). */
#include "peer.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

/* Supplementary groups read at most (the kernel's NGROUPS_MAX). */
#define PEER_GROUPS_MAX 65536

int peer_read(int fd, struct peer *p)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t *groups = NULL;
	socklen_t glen = 64 * sizeof(gid_t);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
		return -errno ?: -EIO;
	for (;;) {
		gid_t *g = realloc(groups, glen ? glen : sizeof(gid_t));
		if (!g) {
			free(groups);
			return -ENOMEM;
		}
		groups = g;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
			break;
		if (errno != ERANGE || glen > PEER_GROUPS_MAX * sizeof(gid_t)) {
			int e = errno;
			free(groups);
			return -e;
		}
	}
	p->uid = cred.uid;
	p->gid = cred.gid;
	p->pid = cred.pid;
	p->groups = groups;
	p->n_groups = (int)(glen / sizeof(gid_t));
	return 0;
}
