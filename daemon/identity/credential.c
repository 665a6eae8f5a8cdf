/* credential.c - the credential sources (ENTRA.md sections 1-6). */
#include "credential.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/msg.h"
#include "../lib/certificate.h"

#define CLIENT_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define IMDS_API_VERSION      "2018-02-01"

static int fail(struct token_result *err, struct http_request *req, uint32_t status, int r,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int fail(struct token_result *err, struct http_request *req, uint32_t status, int r,
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

/* Client credentials: URL, the common form and one proof appended. */
static int client_credentials(const struct cred_input *in, struct http_request *req,
			      struct token_result *err, const char *key, const char *value,
			      const char *key2, const char *value2)
{
	int r;

	req->headers[0] = "Accept: application/json";
	r = entra_token_url(in->id, &req->url)
		?: entra_client_credentials_form(in->id, in->resource, &req->body)
		?: secstr_add_param(&req->body, key, value);
	if (r == 0 && key2)
		r = secstr_add_param(&req->body, key2, value2);
	return r < 0 ? fail(err, req, BT_E_INTERNAL, r, "out of memory") : 0;
}

static void entra_parse(const struct cred_input *in, const struct http_response *resp,
			int64_t sent_at, struct token_result *ret)
{
	(void)in;
	entra_parse_response(resp, sent_at, SERVICE_ENTRA, ret);
}

/* --- client secret (ENTRA.md 1.1) --- */

static int secret_build(const struct cred_input *in, struct http_request *req,
			struct token_result *err)
{
	return client_credentials(in, req, err, "client_secret", in->id->secret, NULL, NULL);
}

/* --- certificate: a signed client assertion (ENTRA.md 2) --- */

static int certificate_build(const struct cred_input *in, struct http_request *req,
			     struct token_result *err)
{
	const struct identity *id = in->id;
	char *aud = NULL, *assertion = NULL, date[32];
	int r;

	/* Entra would refuse it anyway; saying so here names the fix. */
	if (in->now >= certificate_not_after(id->cert)) {
		certificate_date(certificate_not_after(id->cert), date, sizeof(date));
		return fail(err, req, BT_E_CREDENTIAL_REJECTED, -EKEYEXPIRED,
			    "the certificate of identity '%s' (%s, thumbprint %s) expired on %s: "
			    "renew it, register the new one on the application and replace %s",
			    id->name, certificate_subject(id->cert),
			    certificate_thumbprint(id->cert), date,
			    id->certificate_file ? id->certificate_file : "the credential");
	}
	if (in->now < certificate_not_before(id->cert)) {
		certificate_date(certificate_not_before(id->cert), date, sizeof(date));
		return fail(err, req, BT_E_CREDENTIAL_REJECTED, -EKEYREJECTED,
			    "the certificate of identity '%s' is not valid before %s: check the "
			    "clock",
			    id->name, date);
	}
	/* The assertion's audience is the token endpoint itself. */
	r = entra_token_url(id, &aud);
	if (r == 0)
		r = certificate_assertion(id->cert, (enum assertion_alg)id->assertion_alg,
					  id->send_x5c, id->client_id, aud, in->now, &assertion);
	free(aud);
	if (r < 0)
		return fail(err, req, BT_E_INTERNAL, r,
			    "cannot sign a client assertion with the certificate of identity '%s'",
			    id->name);
	r = client_credentials(in, req, err, "client_assertion_type", CLIENT_ASSERTION_TYPE,
			       "client_assertion", assertion);
	secmem_free_str(assertion);
	return r;
}

/* --- federated: the workload's own token as the assertion (ENTRA.md 5) --- */

static const char *federated_file(const struct identity *id)
{
	return id->federated_token_file;
}

static int federated_build(const struct cred_input *in, struct http_request *req,
			   struct token_result *err)
{
	return client_credentials(in, req, err, "client_assertion_type", CLIENT_ASSERTION_TYPE,
				  "client_assertion", in->assertion);
}

/* --- managed identity: the instance metadata service (ENTRA.md 3.1) --- */

static int imds_build(const struct cred_input *in, struct http_request *req,
		      struct token_result *err)
{
	const struct identity *id = in->id;
	struct secstr q = {0};
	int r;

	/* Metadata: true is IMDS's SSRF guard; no proxy may stand between. */
	req->headers[0] = "Metadata: true";
	req->headers[1] = "Accept: application/json";
	req->direct = true;
	r = secstr_append_str(&q, id->imds_endpoint)
		?: secstr_append_str(&q, "/metadata/identity/oauth2/token?api-version=" IMDS_API_VERSION)
		?: secstr_append_str(&q, "&resource=")
		?: secstr_append_urlenc(&q, in->resource);
	if (r == 0 && id->client_id)
		r = secstr_append_str(&q, "&client_id=") ?: secstr_append_urlenc(&q, id->client_id);
	if (r == 0 && id->object_id)
		r = secstr_append_str(&q, "&object_id=") ?: secstr_append_urlenc(&q, id->object_id);
	if (r == 0 && id->resource_id)
		r = secstr_append_str(&q, "&msi_res_id=")
			?: secstr_append_urlenc(&q, id->resource_id);
	if (r == 0 && !(req->url = strdup(q.p)))
		r = -ENOMEM;
	secstr_free(&q);
	return r < 0 ? fail(err, req, BT_E_INTERNAL, r, "out of memory") : 0;
}

static void imds_parse(const struct cred_input *in, const struct http_response *resp,
		       int64_t sent_at, struct token_result *ret)
{
	entra_parse_response(resp, sent_at, SERVICE_IMDS, ret);
	if (ret->status != BT_OK && resp->failure != HTTP_OK)
		snprintf(ret->message + strlen(ret->message),
			 sizeof(ret->message) - strlen(ret->message),
			 " (is %s reachable: is this an Azure VM with a managed identity?)",
			 in->id->imds_endpoint);
}

/* --- device code: the signed-in user's refresh token (ENTRA.md 6.4) --- */

static int user_build(const struct cred_input *in, struct http_request *req,
		      struct token_result *err)
{
	int r;

	if (!in->refresh_token)
		return fail(err, req, BT_E_CREDENTIAL_REJECTED, -ENOKEY,
			    "nobody is signed in to identity '%s': run 'batchtok login -i %s'",
			    in->id->name, in->id->name);
	r = entra_refresh_request(in->id, in->resource, in->refresh_token, req);
	return r < 0 ? fail(err, req, BT_E_INTERNAL, r, "out of memory") : 0;
}

static int certificate_describe(const struct identity *id, struct bt_record *rec)
{
	return bt_record_add_str(rec, "certificate", certificate_subject(id->cert))
	       ?: bt_record_add_str(rec, "thumbprint", certificate_thumbprint(id->cert))
	       ?: bt_record_add_int(rec, "certificate_expires", BT_FIELD_TIME,
				    certificate_not_after(id->cert));
}

static int imds_describe(const struct identity *id, struct bt_record *rec)
{
	int r = bt_record_add_str(rec, "imds_endpoint", id->imds_endpoint);

	if (r == 0 && id->object_id)
		r = bt_record_add_str(rec, "object_id", id->object_id);
	if (r == 0 && id->resource_id)
		r = bt_record_add_str(rec, "resource_id", id->resource_id);
	return r;
}

static int federated_describe(const struct identity *id, struct bt_record *rec)
{
	return bt_record_add_str(rec, "federated_token_file", id->federated_token_file);
}

static const struct credential_ops sources[] = {
    [CRED_SECRET] = {"secret", NULL, secret_build, entra_parse, NULL},
    [CRED_CERTIFICATE] = {"certificate", NULL, certificate_build, entra_parse,
			  certificate_describe},
    [CRED_MANAGED_IDENTITY] = {"managed-identity", NULL, imds_build, imds_parse, imds_describe},
    [CRED_FEDERATED] = {"federated", federated_file, federated_build, entra_parse,
			federated_describe},
    /* The signed-in user is state, not configuration: the service shows it. */
    [CRED_DEVICE_CODE] = {"device-code", NULL, user_build, entra_parse, NULL},
};

const struct credential_ops *credential_for(const struct identity *id)
{
	return id->kind >= CRED_SECRET && id->kind <= CRED_DEVICE_CODE ? &sources[id->kind] : NULL;
}
