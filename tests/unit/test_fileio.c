/* test_fileio.c - whole reads and writes across short counts, the honest
 * errno of a write that stops, and files refused for what they are. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/lib/fileio.h"
#include "../../daemon/lib/secmem.h"

/* A SOCK_SEQPACKET socket hands out one message per read(): a reader that
 * reads once gets the first piece only. */
static void test_read_all_takes_every_piece(void **state)
{
	char buf[16] = "";
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(write(sv[1], "abc", 3), 3);
	assert_int_equal(write(sv[1], "defg", 4), 4);
	assert_int_equal(read(sv[0], buf, sizeof(buf)), 3);
	assert_int_equal(read(sv[0], buf, sizeof(buf)), 4);
	assert_int_equal(write(sv[1], "abc", 3), 3);
	assert_int_equal(write(sv[1], "defg", 4), 4);
	close(sv[1]);
	memset(buf, 0, sizeof(buf));
	/* Whole, then the end of the file: fewer bytes than asked, no error. */
	assert_int_equal(fileio_read_all(sv[0], buf, 7), 7);
	assert_string_equal(buf, "abcdefg");
	assert_int_equal(fileio_read_all(sv[0], buf, 7), 0);
	close(sv[0]);
	assert_int_equal(fileio_read_all(-1, buf, 1), -EBADF);
}

/* A pipe that takes part of the data, then none: the error is the one that
 * stopped the write, never whatever errno held before. */
static void test_write_all_reports_why_it_stopped(void **state)
{
	static char big[1 << 20];
	int p[2];

	(void)state;
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	errno = ENOENT;
	assert_int_equal(fileio_write_all(p[1], big, sizeof(big)), -EAGAIN);
	close(p[0]);
	close(p[1]);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fileio_write_all(p[1], "hello", 5), 0);
	assert_int_equal(read(p[0], big, 5), 5);
	assert_memory_equal(big, "hello", 5);
	close(p[0]);
	close(p[1]);
}

static void test_read_secret_and_sync_dir(void **state)
{
	char dir[] = "/tmp/test_fileio.XXXXXX", path[64], *s = (char *)"x";
	size_t len = 99;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fileio_write_all(fd, "secret\n", 7), 0);
	assert_int_equal(fileio_sync_dir(path), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	/* Over the limit: refused, nothing allocated. */
	assert_int_equal(fileio_read_secret(fd, 6, &s, &len), -EINVAL);
	assert_string_equal(s, "x");
	assert_int_equal(fileio_read_secret(fd, 7, &s, &len), 0);
	assert_int_equal(len, 7);
	assert_string_equal(s, "secret\n");
	secmem_free(s, len + 1);
	close(fd);
	unlink(path);
	rmdir(dir);
}

/* A FIFO is refused at once (opening it plainly waits for a writer), and so
 * is a file others may write. */
static void test_open_trusted_refuses(void **state)
{
	char dir[] = "/tmp/test_fileio.XXXXXX", path[64], why[400] = "";
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(fileio_open_trusted(path, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "not a regular file"));
	unlink(path);
	snprintf(path, sizeof(path), "%s/loose", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, 0622), 0);
	close(fd);
	assert_int_equal(fileio_open_trusted(path, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, "writable by its group or by others"));
	assert_int_equal(chmod(path, 0600), 0);
	fd = fileio_open_trusted(path, why, sizeof(why));
	assert_true(fd >= 0);
	close(fd);
	/* The directory above, writable by others and not sticky. */
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(fileio_open_trusted(path, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, dir));
	assert_int_equal(chmod(dir, 01777), 0);
	fd = fileio_open_trusted(path, why, sizeof(why));
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_int_equal(fileio_open_trusted(path, why, sizeof(why)), -ENOENT);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_read_all_takes_every_piece),
	    cmocka_unit_test(test_write_all_reports_why_it_stopped),
	    cmocka_unit_test(test_read_secret_and_sync_dir),
	    cmocka_unit_test(test_open_trusted_refuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
