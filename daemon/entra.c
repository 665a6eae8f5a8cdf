/* entra.c - Entra ID token requests and responses (ENTRA.md sections 1, 7). */
#include "entra.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/msg.h"

void token_result_clear(struct token_result *r)
{
	secmem_free_str(r->access_token);
	memset(r, 0, sizeof(*r));
}

int entra_token_url(const struct identity *id, char **ret)
{
	return asprintf(ret, "%s/%s/oauth2/%stoken", id->authority, id->tenant,
			id->token_version == 1 ? "" : "v2.0/") < 0
		   ? -ENOMEM
		   : 0;
}

int entra_scope(const char *resource, char **ret)
{
	return asprintf(ret, "%s/.default", resource) < 0 ? -ENOMEM : 0;
}

int entra_client_credentials_form(const struct identity *id, const char *resource,
				  struct secstr *form)
{
	char *scope;
	int r;

	r = secstr_add_param(form, "grant_type", "client_credentials")
		?: secstr_add_param(form, "client_id", id->client_id);
	if (r < 0)
		return r;
	if (id->token_version == 1)
		return secstr_add_param(form, "resource", resource);
	if ((r = entra_scope(resource, &scope)) < 0)
		return r;
	r = secstr_add_param(form, "scope", scope);
	free(scope);
	return r;
}

static const struct {
	long code;
	const char *hint;
} hints[] = {
    {7000215, "the client secret is wrong: put the secret's Value (not its ID) in the "
	      "secret file"},
    {7000222, "the client secret has expired: create a new one in the app registration and "
	      "update the secret file"},
    {700016, "no application with this client_id in the tenant: check client_id and tenant"},
    {90002, "the tenant does not exist: check tenant"},
    {900023, "the tenant is not a valid GUID or domain: check tenant"},
    {70011, "the scope is not valid: check the identity's resources"},
    {1002012, "a client-credentials scope must end in /.default"},
    {700022, "more than one resource in one request"},
    {500011, "the resource does not exist in the tenant: check resources (for Batch, "
	     "https://batch.core.windows.net/ with the trailing slash)"},
    {50001, "the resource does not exist in the tenant: check resources"},
    {7000218, "the request carried no credential"},
    {700027, "the client assertion's signature or certificate is not accepted: check the "
	     "certificate registered on the application"},
    {700024, "the client assertion is outside its validity window: check the clock"},
    {50196, "the service saw the same request too often: a client loop"},
    {90055, "the tenant is being throttled: requests will be retried later"},
    {70003, "the grant type is not supported for this application"},
    {700025, "the application is a public client and cannot use a secret"},
};

const char *entra_aadsts_hint(long code)
{
	for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
		if (hints[i].code == code)
			return hints[i].hint;
	return NULL;
}

/* A JSON number or a decimal string (v1 and IMDS send strings). Returns 0
 * with *ret set, -ENOENT if absent, -EINVAL if malformed. */
static int get_int(json_t *obj, const char *key, int64_t *ret)
{
	json_t *v = json_object_get(obj, key);
	const char *s;
	char *end;
	long long n;

	if (!v)
		return -ENOENT;
	if (json_is_integer(v)) {
		*ret = json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (!(d >= -1e15 && d <= 1e15))
			return -EINVAL;
		*ret = (int64_t)d;
		return 0;
	}
	if (!json_is_string(v) || !*(s = json_string_value(v)))
		return -EINVAL;
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = n;
	return 0;
}

static void copy_line(char *dst, size_t n, const char *src)
{
	/* error_description ends with Trace ID and Correlation ID lines; keep
	 * the first line, which is the AADSTS code and its text. */
	size_t k = strcspn(src, "\r\n");

	if (k >= n)
		k = n - 1;
	memcpy(dst, src, k);
	dst[k] = 0;
	for (size_t i = 0; i < k; i++)
		if ((unsigned char)dst[i] < 0x20)
			dst[i] = ' ';
}

static void parse_error(json_t *root, long status, struct token_result *ret)
{
	const char *error = json_string_value(json_object_get(root, "error"));
	const char *desc = json_string_value(json_object_get(root, "error_description"));
	json_t *codes = json_object_get(root, "error_codes");
	long code = 0;
	const char *hint;
	char first[300] = "", err[64] = "";

	if (json_is_array(codes) && json_is_integer(json_array_get(codes, 0)))
		code = (long)json_integer_value(json_array_get(codes, 0));
	else if (desc && strncmp(desc, "AADSTS", 6) == 0)
		code = strtol(desc + 6, NULL, 10);
	if (code > 0)
		snprintf(ret->aadsts, sizeof(ret->aadsts), "AADSTS%ld", code);
	/* Both strings come from the service and end up in logs: one line of
	 * printable text each. */
	if (desc)
		copy_line(first, sizeof(first), desc);
	if (error)
		copy_line(err, sizeof(err), error);
	hint = code > 0 ? entra_aadsts_hint(code) : NULL;

	if (status == 429 || status >= 500 ||
	    (error && !strcmp(error, "temporarily_unavailable")) || ret->retry_after) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
	} else {
		/* invalid_client, unauthorized_client, invalid_tenant, invalid_scope,
		 * invalid_resource...: retrying will not help until the config
		 * changes. */
		ret->status = BT_E_CREDENTIAL_REJECTED;
	}
	snprintf(ret->message, sizeof(ret->message), "token service: HTTP %ld%s%s%s%s%s%s", status,
		 *err ? " " : "", err, *first ? ": " : "", first, hint ? " -- " : "",
		 hint ? hint : "");
}

void entra_parse_response(const struct http_response *resp, int64_t sent_at,
			  struct token_result *ret)
{
	json_t *root = NULL, *tok;
	json_error_t jerr;
	int64_t expires_in, expires_on, refresh_in;
	int has_in, has_on;

	memset(ret, 0, sizeof(*ret));
	ret->retry_after = resp->retry_after;
	switch (resp->failure) {
	case HTTP_OK:
		break;
	case HTTP_TIMEOUT:
		ret->status = BT_E_TIMEOUT;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message), "token service timed out: %s",
			 resp->error);
		return;
	default:
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message), "token service unreachable: %s",
			 resp->error);
		return;
	}
	root = json_loadb(resp->body, resp->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "token service: HTTP %ld with a body that is not a JSON object",
			 resp->status);
		goto out;
	}
	if (resp->status != 200) {
		parse_error(root, resp->status, ret);
		goto out;
	}
	tok = json_object_get(root, "access_token");
	has_in = get_int(root, "expires_in", &expires_in);
	has_on = get_int(root, "expires_on", &expires_on);
	if (!json_is_string(tok) || json_string_length(tok) == 0 ||
	    json_string_length(tok) > BT_TOKEN_MAX || has_in == -EINVAL || has_on == -EINVAL ||
	    (has_in && has_on)) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "token service: the reply lacks a usable access_token or expiry");
		goto out;
	}
	/* expires_in counts from when we asked, on our own clock, which makes it
	 * immune to skew; expires_on (v1, IMDS) is used only without it. */
	ret->expires_on = has_in == 0 ? sent_at + expires_in : expires_on;
	if (ret->expires_on <= sent_at || ret->expires_on - sent_at > ENTRA_LIFETIME_MAX) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "token service: the token's lifetime (%lld s) is out of range",
			 (long long)(ret->expires_on - sent_at));
		goto out;
	}
	if (get_int(root, "refresh_in", &refresh_in) == 0 && refresh_in > 0 &&
	    refresh_in < ret->expires_on - sent_at)
		ret->refresh_on = sent_at + refresh_in;
	snprintf(ret->token_type, sizeof(ret->token_type), "%s",
		 json_is_string(json_object_get(root, "token_type"))
		     ? json_string_value(json_object_get(root, "token_type"))
		     : "Bearer");
	ret->access_token = secmem_strndup(json_string_value(tok), json_string_length(tok));
	if (!ret->access_token) {
		ret->status = BT_E_INTERNAL;
		snprintf(ret->message, sizeof(ret->message), "out of memory");
		goto out;
	}
	ret->status = BT_OK;
out:
	json_decref(root);
}
