/* raw_http.c - the floor for the compat endpoint: a single-threaded epoll
 * HTTP server on 127.0.0.1 that answers each request head (a GET, no body)
 * with a fixed 200 response of a given total size, keeping the connection,
 * and does nothing else; socket options as the compat endpoint's (libuv's
 * defaults: no TCP_NODELAY). Writes its port to PORT_FILE when it listens.
 *
 * usage: raw_http PORT_FILE RESPONSE_BYTES */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC	  4096	/* descriptors served; the load client uses at most 64 */
#define HEAD_MAX  8192	/* a request head longer than this closes the connection */
#define RESP_MAX  65536 /* the largest response asked for */
#define BODY_FILL 'x'

struct conn {
	char in[HEAD_MAX];
	size_t len;
};

/* The response: the compat endpoint's headers, a body filling it to total. */
static char *make_response(size_t total)
{
	static const char fmt[] = "HTTP/1.1 200 OK\r\n"
				  "Content-Type: application/json; charset=utf-8\r\n"
				  "Content-Length: %zu\r\n"
				  "Cache-Control: no-store\r\n"
				  "Connection: keep-alive\r\n\r\n";
	char head[256];
	size_t blen = 0;
	int hlen = 0;
	char *r;

	/* The body's length is in the head: settle both. */
	for (int i = 0; i < 4; i++) {
		hlen = snprintf(head, sizeof(head), fmt, blen);
		if ((size_t)hlen > total)
			return NULL;
		blen = total - (size_t)hlen;
	}
	hlen = snprintf(head, sizeof(head), fmt, blen);
	if ((size_t)hlen + blen != total || !(r = malloc(total)))
		return NULL;
	memcpy(r, head, (size_t)hlen);
	memset(r + hlen, BODY_FILL, blen);
	return r;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t salen = sizeof(sa);
	static struct conn *conns[MAXC];
	struct epoll_event ev, evs[64];
	char *reply, tmp[4096];
	size_t rlen;
	int lfd, ep, one = 1;
	FILE *f;

	if (argc != 3)
		return 2;
	rlen = (size_t)strtoul(argv[2], NULL, 10);
	if (rlen > RESP_MAX || !(reply = make_response(rlen)))
		return 2;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0)
		return 1;
	/* Written whole, then renamed: the reader never sees half a port. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[1]);
	if (!(f = fopen(tmp, "w")) || fprintf(f, "%d", ntohs(sa.sin_port)) < 0 || fclose(f) ||
	    rename(tmp, argv[1]) < 0)
		return 1;
	ep = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			struct conn *c;
			ssize_t r;
			char *end;

			if (fd == lfd) {
				int k;
				while ((k = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					if (k >= MAXC ||
					    !(conns[k] = calloc(1, sizeof(struct conn)))) {
						close(k);
						continue;
					}
					ev.events = EPOLLIN;
					ev.data.fd = k;
					epoll_ctl(ep, EPOLL_CTL_ADD, k, &ev);
				}
				continue;
			}
			c = conns[fd];
			r = recv(fd, c->in + c->len, sizeof(c->in) - c->len, 0);
			if (r <= 0) {
				close(fd);
				free(c);
				conns[fd] = NULL;
				continue;
			}
			c->len += (size_t)r;
			/* One response per complete head. */
			while ((end = memmem(c->in, c->len, "\r\n\r\n", 4))) {
				size_t used = (size_t)(end + 4 - c->in);
				if (send(fd, reply, rlen, MSG_NOSIGNAL) != (ssize_t)rlen)
					break;
				memmove(c->in, c->in + used, c->len - used);
				c->len -= used;
			}
			if (c->len == sizeof(c->in)) {
				close(fd);
				free(c);
				conns[fd] = NULL;
			}
		}
	}
}
