/* credential.c - the credential sources; today the client secret. */
#include "credential.h"

#include <errno.h>
#include <stddef.h>

/* Client credentials with a secret (ENTRA.md 1.1): the common form plus
 * client_secret, all in secure memory. */
static int secret_build(const struct identity *id, const char *resource, struct http_request *req)
{
	int r;

	if (!id->secret)
		return -ENOKEY;
	req->headers[0] = "Accept: application/json";
	r = entra_token_url(id, &req->url) ?: entra_client_credentials_form(id, resource, &req->body)
	    ?: secstr_add_param(&req->body, "client_secret", id->secret);
	if (r < 0)
		http_request_clear(req);
	return r;
}

static void secret_parse(const struct identity *id, const struct http_response *resp,
			 int64_t sent_at, struct token_result *ret)
{
	(void)id;
	entra_parse_response(resp, sent_at, ret);
}

static const struct credential_ops secret_ops = {
    .kind = "secret",
    .build_request = secret_build,
    .parse_response = secret_parse,
};

const struct credential_ops *credential_for(const struct identity *id)
{
	switch (id->kind) {
	case CRED_SECRET:
		return &secret_ops;
	}
	return NULL;
}
