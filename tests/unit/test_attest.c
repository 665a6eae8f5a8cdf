/* test_attest.c - the program behind a Unix socket peer: this process over
 * a socketpair, a peer that exits (gone, even while a zombie), and a kernel
 * without SO_PEERPIDFD (getsockopt wrapped), which attests nothing. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../daemon/lib/attest.h"

static bool old_kernel;

int __real_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	if (old_kernel && level == SOL_SOCKET && name == 77 /* SO_PEERPIDFD */) {
		errno = ENOPROTOOPT;
		return -1;
	}
	return __real_getsockopt(fd, level, name, val, len);
}

static pid_t peer_pid(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len), 0);
	return cred.pid;
}

static void test_this_process(void **state)
{
	struct attestation a;
	char exe[PATH_MAX], desc[512];
	ssize_t n;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(attest_peer(sv[0], peer_pid(sv[0]), &a), 0);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.pid, getpid());
	assert_true(a.pidfd >= 0);
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(n > 0);
	exe[n] = '\0';
	assert_string_equal(a.exe, exe);
	assert_true(a.exe_ino != 0);
	assert_non_null(a.cgroup);
	assert_int_equal(a.cgroup[0], '/');
	assert_int_equal(attest_alive(&a), 0);
	attest_describe(&a, desc, sizeof(desc));
	assert_non_null(strstr(desc, exe));
	attest_clear(&a);
	assert_int_equal(a.pidfd, -1);
	close(sv[0]);
	close(sv[1]);
}

/* A child connects and exits once attested: it is gone as a zombie already
 * (its PID is not free yet, but it is not the peer any more), and still gone
 * once reaped, whoever takes its PID then. */
static void test_peer_that_exits(void **state)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct pollfd pfd;
	struct attestation a;
	char desc[512];
	int lfd, fd, go[2];
	pid_t child;
	char c;

	(void)state;
	/* An abstract address: nothing on disk. */
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "batchtok-test-attest-%d",
		 (int)getpid());
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(pipe(go), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		close(go[1]);
		if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0)
			_exit(1);
		(void)!read(go[0], &c, 1);
		_exit(0);
	}
	close(go[0]);
	fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);
	assert_int_equal(peer_pid(fd), child);
	assert_int_equal(attest_peer(fd, child, &a), 0);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.pid, child);
	assert_int_equal(attest_alive(&a), 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	/* The pidfd turns readable when the child exits: wait for that. */
	pfd = (struct pollfd){.fd = a.pidfd, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_int_equal(attest_alive(&a), -ESRCH); /* a zombie */
	assert_int_equal(waitpid(child, NULL, 0), child);
	assert_int_equal(attest_alive(&a), -ESRCH); /* reaped */
	a.err = -ESRCH;
	attest_describe(&a, desc, sizeof(desc));
	assert_non_null(strstr(desc, "has exited"));
	attest_clear(&a);
	close(fd);
	close(lfd);
}

static void test_kernel_without_peerpidfd(void **state)
{
	struct attestation a;
	char desc[512];
	int sv[2];

	(void)state;
	old_kernel = true;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(attest_peer(sv[0], peer_pid(sv[0]), &a), 0);
	old_kernel = false;
	assert_int_equal(a.err, -ENOPROTOOPT);
	assert_int_equal(a.pidfd, -1);
	assert_null(a.exe);
	assert_int_equal(attest_alive(&a), -ENOPROTOOPT);
	attest_describe(&a, desc, sizeof(desc));
	assert_non_null(strstr(desc, "SO_PEERPIDFD"));
	attest_clear(&a);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_this_process),
	    cmocka_unit_test(test_peer_that_exits),
	    cmocka_unit_test(test_kernel_without_peerpidfd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
