/* test_entra.c - token endpoint URLs, forms and every kind of reply. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../daemon/identity/config.h"
#include "../../daemon/identity/credential.h"
#include "../../daemon/identity/entra.h"
#include "../../proto/msg.h"

static struct config *cfg; /* the last ident()'s */

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fchmod(fileno(f), mode), 0);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* The identity "batch" as the config defines it with these lines; NULL:
 * a client secret, "a&b=c d", read from its file. */
static const struct identity *ident(int version, const char *lines)
{
	char dir[] = "/tmp/bt-entra-XXXXXX", conf[64], secret[64], text[1024];
	struct config_options o = {.path = conf};
	struct config_errors e = {0};

	config_free(cfg);
	cfg = NULL;
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/batchtokd.conf", dir);
	snprintf(secret, sizeof(secret), "%s/secret", dir);
	write_file(secret, "a&b=c d\n", 0600);
	snprintf(text, sizeof(text), "[identity batch]\ntoken_version = %d\n%s%s\n", version,
		 lines ? lines
		       : "credential = secret\ntenant = t-1\nclient_id = c-1\nsecret_file = ",
		 lines ? "" : secret);
	write_file(conf, text, 0600);
	if (config_load(&o, &cfg, &e) < 0)
		fail_msg("%s", e.msgs[0]);
	unlink(secret);
	unlink(conf);
	rmdir(dir);
	return config_find_identity(cfg, "batch");
}

static int free_config(void **state)
{
	(void)state;
	config_free(cfg);
	cfg = NULL;
	return 0;
}

static struct http_response ok(const char *body)
{
	return (struct http_response){.status = 200, .body = body, .body_len = strlen(body)};
}

static int build(const struct identity *id, const char *assertion, const char *rt,
		 struct http_request *req, struct token_result *err)
{
	struct cred_input in = {.id = id,
				.resource = id->resources[0],
				.assertion = assertion,
				.refresh_token = rt,
				.now = 1000};

	memset(err, 0, sizeof(*err));
	return credential_for(id)->build_request(&in, req, err);
}

static void test_v2_request(void **state)
{
	const struct identity *id = ident(2, NULL);
	struct http_request req = {0};
	struct token_result err;

	(void)state;
	assert_int_equal(build(id, NULL, NULL, &req, &err), 0);
	assert_string_equal(req.url, "https://login.microsoftonline.com/t-1/oauth2/v2.0/token");
	assert_string_equal(req.headers[0], "Accept: application/json");
	assert_null(req.headers[1]);
	assert_string_equal(req.body.p,
			    "grant_type=client_credentials&client_id=c-1&scope=https%3A%2F%2F"
			    "batch.core.windows.net%2F%2F.default&client_secret=a%26b%3Dc%20d");
	http_request_clear(&req);
}

static void test_v1_request(void **state)
{
	const struct identity *id = ident(1, NULL);
	struct http_request req = {0};
	struct token_result err;

	(void)state;
	assert_int_equal(build(id, NULL, NULL, &req, &err), 0);
	assert_string_equal(req.url, "https://login.microsoftonline.com/t-1/oauth2/token");
	assert_non_null(strstr(req.body.p, "&resource=https%3A%2F%2Fbatch.core.windows.net%2F&"));
	http_request_clear(&req);
}

static void test_success_v2_and_v1(void **state)
{
	struct token_result r;
	struct http_response resp;

	(void)state;
	resp = ok("{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,"
		  "\"access_token\":\"eyJ.a.b\",\"refresh_in\":1800}");
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_OK);
	assert_string_equal(r.access_token, "eyJ.a.b");
	assert_int_equal(r.expires_on, 4599);
	assert_int_equal(r.refresh_on, 2800);
	token_result_clear(&r);
	/* v1: numbers as strings; expires_in still counts from our clock. */
	resp = ok("{\"token_type\":\"Bearer\",\"expires_in\":\"3599\",\"expires_on\":\"99\","
		  "\"access_token\":\"x\",\"resource\":\"r\"}");
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_OK);
	assert_int_equal(r.expires_on, 4599);
	token_result_clear(&r);
	resp = ok("{\"access_token\":\"x\",\"expires_on\":\"5000\"}");
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.expires_on, 5000);
	assert_string_equal(r.token_type, "Bearer");
	token_result_clear(&r);
}

static void test_bad_success_bodies(void **state)
{
	static const char *bodies[] = {
	    "not json",
	    "[]",
	    "{}",
	    "{\"access_token\":\"x\"}",
	    "{\"access_token\":\"x\",\"expires_in\":\"soon\"}",
	    "{\"access_token\":\"\",\"expires_in\":3600}",
	    "{\"access_token\":7,\"expires_in\":3600}",
	    "{\"access_token\":\"x\",\"expires_in\":-5}",
	    "{\"access_token\":\"x\",\"expires_in\":99999999}",
	    "{\"access_token\":\"x\",\"access_token\":\"y\",\"expires_in\":3600}",
	};
	struct token_result r;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct http_response resp = ok(bodies[i]);
		entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
		assert_int_equal(r.status, BT_E_UNAVAILABLE);
		assert_true(r.transient);
		assert_null(r.access_token);
		assert_true(strlen(r.message) > 0);
	}
}

/* A token goes into an Authorization header and onto terminals as it is: one
 * that is not an RFC 6750 b64token (CR/LF, spaces, control bytes, '=' before
 * the end) is refused, and the message names the service, never the token. */
static void test_token_charset(void **state)
{
	static const char *bad[] = {
	    "eyJ.a\\r\\nX-Injected: 1",
	    "a b",
	    "a\\tb",
	    "a\\u001b[2Jb",
	    "a\\u007fb",
	    "caf\\u00e9",
	    "a=b",
	    "=",
	    "a,b",
	};
	static const char *good[] = {"eyJ0eXAi.eyJhdWQi.c2ln", "AZaz09-._~+/", "abc==", "a="};
	struct token_result r;
	char body[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int svc = SERVICE_ENTRA; svc <= SERVICE_IMDS; svc++) {
			snprintf(body, sizeof(body),
				 "{\"access_token\":\"%s\",\"expires_in\":3600}", bad[i]);
			struct http_response resp = ok(body);
			entra_parse_response(&resp, 1000, svc, &r);
			assert_int_equal(r.status, BT_E_UNAVAILABLE);
			assert_true(r.transient);
			assert_null(r.access_token);
			assert_non_null(strstr(r.message, svc == SERVICE_IMDS
							      ? "managed identity endpoint"
							      : "token service"));
			assert_non_null(strstr(r.message, "not a bearer token"));
			assert_null(strstr(r.message, "Injected"));
			token_result_clear(&r);
		}
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(body, sizeof(body), "{\"access_token\":\"%s\",\"expires_in\":3600}",
			 good[i]);
		struct http_response resp = ok(body);
		entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
		assert_int_equal(r.status, BT_OK);
		assert_string_equal(r.access_token, good[i]);
		token_result_clear(&r);
	}
	/* token_type is printed before the token in "Authorization: TYPE TOKEN". */
	struct http_response resp = ok("{\"access_token\":\"abc\",\"expires_in\":3600,"
				       "\"token_type\":\"Bearer\\r\\nX-Injected: 1\"}");
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_UNAVAILABLE);
	assert_null(r.access_token);
	assert_non_null(strstr(r.message, "token_type"));
	token_result_clear(&r);
}

/* Lifetimes near the ends of int64 are refused before any arithmetic
 * (UBSan aborted on sent_at + expires_in). */
static void test_lifetime_overflow(void **state)
{
	static const char *bodies[] = {
	    "{\"access_token\":\"x\",\"expires_in\":9223372036854775807}",
	    "{\"access_token\":\"x\",\"expires_in\":\"9223372036854775807\"}",
	    "{\"access_token\":\"x\",\"expires_in\":9223372036854774808}",
	    "{\"access_token\":\"x\",\"expires_in\":-9223372036854775808}",
	    "{\"access_token\":\"x\",\"expires_on\":-9223372036854775808}",
	    "{\"access_token\":\"x\",\"expires_on\":\"9223372036854775807\"}",
	};
	struct token_result r;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		for (int svc = SERVICE_ENTRA; svc <= SERVICE_IMDS; svc++) {
			struct http_response resp = ok(bodies[i]);
			entra_parse_response(&resp, 1000, svc, &r);
			assert_int_equal(r.status, BT_E_UNAVAILABLE);
			assert_null(r.access_token);
			assert_non_null(strstr(r.message, "out of range"));
			token_result_clear(&r);
		}
	}
	/* A huge refresh_in is ignored, not added. */
	struct http_response resp = ok("{\"access_token\":\"x\",\"expires_in\":3600,"
				       "\"refresh_in\":9223372036854775807}");
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_OK);
	assert_int_equal(r.refresh_on, 0);
	token_result_clear(&r);
	/* The far end of a wall clock that is itself near the limit. */
	resp = ok("{\"access_token\":\"x\",\"expires_in\":3600}");
	entra_parse_response(&resp, INT64_MAX - 10, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_UNAVAILABLE);
	token_result_clear(&r);
}

static void test_entra_errors(void **state)
{
	static const char bad_secret[] =
	    "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client "
	    "secret provided.\\r\\nTrace ID: 70a8\\r\\nCorrelation ID: 48f7\\r\\nTimestamp: x\","
	    "\"error_codes\":[7000215]}";
	struct http_response resp = {
	    .status = 401, .body = bad_secret, .body_len = strlen(bad_secret)};
	struct token_result r;

	(void)state;
	entra_parse_response(&resp, 0, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_CREDENTIAL_REJECTED);
	assert_false(r.transient);
	assert_string_equal(r.aadsts, "AADSTS7000215");
	assert_non_null(strstr(r.message, "Invalid client secret provided."));
	assert_non_null(strstr(r.message, "Value (not its ID)"));
	assert_null(strstr(r.message, "Trace ID"));
	/* Throttling and 5xx are transient and keep Retry-After. */
	resp = (struct http_response){
	    .status = 429, .body = "{\"error\":\"x\"}", .body_len = 13, .retry_after = 60};
	entra_parse_response(&resp, 0, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_UNAVAILABLE);
	assert_true(r.transient);
	assert_int_equal(r.retry_after, 60);
	resp = (struct http_response){.status = 503, .body = "{}", .body_len = 2};
	entra_parse_response(&resp, 0, SERVICE_ENTRA, &r);
	assert_true(r.transient);
}

static void test_transport_failures(void **state)
{
	struct http_response resp = {.failure = HTTP_TIMEOUT};
	struct token_result r;

	(void)state;
	snprintf(resp.error, sizeof(resp.error), "Operation timed out");
	entra_parse_response(&resp, 0, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_TIMEOUT);
	assert_true(r.transient);
	resp.failure = HTTP_TLS;
	entra_parse_response(&resp, 0, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_UNAVAILABLE);
	assert_non_null(strstr(r.message, "unreachable"));
}

/* IMDS: a GET with Metadata: true, never through a proxy, the resource and
 * the user-assigned selector in the query (ENTRA.md 3.1). */
static void test_imds_request(void **state)
{
	const struct identity *id = ident(2, NULL);
	struct http_request req = {0};
	struct token_result err;

	(void)state;
	id = ident(2, "credential = managed-identity\nobject_id = o-1\n");
	assert_int_equal(build(id, NULL, NULL, &req, &err), 0);
	assert_string_equal(req.url, "http://169.254.169.254/metadata/identity/oauth2/token"
				     "?api-version=2018-02-01&resource=https%3A%2F%2F"
				     "batch.core.windows.net%2F&object_id=o-1");
	assert_string_equal(req.headers[0], "Metadata: true");
	assert_true(req.direct);
	assert_int_equal(req.body.len, 0);
	http_request_clear(&req);
}

static void test_imds_replies(void **state)
{
	struct token_result r;
	struct http_response resp;

	(void)state;
	/* All strings; expires_on wins because IMDS serves cached tokens. */
	resp = ok("{\"access_token\":\"a.b.c\",\"refresh_token\":\"\",\"expires_in\":\"600\","
		  "\"expires_on\":\"1700\",\"not_before\":\"0\",\"resource\":\"r\","
		  "\"token_type\":\"Bearer\"}");
	entra_parse_response(&resp, 1000, SERVICE_IMDS, &r);
	assert_int_equal(r.status, BT_OK);
	assert_int_equal(r.expires_on, 1700);
	assert_null(r.refresh_token);
	token_result_clear(&r);
	/* 404 and 410 mean "updating": retried; 400 is a design-time error. */
	for (long st = 404; st <= 410; st += 6) {
		resp = (struct http_response){
		    .status = st, .body = "{\"error\":\"x\"}", .body_len = 11};
		entra_parse_response(&resp, 1000, SERVICE_IMDS, &r);
		assert_int_equal(r.status, BT_E_UNAVAILABLE);
		assert_true(r.transient);
		token_result_clear(&r);
	}
	resp = (struct http_response){
	    .status = 400,
	    .body = "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}"};
	resp.body_len = strlen(resp.body);
	entra_parse_response(&resp, 1000, SERVICE_IMDS, &r);
	assert_int_equal(r.status, BT_E_CREDENTIAL_REJECTED);
	assert_false(r.transient);
	assert_non_null(strstr(r.message, "managed identity endpoint: HTTP 400"));
	assert_non_null(strstr(r.message, "assign one"));
	token_result_clear(&r);
	/* For Entra the same 404 is final. */
	resp = (struct http_response){.status = 404, .body = "{}", .body_len = 2};
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_false(r.transient);
	token_result_clear(&r);
}

static void test_federated_and_refresh_requests(void **state)
{
	const struct identity *id = ident(2, NULL);
	struct http_request req = {0};
	struct token_result err;

	(void)state;
	id = ident(2, "credential = federated\ntenant = t-1\nclient_id = c-1\n"
		      "federated_token_file = /dev/null\n");
	assert_int_equal(build(id, "e.y.j", NULL, &req, &err), 0);
	assert_non_null(strstr(req.body.p,
			       "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3A"
			       "client-assertion-type%3Ajwt-bearer&client_assertion=e.y.j"));
	assert_null(strstr(req.body.p, "client_secret"));
	http_request_clear(&req);

	id = ident(2, "credential = device-code\ntenant = t-1\nclient_id = c-1\n");
	assert_int_equal(build(id, NULL, NULL, &req, &err), -ENOKEY);
	assert_int_equal(err.status, BT_E_CREDENTIAL_REJECTED);
	assert_non_null(strstr(err.message, "batchtok login -i batch"));
	assert_null(req.url);
	assert_int_equal(build(id, NULL, "r&t", &req, &err), 0);
	assert_string_equal(req.body.p,
			    "grant_type=refresh_token&client_id=c-1&scope=https%3A%2F%2F"
			    "batch.core.windows.net%2F%2F.default%20offline_access%20"
			    "openid%20profile&refresh_token=r%26t");
	http_request_clear(&req);
}

static void test_user_replies(void **state)
{
	/* {"preferred_username":"al@x"} as an unsigned JWT's claims. */
	const char *body =
	    "{\"access_token\":\"a.b.c\",\"expires_in\":3600,\"refresh_token\":"
	    "\"RT2\",\"id_token\":\"e30.eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhbEB4In0.c2ln\"}";
	struct http_response resp = ok(body);
	struct token_result r;

	(void)state;
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_OK);
	assert_string_equal(r.refresh_token, "RT2");
	assert_string_equal(r.user, "al@x");
	token_result_clear(&r);

	resp =
	    (struct http_response){.status = 400,
				   .body = "{\"error\":\"invalid_grant\",\"error_codes\":[50173],"
					   "\"error_description\":\"AADSTS50173: revoked\"}"};
	resp.body_len = strlen(resp.body);
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_CREDENTIAL_REJECTED);
	assert_string_equal(r.error, "invalid_grant");
	assert_int_equal(r.error_kind, ENTRA_E_GRANT_INVALID);
	assert_non_null(strstr(r.message, "batchtok login"));
	token_result_clear(&r);
}

/* Every OAuth error the daemon acts on has its own kind; anything else is
 * ENTRA_E_OTHER, and a reply without one is ENTRA_E_NONE. */
static void test_error_kinds(void **state)
{
	static const struct {
		long status;
		const char *body;
		enum entra_error_kind kind;
	} cases[] = {
	    {400, "{\"error\":\"invalid_grant\"}", ENTRA_E_GRANT_INVALID},
	    {400, "{\"error\":\"authorization_pending\",\"error_codes\":[70016]}", ENTRA_E_PENDING},
	    {400, "{\"error\":\"slow_down\"}", ENTRA_E_SLOW_DOWN},
	    {400, "{\"error\":\"expired_token\",\"error_codes\":[70019]}", ENTRA_E_EXPIRED},
	    {400, "{\"error\":\"authorization_declined\"}", ENTRA_E_DECLINED},
	    /* Only the first line of the string is kept, and that is what counts. */
	    {400, "{\"error\":\"slow_down\\r\\nTrace ID: 1\"}", ENTRA_E_SLOW_DOWN},
	    /* Error strings are case-sensitive (RFC 6749 5.2). */
	    {400, "{\"error\":\"Invalid_Grant\"}", ENTRA_E_OTHER},
	    {400, "{\"error\":\"invalid_grant_x\"}", ENTRA_E_OTHER},
	    {401, "{\"error\":\"invalid_client\",\"error_codes\":[7000215]}", ENTRA_E_OTHER},
	    {503, "{\"error\":\"temporarily_unavailable\"}", ENTRA_E_OTHER},
	    {400, "{\"error\":\"\"}", ENTRA_E_NONE},
	    {400, "{\"error\":17}", ENTRA_E_NONE},
	    {503, "{}", ENTRA_E_NONE},
	    {400, "not json", ENTRA_E_NONE},
	    {200, "{\"access_token\":\"a.b.c\",\"expires_in\":3600}", ENTRA_E_NONE},
	};
	struct http_response resp;
	struct token_result r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		resp = (struct http_response){.status = cases[i].status,
					      .body = cases[i].body,
					      .body_len = strlen(cases[i].body)};
		entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
		if (r.error_kind != cases[i].kind)
			fail_msg("%s: kind %d, expected %d", cases[i].body, r.error_kind,
				 cases[i].kind);
		token_result_clear(&r);
	}
	/* The kind does not decide the status: invalid_grant is not transient,
	 * a throttled slow_down is. */
	resp = (struct http_response){.status = 400, .body = "{\"error\":\"invalid_grant\"}"};
	resp.body_len = strlen(resp.body);
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.status, BT_E_CREDENTIAL_REJECTED);
	assert_false(r.transient);
	resp = (struct http_response){
	    .status = 429, .body = "{\"error\":\"slow_down\"}", .retry_after = 5};
	resp.body_len = strlen(resp.body);
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.error_kind, ENTRA_E_SLOW_DOWN);
	assert_true(r.transient);
	/* A declined sign-in says so when no AADSTS hint does. */
	resp =
	    (struct http_response){.status = 400, .body = "{\"error\":\"authorization_declined\"}"};
	resp.body_len = strlen(resp.body);
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_non_null(strstr(r.message, "the user declined the sign-in"));
	/* A transport failure names no OAuth error. */
	resp = (struct http_response){.failure = HTTP_TIMEOUT};
	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	assert_int_equal(r.error_kind, ENTRA_E_NONE);
}

static void test_device_code_reply(void **state)
{
	struct http_response resp = ok(
	    "{\"device_code\":\"DC\",\"user_code\":\"ABCD\",\"verification_url\":\"https://x/d\","
	    "\"expires_in\":\"900\",\"interval\":0}");
	struct device_code dc;
	struct token_result err;

	(void)state;
	entra_parse_device_code(&resp, &dc, &err);
	assert_string_equal(dc.device_code, "DC");
	assert_string_equal(dc.user_code, "ABCD");
	assert_string_equal(dc.verification_uri, "https://x/d"); /* the v1 spelling */
	assert_int_equal(dc.expires_in, 900);
	assert_int_equal(dc.interval, 1); /* never a busy loop */
	assert_non_null(strstr(dc.message, "enter the code ABCD"));
	device_code_clear(&dc);

	resp = ok("{\"user_code\":\"ABCD\"}");
	entra_parse_device_code(&resp, &dc, &err);
	assert_null(dc.device_code);
	assert_int_equal(err.status, BT_E_UNAVAILABLE);

	resp = (struct http_response){
	    .status = 400, .body = "{\"error\":\"invalid_client\",\"error_codes\":[7000218]}"};
	resp.body_len = strlen(resp.body);
	entra_parse_device_code(&resp, &dc, &err);
	assert_null(dc.device_code);
	assert_int_equal(err.status, BT_E_CREDENTIAL_REJECTED);
	token_result_clear(&err);
}

/* Claims challenges: one canonical form per claims request, refusals that
 * read as one line, and the cp1 capability merged in (ENTRA.md 8). */
static void test_claims(void **state)
{
	struct identity plain = {.name = "p"}, cae = {.name = "c", .cp1 = true};
	struct secstr form = {0};
	char *a, *b, why[200];

	(void)state;
	assert_int_equal(
	    entra_canonical_claims("{ \"b\": 1, \"a\" : {\"y\":2,\"x\":1} }", &a, why, sizeof(why)),
	    0);
	assert_string_equal(a, "{\"a\":{\"x\":1,\"y\":2},\"b\":1}");
	assert_int_equal(
	    entra_canonical_claims("{\"a\":{\"y\":2,\"x\":1},\"b\":1}", &b, why, sizeof(why)), 0);
	assert_string_equal(a, b);
	free(b);
	assert_int_equal(entra_canonical_claims("[1]", &b, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "the claims are not a JSON object");
	assert_int_equal(entra_canonical_claims("{\"a\":1,\"a\":2}", &b, why, sizeof(why)),
			 -EINVAL);
	/* The client's own bytes are quoted back: never a line break. */
	assert_int_equal(entra_canonical_claims("{\"error\":\"\\\n\n\n\"}", &b, why, sizeof(why)),
			 -EINVAL);
	assert_null(strchr(why, '\n'));
	assert_non_null(strstr(why, "not JSON"));

	/* A caller's own xms_cc goes: capabilities are the administrator's to
	 * declare (hostile review, issue 15). */
	assert_int_equal(
	    entra_canonical_claims("{\"access_token\":{\"xms_cc\":{\"values\":[\"cp1\"]}}}", &b,
				   why, sizeof(why)),
	    0);
	assert_int_equal(entra_add_claims(&plain, b, &form), 0);
	assert_string_equal(form.p, "claims=%7B%22access_token%22%3A%7B%7D%7D");
	secstr_free(&form);
	free(b);

	/* No capability, no challenge: no claims field at all. */
	assert_int_equal(entra_add_claims(&plain, NULL, &form), 0);
	assert_null(form.p);
	assert_int_equal(entra_add_claims(&plain, a, &form), 0);
	assert_string_equal(form.p,
			    "claims=%7B%22a%22%3A%7B%22x%22%3A1%2C%22y%22%3A2%7D%2C%22b%22%3A1%7D");
	secstr_free(&form);
	assert_int_equal(entra_add_claims(&cae, NULL, &form), 0);
	assert_string_equal(form.p, "claims=%7B%22access_token%22%3A%7B%22xms_cc%22%3A%7B%22values%"
				    "22%3A%5B%22cp1%22%5D%7D%7D%7D");
	secstr_free(&form);
	free(a);
	assert_int_equal(entra_canonical_claims(
			     "{\"access_token\":{\"acrs\":{\"essential\":true,\"value\":\"c1\"}}}",
			     &a, why, sizeof(why)),
			 0);
	assert_int_equal(entra_add_claims(&cae, a, &form), 0);
	/* {"access_token":{"acrs":{"essential":true,"value":"c1"},"xms_cc":{"values":["cp1"]}}} */
	assert_string_equal(
	    form.p,
	    "claims=%7B%22access_token%22%3A%7B%22acrs%22%3A%7B%22essential%22%3Atrue%2C%22value%"
	    "22%3A%22c1%22%7D%2C%22xms_cc%22%3A%7B%22values%22%3A%5B%22cp1%22%5D%7D%7D%7D");
	secstr_free(&form);
	free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v2_request),
	    cmocka_unit_test(test_v1_request),
	    cmocka_unit_test(test_success_v2_and_v1),
	    cmocka_unit_test(test_bad_success_bodies),
	    cmocka_unit_test(test_token_charset),
	    cmocka_unit_test(test_lifetime_overflow),
	    cmocka_unit_test(test_entra_errors),
	    cmocka_unit_test(test_transport_failures),
	    cmocka_unit_test(test_imds_request),
	    cmocka_unit_test(test_imds_replies),
	    cmocka_unit_test(test_federated_and_refresh_requests),
	    cmocka_unit_test(test_user_replies),
	    cmocka_unit_test(test_error_kinds),
	    cmocka_unit_test(test_device_code_reply),
	    cmocka_unit_test(test_claims),
	};
	return cmocka_run_group_tests(tests, NULL, free_config);
}
