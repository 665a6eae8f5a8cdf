/* cred_device_code.c - credential = device-code: a person signs in with
 * batchtok login, and the identity's tokens are refreshed with that user's
 * refresh token (ENTRA.md 6). The signed-in user is state, not
 * configuration: signin.c keeps it and the service shows it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "credential.h"

/* Azure CLI's public client: the default application (ENTRA.md 6.5). */
#define AZURE_CLI_CLIENT_ID "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

static const char *const keys[] = {NULL};

static int check(struct identity *id, const struct conf_pos *at)
{
	if (!id->tenant && !(id->tenant = strdup("organizations")))
		return -ENOMEM;
	if (!id->client_id && !(id->client_id = strdup(AZURE_CLI_CLIENT_ID)))
		return -ENOMEM;
	if (id->token_version != 2)
		return conf_error(at, "[identity %s]: device-code sign-in needs token_version = 2",
				  id->name);
	return 0;
}

static int build(const struct cred_input *in, struct http_request *req, struct token_result *err)
{
	int r;

	if (!in->refresh_token)
		return credential_fail(err, req, BT_E_CREDENTIAL_REJECTED, -ENOKEY,
				       "nobody is signed in to identity '%s': run 'batchtok login "
				       "-i %s'",
				       in->id->name, in->id->name);
	r = entra_refresh_request(in->id, in->resource, in->refresh_token, req)
		?: entra_add_claims(in->id, in->claims, &req->body);
	return r < 0 ? credential_fail(err, req, BT_E_INTERNAL, r, "out of memory") : 0;
}

const struct credential_ops credential_device_code = {
    .name = "device-code",
    .keys = keys,
    .user_signs_in = true,
    .check = check,
    .build_request = build,
    .parse_response = credential_entra_parse,
};
