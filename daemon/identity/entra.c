/* entra.c - Entra ID token requests and responses (ENTRA.md sections 1, 7). */
#include "entra.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/msg.h"
#include "../lib/jwt.h"

/* Device codes live 15 minutes; accept up to an hour, and poll at least
 * every minute. */
#define DEVICE_CODE_LIFETIME_MAX 3600
#define DEVICE_POLL_MAX		 60

void token_result_clear(struct token_result *r)
{
	secmem_free_str(r->access_token);
	secmem_free_str(r->refresh_token);
	memset(r, 0, sizeof(*r));
}

void device_code_clear(struct device_code *dc)
{
	secmem_free_str(dc->device_code);
	memset(dc, 0, sizeof(*dc));
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
    {50196, "the service saw the same request too often: a client loop"},
    {90055, "the tenant is being throttled: requests will be retried later"},
    {70003, "the grant type is not supported for this application"},
    {700025, "the application is a public client and cannot use a secret"},
    {700030, "the certificate's subject name is not authorized for this application (SNI)"},
    {70008, "the sign-in has expired from inactivity: run 'batchtok login' again"},
    {700082, "the sign-in has expired from inactivity: run 'batchtok login' again"},
    {50173, "the sign-in was revoked (password change or admin): run 'batchtok login' again"},
    {70043, "Conditional Access requires a fresh sign-in: run 'batchtok login' again"},
    {50076, "multi-factor authentication is required: run 'batchtok login' again"},
    {50079, "multi-factor authentication enrolment is required: run 'batchtok login' again"},
    {70019, "the sign-in code expired before it was used: run 'batchtok login' again"},
    {70018, "the sign-in code was not recognised: run 'batchtok login' again"},
    {7000112, "the application is disabled in the tenant"},
    {700024, "the client assertion is outside its validity window: check the clock, or "
	     "that the federated token file is being rotated"},
    {70021, "no federated identity credential on the application matches the token's "
	    "issuer, subject and audience"},
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

/* IMDS answers 404 and 410 while it updates, 429 when throttled, 5xx when
 * Entra fails it; any other 4xx is a design-time error (ENTRA.md 3.1). */
static bool transient_status(enum token_service svc, long status)
{
	return status == 429 || status >= 500 ||
	       (svc == SERVICE_IMDS && (status == 404 || status == 410));
}

/* The OAuth errors some caller acts on (RFC 6749 5.2, RFC 8628 3.5); the rest
 * are told apart by status and message alone. */
static const struct {
	const char *error;
	enum entra_error_kind kind;
} error_kinds[] = {
    {"invalid_grant", ENTRA_E_GRANT_INVALID},
    {"authorization_pending", ENTRA_E_PENDING},
    {"slow_down", ENTRA_E_SLOW_DOWN},
    {"expired_token", ENTRA_E_EXPIRED},
    {"authorization_declined", ENTRA_E_DECLINED},
};

/* error is the reply's "error" member as kept (one line), "" if none. */
static enum entra_error_kind error_kind(const char *error)
{
	if (!*error)
		return ENTRA_E_NONE;
	for (size_t i = 0; i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++)
		if (!strcmp(error, error_kinds[i].error))
			return error_kinds[i].kind;
	return ENTRA_E_OTHER;
}

static void parse_error(json_t *root, long status, enum token_service svc, struct token_result *ret)
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
	snprintf(ret->error, sizeof(ret->error), "%s", err);
	ret->error_kind = error_kind(ret->error);
	hint = code > 0 ? entra_aadsts_hint(code) : NULL;
	if (!hint && svc == SERVICE_IMDS && status == 400)
		hint = "no managed identity matches: assign one to this machine, check "
		       "client_id, object_id or resource_id, and the resource";
	if (!hint && ret->error_kind == ENTRA_E_DECLINED)
		hint = "the user declined the sign-in";

	if (transient_status(svc, status) || (error && !strcmp(error, "temporarily_unavailable")) ||
	    ret->retry_after) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
	} else {
		/* invalid_client, unauthorized_client, invalid_tenant, invalid_scope,
		 * invalid_resource...: retrying will not help until the config
		 * changes. */
		ret->status = BT_E_CREDENTIAL_REJECTED;
	}
	snprintf(ret->message, sizeof(ret->message), "%s: HTTP %ld%s%s%s%s%s%s",
		 svc == SERVICE_IMDS ? "managed identity endpoint" : "token service", status,
		 *err ? " " : "", err, *first ? ": " : "", first, hint ? " -- " : "",
		 hint ? hint : "");
}

/* Who signed in, from the id_token's claims (display only). */
static void id_token_user(json_t *root, struct token_result *ret)
{
	static const char *const keys[] = {
	    "preferred_username", "upn", "unique_name", "email", "name", "oid"};
	json_t *id = json_object_get(root, "id_token"), *claims;

	if (!json_is_string(id) || !(claims = jwt_claims(json_string_value(id))))
		return;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = json_string_value(json_object_get(claims, keys[i]));
		if (v && *v) {
			copy_line(ret->user, sizeof(ret->user), v);
			break;
		}
	}
	json_decref(claims);
}

/* RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
 * "/" ) *"=". The token is pasted into an Authorization header and printed on
 * terminals as it is, so anything else (CR/LF above all) is refused here
 * rather than escaped somewhere downstream; Entra's and IMDS's tokens are
 * JWTs, which fit. n counts the bytes, so an embedded NUL is refused too. */
static bool is_bearer_token(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			 (s[i] >= '0' && s[i] <= '9') || (s[i] && strchr("-._~+/", s[i]))))
		i++;
	if (i == 0)
		return false;
	while (i < n && s[i] == '=')
		i++;
	return i == n;
}

/* RFC 7235 auth-scheme: a token of tchars ("Bearer"). */
static bool is_auth_scheme(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || (s[i] && strchr("!#$%&'*+-.^_`|~", s[i]))))
			return false;
	return true;
}

/* Sets ret->expires_on from expires_on (use_on) or from sent_at +
 * expires_in. Returns false (ret untouched) when the lifetime is not in
 * (0, ENTRA_LIFETIME_MAX]: every value is range-checked before it is added
 * to or subtracted from, so no reply can overflow the arithmetic. */
static bool set_expiry(int64_t sent_at, bool use_on, int64_t expires_in, int64_t expires_on,
		       struct token_result *ret)
{
	int64_t lifetime, end;

	if (use_on && __builtin_sub_overflow(expires_on, sent_at, &lifetime))
		return false;
	if (!use_on)
		lifetime = expires_in;
	if (lifetime <= 0 || lifetime > ENTRA_LIFETIME_MAX ||
	    __builtin_add_overflow(sent_at, lifetime, &end))
		return false;
	ret->expires_on = end;
	return true;
}

/* Reads a 200 reply: the token, its expiry on our clock and the refresh
 * hint, and for user sign-ins the rotated refresh token and who signed in. */
static void parse_token(json_t *root, int64_t sent_at, enum token_service svc, const char *who,
			struct token_result *ret)
{
	json_t *tok = json_object_get(root, "access_token"), *rt;
	json_t *type = json_object_get(root, "token_type");
	int64_t expires_in = 0, expires_on = 0, refresh_in;
	int has_in = get_int(root, "expires_in", &expires_in);
	int has_on = get_int(root, "expires_on", &expires_on);
	/* expires_in counts from when we asked, on our own clock, which makes
	 * it immune to skew; expires_on (v1) is used only without it. IMDS is
	 * the exception: it hands out cached tokens whose expires_in counts
	 * from issuance, so its expires_on is the truth. */
	bool use_on = (svc == SERVICE_IMDS && has_on == 0) || has_in != 0;

	if (!json_is_string(tok) || json_string_length(tok) == 0 ||
	    json_string_length(tok) > BT_TOKEN_MAX || has_in == -EINVAL || has_on == -EINVAL ||
	    (has_in && has_on)) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "%s: the reply lacks a usable access_token or expiry", who);
		return;
	}
	/* The token itself is never quoted: it is a secret, and the point is
	 * that it holds what must not reach a log. */
	if (!is_bearer_token(json_string_value(tok), json_string_length(tok)) ||
	    (type &&
	     (!json_is_string(type) || json_string_length(type) >= sizeof(ret->token_type) ||
	      !is_auth_scheme(json_string_value(type), json_string_length(type))))) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "%s: the %s in the reply is not a bearer token (RFC 6750 allows letters, "
			 "digits, -._~+/ and trailing =; it holds spaces, control characters or "
			 "other bytes): refused -- the service, or a proxy between it and "
			 "batchtokd, is misbehaving",
			 who,
			 is_bearer_token(json_string_value(tok), json_string_length(tok))
			     ? "token_type"
			     : "access_token");
		return;
	}
	if (!set_expiry(sent_at, use_on, expires_in, expires_on, ret)) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "%s: the token's lifetime (%s %lld) is out of range (1 s to %d s)", who,
			 use_on ? "expires_on" : "expires_in",
			 (long long)(use_on ? expires_on : expires_in), ENTRA_LIFETIME_MAX);
		return;
	}
	if (get_int(root, "refresh_in", &refresh_in) == 0 && refresh_in > 0 &&
	    refresh_in < ret->expires_on - sent_at)
		ret->refresh_on = sent_at + refresh_in;
	snprintf(ret->token_type, sizeof(ret->token_type), "%s",
		 type ? json_string_value(type) : "Bearer");
	ret->access_token = secmem_strndup(json_string_value(tok), json_string_length(tok));
	rt = json_object_get(root, "refresh_token");
	if (json_is_string(rt) && json_string_length(rt) > 0 &&
	    json_string_length(rt) <= BT_TOKEN_MAX &&
	    !(ret->refresh_token = secmem_strndup(json_string_value(rt), json_string_length(rt)))) {
		secmem_free_str(ret->access_token);
		ret->access_token = NULL;
	}
	id_token_user(root, ret);
	if (!ret->access_token) {
		ret->status = BT_E_INTERNAL;
		snprintf(ret->message, sizeof(ret->message), "out of memory");
		return;
	}
	ret->status = BT_OK;
}

void entra_parse_response(const struct http_response *resp, int64_t sent_at, enum token_service svc,
			  struct token_result *ret)
{
	const char *who = svc == SERVICE_IMDS ? "managed identity endpoint" : "token service";
	json_t *root;
	json_error_t jerr;

	memset(ret, 0, sizeof(*ret));
	ret->retry_after = resp->retry_after;
	switch (resp->failure) {
	case HTTP_OK:
		break;
	case HTTP_TIMEOUT:
		ret->status = BT_E_TIMEOUT;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message), "%s timed out: %s", who, resp->error);
		return;
	default:
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message), "%s unreachable: %s", who,
			 resp->error);
		return;
	}
	root = json_loadb(resp->body, resp->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		ret->status = BT_E_UNAVAILABLE;
		ret->transient = true;
		snprintf(ret->message, sizeof(ret->message),
			 "%s: HTTP %ld with a body that is not a JSON object", who, resp->status);
	} else if (resp->status != 200) {
		parse_error(root, resp->status, svc, ret);
	} else {
		parse_token(root, sent_at, svc, who, ret);
	}
	json_decref(root);
}

/* The user-sign-in scope: RESOURCE/.default plus offline_access (for a
 * refresh token), openid and profile (for the id_token naming the user). */
static int user_scope(const char *resource, char **ret)
{
	return asprintf(ret, "%s/.default offline_access openid profile", resource) < 0 ? -ENOMEM
											: 0;
}

/* The common start of a user-flow request: URL ENDPOINT, client_id, and the
 * scope for resource when one is given. */
static int user_request(const struct identity *id, const char *endpoint, const char *grant,
			const char *resource, struct http_request *req)
{
	char *scope = NULL;
	int r;

	req->headers[0] = "Accept: application/json";
	if (asprintf(&req->url, "%s/%s/oauth2/v2.0/%s", id->authority, id->tenant, endpoint) < 0) {
		req->url = NULL;
		return -ENOMEM;
	}
	r = grant ? secstr_add_param(&req->body, "grant_type", grant) : 0;
	r = r ?: secstr_add_param(&req->body, "client_id", id->client_id);
	if (r == 0 && resource && (r = user_scope(resource, &scope)) == 0)
		r = secstr_add_param(&req->body, "scope", scope);
	free(scope);
	if (r < 0)
		http_request_clear(req);
	return r;
}

int entra_device_code_request(const struct identity *id, struct http_request *req)
{
	return user_request(id, "devicecode", NULL, id->resources[0], req);
}

int entra_canonical_claims(const char *json, char **ret, char *why, size_t n)
{
	json_error_t err;
	json_t *doc = json_loads(json, JSON_REJECT_DUPLICATES, &err);

	if (!doc) {
		/* jansson quotes the text near the error: the client's bytes,
		 * which go back in a one-line message. */
		snprintf(why, n, "the claims are not JSON: %s at character %d", err.text,
			 err.position);
		for (char *c = why; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
				*c = '?';
		return -EINVAL;
	}
	if (!json_is_object(doc)) {
		json_decref(doc);
		snprintf(why, n, "the claims are not a JSON object");
		return -EINVAL;
	}
	*ret = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(doc);
	return *ret ? 0 : -ENOMEM;
}

int entra_add_claims(const struct identity *id, const char *challenge, struct secstr *form)
{
	json_t *doc, *at;
	char *text;
	int r = -ENOMEM;

	if (!id->cp1 && !challenge)
		return 0;
	doc = challenge ? json_loads(challenge, 0, NULL) : json_object();
	if (!json_is_object(doc)) {
		json_decref(doc);
		return -EINVAL; /* canonical claims always parse */
	}
	/* What the client can handle is the administrator's to declare
	 * (client_capabilities), never a caller's: a challenge's own xms_cc
	 * goes (else any user of the identity could make every token of it
	 * a CAE token). */
	at = json_object_get(doc, "access_token");
	if (json_is_object(at))
		json_object_del(at, "xms_cc");
	/* MSAL's _merge_claims_challenge_and_capabilities: the capability
	 * goes into the access_token request beside what the challenge asks. */
	if (id->cp1) {
		if (!json_is_object(at)) {
			at = json_object();
			if (json_object_set_new(doc, "access_token", at) < 0)
				goto out;
		}
		if (json_object_set_new(at, "xms_cc", json_pack("{s:[s]}", "values", "cp1")) < 0)
			goto out;
	}
	if ((text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS))) {
		r = secstr_add_param(form, "claims", text);
		free(text);
	}
out:
	json_decref(doc);
	return r;
}

int entra_device_poll_request(const struct identity *id, const char *device_code,
			      struct http_request *req)
{
	int r =
	    user_request(id, "token", "urn:ietf:params:oauth:grant-type:device_code", NULL, req);

	r = r ?: secstr_add_param(&req->body, "device_code", device_code);
	if (r < 0)
		http_request_clear(req);
	return r;
}

int entra_refresh_request(const struct identity *id, const char *resource,
			  const char *refresh_token, struct http_request *req)
{
	int r = user_request(id, "token", "refresh_token", resource, req);

	r = r ?: secstr_add_param(&req->body, "refresh_token", refresh_token);
	if (r < 0)
		http_request_clear(req);
	return r;
}

static void copy_field(json_t *root, const char *key, char *dst, size_t n)
{
	const char *v = json_string_value(json_object_get(root, key));

	if (v)
		copy_line(dst, n, v);
}

void entra_parse_device_code(const struct http_response *resp, struct device_code *ret,
			     struct token_result *err)
{
	json_t *root = NULL, *dc;
	int64_t expires_in = 900, interval = 5;

	memset(ret, 0, sizeof(*ret));
	if (resp->failure != HTTP_OK || resp->status != 200) {
		/* Errors have the token endpoint's shape; a non-200 is never
		 * taken for a token. */
		entra_parse_response(resp, 0, SERVICE_ENTRA, err);
		return;
	}
	memset(err, 0, sizeof(*err));
	root = json_loadb(resp->body, resp->body_len, JSON_REJECT_DUPLICATES, NULL);
	dc = json_object_get(root, "device_code");
	/* MSAL defaults a missing interval and lifetime and accepts strings. */
	if (!json_is_object(root) || !json_is_string(dc) || json_string_length(dc) == 0 ||
	    json_string_length(dc) > BT_TOKEN_MAX ||
	    !json_is_string(json_object_get(root, "user_code")) ||
	    get_int(root, "expires_in", &expires_in) == -EINVAL ||
	    get_int(root, "interval", &interval) == -EINVAL || expires_in <= 0 || interval < 0) {
		err->status = BT_E_UNAVAILABLE;
		err->transient = true;
		snprintf(err->message, sizeof(err->message),
			 "token service: the device-code reply lacks device_code, user_code or "
			 "a valid expires_in and interval");
		json_decref(root);
		return;
	}
	copy_field(root, "user_code", ret->user_code, sizeof(ret->user_code));
	copy_field(root, "verification_uri", ret->verification_uri, sizeof(ret->verification_uri));
	if (!*ret->verification_uri) /* the v1 spelling */
		copy_field(root, "verification_url", ret->verification_uri,
			   sizeof(ret->verification_uri));
	copy_field(root, "message", ret->message, sizeof(ret->message));
	if (!*ret->message)
		snprintf(ret->message, sizeof(ret->message),
			 "To sign in, use a web browser to open the page %s and enter the code %s "
			 "to authenticate.",
			 ret->verification_uri, ret->user_code);
	ret->expires_in =
	    (uint32_t)(expires_in < DEVICE_CODE_LIFETIME_MAX ? expires_in
							     : DEVICE_CODE_LIFETIME_MAX);
	ret->interval = (uint32_t)(interval < 1			? 1
				   : interval > DEVICE_POLL_MAX ? DEVICE_POLL_MAX
								: interval);
	ret->device_code = secmem_strndup(json_string_value(dc), json_string_length(dc));
	if (!ret->device_code) {
		err->status = BT_E_INTERNAL;
		snprintf(err->message, sizeof(err->message), "out of memory");
	}
	json_decref(root);
}
