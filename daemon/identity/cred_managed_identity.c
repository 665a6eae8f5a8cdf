/* cred_managed_identity.c - credential = managed-identity: the Azure
 * instance metadata service hands out the machine's identity (ENTRA.md
 * 3.1). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "credential.h"

#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define IMDS_API_VERSION      "2018-02-01"

/* A user-assigned identity is chosen by at most one of the identity's
 * client_id, object_id or resource_id. */
struct imds {
	char *object_id;
	char *resource_id;
	char *endpoint; /* http(s)://HOST[:PORT], no path */
};

enum { K_OBJECT_ID, K_RESOURCE_ID, K_ENDPOINT };

static const char *const keys[] = {
    [K_OBJECT_ID] = "object_id",
    [K_RESOURCE_ID] = "resource_id",
    [K_ENDPOINT] = "imds_endpoint",
    NULL,
};

static int set_key(struct identity *id, const struct conf_pos *at, const char *key, const char *v)
{
	struct imds *m = id->cred_data;

	switch (conf_key_index(keys, key)) {
	case K_OBJECT_ID:
		return conf_check_id(at, key, v) ?: conf_set_string(&m->object_id, v);
	case K_RESOURCE_ID:
		if (*v != '/' || strpbrk(v, " \t?#&%"))
			return conf_error(at,
					  "resource_id: '%s' is not an Azure resource ID "
					  "(/subscriptions/.../userAssignedIdentities/NAME)",
					  v)
				   ?: -EINVAL;
		return conf_set_string(&m->resource_id, v);
	case K_ENDPOINT:
		return conf_set_base_url(at, key, v, CONF_URL_ENDPOINT, &m->endpoint);
	}
	return -EINVAL;
}

static int check(struct identity *id, const struct conf_pos *at)
{
	struct imds *m = id->cred_data;

	if (!m->endpoint && !(m->endpoint = strdup(IMDS_DEFAULT_ENDPOINT)))
		return -ENOMEM;
	if (!!id->client_id + !!m->object_id + !!m->resource_id > 1)
		return conf_error(at,
				  "[identity %s]: a user-assigned identity is chosen by one of "
				  "client_id =, object_id = or resource_id =, not several",
				  id->name);
	return 0;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same(const struct identity *a, const struct identity *b)
{
	const struct imds *x = a->cred_data, *y = b->cred_data;

	return str_eq(x->object_id, y->object_id) && str_eq(x->resource_id, y->resource_id) &&
	       str_eq(x->endpoint, y->endpoint);
}

static void key(const struct identity *id, struct credential_key *k)
{
	const struct imds *m = id->cred_data;

	credential_key_add(k, m->object_id);
	credential_key_add(k, m->resource_id);
	credential_key_add(k, m->endpoint);
}

static void clear(void *data)
{
	struct imds *m = data;

	free(m->object_id);
	free(m->resource_id);
	free(m->endpoint);
}

static int describe(const struct identity *id, struct bt_record *rec)
{
	const struct imds *m = id->cred_data;
	int r = bt_record_add_str(rec, "imds_endpoint", m->endpoint);

	if (r == 0 && m->object_id)
		r = bt_record_add_str(rec, "object_id", m->object_id);
	if (r == 0 && m->resource_id)
		r = bt_record_add_str(rec, "resource_id", m->resource_id);
	return r;
}

static const char *selector(const struct identity *id, enum azure_selector which)
{
	const struct imds *m = id->cred_data;

	return which == SELECT_OBJECT_ID ? m->object_id : m->resource_id;
}

static const char *service_url(const struct identity *id)
{
	const struct imds *m = id->cred_data;

	return m->endpoint;
}

static int build(const struct cred_input *in, struct http_request *req, struct token_result *err)
{
	const struct identity *id = in->id;
	const struct imds *m = id->cred_data;
	struct secstr q = {0};
	int r;

	/* Metadata: true is IMDS's SSRF guard; no proxy may stand between. */
	req->headers[0] = "Metadata: true";
	req->headers[1] = "Accept: application/json";
	req->direct = true;
	r = secstr_append_str(&q, m->endpoint)
		?: secstr_append_str(&q, "/metadata/identity/oauth2/token?api-version=" IMDS_API_VERSION)
		?: secstr_append_str(&q, "&resource=")
		?: secstr_append_urlenc(&q, in->resource);
	if (r == 0 && id->client_id)
		r = secstr_append_str(&q, "&client_id=") ?: secstr_append_urlenc(&q, id->client_id);
	if (r == 0 && m->object_id)
		r = secstr_append_str(&q, "&object_id=") ?: secstr_append_urlenc(&q, m->object_id);
	if (r == 0 && m->resource_id)
		r = secstr_append_str(&q, "&msi_res_id=")
			?: secstr_append_urlenc(&q, m->resource_id);
	if (r == 0 && !(req->url = strdup(q.p)))
		r = -ENOMEM;
	secstr_free(&q);
	return r < 0 ? credential_fail(err, req, BT_E_INTERNAL, r, "out of memory") : 0;
}

static void parse(const struct cred_input *in, const struct http_response *resp, int64_t sent_at,
		  struct token_result *ret)
{
	const struct imds *m = in->id->cred_data;
	size_t len;

	entra_parse_response(resp, sent_at, SERVICE_IMDS, ret);
	len = strlen(ret->message);
	if (ret->status != BT_OK && resp->failure != HTTP_OK)
		snprintf(ret->message + len, sizeof(ret->message) - len,
			 " (is %s reachable: is this an Azure VM with a managed identity?)",
			 m->endpoint);
}

const struct credential_ops credential_managed_identity = {
    .name = "managed-identity",
    .keys = keys,
    .data_size = sizeof(struct imds),
    .no_application = true, /* IMDS knows the tenant and the client */
    .set_key = set_key,
    .check = check,
    .same = same,
    .key = key,
    .clear = clear,
    .describe = describe,
    .selector = selector,
    .service = SERVICE_IMDS,
    .service_url = service_url,
    .build_request = build,
    .parse_response = parse,
};
