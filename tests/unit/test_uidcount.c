/* test_uidcount.c - per-uid counts and their cap. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../daemon/lib/uidcount.h"

static void test_cap_per_uid(void **state)
{
	struct uidcount t = {0};

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(uidcount_add(&t, 1000, 3), 0);
	/* A full uid changes nothing; another uid is not affected. */
	assert_int_equal(uidcount_add(&t, 1000, 3), -EDQUOT);
	assert_int_equal(uidcount_get(&t, 1000), 3);
	assert_int_equal(uidcount_add(&t, 1001, 3), 0);
	uidcount_del(&t, 1000);
	assert_int_equal(uidcount_add(&t, 1000, 3), 0);
	assert_int_equal(uidcount_add(&t, 42, 0), -EDQUOT);
	assert_int_equal(uidcount_get(&t, 42), 0);
	uidcount_free(&t);
	assert_int_equal(t.n, 0);
}

static void test_many_uids_stay_sorted_and_are_forgotten(void **state)
{
	struct uidcount t = {0};

	(void)state;
	/* In an order that inserts at the front, middle and back. */
	for (uint32_t i = 0; i < 1000; i++) {
		uid_t u = (i * 7919) % 1000;
		assert_int_equal(uidcount_add(&t, u, 2), 0);
		assert_int_equal(uidcount_add(&t, u, 2), 0);
	}
	assert_int_equal(t.n, 1000);
	for (size_t i = 1; i < t.n; i++)
		assert_true(t.v[i - 1].uid < t.v[i].uid);
	for (uid_t u = 0; u < 1000; u++) {
		assert_int_equal(uidcount_get(&t, u), 2);
		uidcount_del(&t, u);
		uidcount_del(&t, u);
		/* Once more than it holds: no effect. */
		uidcount_del(&t, u);
	}
	assert_int_equal(t.n, 0);
	assert_int_equal(uidcount_get(&t, (uid_t)-1), 0);
	assert_int_equal(uidcount_add(&t, (uid_t)-1, 1), 0);
	assert_int_equal(uidcount_get(&t, (uid_t)-1), 1);
	uidcount_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cap_per_uid),
	    cmocka_unit_test(test_many_uids_stay_sorted_and_are_forgotten),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
