/* flood.c - idle connections held by one process tree, for the bench's
 * 10,000-connection figures: N connections to a Unix socket (each says HELLO
 * and waits for the answer, then stays silent) or to a TCP port on 127.0.0.1
 * (each says nothing), held until stdin closes or SECONDS pass.
 *
 *   flood unix SOCKET N SECONDS
 *   flood tcp PORT N SECONDS
 *
 * The soft open-file limit is raised to the hard one; when that is still too
 * low for N, the connections are split over child processes. Once all are
 * open it prints one line of JSON: connections (open and not refused),
 * refused (answered with an error or closed at once), processes. Children
 * die with their parent, which stops each by its pid before it exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS   64	 /* 64 processes of the smallest share: beyond any N here */
#define FD_RESERVE  32	 /* descriptors each process keeps for itself */
#define HELLO_REPLY 0x81 /* the frame type of HELLO's answer */
#define SETTLE_MS   300	 /* a refused TCP connection is answered within this */
/* TCP connections are opened in bursts of TCP_BURST, TCP_PAUSE_US apart: a
 * listener's accept queue holds 128 (libuv's backlog), and a SYN beyond it
 * is dropped and sent again a second later. */
#define TCP_BURST    32
#define TCP_PAUSE_US 5000

struct share {
	int connections, refused;
};

static const char *kind, *target;

/* A decimal number, or -1 if s is not one. */
static long num(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	return errno || end == s || *end || v < 0 ? -1 : v;
}

static int read_full(int fd, unsigned char *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int open_one(void)
{
	if (!strcmp(kind, "unix")) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", target);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			perror("flood: connect");
			exit(1);
		}
		return fd;
	} else {
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_port = htons((uint16_t)num(target)),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			perror("flood: connect");
			exit(1);
		}
		return fd;
	}
}

/* Opens n connections into fds and counts them. */
static struct share open_share(int *fds, int n)
{
	static const unsigned char hello[] = {0, 0, 0, 13, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1};
	struct share sh = {0, 0};
	struct pollfd *pfds;

	for (int i = 0; i < n; i++) {
		if (!strcmp(kind, "tcp") && i && i % TCP_BURST == 0)
			usleep(TCP_PAUSE_US);
		fds[i] = open_one();
		if (!strcmp(kind, "unix") &&
		    send(fds[i], hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello)) {
			perror("flood: send");
			exit(1);
		}
	}
	if (!strcmp(kind, "unix")) {
		/* Answers come in order on each connection; a BUSY error is one. */
		for (int i = 0; i < n; i++) {
			unsigned char head[4], body[512];
			unsigned len;

			if (read_full(fds[i], head, 4) < 0 || head[0] || head[1] ||
			    (len = (unsigned)head[2] << 8 | head[3]) > sizeof(body) ||
			    read_full(fds[i], body, len) < 0 || body[0] != HELLO_REPLY)
				sh.refused++;
			else
				sh.connections++;
		}
		return sh;
	}
	/* TCP: the endpoint says nothing to a connection it keeps; a refused
	 * one is answered (503) or closed at once. */
	pfds = calloc((size_t)n, sizeof(*pfds));
	if (!pfds)
		exit(1);
	for (int i = 0; i < n; i++)
		pfds[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
	poll(pfds, (nfds_t)n, SETTLE_MS);
	for (int i = 0; i < n; i++) {
		if (pfds[i].revents)
			sh.refused++;
		else
			sh.connections++;
	}
	free(pfds);
	return sh;
}

/* Waits for stdin to close (or the alarm). */
static void wait_stdin(void)
{
	char buf[64];

	while (read(0, buf, sizeof(buf)) > 0)
		;
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	pid_t pids[MAX_PROCS];
	struct share total = {0, 0};
	int n, seconds, per, procs;

	if (argc != 5 || (strcmp(argv[1], "unix") && strcmp(argv[1], "tcp")))
		return 2;
	kind = argv[1];
	target = argv[2];
	n = num(argv[3]);
	seconds = num(argv[4]);
	if (n <= 0 || seconds <= 0)
		return 2;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		perror("flood: setrlimit");
		return 1;
	}
	if (rl.rlim_cur <= FD_RESERVE)
		return 1;
	per = rl.rlim_cur - FD_RESERVE > (rlim_t)n ? n : (int)(rl.rlim_cur - FD_RESERVE);
	procs = (n + per - 1) / per;
	if (procs > MAX_PROCS) {
		fprintf(stderr, "flood: the open-file limit (%lu) is too low for %d connections\n",
			(unsigned long)rl.rlim_cur, n);
		return 1;
	}
	/* Every process ends by itself after SECONDS at the latest. */
	alarm((unsigned)seconds);
	for (int k = 0; k < procs; k++) {
		int p[2], share = k < procs - 1 ? per : n - per * (procs - 1);

		if (pipe(p) < 0 || (pids[k] = fork()) < 0) {
			perror("flood: fork");
			for (int j = 0; j < k; j++)
				kill(pids[j], SIGTERM);
			return 1;
		}
		if (pids[k] == 0) {
			int *fds = calloc((size_t)share, sizeof(int));
			struct share sh;

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			alarm((unsigned)seconds); /* not inherited */
			close(p[0]);
			if (!fds)
				_exit(1);
			sh = open_share(fds, share);
			if (write(p[1], &sh, sizeof(sh)) != sizeof(sh))
				_exit(1);
			close(p[1]);
			wait_stdin();
			_exit(0);
		}
		close(p[1]);
		{
			struct share sh;

			if (read(p[0], &sh, sizeof(sh)) != sizeof(sh)) {
				fprintf(stderr, "flood: process %d failed\n", k);
				for (int j = 0; j <= k; j++)
					kill(pids[j], SIGTERM);
				for (int j = 0; j <= k; j++)
					waitpid(pids[j], NULL, 0);
				return 1;
			}
			total.connections += sh.connections;
			total.refused += sh.refused;
		}
		close(p[0]);
	}
	printf("{\"connections\": %d, \"refused\": %d, \"processes\": %d}\n", total.connections,
	       total.refused, procs);
	fflush(stdout);
	wait_stdin();
	for (int k = 0; k < procs; k++)
		kill(pids[k], SIGTERM);
	for (int k = 0; k < procs; k++)
		waitpid(pids[k], NULL, 0);
	return 0;
}
