/* fileio.h - whole-file I/O for small files: reads and writes that survive
 * short counts and EINTR, the directory fsync that makes a rename durable,
 * and the check that a file batchtokd sends or trusts (a federated token, a
 * secret) is one nobody else could have put in its place.
 *
 * Everything here blocks: call it from libuv's thread pool or at start-up,
 * never on the loop. Nothing logs; failures are -errno, and the trust check
 * says why in words. */
#ifndef BATCHTOK_DAEMON_FILEIO_H
#define BATCHTOK_DAEMON_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/* Reads until n bytes are in or the file ends. Returns the count (less than
 * n only at end of file), or -errno with what was read lost to the caller. */
ssize_t fileio_read_all(int fd, void *buf, size_t n);

/* Writes all n bytes. Returns 0, or -errno; a file that stops taking bytes
 * without an error (a full quota, say) is -EIO, never a stale errno. */
int fileio_write_all(int fd, const void *buf, size_t n);

/* fsync()s the directory that holds path, so that a file renamed into it
 * survives a crash. Returns 0 or -errno. */
int fileio_sync_dir(const char *path);

/* Reads the regular file open at fd whole into secure memory: *ret holds
 * *ret_len bytes and a NUL, in an allocation of *ret_len + 1 bytes (free it
 * with secmem_free(*ret, *ret_len + 1)). Returns 0; -EINVAL if fd is not a
 * regular file or holds more than max bytes; -ENOMEM; or -errno. On failure
 * *ret is untouched. */
int fileio_read_secret(int fd, size_t max, char **ret, size_t *ret_len);

/* Opens path for reading without blocking on a FIFO or taking a terminal,
 * and checks that nobody but root and batchtokd's own user could have
 * chosen what it holds: the file is regular and neither group- nor
 * world-writable; a symlink at path, the file, and every directory above
 * both path and the file it resolves to are owned by root or batchtokd's
 * user; and those directories are writable by nobody else, unless sticky
 * (/tmp: others may add entries there but not replace ours). Symlinks are
 * followed: Kubernetes projects a token through ..data/ links, and checking
 * where they lead is what keeps a link to /etc/shadow out. Returns the
 * descriptor, or -errno with why (n bytes) saying what is wrong and what to
 * change; -EPERM for a file that fails the check. */
int fileio_open_trusted(const char *path, char *why, size_t n);

#endif
