/* test_capability.c - compat capabilities: issued, found only by their exact
 * text, bound to what they were issued for, expiring, bounded. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/front/capability.h"

static void test_issue_and_find(void **state)
{
	struct capability_store s;
	const struct capability *c, *c2;
	char text[CAPABILITY_TEXT_SIZE], text2[CAPABILITY_TEXT_SIZE];
	gid_t groups[] = {10, 20};

	(void)state;
	capability_store_init(&s);
	assert_int_equal(capability_issue(&s, 1000, 100, groups, 2, "batch", 5000, 60, text, &c),
			 0);
	assert_int_equal(strlen(text), CAPABILITY_TEXT_SIZE - 1);
	assert_memory_equal(text, CAPABILITY_PREFIX, strlen(CAPABILITY_PREFIX));
	for (const char *p = text; *p; p++)
		assert_non_null(
		    strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", *p));
	assert_int_equal(capability_issue(&s, 1000, 100, NULL, 0, "other", 5000, 60, text2, &c2),
			 0);
	assert_string_not_equal(text, text2);
	assert_ptr_equal(capability_find(&s, text, strlen(text), 5001), c);
	assert_ptr_equal(capability_find(&s, text2, strlen(text2), 5001), c2);
	assert_int_equal(c->uid, 1000);
	assert_int_equal(c->gid, 100);
	assert_int_equal(c->n_groups, 2);
	assert_int_equal(c->groups[1], 20);
	assert_string_equal(c->identity, "batch");
	assert_int_equal(c->expires_on, 5060);
	/* The text itself is not kept. */
	assert_null(memmem(c, sizeof(*c), text + 4, 8));
	/* One character off, a prefix, or longer: nothing. */
	text[10] ^= 1;
	assert_null(capability_find(&s, text, strlen(text), 5001));
	text[10] ^= 1;
	assert_null(capability_find(&s, text, strlen(text) - 1, 5001));
	assert_null(capability_find(&s, "", 0, 5001));
	/* Expired ones are still recognised (the caller says "expired") for a
	 * while, then forgotten. */
	assert_ptr_equal(capability_find(&s, text, strlen(text), 5060), c);
	assert_int_equal(s.n, 2);
	assert_null(capability_find(&s, text, strlen(text), 5060 + CAPABILITY_KEEP_AFTER));
	assert_int_equal(s.n, 0);
	capability_store_clear(&s);
}

static void test_bounded_per_uid(void **state)
{
	struct capability_store s;
	char text[CAPABILITY_TEXT_SIZE];

	(void)state;
	capability_store_init(&s);
	for (int i = 0; i < CAPABILITY_PER_UID; i++)
		assert_int_equal(capability_issue(&s, 7, 7, NULL, 0, "b", 100, 10, text, NULL), 0);
	assert_int_equal(capability_issue(&s, 7, 7, NULL, 0, "b", 100, 10, text, NULL), -EBUSY);
	/* Another user is not affected. */
	assert_int_equal(capability_issue(&s, 8, 8, NULL, 0, "b", 100, 10, text, NULL), 0);
	/* Once uid 7's have expired it may have new ones. */
	assert_int_equal(capability_issue(&s, 7, 7, NULL, 0, "b", 110, 10, text, NULL), 0);
	capability_store_clear(&s);
	assert_int_equal(s.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_issue_and_find),
	    cmocka_unit_test(test_bounded_per_uid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
