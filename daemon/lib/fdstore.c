/* fdstore.c - state kept by the service manager across restarts. */
#include "fdstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "secmem.h"

/* What a state memfd must carry: nobody may change it once it is made. */
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

bool fdstore_is_state(const char *name)
{
	return name && strcmp(name, FDSTORE_TOKENS) == 0;
}

int fdstore_put(const char *name, const void *data, size_t n)
{
	const char *p = data;
	char msg[128];
	size_t done = 0;
	int fd, r = 0;

	if (!getenv("NOTIFY_SOCKET"))
		return -ENOTCONN;
	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	while (done < n) {
		ssize_t w = write(fd, p + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			goto out;
		}
		done += (size_t)w;
	}
	if (fcntl(fd, F_ADD_SEALS, SEALS) < 0) {
		r = -errno;
		goto out;
	}
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	r = r < 0 ? r : r == 0 ? -ENOTCONN : 0;
out:
	close(fd);
	return r;
}

/* Reads the whole of fd, a sealed memfd of at most max bytes. */
static int read_sealed(int fd, size_t max, char **ret, size_t *n)
{
	struct stat st;
	char *buf;
	size_t done = 0;
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals < 0 || (seals & SEALS) != SEALS || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return -EBADF;
	if ((size_t)st.st_size > max)
		return -EFBIG;
	if (!(buf = secmem_alloc((size_t)st.st_size + 1)))
		return -ENOMEM;
	while (done < (size_t)st.st_size) {
		ssize_t r = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? -errno : -EIO;
			secmem_free(buf, (size_t)st.st_size + 1);
			return e;
		}
		done += (size_t)r;
	}
	buf[done] = '\0';
	*ret = buf;
	*n = done;
	return 0;
}

void fdstore_remove(const char *name)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	sd_notify(0, msg);
}

int fdstore_take(const char *name, size_t max, char **ret, size_t *n)
{
	char **names = NULL;
	int count = sd_listen_fds_with_names(0, &names), r = -ENOENT;

	for (int i = 0; i < count; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		if (r != -ENOENT || !names || strcmp(names[i], name) != 0)
			continue;
		r = read_sealed(fd, max, ret, n);
		/* The number stays taken (by /dev/null) until the server has
		 * read what systemd passed: sd_listen_fds() refuses a closed
		 * one. */
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || dup3(null, fd, O_CLOEXEC) < 0)
			close(fd);
		if (null >= 0)
			close(null);
	}
	if (names)
		for (int i = 0; i < count; i++)
			free(names[i]);
	free(names);
	return r;
}
