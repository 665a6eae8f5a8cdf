/* test_jwt.c - fingerprints and unverified claim decoding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/lib/jwt.h"

/* {"alg":"RS256","typ":"JWT"} . {"aud":"https://batch.core.windows.net/","n":1} . sig */
#define TOKEN                                                                                      \
	"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."                                                    \
	"eyJhdWQiOiJodHRwczovL2JhdGNoLmNvcmUud2luZG93cy5uZXQvIiwibiI6MX0.c2lnbmF0dXJl"

static void test_describe(void **state)
{
	char *s;

	(void)state;
	assert_int_equal(jwt_describe(TOKEN, &s), 0);
	assert_non_null(strstr(s, "\"alg\": \"RS256\""));
	assert_non_null(strstr(s, "\"aud\": \"https://batch.core.windows.net/\""));
	assert_null(strstr(s, "c2lnbmF0dXJl"));
	free(s);
}

static void test_not_a_jwt(void **state)
{
	char *s = NULL;

	(void)state;
	assert_int_equal(jwt_describe("opaque-token", &s), -EINVAL);
	assert_int_equal(jwt_describe("a.b.c", &s), -EINVAL);
	assert_int_equal(jwt_describe("eyJ9.eyJ9.", &s), -EINVAL);
	assert_int_equal(jwt_describe("W10.W10.x", &s), -EINVAL); /* arrays, not objects */
	assert_int_equal(jwt_describe("e+J9.eyJ9.x", &s), -EINVAL);
	assert_null(s);
}

static void test_fingerprint(void **state)
{
	char a[24], b[24];

	(void)state;
	jwt_fingerprint("token-one", a, sizeof(a));
	jwt_fingerprint("token-two", b, sizeof(b));
	assert_int_equal(strlen(a), 19);
	assert_memory_equal(a, "sha256:", 7);
	assert_string_not_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_describe),
	    cmocka_unit_test(test_not_a_jwt),
	    cmocka_unit_test(test_fingerprint),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
