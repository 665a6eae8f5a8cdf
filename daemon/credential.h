/* credential.h - credential sources: how an identity proves itself to the
 * token service. The fetcher calls this one interface; each kind of
 * credential (a client secret now; certificates, managed identity, federated
 * tokens and device-code sign-in later) is one implementation of it. */
#ifndef BATCHTOK_DAEMON_CREDENTIAL_H
#define BATCHTOK_DAEMON_CREDENTIAL_H

#include <stdint.h>

#include "config.h"
#include "entra.h"
#include "http.h"

struct credential_ops {
	const char *kind;
	/* Fills req with the token request for resource. On failure req is
	 * cleared and ret's message says why. */
	int (*build_request)(const struct identity *id, const char *resource,
			     struct http_request *req);
	/* Interprets the reply; sent_at is when the request went out. */
	void (*parse_response)(const struct identity *id, const struct http_response *resp,
			       int64_t sent_at, struct token_result *ret);
};

/* The source for id's credential kind; never NULL for a loaded config. */
const struct credential_ops *credential_for(const struct identity *id);

#endif
