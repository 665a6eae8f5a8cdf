/* test_http_in.c - compat endpoint requests: what is kept, query decoding,
 * keep-alive and pipelining, and every limit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/front/http_in.h"

static const char appsvc[] =
    "GET /msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fbatch.core.windows.net%2F"
    "&client_id=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nx-identity-HEADER: bt1_cap\r\n"
    "Accept: */*\r\n\r\n";

static void test_request_and_params(void **state)
{
	struct http_in r;
	const char *path;
	size_t plen;
	char *v = NULL;

	(void)state;
	http_in_init(&r);
	/* Byte by byte: http-parser calls back with pieces. */
	for (size_t i = 0; i < sizeof(appsvc) - 1; i++)
		assert_int_equal(http_in_feed(&r, appsvc + i, 1), 1);
	assert_true(r.complete);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.method, HTTP_GET);
	assert_true(r.keep_alive);
	assert_string_equal(r.h[HTTP_H_IDENTITY].value, "bt1_cap");
	assert_int_equal(r.h[HTTP_H_IDENTITY].count, 1);
	assert_int_equal(r.h[HTTP_H_METADATA].count, 0);
	assert_int_equal(http_in_path(&r, &path, &plen), 0);
	assert_int_equal(plen, strlen("/msi/token"));
	assert_memory_equal(path, "/msi/token", plen);
	assert_int_equal(http_in_param(&r, "resource", 100, &v), 0);
	assert_string_equal(v, "https://batch.core.windows.net/");
	free(v);
	assert_int_equal(http_in_param(&r, "api-version", 100, &v), 0);
	assert_string_equal(v, "2019-08-01");
	free(v);
	assert_int_equal(http_in_param(&r, "client", 100, &v), -ENOENT);
	assert_int_equal(http_in_param(&r, "resource", 10, &v), -E2BIG);
	/* Nothing more is taken until the next request is asked for. */
	assert_int_equal(http_in_feed(&r, "GET", 3), 0);
	http_in_next(&r);
	assert_false(r.complete);
	assert_int_equal(r.h[HTTP_H_IDENTITY].count, 0);
	http_in_wipe(&r);
}

static void test_pipelined_and_close(void **state)
{
	static const char two[] = "GET /a?x=1+2&y=%41&y2= HTTP/1.1\r\nMetadata: true\r\n\r\n"
				  "GET /b?y=1&y=2 HTTP/1.0\r\n\r\n";
	struct http_in r;
	size_t n;
	char *v = NULL;

	(void)state;
	http_in_init(&r);
	n = http_in_feed(&r, two, sizeof(two) - 1);
	assert_true(r.complete && n < sizeof(two) - 1);
	assert_string_equal(r.h[HTTP_H_METADATA].value, "true");
	assert_int_equal(http_in_param(&r, "x", 100, &v), 0);
	assert_string_equal(v, "1 2");
	free(v);
	assert_int_equal(http_in_param(&r, "y", 100, &v), 0);
	assert_string_equal(v, "A");
	free(v);
	assert_int_equal(http_in_param(&r, "y2", 100, &v), 0);
	assert_string_equal(v, "");
	free(v);
	http_in_next(&r);
	assert_int_equal(http_in_feed(&r, two + n, sizeof(two) - 1 - n), sizeof(two) - 1 - n);
	assert_true(r.complete);
	assert_false(r.keep_alive); /* HTTP/1.0 without keep-alive */
	assert_int_equal(r.h[HTTP_H_METADATA].count, 0);
	/* The same parameter twice is ambiguous. */
	assert_int_equal(http_in_param(&r, "y", 100, &v), -EINVAL);
	http_in_wipe(&r);
}

#define REQ(lit) lit, sizeof(lit) - 1

static int refused(const char *req, size_t len)
{
	struct http_in r;
	int status;

	http_in_init(&r);
	http_in_feed(&r, req, len);
	status = r.status;
	assert_false(r.complete);
	if (status)
		assert_non_null(r.error);
	http_in_wipe(&r);
	return status;
}

/* The Cloud Shell and VM-extension shape: POST with a form body, whose
 * parameters are the request's; the query is not looked at. */
static void test_post_form(void **state)
{
	static const char post[] =
	    "POST /bt1_cap/msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n"
	    "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
	    "Content-Length: 60\r\n\r\n"
	    "resource=https%3A%2F%2Fbatch.core.windows.net%2F&client_id=a"
	    "GET /msi/token?resource=q HTTP/1.1\r\n\r\n";
	struct http_in r;
	char *v = NULL;
	size_t used = 0;

	(void)state;
	http_in_init(&r);
	for (size_t i = 0; i < sizeof(post) - 1 && !r.complete; i++)
		used += http_in_feed(&r, post + i, 1);
	assert_true(r.complete);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.method, HTTP_POST);
	assert_true(http_in_body_is_form(&r));
	assert_false(http_in_has_query(&r));
	assert_int_equal(http_in_param(&r, "resource", 100, &v), 0);
	assert_string_equal(v, "https://batch.core.windows.net/");
	free(v);
	assert_int_equal(http_in_param(&r, "client_id", 100, &v), 0);
	assert_string_equal(v, "a");
	free(v);
	assert_int_equal(http_in_param(&r, "api-version", 100, &v), -ENOENT);
	/* The next request's query is its own; the body is gone. */
	http_in_next(&r);
	used += http_in_feed(&r, post + used, sizeof(post) - 1 - used);
	assert_int_equal(used, sizeof(post) - 1);
	assert_true(r.complete);
	assert_int_equal(r.body_len, 0);
	assert_true(http_in_has_query(&r));
	assert_false(http_in_body_is_form(&r));
	assert_int_equal(http_in_param(&r, "resource", 100, &v), 0);
	assert_string_equal(v, "q");
	free(v);
	http_in_wipe(&r);

	/* A NUL in the body is refused, not read past; and other types are not
	 * forms. */
	http_in_init(&r);
	http_in_feed(&r,
		     REQ("POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencodedx\r\n"
			 "Content-Length: 12\r\n\r\nresource=a\0b"));
	assert_true(r.complete);
	assert_false(http_in_body_is_form(&r));
	assert_int_equal(http_in_param(&r, "resource", 100, &v), -EINVAL);
	http_in_wipe(&r);
}

static void test_limits_and_garbage(void **state)
{
	char *big = malloc(HTTP_HEAD_MAX + 100);
	size_t n;
	struct http_in r;
	char *v = NULL;

	(void)state;
	/* Only a POST has a body, of a declared length, at most HTTP_BODY_MAX. */
	assert_int_equal(refused(REQ("GET /msi/token HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")),
			 413);
	assert_int_equal(
	    refused(
		REQ("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
	    413);
	assert_int_equal(
	    refused(
		REQ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
	    411);
	assert_int_equal(refused(REQ("POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n")), 413);
	assert_int_equal(refused("\x16\x03\x01\x02\x00", 5), 400);
	assert_int_equal(refused("GET / HTTP/1.1\r\nHost: a\r\nHost b\r\n\r\n", 35), 400);
	/* A long target. */
	n = (size_t)snprintf(big, HTTP_HEAD_MAX + 100, "GET /");
	memset(big + n, 'a', HTTP_TARGET_MAX);
	n += HTTP_TARGET_MAX;
	n += (size_t)snprintf(big + n, HTTP_HEAD_MAX + 100 - n, " HTTP/1.1\r\n\r\n");
	assert_int_equal(refused(big, n), 414);
	/* A long kept header, and a long head. */
	n = (size_t)snprintf(big, HTTP_HEAD_MAX + 100, "GET / HTTP/1.1\r\nsecret: ");
	memset(big + n, 's', HTTP_VALUE_MAX + 1);
	n += HTTP_VALUE_MAX + 1;
	n += (size_t)snprintf(big + n, HTTP_HEAD_MAX + 100 - n, "\r\n\r\n");
	assert_int_equal(refused(big, n), 431);
	n = (size_t)snprintf(big, HTTP_HEAD_MAX + 100, "GET / HTTP/1.1\r\nx-pad: ");
	memset(big + n, 'p', HTTP_HEAD_MAX);
	n += HTTP_HEAD_MAX;
	assert_int_equal(refused(big, n), 431);
	free(big);
	/* Control characters smuggled in through percent-encoding. */
	http_in_init(&r);
	http_in_feed(&r, "GET /?resource=a%0Ab HTTP/1.1\r\n\r\n", 34);
	assert_true(r.complete);
	assert_int_equal(http_in_param(&r, "resource", 100, &v), -EINVAL);
	http_in_wipe(&r);
	/* A header given twice is counted, its first value kept. */
	http_in_init(&r);
	http_in_feed(&r, "GET / HTTP/1.1\r\nsecret: a\r\nSecret: b\r\n\r\n", 40);
	assert_true(r.complete);
	assert_int_equal(r.h[HTTP_H_SECRET].count, 2);
	assert_string_equal(r.h[HTTP_H_SECRET].value, "a");
	http_in_wipe(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_and_params),
	    cmocka_unit_test(test_pipelined_and_close),
	    cmocka_unit_test(test_post_form),
	    cmocka_unit_test(test_limits_and_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
