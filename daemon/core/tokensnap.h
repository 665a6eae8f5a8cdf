/* tokensnap.h - the cache's tokens across a restart: written at stop into
 * systemd's file descriptor store (fdstore.h), read back at start.
 *
 * Only tokens still servable are kept, with what their entry knew (type,
 * expiry, when obtained, the longest lifetime seen) and the key of the
 * identity that fetched them (identity_token_key()). At start a token comes
 * back only to an identity of the same name and key that still serves its
 * resource, and only if it stays valid beyond min_validity; device-code
 * identities' tokens are not kept (they are the signed-in user's, who may
 * have changed).
 *
 * Format, with the wire protocol's encodings (proto/PROTOCOL.md):
 *   "BTS1", u32 count, then count times: string identity, string key,
 *   string resource, string token, string token_type, u64 expires_on,
 *   u64 obtained, u64 lifetime. */
#ifndef BATCHTOK_DAEMON_TOKENSNAP_H
#define BATCHTOK_DAEMON_TOKENSNAP_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "../identity/config.h"

/* The largest snapshot read back. */
#define TOKENSNAP_MAX (64 * 1024 * 1024)

/* The servable tokens of c into *ret (secure memory: secmem_free(*ret,
 * *n)), *count of them. 0 or -ENOMEM. */
int tokensnap_save(struct cache *c, int64_t now, uint32_t min_validity, char **ret, size_t *n,
		   unsigned *count);

/* Puts the tokens of data (n bytes) back into c for the identities of cfg
 * they still belong to; *restored and *skipped count them. -EBADMSG for
 * data that is not a snapshot (nothing is restored past the damage). */
int tokensnap_load(struct cache *c, const struct config *cfg, const char *data, size_t n,
		   int64_t now, unsigned *restored, unsigned *skipped);

#endif
