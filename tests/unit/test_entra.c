/* test_entra.c - token endpoint URLs, forms and every kind of reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/credential.h"
#include "../../daemon/entra.h"
#include "../../proto/msg.h"

static struct identity ident(int version)
{
	static char *res[] = {"https://batch.core.windows.net/"};
	return (struct identity){.name = "batch",
				 .kind = CRED_SECRET,
				 .tenant = "t-1",
				 .client_id = "c-1",
				 .secret = "a&b=c d",
				 .resources = res,
				 .n_resources = 1,
				 .authority = "https://login.microsoftonline.com",
				 .token_version = version};
}

static struct http_response ok(const char *body)
{
	return (struct http_response){.status = 200, .body = body, .body_len = strlen(body)};
}

static void test_v2_request(void **state)
{
	struct identity id = ident(2);
	struct http_request req = {0};

	(void)state;
	assert_int_equal(credential_for(&id)->build_request(&id, id.resources[0], &req), 0);
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
	struct identity id = ident(1);
	struct http_request req = {0};

	(void)state;
	assert_int_equal(credential_for(&id)->build_request(&id, id.resources[0], &req), 0);
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
	entra_parse_response(&resp, 1000, &r);
	assert_int_equal(r.status, BT_OK);
	assert_string_equal(r.access_token, "eyJ.a.b");
	assert_int_equal(r.expires_on, 4599);
	assert_int_equal(r.refresh_on, 2800);
	token_result_clear(&r);
	/* v1: numbers as strings; expires_in still counts from our clock. */
	resp = ok("{\"token_type\":\"Bearer\",\"expires_in\":\"3599\",\"expires_on\":\"99\","
		  "\"access_token\":\"x\",\"resource\":\"r\"}");
	entra_parse_response(&resp, 1000, &r);
	assert_int_equal(r.status, BT_OK);
	assert_int_equal(r.expires_on, 4599);
	token_result_clear(&r);
	resp = ok("{\"access_token\":\"x\",\"expires_on\":\"5000\"}");
	entra_parse_response(&resp, 1000, &r);
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
		entra_parse_response(&resp, 1000, &r);
		assert_int_equal(r.status, BT_E_UNAVAILABLE);
		assert_true(r.transient);
		assert_null(r.access_token);
		assert_true(strlen(r.message) > 0);
	}
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
	entra_parse_response(&resp, 0, &r);
	assert_int_equal(r.status, BT_E_CREDENTIAL_REJECTED);
	assert_false(r.transient);
	assert_string_equal(r.aadsts, "AADSTS7000215");
	assert_non_null(strstr(r.message, "Invalid client secret provided."));
	assert_non_null(strstr(r.message, "Value (not its ID)"));
	assert_null(strstr(r.message, "Trace ID"));
	/* Throttling and 5xx are transient and keep Retry-After. */
	resp = (struct http_response){
	    .status = 429, .body = "{\"error\":\"x\"}", .body_len = 13, .retry_after = 60};
	entra_parse_response(&resp, 0, &r);
	assert_int_equal(r.status, BT_E_UNAVAILABLE);
	assert_true(r.transient);
	assert_int_equal(r.retry_after, 60);
	resp = (struct http_response){.status = 503, .body = "{}", .body_len = 2};
	entra_parse_response(&resp, 0, &r);
	assert_true(r.transient);
}

static void test_transport_failures(void **state)
{
	struct http_response resp = {.failure = HTTP_TIMEOUT};
	struct token_result r;

	(void)state;
	snprintf(resp.error, sizeof(resp.error), "Operation timed out");
	entra_parse_response(&resp, 0, &r);
	assert_int_equal(r.status, BT_E_TIMEOUT);
	assert_true(r.transient);
	resp.failure = HTTP_TLS;
	entra_parse_response(&resp, 0, &r);
	assert_int_equal(r.status, BT_E_UNAVAILABLE);
	assert_non_null(strstr(r.message, "unreachable"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v2_request),	      cmocka_unit_test(test_v1_request),
	    cmocka_unit_test(test_success_v2_and_v1), cmocka_unit_test(test_bad_success_bodies),
	    cmocka_unit_test(test_entra_errors),      cmocka_unit_test(test_transport_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
