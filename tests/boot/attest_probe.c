/* attest_probe.c - a program of its own for the boot tier's attestation
 * tests, built on the host against libbatchtok and run in the container:
 * an executable that is neither batchtok nor a shell, so allow_exes = can
 * name it, and a client that can hand its connection to a child and exit,
 * so that its PID can be given to another process before the child asks.
 *
 *   attest-probe get IDENTITY      a token, or the daemon's refusal (exit 4)
 *   attest-probe reuse IDENTITY F  connect (and be attested), fork a child
 *                                  that keeps the connection; print
 *                                  "PARENT CHILD" and exit. On SIGUSR1 the
 *                                  child asks for a token on that connection
 *                                  and writes what it got to the file F.
 *   attest-probe hold              wait for SIGTERM (a process whose PID and
 *                                  executable look like the exited one's)
 *   attest-probe vm PID            under the daemon's sandbox: may it read
 *                                  PID's executable (it should) and its
 *                                  memory (it should not)? */
#define _GNU_SOURCE /* process_vm_readv() */
#include <batchtok.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static int get(batchtok *bt, const char *identity, FILE *out)
{
	struct batchtok_request req = {.identity = identity};
	struct batchtok_token *t = NULL;

	if (batchtok_get_token(bt, &req, &t) < 0) {
		fprintf(out, "refused: %s\n", batchtok_error(bt));
		return 4;
	}
	fprintf(out, "token %zu bytes\n", strlen(t->access_token));
	batchtok_token_free(t);
	return 0;
}

int main(int argc, char **argv)
{
	batchtok *bt = NULL;
	sigset_t set;
	char *pong = NULL;
	pid_t child;
	int sig, rc;
	FILE *out;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	if (argc == 3 && strcmp(argv[1], "vm") == 0) {
		/* An address nobody maps: allowed, the call fails with EFAULT;
		 * filtered, with the unit's EPERM. */
		char path[64], exe[256], byte;
		struct iovec local = {.iov_base = &byte, .iov_len = 1};
		struct iovec remote = {.iov_base = (void *)8, .iov_len = 1};
		pid_t pid = (pid_t)strtol(argv[2], NULL, 10);
		ssize_t n;
		snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
		n = readlink(path, exe, sizeof(exe) - 1);
		printf("exe %s\n", n > 0 ? (exe[n] = '\0', exe) : strerror(errno));
		n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
		printf("process_vm_readv %s\n", n < 0 ? strerror(errno) : "read");
		n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
		printf("process_vm_writev %s\n", n < 0 ? strerror(errno) : "wrote");
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "hold") == 0) {
		sigprocmask(SIG_BLOCK, &set, NULL);
		return sigwait(&set, &sig) == 0 ? 0 : 1;
	}
	if (argc < 3 || batchtok_new(&bt) < 0 || batchtok_connect(bt, NULL) < 0) {
		fprintf(stderr, "attest-probe: %s\n",
			argc < 3 ? "usage: get ID | reuse ID FILE | hold" : "cannot connect");
		return 2;
	}
	if (strcmp(argv[1], "get") == 0) {
		rc = get(bt, argv[2], stdout);
		batchtok_free(bt);
		return rc;
	}
	if (strcmp(argv[1], "reuse") != 0 || argc != 4)
		return 2;
	/* A round trip: the daemon has accepted, so attested, this process. */
	if (batchtok_ping(bt, &pong) < 0) {
		fprintf(stderr, "attest-probe: ping: %s\n", batchtok_error(bt));
		return 2;
	}
	free(pong);
	sigprocmask(SIG_BLOCK, &set, NULL);
	fflush(stdout);
	if ((child = fork()) < 0)
		return 2;
	if (child > 0) {
		printf("%d %d\n", (int)getpid(), (int)child);
		return 0;
	}
	/* The child: nothing of the caller's open but the connection. */
	if (!freopen("/dev/null", "r", stdin) || !freopen("/dev/null", "w", stdout) ||
	    !freopen("/dev/null", "w", stderr))
		_exit(2);
	if (sigwait(&set, &sig) != 0 || sig != SIGUSR1)
		_exit(0);
	if (!(out = fopen(argv[3], "w")))
		_exit(2);
	rc = get(bt, argv[2], out);
	fclose(out);
	_exit(rc);
}
