/* credential.c - the table of credential kinds, and what the kinds that
 * talk to Entra share (ENTRA.md sections 1, 2 and 5). */
#include "credential.h"

#include <openssl/evp.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct credential_ops *const kinds[] = {
    &credential_secret,	   &credential_certificate, &credential_managed_identity,
    &credential_federated, &credential_device_code,
};

const struct credential_ops *credential_kind(size_t i)
{
	return i < sizeof(kinds) / sizeof(kinds[0]) ? kinds[i] : NULL;
}

const struct credential_ops *credential_find(const char *name)
{
	const struct credential_ops *k;

	for (size_t i = 0; (k = credential_kind(i)); i++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

const struct credential_ops *credential_owning_key(const char *key)
{
	const struct credential_ops *k;

	for (size_t i = 0; (k = credential_kind(i)); i++)
		if (conf_key_index(k->keys, key) >= 0)
			return k;
	return NULL;
}

const char *credential_names(char *buf, size_t n)
{
	const struct credential_ops *k;
	size_t len = 0;

	buf[0] = 0;
	for (size_t i = 0; (k = credential_kind(i)) && len < n; i++)
		len += (size_t)snprintf(buf + len, n - len, "%s%s",
					!i			 ? ""
					: credential_kind(i + 1) ? ", "
								 : " or ",
					k->name);
	return buf;
}

const char *credential_service_url(const struct identity *id)
{
	return id->cred->service_url ? id->cred->service_url(id) : id->authority;
}

const char *identity_selector(const struct identity *id, enum azure_selector which)
{
	if (which == SELECT_CLIENT_ID)
		return id->client_id;
	return id->cred->selector ? id->cred->selector(id, which) : NULL;
}

int credential_fail(struct token_result *err, struct http_request *req, uint32_t status, int r,
		    const char *fmt, ...)
{
	va_list ap;

	http_request_clear(req);
	err->status = status;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return r;
}

int credential_client_request(const struct cred_input *in, struct http_request *req,
			      struct token_result *err, const char *key, const char *value,
			      const char *key2, const char *value2)
{
	int r;

	req->headers[0] = "Accept: application/json";
	r = entra_token_url(in->id, &req->url)
		?: entra_client_credentials_form(in->id, in->resource, &req->body)
		?: entra_add_claims(in->id, in->claims, &req->body)
		?: secstr_add_param(&req->body, key, value);
	if (r == 0 && key2)
		r = secstr_add_param(&req->body, key2, value2);
	return r < 0 ? credential_fail(err, req, BT_E_INTERNAL, r, "out of memory") : 0;
}

void credential_entra_parse(const struct cred_input *in, const struct http_response *resp,
			    int64_t sent_at, struct token_result *ret)
{
	(void)in;
	entra_parse_response(resp, sent_at, SERVICE_ENTRA, ret);
}

void credential_key_add(struct credential_key *k, const char *s)
{
	s = s ? s : "";
	k->ok = k->ok && EVP_DigestUpdate(k->ctx, s, strlen(s) + 1);
}
