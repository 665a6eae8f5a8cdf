/* cred_secret.c - credential = secret: the application's client secret
 * (ENTRA.md 1.1). */
#include <errno.h>
#include <stdlib.h>

#include "credential.h"
#include "keyfile.h"
#include "../lib/secmem.h"

struct secret {
	char *file;	  /* secret_file, or: */
	char *credential; /* secret_credential, a systemd credential name */
	char *value;	  /* loaded, in secure memory */
};

static const char *const keys[] = {"secret_file", "secret_credential", NULL};

static int set_key(struct identity *id, const struct conf_pos *at, const char *key, const char *v)
{
	struct secret *s = id->cred_data;

	if (conf_key_index(keys, key) == 0)
		return conf_set_path(at, key, v, &s->file);
	return conf_check_credential_name(at, key, v) ?: conf_set_string(&s->credential, v);
}

static int check(struct identity *id, const struct conf_pos *at)
{
	const struct secret *s = id->cred_data;

	if (!s->file == !s->credential)
		return conf_error(at,
				  "[identity %s]: give exactly one of secret_file = or "
				  "secret_credential =",
				  id->name);
	return 0;
}

static int load(struct identity *id, const char *credentials_dir, struct config_errors *errs)
{
	struct secret *s = id->cred_data;
	struct keyfile f = {"secret", s->file, s->credential, SECRET_SIZE_MAX, false};
	size_t n;

	return keyfile_read(id, &f, credentials_dir, &s->value, &n, errs);
}

static bool same(const struct identity *a, const struct identity *b)
{
	const struct secret *x = a->cred_data, *y = b->cred_data;

	return x->value == y->value || (x->value && y->value && secmem_equal(x->value, y->value));
}

static void key(const struct identity *id, struct credential_key *k)
{
	credential_key_add(k, ((const struct secret *)id->cred_data)->value);
}

static void clear(void *data)
{
	struct secret *s = data;

	free(s->file);
	free(s->credential);
	secmem_free_str(s->value);
}

static int build(const struct cred_input *in, struct http_request *req, struct token_result *err)
{
	const struct secret *s = in->id->cred_data;

	return credential_client_request(in, req, err, "client_secret", s->value, NULL, NULL);
}

const struct credential_ops credential_secret = {
    .name = "secret",
    .keys = keys,
    .data_size = sizeof(struct secret),
    .set_key = set_key,
    .check = check,
    .load = load,
    .same = same,
    .key = key,
    .clear = clear,
    .build_request = build,
    .parse_response = credential_entra_parse,
};
