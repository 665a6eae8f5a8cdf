/* raw_echo.c - the floor for a cached get: a single-threaded epoll server on
 * a Unix socket that answers each length-prefixed request frame with a reply
 * frame of a fixed size, doing nothing else.
 *
 * usage: raw_echo SOCKET REPLY_BYTES */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXC 4096

struct conn {
	unsigned char in[65536];
	size_t len;
};

int main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	static struct conn *conns[MAXC];
	struct epoll_event ev, evs[64];
	unsigned char *reply;
	size_t rlen;
	int lfd, ep;

	if (argc != 3)
		return 2;
	rlen = (size_t)strtoul(argv[2], NULL, 10);
	if (rlen < 9 || rlen > 65536)
		return 2;
	reply = calloc(1, rlen);
	reply[0] = (unsigned char)((rlen - 4) >> 24);
	reply[1] = (unsigned char)((rlen - 4) >> 16);
	reply[2] = (unsigned char)((rlen - 4) >> 8);
	reply[3] = (unsigned char)(rlen - 4);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[1]);
	unlink(argv[1]);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0)
		return 1;
	ep = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					if (c >= MAXC) {
						close(c);
						continue;
					}
					conns[c] = calloc(1, sizeof(struct conn));
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			struct conn *c = conns[fd];
			ssize_t r = recv(fd, c->in + c->len, sizeof(c->in) - c->len, 0);
			if (r <= 0) {
				close(fd);
				free(c);
				conns[fd] = NULL;
				continue;
			}
			c->len += (size_t)r;
			for (;;) {
				uint32_t flen;
				if (c->len < 4)
					break;
				flen = (uint32_t)c->in[0] << 24 | (uint32_t)c->in[1] << 16 |
				       (uint32_t)c->in[2] << 8 | c->in[3];
				if (c->len < flen + 4)
					break;
				if (send(fd, reply, rlen, MSG_NOSIGNAL) != (ssize_t)rlen)
					break;
				memmove(c->in, c->in + flen + 4, c->len - flen - 4);
				c->len -= flen + 4;
			}
		}
	}
}
