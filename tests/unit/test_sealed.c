/* test_sealed.c - state files: sealed, opened, and refused when changed,
 * moved to another identity or opened with another key. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/lib/sealed.h"
#include "../../daemon/lib/secmem.h"
#include "../../daemon/identity/signin.h"

static void test_round_trip_and_tampering(void **state)
{
	unsigned char k1[SEALED_KEY_LEN], k2[SEALED_KEY_LEN], *box, *box2;
	const char *plain = "{\"refresh_token\":\"RT\",\"user\":\"al\",\"signed_in_at\":5}";
	size_t n, n2;
	char *out = NULL;

	(void)state;
	assert_int_equal(sealed_derive_key("material one", 12, k1), 0);
	assert_int_equal(sealed_derive_key("material two", 12, k2), 0);
	assert_memory_not_equal(k1, k2, SEALED_KEY_LEN);
	assert_int_equal(sealed_seal(k1, "me\nt\nc\na", plain, strlen(plain), &box, &n), 0);
	assert_int_equal(n, strlen(plain) + SEALED_OVERHEAD);
	assert_null(memmem(box, n, "RT", 2));
	assert_int_equal(sealed_open(k1, "me\nt\nc\na", box, n, &out), 0);
	assert_string_equal(out, plain);
	secmem_free_str(out);
	/* A fresh nonce: the same plaintext seals differently. */
	assert_int_equal(sealed_seal(k1, "me\nt\nc\na", plain, strlen(plain), &box2, &n2), 0);
	assert_memory_not_equal(box, box2, n);
	free(box2);

	assert_int_equal(sealed_open(k2, "me\nt\nc\na", box, n, &out), -EBADMSG);
	assert_int_equal(sealed_open(k1, "you\nt\nc\na", box, n, &out), -EBADMSG);
	for (size_t i = 0; i < n; i++) {
		box[i] ^= 1;
		assert_int_equal(sealed_open(k1, "me\nt\nc\na", box, n, &out), -EBADMSG);
		box[i] ^= 1;
	}
	assert_int_equal(sealed_open(k1, "me\nt\nc\na", box, n - 1, &out), -EBADMSG);
	assert_int_equal(sealed_open(k1, "me\nt\nc\na", box, 3, &out), -EBADMSG);
	free(box);
}

static void test_record(void **state)
{
	char *rt = NULL, user[16];
	int64_t at;

	(void)state;
	assert_int_equal(
	    signin_record_parse("{\"refresh_token\":\"RT\",\"user\":\"a\\nlongername\","
				"\"signed_in_at\":7}",
				&rt, user, sizeof(user), &at),
	    0);
	assert_string_equal(rt, "RT");
	assert_string_equal(user, "a longername"); /* no newline reaches a log */
	assert_int_equal(at, 7);
	secmem_free_str(rt);
	assert_int_equal(signin_record_parse("{\"user\":\"a\",\"signed_in_at\":7}", &rt, user,
					     sizeof(user), &at),
			 -EBADMSG);
	assert_int_equal(signin_record_parse("[]", &rt, user, sizeof(user), &at), -EBADMSG);
	assert_int_equal(signin_record_parse("{\"refresh_token\":\"\",\"user\":\"a\","
					     "\"signed_in_at\":7}",
					     &rt, user, sizeof(user), &at),
			 -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_and_tampering),
	    cmocka_unit_test(test_record),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
