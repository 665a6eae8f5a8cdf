/* burst.c - N processes asking batchtokd for tokens at the same moment, for
 * the guard's integration test and its bench figure: each process connects
 * and says HELLO (a ping), then all wait on one pipe; once every one is
 * ready the parent closes it, and process i asks once for RESOURCE number
 * i modulo their count, of IDENTITY ("-": the default).
 *
 *   burst SOCKET N IDENTITY RESOURCE...
 *
 * Prints one line of JSON: processes, ready (connected and answered the
 * ping), ok (got a token), failed, seconds from the go to the last answer,
 * and the first few errors ("-ERRNO message"). Exits 0 if it could run the
 * burst at all, whatever the answers. Every process ends by itself after
 * LIMIT_SECONDS, and with its parent. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../client/batchtok.h"

#define PROCS_MAX     10000 /* beyond any burst the tests make */
#define LIMIT_SECONDS 120   /* a bound on every wait, in every process */
#define ERRORS_SHOWN  5

/* What a process reports: small enough for one atomic pipe write. */
struct report {
	int rc;		 /* 0: a token came; else the negative errno */
	int64_t done_ns; /* CLOCK_MONOTONIC, which all processes share */
	char error[240];
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads exactly n bytes before the deadline; -1 on end of file, error or
 * timeout. */
static int read_all(int fd, void *buf, size_t n, int64_t deadline)
{
	char *p = buf;

	while (n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int64_t left = (deadline - now_ns()) / 1000000;
		ssize_t r;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return -1;
		r = read(fd, p, n);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void child(const char *sock, const char *identity, const char *resource, int ready_fd,
		  int go_fd, int report_fd)
{
	struct batchtok_request req = {.identity = identity, .resource = resource};
	struct batchtok_token *tok = NULL;
	struct report rep = {0};
	batchtok *bt = NULL;
	char c;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(LIMIT_SECONDS);
	r = batchtok_new(&bt);
	if (r == 0) {
		batchtok_set_timeout(bt, LIMIT_SECONDS * 1000);
		r = batchtok_connect(bt, sock);
	}
	if (r == 0)
		r = batchtok_ping(bt, NULL);
	/* Ready either way: a failure is reported like any other. */
	if (write(ready_fd, "r", 1) != 1)
		_exit(1);
	while (read(go_fd, &c, 1) > 0)
		;
	if (r == 0)
		r = batchtok_get_token(bt, &req, &tok);
	rep.done_ns = now_ns();
	rep.rc = r;
	if (r == 0 && (!tok->access_token || !*tok->access_token))
		rep.rc = -EPROTO;
	if (rep.rc < 0)
		snprintf(rep.error, sizeof(rep.error), "%d %s", rep.rc,
			 bt ? batchtok_error(bt) : "out of memory");
	batchtok_token_free(tok);
	batchtok_free(bt);
	_exit(write(report_fd, &rep, sizeof(rep)) == sizeof(rep) ? 0 : 1);
}

int main(int argc, char **argv)
{
	int ready[2], go[2], reports[2], n, n_res, ready_n = 0, ok = 0, failed = 0, shown = 0;
	const char *identity;
	static pid_t pids[PROCS_MAX];
	int64_t t0, last = 0, deadline;
	char *end, errors[ERRORS_SHOWN][sizeof(((struct report *)0)->error)];

	if (argc < 5)
		return 2;
	n = (int)strtol(argv[2], &end, 10);
	if (*end || n <= 0 || n > PROCS_MAX)
		return 2;
	identity = strcmp(argv[3], "-") ? argv[3] : NULL;
	n_res = argc - 4;
	if (pipe(ready) < 0 || pipe(go) < 0 || pipe(reports) < 0) {
		perror("burst: pipe");
		return 1;
	}
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("burst: fork");
			for (int k = 0; k < i; k++)
				kill(pids[k], SIGKILL);
			return 1;
		}
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			close(reports[0]);
			child(argv[1], identity, argv[4 + i % n_res], ready[1], go[0], reports[1]);
		}
	}
	close(ready[1]);
	close(go[0]);
	close(reports[1]);
	deadline = now_ns() + (int64_t)LIMIT_SECONDS * 1000000000;
	for (char c; ready_n < n && read_all(ready[0], &c, 1, deadline) == 0;)
		ready_n++;
	/* Go: every process sees the end of the pipe at once. */
	t0 = now_ns();
	close(go[1]);
	deadline = t0 + (int64_t)LIMIT_SECONDS * 1000000000;
	for (int i = 0; i < n; i++) {
		struct report rep;

		if (read_all(reports[0], &rep, sizeof(rep), deadline) < 0)
			break;
		if (rep.done_ns > last)
			last = rep.done_ns;
		if (rep.rc == 0) {
			ok++;
			continue;
		}
		failed++;
		if (shown < ERRORS_SHOWN) {
			rep.error[sizeof(rep.error) - 1] = 0;
			memcpy(errors[shown++], rep.error, sizeof(rep.error));
		}
	}
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	printf("{\"processes\": %d, \"ready\": %d, \"ok\": %d, \"failed\": %d, \"seconds\": %.3f, "
	       "\"errors\": [",
	       n, ready_n, ok, failed, last > t0 ? (double)(last - t0) / 1e9 : 0.0);
	for (int i = 0; i < shown; i++) {
		printf("%s\"", i ? ", " : "");
		for (const char *p = errors[i]; *p; p++)
			if (*p == '"' || *p == '\\')
				printf("\\%c", *p);
			else if ((unsigned char)*p >= 0x20)
				putchar(*p);
		putchar('"');
	}
	printf("]}\n");
	return 0;
}
