/* sockdiag.c - the owner of a loopback TCP peer, from inet_diag. */
#include "sockdiag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* Replies to one exact query are a single message; leftovers of an earlier
 * query that failed half-way are skipped, at most this many. */
#define STALE_MAX 8

int sockdiag_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	return fd < 0 ? -errno : fd;
}

/* Fills addr (network order words) and port from a socket address. */
static int endpoint(const struct sockaddr_storage *ss, __be32 addr[4], __be16 *port)
{
	memset(addr, 0, 4 * sizeof(__be32));
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		memcpy(addr, &in->sin_addr, sizeof(in->sin_addr));
		*port = in->sin_port;
		return 0;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		memcpy(addr, &in6->sin6_addr, sizeof(in6->sin6_addr));
		*port = in6->sin6_port;
		return 0;
	}
	return -EAFNOSUPPORT;
}

int sockdiag_tcp_owner(int fd, const struct sockaddr_storage *peer,
		       const struct sockaddr_storage *local, uid_t *ret)
{
	static uint32_t seq;
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} q = {0};
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	union {
		char bytes[8192];
		struct nlmsghdr align;
	} buf;
	int r;

	if (peer->ss_family != local->ss_family)
		return -EAFNOSUPPORT;
	q.nlh.nlmsg_len = sizeof(q);
	q.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	q.nlh.nlmsg_flags = NLM_F_REQUEST;
	q.nlh.nlmsg_seq = ++seq;
	q.req.sdiag_family = (uint8_t)peer->ss_family;
	q.req.sdiag_protocol = IPPROTO_TCP;
	q.req.idiag_states = ~0u;
	/* The socket sought: its local end is our peer, its remote end us. */
	if ((r = endpoint(peer, q.req.id.idiag_src, &q.req.id.idiag_sport)) < 0 ||
	    (r = endpoint(local, q.req.id.idiag_dst, &q.req.id.idiag_dport)) < 0)
		return r;
	q.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	q.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	for (int i = 0; i < STALE_MAX; i++) {
		ssize_t n = recv(fd, buf.bytes, sizeof(buf.bytes), MSG_DONTWAIT);
		if (n < 0)
			return -errno;
		for (struct nlmsghdr *h = &buf.align; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != q.nlh.nlmsg_seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EBADMSG;
				return e->error < 0 ? e->error : -ENOENT;
			}
			if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
				const struct inet_diag_msg *m = NLMSG_DATA(h);
				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)) ||
				    m->id.idiag_sport != q.req.id.idiag_sport ||
				    m->id.idiag_dport != q.req.id.idiag_dport ||
				    memcmp(m->id.idiag_src, q.req.id.idiag_src,
					   peer->ss_family == AF_INET ? 4 : 16) != 0)
					return -EBADMSG;
				/* A socket no process holds any more (the client
				 * closed it: an orphan) is reported as root's:
				 * its owner is unknown. */
				if (m->idiag_inode == 0)
					return -ENOENT;
				*ret = (uid_t)m->idiag_uid;
				return 0;
			}
		}
	}
	return -EBADMSG;
}
