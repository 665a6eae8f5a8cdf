/* attest_cost.c - what attesting one caller costs the daemon: attest_peer()
 * (SO_PEERPIDFD, the cgroup, unit and user unit, the executable, the
 * liveness check) and attest_clear() on an accepted connection from another
 * process, N times.
 *
 * usage: attest_cost N      prints {"n": N, "us_per_attest": X} */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../daemon/lib/attest.h"

int main(int argc, char **argv)
{
	struct attestation a;
	struct timespec t0, t1;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	long n = argc == 2 ? strtol(argv[1], NULL, 10) : 0;
	int sv[2];
	pid_t child;
	char c;

	if (n <= 0 || n > 10000000 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 2;
	/* The peer is a process of its own, as a client is. */
	if ((child = fork()) == 0) {
		close(sv[0]);
		(void)!read(sv[1], &c, 1);
		_exit(0);
	}
	close(sv[1]);
	if (getsockopt(sv[0], SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		if (attest_peer(sv[0], cred.pid, &a) < 0 || a.err) {
			fprintf(stderr, "attest_cost: %d\n", a.err);
			return 1;
		}
		attest_clear(&a);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	(void)!write(sv[0], "x", 1);
	waitpid(child, NULL, 0);
	printf("{\"n\": %ld, \"us_per_attest\": %.2f}\n", n,
	       ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) /
		   n);
	return 0;
}
