/* cred_federated.c - credential = federated: the workload's own token, a
 * Kubernetes service-account token for example, as the client assertion
 * (ENTRA.md 5). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "credential.h"

struct federated {
	char *token_file; /* rotates: read before every request */
};

static const char *const keys[] = {"federated_token_file", NULL};

static int set_key(struct identity *id, const struct conf_pos *at, const char *key, const char *v)
{
	struct federated *f = id->cred_data;

	return conf_set_path(at, key, v, &f->token_file);
}

static int getenv_dup(char **dst, const char *name)
{
	const char *v = getenv(name);

	if (*dst || !v || !*v)
		return 0;
	return (*dst = strdup(v)) ? 0 : -ENOMEM;
}

/* What the identity leaves out comes from the environment, as the AKS
 * workload identity webhook injects it. */
static int check(struct identity *id, const struct conf_pos *at)
{
	struct federated *f = id->cred_data;
	const char *v = getenv("AZURE_FEDERATED_TOKEN_FILE");
	int r;

	if ((r = getenv_dup(&id->tenant, "AZURE_TENANT_ID")) < 0 ||
	    (r = getenv_dup(&id->client_id, "AZURE_CLIENT_ID")) < 0)
		return r;
	if (!f->token_file && v && *v == '/' && !(f->token_file = strdup(v)))
		return -ENOMEM;
	/* The webhook sets it, sometimes with a trailing slash. */
	if (!id->authority && (v = getenv("AZURE_AUTHORITY_HOST")) && *v &&
	    conf_set_base_url(at, "AZURE_AUTHORITY_HOST", v, CONF_URL_AUTHORITY, &id->authority) ==
		-ENOMEM)
		return -ENOMEM;
	if (!f->token_file)
		return conf_error(at,
				  "[identity %s]: federated_token_file = is missing (or set "
				  "AZURE_FEDERATED_TOKEN_FILE in the daemon's environment)",
				  id->name);
	return 0;
}

/* The file is read for each request; here only that it can be. */
static int load(struct identity *id, const char *credentials_dir, struct config_errors *errs)
{
	const struct federated *f = id->cred_data;

	(void)credentials_dir;
	if (access(f->token_file, R_OK) == 0)
		return 0;
	return identity_error(errs, id,
			      "cannot read federated_token_file %s: %s (is the projected "
			      "service-account token mounted?)",
			      f->token_file, strerror(errno));
}

static bool same(const struct identity *a, const struct identity *b)
{
	const struct federated *x = a->cred_data, *y = b->cred_data;

	return !strcmp(x->token_file, y->token_file);
}

static void key(const struct identity *id, struct credential_key *k)
{
	credential_key_add(k, ((const struct federated *)id->cred_data)->token_file);
}

static void clear(void *data)
{
	free(((struct federated *)data)->token_file);
}

static int describe(const struct identity *id, struct bt_record *rec)
{
	const struct federated *f = id->cred_data;

	return bt_record_add_str(rec, "federated_token_file", f->token_file);
}

static const char *input_file(const struct identity *id)
{
	return ((const struct federated *)id->cred_data)->token_file;
}

static int build(const struct cred_input *in, struct http_request *req, struct token_result *err)
{
	return credential_client_request(in, req, err, "client_assertion_type",
					 CLIENT_ASSERTION_TYPE, "client_assertion", in->assertion);
}

const struct credential_ops credential_federated = {
    .name = "federated",
    .keys = keys,
    .data_size = sizeof(struct federated),
    .set_key = set_key,
    .check = check,
    .load = load,
    .same = same,
    .key = key,
    .clear = clear,
    .describe = describe,
    .input_file = input_file,
    .build_request = build,
    .parse_response = credential_entra_parse,
};
