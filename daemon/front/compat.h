/* compat.h - the managed-identity compatible endpoint (compat_endpoint =).
 *
 * An HTTP/1.1 server on a loopback address, on the daemon's loop, that
 * answers the token requests unmodified Azure SDKs send to a managed-identity
 * endpoint (ENTRA.md 3 and 4):
 *
 *   GET /msi/token?api-version=2019-08-01&resource=R   X-IDENTITY-HEADER: CAP
 *   GET /msi/token?api-version=2017-09-01&resource=R   secret: CAP
 *   GET [/CAP]/metadata/identity/oauth2/token?api-version=...&resource=R
 *                                                      Metadata: true
 *
 * CAP is a capability (capability.h) the daemon issued over its Unix socket
 * to a user allowed one identity. A request is answered only when the
 * capability is live, the TCP connection's owner (sockdiag.h) is the uid it
 * was issued to, that uid may still use the identity, and the identity
 * serves the resource; tokens come from the same cache as the Unix socket's.
 * Answers carry every field old and new SDKs parse; errors are JSON with
 * error and error_description. */
#ifndef BATCHTOK_DAEMON_COMPAT_H
#define BATCHTOK_DAEMON_COMPAT_H

#include <stdint.h>

#include <uv.h>

#include "capability.h"
#include "../lib/peer.h"
#include "../core/service.h"

struct compat;

/* An idle connection, or one whose request does not arrive whole, is closed
 * after this many seconds. */
#define COMPAT_IDLE_TIMEOUT 30

/* Listens on the config's compat_addr; requests go through s. Returns 0, or
 * a negative errno with the cause logged. */
int compat_new(uv_loop_t *loop, struct service *s, struct compat **ret);
/* "http://127.0.0.1:PORT", the port as bound (compat_endpoint may say 0). */
const char *compat_url(const struct compat *cp);
unsigned compat_client_count(const struct compat *cp);
/* Live capabilities (expired ones are freed first). */
size_t compat_capability_count(struct compat *cp);

/* Issues a capability for peer p and the identity of that name (the caller
 * has checked that p may use it), valid for the configured compat_lifetime.
 * Returns 0, -EBUSY (too many live for p's uid), -ENOSPC (too many in all),
 * -ENOMEM or -EIO. */
int compat_grant(struct compat *cp, const struct peer *p, const char *identity,
		 char text[CAPABILITY_TEXT_SIZE], int64_t *expires_on);
/* Renews p's live capability text for compat_lifetime from now (its new
 * expiry in *expires_on), or revokes it; see capability.h. */
int compat_renew(struct compat *cp, const struct peer *p, const char *text, int64_t *expires_on);
int compat_revoke(struct compat *cp, const struct peer *p, const char *text);

/* Closes the listener and every connection, and forgets every capability;
 * memory is released in close callbacks. Accepts NULL. */
void compat_close(struct compat *cp);

#endif
