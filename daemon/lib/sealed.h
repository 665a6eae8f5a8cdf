/* sealed.h - authenticated encryption of the daemon's state at rest: a
 * signed-in user's refresh token in the state directory.
 *
 * AES-256-GCM with a random 96-bit nonce per file; the key is derived with
 * HKDF-SHA256 from key material the administrator supplies (a systemd
 * credential, which systemd-creds can bind to the TPM or host key) or that
 * the daemon generates once. Associated data binds a file to its identity,
 * so a file copied under another identity's name does not open.
 *
 * File layout: "BTS1" | nonce (12) | ciphertext | tag (16). */
#ifndef BATCHTOK_DAEMON_SEALED_H
#define BATCHTOK_DAEMON_SEALED_H

#include <stddef.h>

#define SEALED_KEY_LEN	32
#define SEALED_OVERHEAD (4 + 12 + 16)

/* key: SEALED_KEY_LEN bytes the caller keeps in secure memory. */
int sealed_derive_key(const void *material, size_t n, unsigned char *key);

/* Encrypts n bytes of plain; *ret (free()) holds SEALED_OVERHEAD + n bytes. */
int sealed_seal(const unsigned char *key, const char *aad, const char *plain, size_t n,
		unsigned char **ret, size_t *ret_len);

/* Decrypts and authenticates; *ret is NUL-terminated secure memory
 * (secmem_free_str). Returns -EBADMSG if the data is not a sealed file, was
 * changed, belongs to another identity or was sealed with another key. */
int sealed_open(const unsigned char *key, const char *aad, const unsigned char *in, size_t n,
		char **ret);

#endif
