/* attest.h - which program is on the other end of a Unix socket: its
 * systemd unit (system or user), the unit's invocation ID, its cgroup and
 * its executable, pinned to the process by a pidfd (SO_PEERPIDFD, Linux
 * 6.5) rather than its PID, which another process may take once it exits.
 *
 * attest_peer() reads what /proc and the cgroup say of the peer's PID and
 * then checks the pidfd still names a live process: while it does, the PID
 * cannot have been reused, so what was read is the peer's. attest_alive()
 * repeats that check when a request is answered. Without SO_PEERPIDFD (an
 * older kernel) nothing is attested and err says why: rules that need to
 * know the program then fail closed. */
#ifndef BATCHTOK_DAEMON_ATTEST_H
#define BATCHTOK_DAEMON_ATTEST_H

#include <stdbool.h>
#include <sys/types.h>

#define ATTEST_ID_LEN 32 /* an invocation ID: 128 bits in hex */

struct attestation {
	int err;   /* 0: attested; else -errno: -ENOPROTOOPT no SO_PEERPIDFD,
		    * -ESRCH the process had exited, other: /proc unreadable */
	int pidfd; /* the peer process; -1 when err */
	pid_t pid;
	char *unit;	     /* its system unit ("etl@1.service"), NULL: none */
	char *user_unit;     /* its unit of a user manager, NULL: none */
	uid_t user_unit_uid; /* whose manager runs user_unit */
	char *cgroup;	     /* its path in the systemd hierarchy ("/system.slice/x") */
	char *exe;	     /* its executable (a script's interpreter); NULL:
			      * unreadable, exe_err says why */
	int exe_err;
	dev_t exe_dev; /* the executable file, to tell a later exec: 0 unknown */
	ino_t exe_ino;
	/* Of unit (or user_unit), from what its manager publishes for journald
	 * (/run/systemd/units/invocation:UNIT); "": unknown. */
	char invocation_id[ATTEST_ID_LEN + 1];
	/* Set by the reader: a process other than this one sent on the
	 * connection (its pid; -1: unknown), which was handed over. */
	pid_t lent_to;
};

/* Attests the peer of the connected Unix socket fd, whose SO_PEERCRED pid
 * is pid, into *a (attest_clear() frees it). Fills a->err rather than
 * failing; returns -ENOMEM only. */
int attest_peer(int fd, pid_t pid, struct attestation *a);
/* 0 while the attested process lives and runs the executable it ran when
 * attested; -ESRCH once it has exited (its PID may be another's now);
 * -ESTALE once it has executed another program (or its executable can no
 * longer be read); -EXDEV once another process has sent on its connection
 * (lent_to); a->err if it was never attested. */
int attest_alive(const struct attestation *a);
/* Describes what is known of the caller, for denials and logs: "unit
 * etl@1.service, exe /usr/bin/python3" or "a process of no unit, exe ...";
 * names why nothing is known when a->err. */
void attest_describe(const struct attestation *a, char *buf, size_t n);
void attest_clear(struct attestation *a);

#endif
