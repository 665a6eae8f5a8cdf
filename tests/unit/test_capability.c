/* test_capability.c - compat capabilities: issued, found only by their exact
 * text, bound to what they were issued for, expiring, renewed and given back
 * by their own user only, and bounded per user and in all. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemon/front/capability.h"

static void test_issue_and_find(void **state)
{
	struct capability_store s;
	const struct capability *c, *c2, *f = NULL;
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
	assert_int_equal(capability_find(&s, text, strlen(text), 5001, &f), 0);
	assert_ptr_equal(f, c);
	assert_int_equal(capability_find(&s, text2, strlen(text2), 5001, &f), 0);
	assert_ptr_equal(f, c2);
	assert_int_equal(c->uid, 1000);
	assert_int_equal(c->gid, 100);
	assert_int_equal(c->n_groups, 2);
	assert_int_equal(c->groups[1], 20);
	assert_string_equal(c->identity, "batch");
	assert_int_equal(c->expires_on, 5060);
	/* The text itself is not kept. */
	assert_null(memmem(c, sizeof(*c), text + 4, 8));
	/* One character off, a prefix, or longer: nothing, and *ret untouched. */
	f = NULL;
	text[10] ^= 1;
	assert_int_equal(capability_find(&s, text, strlen(text), 5001, &f), -ENOENT);
	text[10] ^= 1;
	assert_int_equal(capability_find(&s, text, strlen(text) - 1, 5001, &f), -ENOENT);
	assert_int_equal(capability_find(&s, "", 0, 5001, &f), -ENOENT);
	assert_null(f);
	/* Expired ones are freed at once, and no longer count; their holder is
	 * still told "expired". */
	assert_int_equal(capability_count(&s, 5059), 2);
	assert_int_equal(capability_find(&s, text, strlen(text), 5060, &f), -EKEYEXPIRED);
	assert_int_equal(s.n, 0);
	assert_int_equal(capability_count(&s, 5060), 0);
	assert_int_equal(capability_find(&s, text2, strlen(text2), 5060 + 86400 * 30, &f),
			 -EKEYEXPIRED);
	capability_store_clear(&s);
	assert_int_equal(capability_find(&s, text, strlen(text), 5060, &f), -ENOENT);
}

static void test_bounded_per_uid(void **state)
{
	struct capability_store *s = malloc(sizeof(*s));
	char text[CAPABILITY_TEXT_SIZE];

	(void)state;
	assert_non_null(s);
	capability_store_init(s);
	for (int i = 0; i < CAPABILITY_PER_UID; i++)
		assert_int_equal(capability_issue(s, 7, 7, NULL, 0, "b", 100, 10, text, NULL), 0);
	assert_int_equal(capability_issue(s, 7, 7, NULL, 0, "b", 100, 10, text, NULL), -EBUSY);
	/* Another user is not affected. */
	assert_int_equal(capability_issue(s, 8, 8, NULL, 0, "b", 100, 10, text, NULL), 0);
	/* Once uid 7's have expired it may have new ones. */
	assert_int_equal(capability_issue(s, 7, 7, NULL, 0, "b", 110, 10, text, NULL), 0);
	capability_store_clear(s);
	assert_int_equal(s->n, 0);
	free(s);
}

/* One uid issuing short-lived capabilities over and over, far more than
 * the store holds, never keeps another from getting one: expired ones
 * count against nothing, and live ones only against their own uid. */
static void test_one_user_cannot_fill_the_store(void **state)
{
	struct capability_store *s = malloc(sizeof(*s));
	char text[CAPABILITY_TEXT_SIZE];
	int64_t now = 1000;

	(void)state;
	assert_non_null(s);
	capability_store_init(s);
	for (int round = 0; round < 3 * CAPABILITY_MAX / CAPABILITY_PER_UID; round++, now += 2) {
		for (int i = 0; i < CAPABILITY_PER_UID; i++)
			assert_int_equal(
			    capability_issue(s, 7, 7, NULL, 0, "b", now, 1, text, NULL), 0);
		assert_int_equal(capability_issue(s, 7, 7, NULL, 0, "b", now, 1, text, NULL),
				 -EBUSY);
		assert_int_equal(capability_issue(s, 8, 8, NULL, 0, "b", now, 3600, text, NULL), 0);
	}
	/* uid 8's are all live and its own: past its quota it is told so. */
	assert_true(s->n <= CAPABILITY_MAX);
	capability_store_clear(s);
	/* The store in all: full of many users' live ones, -ENOSPC. */
	for (int i = 0; i < CAPABILITY_MAX; i++)
		assert_int_equal(capability_issue(s, (uid_t)(1000 + i / CAPABILITY_PER_UID), 0,
						  NULL, 0, "b", now, 60, text, NULL),
				 0);
	assert_int_equal(capability_issue(s, 99, 99, NULL, 0, "b", now, 60, text, NULL), -ENOSPC);
	capability_store_clear(s);
	free(s);
}

static void test_renew_and_revoke(void **state)
{
	struct capability_store s;
	const struct capability *c, *f;
	char text[CAPABILITY_TEXT_SIZE], text2[CAPABILITY_TEXT_SIZE];
	int64_t exp = 0;

	(void)state;
	capability_store_init(&s);
	assert_int_equal(capability_issue(&s, 7, 7, NULL, 0, "b", 100, 10, text, &c), 0);
	assert_int_equal(capability_issue(&s, 7, 7, NULL, 0, "b", 100, 10, text2, NULL), 0);
	/* Renewed before it expires: live compat_lifetime from then on. */
	assert_int_equal(capability_renew(&s, text, strlen(text), 7, 105, 10, &exp), 0);
	assert_int_equal(exp, 115);
	assert_int_equal(capability_find(&s, text, strlen(text), 112, &f), 0);
	/* Only by its own uid. */
	assert_int_equal(capability_renew(&s, text, strlen(text), 8, 112, 10, &exp), -EPERM);
	assert_int_equal(capability_revoke(&s, text, strlen(text), 8, 112), -EPERM);
	assert_int_equal(capability_find(&s, text, strlen(text), 112, &f), 0);
	/* The other one was not renewed: it expired, and cannot be renewed. */
	assert_int_equal(capability_renew(&s, text2, strlen(text2), 7, 112, 10, &exp), -ENOENT);
	assert_int_equal(capability_find(&s, text2, strlen(text2), 112, &f), -EKEYEXPIRED);
	/* Given back: it stops working at once, and frees its place. */
	assert_int_equal(capability_revoke(&s, text, strlen(text), 7, 113), 0);
	assert_int_equal(capability_find(&s, text, strlen(text), 113, &f), -ENOENT);
	assert_int_equal(capability_count(&s, 113), 0);
	/* Giving back what is gone is no error; renewing it is. */
	assert_int_equal(capability_revoke(&s, text, strlen(text), 7, 113), 0);
	assert_int_equal(capability_renew(&s, text, strlen(text), 7, 113, 10, &exp), -ENOENT);
	capability_store_clear(&s);
}

/* The memory of expired ones is a ring: bounded, oldest forgotten first. */
static void test_recently_expired_is_bounded(void **state)
{
	struct capability_store *s = malloc(sizeof(*s));
	char first[CAPABILITY_TEXT_SIZE], text[CAPABILITY_TEXT_SIZE], last[CAPABILITY_TEXT_SIZE];
	const struct capability *f;

	(void)state;
	assert_non_null(s);
	capability_store_init(s);
	assert_int_equal(capability_issue(s, 7, 7, NULL, 0, "b", 100, 1, first, NULL), 0);
	for (int i = 0; i < CAPABILITY_RECENT; i++)
		assert_int_equal(capability_issue(s, 7, 7, NULL, 0, "b", 102 + 2 * i, 1,
						  i == CAPABILITY_RECENT - 1 ? last : text, NULL),
				 0);
	assert_int_equal(capability_count(s, 100000), 0);
	assert_int_equal(s->n_recent, CAPABILITY_RECENT);
	assert_int_equal(capability_find(s, first, strlen(first), 100000, &f), -ENOENT);
	assert_int_equal(capability_find(s, last, strlen(last), 100000, &f), -EKEYEXPIRED);
	capability_store_clear(s);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_issue_and_find),
	    cmocka_unit_test(test_bounded_per_uid),
	    cmocka_unit_test(test_one_user_cannot_fill_the_store),
	    cmocka_unit_test(test_renew_and_revoke),
	    cmocka_unit_test(test_recently_expired_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
