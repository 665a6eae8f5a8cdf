/* test_status_format.c - status rendering for people and programs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../client/status_format.h"

static void build(struct bt_record *r)
{
	struct bt_record *id, *tok;

	memset(r, 0, sizeof(*r));
	assert_int_equal(bt_record_add_str(r, "daemon", "batchtokd 0.1.0"), 0);
	assert_int_equal(bt_record_add_child(r, &id), 0);
	assert_int_equal(bt_record_add_str(id, "identity", "ba\"tch"), 0);
	assert_int_equal(bt_record_add_int(id, "default", BT_FIELD_BOOL, 1), 0);
	assert_int_equal(bt_record_add_child(id, &tok), 0);
	assert_int_equal(bt_record_add_str(tok, "token", "https://batch.core.windows.net/"), 0);
	assert_int_equal(bt_record_add_int(tok, "expires", BT_FIELD_TIME, 1000 + 3723), 0);
}

static void test_text(void **state)
{
	struct bt_record r;
	char *s;

	(void)state;
	build(&r);
	assert_int_equal(status_format_text(&r, 1000, &s), 0);
	assert_non_null(strstr(s, "daemon: batchtokd 0.1.0\n"));
	assert_non_null(strstr(s, "identity ba\"tch\n  default: yes\n"));
	assert_non_null(strstr(s, "  token https://batch.core.windows.net/\n"));
	assert_non_null(strstr(s, "(in 1h 2m)"));
	free(s);
	bt_record_clear(&r);
}

static void test_json(void **state)
{
	struct bt_record r;
	char *s;

	(void)state;
	build(&r);
	assert_int_equal(status_format_json(&r, &s), 0);
	assert_string_equal(s, "{\"daemon\":\"batchtokd 0.1.0\",\"identities\":[{\"identity\":"
			       "\"ba\\\"tch\",\"default\":true,\"tokens\":[{\"token\":"
			       "\"https://batch.core.windows.net/\",\"expires\":4723}]}]}\n");
	free(s);
	bt_record_clear(&r);
}

/* An administrator's unit_requests: a list for people and programs; a
 * value this client cannot read is shown as it came. */
static void test_unit_requests(void **state)
{
	struct bt_record r = {0};
	char *s;

	(void)state;
	assert_int_equal(bt_record_add_str(&r, "daemon", "batchtokd 0.3.0"), 0);
	assert_int_equal(bt_record_add_str(&r, "unit_requests",
					   "etl@1.service=12/0 user@1000.service/dev.service=1/1 "
					   "(other)=3/2"),
			 0);
	assert_int_equal(bt_record_add_str(&r, "after", "x"), 0);
	assert_int_equal(status_format_text(&r, 1000, &s), 0);
	assert_string_equal(s, "daemon: batchtokd 0.3.0\n"
			       "unit_requests:\n"
			       "  etl@1.service: 12 requests\n"
			       "  user@1000.service/dev.service: 1 request, 1 denied\n"
			       "  (other): 3 requests, 2 denied\n"
			       "after: x\n");
	free(s);
	assert_int_equal(status_format_json(&r, &s), 0);
	assert_string_equal(s, "{\"daemon\":\"batchtokd 0.3.0\",\"unit_requests\":["
			       "{\"unit\":\"etl@1.service\",\"requests\":12,\"denied\":0},"
			       "{\"unit\":\"user@1000.service/dev.service\",\"requests\":1,"
			       "\"denied\":1},"
			       "{\"unit\":\"(other)\",\"requests\":3,\"denied\":2}],"
			       "\"after\":\"x\",\"identities\":[]}\n");
	free(s);
	bt_record_clear(&r);
	/* Not a list of NAME=N/N: as it came. */
	assert_int_equal(bt_record_add_str(&r, "unit_requests", "a.service=1/x"), 0);
	assert_int_equal(status_format_json(&r, &s), 0);
	assert_string_equal(s, "{\"unit_requests\":\"a.service=1/x\",\"identities\":[]}\n");
	free(s);
	assert_int_equal(status_format_text(&r, 1000, &s), 0);
	assert_string_equal(s, "unit_requests: a.service=1/x\n");
	free(s);
	bt_record_clear(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_text),
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_unit_requests),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
