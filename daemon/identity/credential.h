/* credential.h - credential sources: how an identity proves itself to the
 * token service. The fetcher calls this one interface; each kind of
 * credential (client secret, certificate, managed identity, federated token,
 * a signed-in user's refresh token) is one implementation of it.
 *
 * Sources do no I/O: what they need from outside the config (the federated
 * token file's current contents, the user's current refresh token) is read
 * or looked up by the fetcher and handed in through cred_input. */
#ifndef BATCHTOK_DAEMON_CREDENTIAL_H
#define BATCHTOK_DAEMON_CREDENTIAL_H

#include <stdint.h>

#include "../../proto/msg.h"
#include "config.h"
#include "entra.h"
#include "../lib/http.h"

/* A federated token is a JWT of a few KiB. */
#define FEDERATED_TOKEN_MAX (64 * 1024)

struct cred_input {
	const struct identity *id;
	const char *resource;
	const char *assertion;	   /* federated: the token file, read for this request */
	const char *refresh_token; /* device-code: the user's, or NULL if not signed in */
	int64_t now;		   /* wall clock */
};

struct credential_ops {
	const char *kind;
	/* A file to read afresh before every request (it rotates), or NULL. */
	const char *(*input_file)(const struct identity *id);
	/* Fills req with the token request. On failure req is cleared and err
	 * says why (status, message, transient). */
	int (*build_request)(const struct cred_input *in, struct http_request *req,
			     struct token_result *err);
	/* Interprets the reply; sent_at is when the request went out. */
	void (*parse_response)(const struct cred_input *in, const struct http_response *resp,
			       int64_t sent_at, struct token_result *ret);
	/* Adds what status shows of this kind's configuration to rec, or NULL. */
	int (*describe)(const struct identity *id, struct bt_record *rec);
};

/* The source for id's credential kind; never NULL for a loaded config. */
const struct credential_ops *credential_for(const struct identity *id);

#endif
