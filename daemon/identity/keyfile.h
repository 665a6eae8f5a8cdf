/* keyfile.h - key material on disk: a file named by path, or a systemd
 * credential passed by the unit; checked as ssh checks its keys and read
 * into secure memory. */
#ifndef BATCHTOK_DAEMON_KEYFILE_H
#define BATCHTOK_DAEMON_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "conf_value.h"
#include "identity.h"

/* The packaged unit's LoadCredential=batchtok:CREDENTIALS_SYSTEM_DIR passes
 * each file FILE there as the credential batchtok_FILE. */
#define CREDENTIALS_SYSTEM_DIR "/etc/batchtok/credentials"
#define CREDENTIAL_PREFIX      "batchtok_"

/* A client secret is about 40 characters; leave room for odd ones. */
#define SECRET_SIZE_MAX (64 * 1024)

struct keyfile {
	const char *what; /* "secret", "certificate", ...: KEY_file, KEY_credential */
	const char *path;
	const char *credential; /* set instead of path */
	size_t max;
	bool binary; /* keep trailing whitespace (PKCS#12) */
};

/* Reads f for identity id into secure memory: *ret is NUL-terminated and
 * *ret_len long. Nobody but the owner (and group, for 0640) may read the
 * file, which belongs to root or the daemon's user. A credential is looked
 * up in $CREDENTIALS_DIRECTORY inside a unit; outside, with credentials_dir
 * set (root checking the installed config), where the packaged unit takes
 * batchtok_FILE from. Problems go to errs (-EINVAL), or -ENOMEM. */
int keyfile_read(const struct identity *id, const struct keyfile *f, const char *credentials_dir,
		 char **ret, size_t *ret_len, struct config_errors *errs);

#endif
