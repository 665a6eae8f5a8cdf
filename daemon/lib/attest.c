/* attest.c - the program behind a Unix socket peer, pinned by its pidfd. */
#include "attest.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-login.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; Debian 12's headers predate it */
#endif

/* The executable of pid, as /proc says (a script's is its interpreter).
 * Another user's needs CAP_SYS_PTRACE. */
static int read_exe(pid_t pid, char **ret)
{
	char path[32], buf[PATH_MAX];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	if ((n = readlink(path, buf, sizeof(buf))) < 0)
		return -errno;
	if ((size_t)n >= sizeof(buf))
		return -ENAMETOOLONG;
	buf[n] = '\0';
	return (*ret = strdup(buf)) ? 0 : -ENOMEM;
}

/* The invocation ID of the current run of unit, as its manager publishes
 * it for journald: a symlink under dir named "invocation:UNIT" pointing at
 * the ID. "" when there is none or it cannot be read (a user manager's
 * directory is its user's alone). */
static void read_invocation(const char *dir, const char *unit, char id[ATTEST_ID_LEN + 1])
{
	char path[PATH_MAX], buf[ATTEST_ID_LEN + 1];
	ssize_t n;

	id[0] = '\0';
	if ((size_t)snprintf(path, sizeof(path), "%s/invocation:%s", dir, unit) >= sizeof(path))
		return;
	n = readlink(path, buf, sizeof(buf));
	if (n != ATTEST_ID_LEN || strspn(buf, "0123456789abcdef") < ATTEST_ID_LEN)
		return;
	memcpy(id, buf, ATTEST_ID_LEN);
	id[ATTEST_ID_LEN] = '\0';
}

/* Whether two files are one. */
static int same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
		return -errno;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino ? 0 : -ESTALE;
}

/* Whether a->exe, as pid's /proc/PID/exe names it, is a path the daemon
 * can trust: the path is written in the process's own mount namespace and
 * its user namespace may change what it names (a bind mount over
 * /opt/etl/bin/tool, PR_SET_MM_MAP), so the process must share the daemon's
 * user namespace and the path must name, here, the very file it runs.
 * Records that file's device and inode. -EXDEV: another user namespace;
 * -ESTALE: the path names another file here (or none: "(deleted)"). */
static int check_exe(pid_t pid, struct attestation *a)
{
	char path[32], ns[32];
	struct stat st;
	int r;

	snprintf(ns, sizeof(ns), "/proc/%d/ns/user", (int)pid);
	if ((r = same_file(ns, "/proc/self/ns/user")) < 0)
		return r == -ESTALE ? -EXDEV : r;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	if ((r = same_file(path, a->exe)) < 0)
		return r == -ENOENT || r == -ESTALE ? -ESTALE : r;
	if (stat(path, &st) < 0)
		return -errno;
	a->exe_dev = st.st_dev;
	a->exe_ino = st.st_ino;
	return 0;
}

/* sd_pid_get_*() into *ret: 0, or -ENOMEM; other failures leave NULL
 * (-ENODATA: no such unit). */
static int opt_string(int r, char **ret)
{
	if (r == -ENOMEM)
		return -ENOMEM;
	if (r < 0)
		*ret = NULL;
	return 0;
}

int attest_peer(int fd, pid_t pid, struct attestation *a)
{
	socklen_t len = sizeof(int);
	int pidfd = -1, r;

	memset(a, 0, sizeof(*a));
	a->pidfd = -1;
	a->pid = pid;
	a->user_unit_uid = (uid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
		a->err = -errno;
		return 0;
	}
	if (pidfd < 0 || pid <= 0) {
		if (pidfd >= 0)
			close(pidfd);
		a->err = -ESRCH;
		return 0;
	}
	a->pidfd = pidfd;
	/* Every read names the PID; the pidfd check after them says it was
	 * still the peer's. */
	if ((r = opt_string(sd_pid_get_cgroup(pid, &a->cgroup), &a->cgroup)) < 0 ||
	    (r = opt_string(sd_pid_get_unit(pid, &a->unit), &a->unit)) < 0 ||
	    (r = opt_string(sd_pid_get_user_unit(pid, &a->user_unit), &a->user_unit)) < 0) {
		attest_clear(a);
		return r;
	}
	if (a->user_unit && sd_pid_get_owner_uid(pid, &a->user_unit_uid) < 0)
		a->user_unit_uid = (uid_t)-1;
	/* A user manager's directory is its user's to write: its record is
	 * trusted only by that user's own daemon. */
	if (a->user_unit && a->user_unit_uid == getuid()) {
		char dir[64];
		snprintf(dir, sizeof(dir), "/run/user/%u/systemd/units",
			 (unsigned)a->user_unit_uid);
		read_invocation(dir, a->user_unit, a->invocation_id);
	} else if (a->unit) {
		read_invocation("/run/systemd/units", a->unit, a->invocation_id);
	}
	if ((a->exe_err = read_exe(pid, &a->exe)) == -ENOMEM) {
		attest_clear(a);
		return -ENOMEM;
	}
	if (a->exe && (r = check_exe(pid, a)) < 0) {
		free(a->exe);
		a->exe = NULL;
		a->exe_err = r;
	}
	if (!a->cgroup)
		a->err = -ENODATA; /* no cgroup: /proc/PID unreadable */
	else if ((r = attest_alive(a)) < 0)
		a->err = r;
	return 0;
}

/* Whether pid runs the file it ran when attested (its device and inode,
 * which a path shared by an upgraded file would not tell). */
static int same_exe(const struct attestation *a)
{
	char path[32];
	struct stat st;

	if (!a->exe_ino)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)a->pid);
	if (stat(path, &st) < 0)
		return -errno;
	return st.st_dev == a->exe_dev && st.st_ino == a->exe_ino ? 0 : -ESTALE;
}

int attest_alive(const struct attestation *a)
{
	struct pollfd p = {.fd = a->pidfd, .events = POLLIN};
	int r;

	if (a->err)
		return a->err;
	if (a->pidfd < 0)
		return -EBADF;
	/* The program it runs now: one that connected as an allowed program
	 * and then executed another is no longer that program. */
	r = same_exe(a);
	/* A pidfd turns readable when its process exits: a zombie counts as
	 * gone, though its PID is not free yet. Checked after the read: while
	 * it lives, what was read was its. */
	if (poll(&p, 1, 0) < 0)
		return -errno;
	if (p.revents)
		return -ESRCH;
	if (a->lent_to)
		return -EXDEV;
	return r < 0 ? -ESTALE : 0;
}

void attest_describe(const struct attestation *a, char *buf, size_t n)
{
	const char *why;
	char exe[PATH_MAX + 8];

	switch (a->err) {
	case 0:
		break;
	case -ENOPROTOOPT:
		snprintf(buf, n,
			 "a process this kernel cannot pin down (SO_PEERPIDFD needs Linux 6.5)");
		return;
	case -ESRCH:
		snprintf(buf, n, "pid %d, which has exited (its PID may be another process's now)",
			 (int)a->pid);
		return;
	default:
		snprintf(buf, n, "pid %d, whose unit cannot be read: %s", (int)a->pid,
			 strerror(-a->err));
		return;
	}
	if (a->exe)
		snprintf(exe, sizeof(exe), "exe %s", a->exe);
	else if (a->exe_err == -EXDEV)
		snprintf(exe, sizeof(exe), "exe unknown (it runs in a user namespace of its own)");
	else if (a->exe_err == -ESTALE)
		snprintf(exe, sizeof(exe),
			 "exe unknown (its path names another file, or none, where batchtokd "
			 "looks)");
	else
		snprintf(exe, sizeof(exe), "exe unknown (%s)", strerror(-a->exe_err));
	why = a->user_unit ? "user unit" : a->unit ? "unit" : NULL;
	if (!why)
		snprintf(buf, n, "no unit (cgroup %s), %s", a->cgroup, exe);
	else if (a->user_unit)
		snprintf(buf, n, "user unit %s of uid %ld, %s", a->user_unit,
			 a->user_unit_uid == (uid_t)-1 ? -1L : (long)a->user_unit_uid, exe);
	else
		snprintf(buf, n, "unit %s, %s", a->unit, exe);
}

void attest_clear(struct attestation *a)
{
	if (a->pidfd >= 0)
		close(a->pidfd);
	free(a->unit);
	free(a->user_unit);
	free(a->cgroup);
	free(a->exe);
	memset(a, 0, sizeof(*a));
	a->pidfd = -1;
}
