/* jwt.h - what the daemon may learn from an access token without trusting
 * it: a short fingerprint for logs, and its decoded header and claims for
 * `batchtok inspect` (never the signature). */
#ifndef BATCHTOK_DAEMON_JWT_H
#define BATCHTOK_DAEMON_JWT_H

#include <stddef.h>

/* "sha256:" and the first 12 hex digits of SHA-256(token); n >= 20. */
void jwt_fingerprint(const char *token, char *buf, size_t n);

/* {"header": {...}, "claims": {...}} as indented JSON in *ret (free()).
 * Returns -EINVAL if the token is not a JWS in compact form. */
int jwt_describe(const char *token, char **ret);

#endif
