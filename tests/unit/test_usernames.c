/* test_usernames.c - names looked up off the loop, cached, bounded; waiters
 * called once, never after they are cancelled or the cache is freed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pwd.h>
#include <uv.h>

#include "../../daemon/lib/usernames.h"

/* A uid no test system has a user for. */
#define NO_SUCH_UID ((uid_t)3999999999u)

struct got {
	struct username_waiter w;
	int calls;
	uid_t uid;
	char name[USERNAME_MAX + 1];
	bool named;
};

static void on_name(struct username_waiter *w, uid_t uid, const char *name)
{
	struct got *g = (struct got *)w;

	g->calls++;
	g->uid = uid;
	g->named = name != NULL;
	snprintf(g->name, sizeof(g->name), "%s", name ? name : "");
}

static void test_lookup_then_cached(void **state)
{
	struct got root = {.w.fn = on_name}, again = {.w.fn = on_name}, none = {.w.fn = on_name};
	struct usernames *u;
	const char *name = "x";
	uv_loop_t loop;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(usernames_new(&loop, &u), 0);
	assert_false(usernames_peek(u, 0, &name));
	/* Two waiters for one uid share one lookup; neither is called before
	 * the loop runs. */
	assert_int_equal(usernames_lookup(u, 0, &root.w), 0);
	assert_int_equal(usernames_lookup(u, 0, &again.w), 0);
	assert_int_equal(usernames_lookup(u, NO_SUCH_UID, &none.w), 0);
	assert_int_equal(root.calls, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(root.calls, 1);
	assert_int_equal(again.calls, 1);
	assert_true(root.named);
	assert_string_equal(root.name, getpwuid(0)->pw_name);
	assert_int_equal(none.calls, 1);
	assert_false(none.named);
	assert_int_equal(none.uid, NO_SUCH_UID);
	/* Now both answers are cached, the absence too. */
	assert_true(usernames_peek(u, 0, &name));
	assert_string_equal(name, getpwuid(0)->pw_name);
	assert_true(usernames_peek(u, NO_SUCH_UID, &name));
	assert_null(name);
	usernames_free(u);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_cancel_and_free_while_running(void **state)
{
	struct got a = {.w.fn = on_name}, b = {.w.fn = on_name};
	struct usernames *u;
	uv_loop_t loop;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(usernames_new(&loop, &u), 0);
	assert_int_equal(usernames_lookup(u, 0, &a.w), 0);
	usernames_waiter_cancel(&a.w);
	usernames_waiter_cancel(&a.w); /* twice is harmless */
	assert_int_equal(usernames_lookup(u, NO_SUCH_UID, &b.w), 0);
	/* Freed with lookups in the pool: they end on their own, calling
	 * nobody, and the loop closes cleanly. */
	usernames_free(u);
	usernames_waiter_cancel(&b.w);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* However many uids are looked up, the cache keeps a bounded number: the
 * oldest go first. */
static void test_bounded(void **state)
{
	enum { N = 300 };
	static struct got g[N];
	struct usernames *u;
	const char *name;
	uv_loop_t loop;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(usernames_new(&loop, &u), 0);
	for (int i = 0; i < N; i++) {
		g[i].w.fn = on_name;
		assert_int_equal(usernames_lookup(u, NO_SUCH_UID - (uid_t)i, &g[i].w), 0);
		/* One at a time, so the order of the answers is the order asked. */
		assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
		assert_int_equal(g[i].calls, 1);
	}
	assert_false(usernames_peek(u, NO_SUCH_UID, &name));
	assert_true(usernames_peek(u, NO_SUCH_UID - (N - 1), &name));
	usernames_free(u);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static uv_sem_t release;

/* A name server that answers only when the test lets it. */
static bool slow_resolve(uid_t uid, char *name, size_t n)
{
	(void)uid;
	uv_sem_wait(&release);
	snprintf(name, n, "late");
	return true;
}

/* A name server that does not answer cannot hold a denial: the waiter is
 * answered without a name after the bound, and the lookup goes on to fill
 * the cache for the next one. */
static void test_wait_is_bounded(void **state)
{
	struct got first = {.w.fn = on_name}, second = {.w.fn = on_name};
	struct usernames *u;
	const char *name;
	uv_loop_t loop;

	(void)state;
	assert_int_equal(uv_sem_init(&release, 0), 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(usernames_new(&loop, &u), 0);
	usernames_set_resolver(u, slow_resolve, 10);
	assert_int_equal(usernames_lookup(u, 1234, &first.w), 0);
	while (first.calls == 0)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(first.calls, 1);
	assert_false(first.named);
	assert_false(usernames_peek(u, 1234, &name));
	/* The next waiter joins the running lookup with a wait of its own. */
	usernames_set_resolver(u, slow_resolve, 60000);
	assert_int_equal(usernames_lookup(u, 1234, &second.w), 0);
	uv_sem_post(&release);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(first.calls, 1);
	assert_int_equal(second.calls, 1);
	assert_string_equal(second.name, "late");
	assert_true(usernames_peek(u, 1234, &name));
	assert_string_equal(name, "late");
	usernames_free(u);
	assert_int_equal(uv_loop_close(&loop), 0);
	uv_sem_destroy(&release);
}

static void test_describe(void **state)
{
	char buf[USERNAME_DESCRIBE_SIZE];

	(void)state;
	assert_string_equal(usernames_describe(buf, sizeof(buf), 1001, "alice"),
			    "user alice (uid 1001)");
	assert_string_equal(usernames_describe(buf, sizeof(buf), 1001, NULL), "uid 1001");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup_then_cached),
	    cmocka_unit_test(test_cancel_and_free_while_running),
	    cmocka_unit_test(test_bounded),
	    cmocka_unit_test(test_wait_is_bounded),
	    cmocka_unit_test(test_describe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
