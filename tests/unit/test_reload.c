/* test_reload.c - daemon_reload() on a daemon assembled as daemon_run()
 * assembles it (real HTTP engine, sign-ins, user names, service and
 * socket), with a cache whose fetches the test completes: an identity
 * whose credential is unchanged keeps its token, a removed identity's
 * waiters are told, a changed one fetches afresh, the new limits reach the
 * socket and the guard on the token services, and a config that does not load leaves the running
 * one in place. */
#include <errno.h>
#include <fcntl.h>
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

#include "../../daemon/daemon.h"
#include "../../daemon/front/dispatch.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"
#include "unix_client.h"

#define NOW   1700000000
#define BATCH "https://batch.core.windows.net/"

struct fixture {
	struct daemon d;
	char dir[32], conf[64], secret[64], sock[64];
	struct token_entry *fetching[4];
	int n_fetching, fetches, cancels;
};

struct request {
	struct service_request q;
	int calls;
	uint32_t status;
	char token[64], message[600];
};

static struct fixture *the; /* for the cache's callbacks */

static int fake_fetch(void *arg, struct token_entry *e, struct token_result *err)
{
	(void)arg;
	(void)err;
	assert_true(the->n_fetching < 4);
	the->fetches++;
	the->fetching[the->n_fetching++] = e;
	e->fetch = e;
	return 0;
}

static void fake_cancel(void *arg, struct token_entry *e)
{
	(void)arg;
	the->cancels++;
	e->fetch = NULL;
	for (int i = 0; i < the->n_fetching; i++)
		if (the->fetching[i] == e)
			the->fetching[i] = the->fetching[--the->n_fetching];
}

static void fake_arm(void *arg, int64_t due)
{
	(void)arg;
	(void)due;
}

static int64_t fake_now(void *arg)
{
	(void)arg;
	return NOW;
}

static int64_t fake_mono_ms(void *arg)
{
	(void)arg;
	return NOW * 1000LL;
}

static uint32_t fake_random(void *arg)
{
	(void)arg;
	return 0;
}

static int hook_reload(void *arg, char **ret_error)
{
	return daemon_reload(arg, ret_error);
}

static int hook_describe(void *arg, struct bt_record *rec, bool admin)
{
	(void)arg;
	(void)rec;
	(void)admin;
	return 0;
}

static void on_signin_changed(void *arg, const struct identity *id)
{
	(void)arg;
	(void)id;
}

static void write_config(struct fixture *fx, const char *identities, const char *daemon_keys)
{
	FILE *f = fopen(fx->conf, "w");

	assert_non_null(f);
	fprintf(f, "[daemon]\nsocket = %s\nlog_level = error\n%s%s", fx->sock, daemon_keys,
		identities);
	fclose(f);
	assert_int_equal(chmod(fx->conf, 0600), 0);
}

static const char *sp(const struct fixture *fx, const char *client)
{
	static char text[512];

	snprintf(text, sizeof(text),
		 "[identity sp]\ncredential = secret\ntenant = t\nclient_id = %s\n"
		 "secret_file = %s\nresources = " BATCH "\ndefault = yes\n",
		 client, fx->secret);
	return text;
}

static int setup(void **state)
{
	static const struct cache_ops ops = {fake_fetch, fake_cancel, fake_arm, fake_now,
					     fake_random};
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct config_errors errs = {0};
	struct daemon *d;
	struct http_options ho = {.concurrency = 4, .timeout = 30, .connect_timeout = 10};
	struct cache_settings cs = {.min_validity = 60, .idle_timeout = 3600};
	struct service_hooks hooks;
	struct server_handlers sh;
	char text[1024];
	FILE *f;

	assert_non_null(fx);
	the = fx;
	d = &fx->d;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/bt-reload-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->conf, sizeof(fx->conf), "%s/batchtokd.conf", fx->dir);
	snprintf(fx->secret, sizeof(fx->secret), "%s/secret", fx->dir);
	snprintf(fx->sock, sizeof(fx->sock), "%s/sock", fx->dir);
	f = fopen(fx->secret, "w");
	assert_non_null(f);
	fputs("s3cret\n", f);
	fclose(f);
	assert_int_equal(chmod(fx->secret, 0600), 0);
	snprintf(text, sizeof(text), "%s[identity node]\ncredential = managed-identity\n",
		 sp(fx, "c"));
	write_config(fx, text, "");

	d->cfg_opts.path = fx->conf;
	if (config_load(&d->cfg_opts, &d->cfg, &errs) < 0)
		fail_msg("config: %s", errs.n ? errs.msgs[0] : "?");
	d->cache_due = INT64_MAX;
	assert_int_equal(uv_loop_init(&d->loop), 0);
	assert_int_equal(uv_timer_init(&d->loop, &d->guard_timer), 0);
	d->guard_timer.data = d;
	assert_int_equal(guard_new(fake_mono_ms, NULL, CACHE_WAIT_FOR_RETRY * 1000, &d->guard), 0);
	hooks = (struct service_hooks){.arg = d, .reload = hook_reload, .describe = hook_describe};
	assert_int_equal(http_new(&d->loop, &ho, &d->http), 0);
	assert_int_equal(cache_new(&ops, d, &cs, &d->cache), 0);
	assert_int_equal(signin_store_new(&d->loop, d->http, on_signin_changed, d, &d->signins), 0);
	signin_configure(d->signins, d->cfg);
	assert_int_equal(usernames_new(&d->loop, &d->usernames), 0);
	assert_int_equal(
	    service_new(d->cache, d->signins, d->usernames, d->cfg, &hooks, &d->service), 0);
	sh = (struct server_handlers){.frame = dispatch_frame,
				      .closed = dispatch_conn_closed,
				      .stopping = dispatch_conn_stopping,
				      .arg = d->service};
	assert_int_equal(
	    server_new(&d->loop,
		       &(struct server_options){.path = fx->sock,
						.mode = 0600,
						.gid = (gid_t)-1,
						.max_clients = d->cfg->max_clients,
						.max_clients_per_uid = d->cfg->max_clients_per_uid,
						.idle_timeout = d->cfg->client_idle_timeout},
		       &sh, &d->server),
	    0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	struct daemon *d = &fx->d;

	/* As SIGTERM does. */
	server_close(d->server);
	service_free(d->service);
	usernames_free(d->usernames);
	cache_free(d->cache);
	guard_free(d->guard);
	signin_store_free(d->signins);
	http_close(d->http);
	uv_close((uv_handle_t *)&d->guard_timer, NULL);
	assert_int_equal(loop_finish(&d->loop), 0);
	config_free(d->cfg);
	unlink(fx->conf);
	unlink(fx->secret);
	assert_int_equal(rmdir(fx->dir), 0);
	free(fx);
	return 0;
}

static void on_answer(struct service_request *q, const struct service_answer *a)
{
	struct request *r = container_of(q, struct request, q);

	r->calls++;
	r->status = a->status;
	snprintf(r->token, sizeof(r->token), "%s", a->access_token ? a->access_token : "");
	snprintf(r->message, sizeof(r->message), "%s", a->message ? a->message : "");
}

/* Asks for identity's token as root. */
static void get(struct fixture *fx, struct request *r, const char *identity)
{
	struct peer root = {.uid = 0, .gid = 0, .pid = 1};

	memset(r, 0, sizeof(*r));
	r->q.fn = on_answer;
	service_get_token(fx->d.service, &root, identity, "", "", 0, false, &r->q);
}

/* Completes the fetch for identity with token. */
static void fetched(struct fixture *fx, const char *identity, const char *token)
{
	struct token_result r = {.status = BT_OK};

	for (int i = 0; i < fx->n_fetching; i++) {
		struct token_entry *e = fx->fetching[i];
		if (strcmp(e->id->name, identity) != 0)
			continue;
		fx->fetching[i] = fx->fetching[--fx->n_fetching];
		r.access_token = secmem_strndup(token, strlen(token));
		snprintf(r.token_type, sizeof(r.token_type), "Bearer");
		r.expires_on = NOW + 3600;
		e->fetch = NULL;
		cache_fetch_done(fx->d.cache, e, &r);
		token_result_clear(&r);
		return;
	}
	fail_msg("no fetch for %s", identity);
}

static void test_unchanged_keeps_token_removed_told(void **state)
{
	struct fixture *fx = *state;
	struct daemon *d = &fx->d;
	const struct config *old = d->cfg;
	struct request a, b;
	char *err = NULL;

	get(fx, &a, "sp");
	fetched(fx, "sp", "tok-sp");
	assert_int_equal(a.calls, 1);
	assert_string_equal(a.token, "tok-sp");
	get(fx, &b, "node"); /* waits for its fetch */
	assert_int_equal(b.calls, 0);

	write_config(fx, sp(fx, "c"), "");
	assert_int_equal(daemon_reload(d, &err), 0);
	assert_null(err);
	assert_ptr_not_equal(d->cfg, old);
	assert_ptr_equal(service_config(d->service), d->cfg);
	assert_int_equal(d->reloads, 1);
	/* node is gone: its waiter is told, its fetch abandoned. */
	assert_int_equal(b.calls, 1);
	assert_int_not_equal(b.status, BT_OK);
	assert_int_equal(fx->cancels, 1);
	get(fx, &b, "node");
	assert_int_equal(b.status, BT_E_UNKNOWN_IDENTITY);
	/* sp kept its token: answered at once, no new fetch. */
	get(fx, &a, "sp");
	assert_int_equal(a.calls, 1);
	assert_string_equal(a.token, "tok-sp");
	assert_int_equal(fx->fetches, 2);
}

/* A changed credential is another identity as far as tokens go. */
static void test_changed_credential_fetches_again(void **state)
{
	struct fixture *fx = *state;
	struct request a;
	char *err = NULL;

	get(fx, &a, "sp");
	fetched(fx, "sp", "tok-old-client");
	write_config(fx, sp(fx, "another-client"), "");
	assert_int_equal(daemon_reload(&fx->d, &err), 0);
	get(fx, &a, "sp");
	assert_int_equal(a.calls, 0);
	assert_int_equal(fx->fetches, 2);
	fetched(fx, "sp", "tok-new-client");
	assert_string_equal(a.token, "tok-new-client");
}

/* A config that does not load changes nothing: same config, same tokens,
 * the reason given. */
static void test_bad_config_keeps_old(void **state)
{
	struct fixture *fx = *state;
	struct daemon *d = &fx->d;
	const struct config *old = d->cfg;
	struct request a;
	char *err = NULL;

	get(fx, &a, "sp");
	fetched(fx, "sp", "tok-sp");
	write_config(fx, "[identity broken]\ncredential = secret\nbogus_key = 1\n", "");
	assert_int_equal(daemon_reload(d, &err), -EINVAL);
	assert_non_null(err);
	assert_non_null(strstr(err, "bogus_key"));
	free(err);
	assert_ptr_equal(d->cfg, old);
	assert_ptr_equal(service_config(d->service), old);
	assert_int_equal(d->reloads, 0);
	get(fx, &a, "sp");
	assert_string_equal(a.token, "tok-sp");
	get(fx, &a, "node");
	assert_int_equal(a.calls, 0); /* still an identity: it waits for a fetch */
	assert_int_equal(fx->fetches, 2);
	service_cancel(&a.q); /* a is the test's stack */
	/* A file that is gone is no better. */
	unlink(fx->conf);
	err = NULL;
	assert_true(daemon_reload(d, &err) < 0);
	free(err);
	assert_ptr_equal(d->cfg, old);
}

/* The new limits reach the socket: max_clients_per_uid = 1 refuses a
 * second connection of the same uid. */
static void test_limits_reach_the_socket(void **state)
{
	struct fixture *fx = *state;
	struct client a, b;
	struct bt_frame f;
	struct guard_waiter w[3] = {0};
	struct guard_stats gs;
	char *err = NULL, msg[BT_MESSAGE_MAX];
	int64_t until;

	write_config(fx, sp(fx, "c"),
		     "max_clients_per_uid = 1\nimds_rate = 7\nimds_concurrency = 2\n"
		     "entra_concurrency = 0\n");
	assert_int_equal(daemon_reload(&fx->d, &err), 0);
	/* The guard on the token services has the new caps. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(guard_acquire(fx->d.guard, SERVICE_IMDS, "http://169.254.169.254",
					       &w[i], &until),
				 i < 2);
	assert_int_equal(guard_stats(fx->d.guard, 0, &gs), 0);
	assert_int_equal(gs.limits.rate, 7);
	assert_int_equal(gs.limits.concurrency, 2);
	for (int i = 0; i < 3; i++)
		guard_release(fx->d.guard, &w[i], 0);
	/* entra_concurrency = 0: no cap. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(guard_acquire(fx->d.guard, SERVICE_ENTRA,
					       "https://login.example.com", &w[i], &until),
				 1);
	for (int i = 0; i < 3; i++)
		guard_release(fx->d.guard, &w[i], 0);
	assert_int_equal(client_connect(&a, fx->sock), 0);
	run_turns(&fx->d.loop, 2);
	assert_int_equal(client_connect(&b, fx->sock), 0);
	assert_int_equal(client_wait_frame(&fx->d.loop, &b, &f), 0);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_BUSY);
	assert_non_null(strstr(msg, "max_clients_per_uid (1)"));
	assert_int_equal(server_client_count(fx->d.server), 1);
	client_close(&a);
	client_close(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_unchanged_keeps_token_removed_told, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_changed_credential_fetches_again, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_config_keeps_old, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits_reach_the_socket, setup, teardown),
	};

	log_init(LOG_CRIT);
	secmem_init(1 << 16);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
