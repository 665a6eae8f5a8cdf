/* test_dispatch.c - each message type's handler, over the real server on a
 * socket in a temporary directory, against the real service with a cache
 * whose fetches the test completes and daemon hooks (reload, status, compat
 * capabilities) that the test answers. The test runs as root, which is an
 * administrator who may use every identity; the frame handler can present
 * a connection as another uid (as_uid) to reach the refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../daemon/core/cache.h"
#include "../../daemon/core/service.h"
#include "../../daemon/front/dispatch.h"
#include "../../daemon/front/server.h"
#include "../../daemon/identity/signin.h"
#include "../../daemon/lib/attest.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"
#include "../../daemon/lib/usernames.h"
#include "unix_client.h"

#define NOW	 1700000000
#define BATCH	 "https://batch.core.windows.net/"
#define ALLOWED	 1000 /* in sp's allow_users */
#define STRANGER 4242 /* allowed nothing */
/* A JWT: {"alg":"RS256","typ":"JWT"}.{"aud":BATCH,"oid":"o1"}.sig */
#define JWT                                                                                        \
	"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL2JhdGNoLmNvcmUud2luZG93cy5uZX"  \
	"QvIiwib2lkIjoibzEifQ.c2ln"

struct fixture {
	uv_loop_t loop;
	char dir[32], path[64];
	struct config *cfg;
	struct cache *cache;
	struct signin_store *signins;
	struct usernames *usernames;
	struct service *service;
	struct server *srv;
	struct client cl;
	uid_t as_uid; /* (uid_t)-1: the kernel's word */
	/* The program the connection is presented as, if present_att. */
	const struct attestation *att;
	bool present_att;
	uint32_t next_id;
	/* The fake fetcher. */
	struct token_entry *fetching;
	int fetches, cancels;
	/* The fake daemon hooks: what they return, how often they ran. */
	int reload_r, grant_r, renew_r, revoke_r;
	int reloads, grants, renews, revokes;
};

static int fake_fetch(void *arg, struct token_entry *e, struct token_result *err)
{
	struct fixture *fx = arg;

	(void)err;
	fx->fetches++;
	fx->fetching = e;
	e->fetch = e;
	return 0;
}

static void fake_cancel(void *arg, struct token_entry *e)
{
	struct fixture *fx = arg;

	fx->cancels++;
	e->fetch = NULL;
	if (fx->fetching == e)
		fx->fetching = NULL;
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

static uint32_t fake_random(void *arg)
{
	(void)arg;
	return 0;
}

static int hook_reload(void *arg, char **ret_error)
{
	struct fixture *fx = arg;

	fx->reloads++;
	if (fx->reload_r < 0)
		*ret_error = strdup("t.conf:3: unknown key 'bogus'");
	return fx->reload_r;
}

static int hook_describe(void *arg, struct bt_record *rec, bool admin)
{
	(void)arg;
	return bt_record_add_str(rec, "daemon", "batchtokd test")
		   ?: (admin ? bt_record_add_int(rec, "pid", BT_FIELD_INT, 1) : 0);
}

static int hook_grant(void *arg, const struct peer *p, const char *identity, char *text, size_t n,
		      int64_t *expires_on, const char **url)
{
	struct fixture *fx = arg;

	(void)p;
	fx->grants++;
	if (fx->grant_r < 0)
		return fx->grant_r;
	snprintf(text, n, "cap-for-%s", identity);
	*expires_on = NOW + 600;
	*url = "http://127.0.0.1:50342";
	return 0;
}

static int hook_renew(void *arg, const struct peer *p, const char *text, int64_t *expires_on)
{
	struct fixture *fx = arg;

	(void)p;
	fx->renews++;
	assert_string_equal(text, "cap-for-sp");
	*expires_on = NOW + 900;
	return fx->renew_r;
}

static int hook_revoke(void *arg, const struct peer *p, const char *text)
{
	struct fixture *fx = arg;

	(void)p;
	(void)text;
	fx->revokes++;
	return fx->revoke_r;
}

static void on_frame(void *arg, struct conn *c, struct bt_frame *f)
{
	struct fixture *fx = arg;

	if (fx->as_uid != (uid_t)-1) {
		c->peer.uid = fx->as_uid;
		c->peer.gid = fx->as_uid;
		c->peer.n_groups = 0;
	}
	if (fx->present_att)
		c->peer.att = fx->att;
	dispatch_frame(fx->service, c, f);
}

static void on_closed(void *arg, struct conn *c)
{
	dispatch_conn_closed(((struct fixture *)arg)->service, c);
}

static void on_stopping(void *arg, struct conn *c)
{
	dispatch_conn_stopping(((struct fixture *)arg)->service, c);
}

/* Users' names without NSS: the refusal names the user. */
static bool resolve_name(uid_t uid, char *name, size_t n)
{
	if (uid != STRANGER)
		return false;
	snprintf(name, n, "stranger");
	return true;
}

static void on_signin_changed(void *arg, const struct identity *id)
{
	(void)arg;
	(void)id;
}

/* Identities some tests add to the fixture's config. */
static const char *extra_identities = "";

static int setup(void **state)
{
	static const struct cache_ops ops = {fake_fetch, fake_cancel, fake_arm, fake_now,
					     fake_random};
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct cache_settings cs = {.min_validity = 60, .idle_timeout = 3600};
	struct config_errors errs = {0};
	struct service_hooks hooks;
	struct server_handlers h;
	char text[1024];

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/bt-disp-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/sock", fx->dir);
	snprintf(text, sizeof(text),
		 "[daemon]\nstate_dir = %s/state\n"
		 "[identity sp]\ncredential = secret\ntenant = t\nclient_id = c\n"
		 "secret_file = /nonexistent\nresources = " BATCH ", https://x/\n"
		 "allow_users = %d\ndefault = yes\n"
		 "[identity me]\ncredential = device-code\n%s",
		 fx->dir, ALLOWED, extra_identities);
	if (config_parse_string(text, "t.conf", &fx->cfg, &errs) < 0)
		fail_msg("config: %s", errs.n ? errs.msgs[0] : "?");
	hooks = (struct service_hooks){.arg = fx,
				       .reload = hook_reload,
				       .describe = hook_describe,
				       .grant = hook_grant,
				       .renew = hook_renew,
				       .revoke = hook_revoke};
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	assert_int_equal(cache_new(&ops, fx, &cs, &fx->cache), 0);
	assert_int_equal(signin_store_new(&fx->loop, NULL, on_signin_changed, fx, &fx->signins), 0);
	signin_configure(fx->signins, fx->cfg);
	assert_int_equal(usernames_new(&fx->loop, &fx->usernames), 0);
	usernames_set_resolver(fx->usernames, resolve_name, 1000);
	assert_int_equal(
	    service_new(fx->cache, fx->signins, fx->usernames, fx->cfg, &hooks, &fx->service), 0);
	h = (struct server_handlers){
	    .frame = on_frame, .closed = on_closed, .stopping = on_stopping, .arg = fx};
	assert_int_equal(server_new(&fx->loop,
				    &(struct server_options){.path = fx->path,
							     .mode = 0600,
							     .gid = (gid_t)-1,
							     .max_clients = 10,
							     .max_clients_per_uid = 10,
							     .idle_timeout = 3600},
				    &h, &fx->srv),
			 0);
	fx->as_uid = (uid_t)-1;
	assert_int_equal(client_connect(&fx->cl, fx->path), 0);
	run_turns(&fx->loop, 2);
	*state = fx;
	return 0;
}

/* With [identity etl], granted by its unit alone. */
static int setup_programs(void **state)
{
	extra_identities = "[identity etl]\ncredential = managed-identity\n"
			   "allow_units = etl@*.service\n";
	return setup(state);
}

static int teardown(void **state)
{
	extra_identities = "";
	struct fixture *fx = *state;
	char sub[64];

	client_close(&fx->cl);
	if (fx->srv)
		server_close(fx->srv);
	service_free(fx->service);
	usernames_free(fx->usernames);
	cache_free(fx->cache);
	signin_store_free(fx->signins);
	assert_int_equal(loop_finish(&fx->loop), 0);
	config_free(fx->cfg);
	snprintf(sub, sizeof(sub), "%s/state/state.key", fx->dir);
	unlink(sub);
	snprintf(sub, sizeof(sub), "%s/state", fx->dir);
	rmdir(sub);
	assert_int_equal(rmdir(fx->dir), 0);
	free(fx);
	return 0;
}

/* Sends what b holds (and frees it). */
static void send_buf(struct fixture *fx, struct bt_buf *b)
{
	assert_true(client_send_buf(&fx->cl, b));
	bt_buf_free(b);
}

static uint32_t send_hello(struct fixture *fx, uint32_t min, uint32_t max)
{
	struct bt_buf b;
	uint32_t id = ++fx->next_id;

	bt_buf_init(&b, 4096);
	assert_int_equal(bt_encode_hello(&b, id, &(struct bt_hello){min, max}), 0);
	send_buf(fx, &b);
	return id;
}

/* Waits for the reply to id; the frame stays a view until client_next(). */
static void wait_reply(struct fixture *fx, uint32_t id, struct bt_frame *f)
{
	assert_int_equal(client_wait_frame(&fx->loop, &fx->cl, f), 0);
	assert_int_equal(f->id, id);
}

/* Waits for the reply to id, which must be an error; its status (and
 * message in msg). */
static uint32_t wait_error(struct fixture *fx, uint32_t id, char *msg, size_t n)
{
	struct bt_frame f;
	uint32_t status;

	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_ERROR);
	status = frame_error(&f, msg, n);
	client_next(&fx->cl, &f);
	return status;
}

static void hello(struct fixture *fx)
{
	struct bt_frame f;
	uint32_t id = send_hello(fx, 1, 2);

	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_HELLO | BT_REPLY);
	client_next(&fx->cl, &f);
}

static uint32_t send_query(struct fixture *fx, uint8_t type, const char *identity,
			   const char *resource, const char *scope)
{
	struct bt_token_query q = {
	    .identity = (char *)identity, .resource = (char *)resource, .scope = (char *)scope};
	struct bt_buf b;
	uint32_t id = ++fx->next_id;

	bt_buf_init(&b, 4096);
	assert_int_equal(bt_encode_token_query(&b, type, id, &q), 0);
	send_buf(fx, &b);
	return id;
}

static uint32_t send_name(struct fixture *fx, uint8_t type, const char *name)
{
	struct bt_buf b;
	uint32_t id = ++fx->next_id;

	bt_buf_init(&b, 4096);
	assert_int_equal(bt_encode_name_request(&b, type, id, name), 0);
	send_buf(fx, &b);
	return id;
}

static uint32_t send_empty(struct fixture *fx, uint8_t type)
{
	struct bt_buf b;
	uint32_t id = ++fx->next_id;

	bt_buf_init(&b, 4096);
	assert_int_equal(bt_encode_empty(&b, type, id), 0);
	send_buf(fx, &b);
	return id;
}

/* Completes the fetch in flight with token. */
static void fetched(struct fixture *fx, const char *token)
{
	struct token_result r = {.status = BT_OK};

	assert_non_null(fx->fetching);
	r.access_token = secmem_strndup(token, strlen(token));
	snprintf(r.token_type, sizeof(r.token_type), "Bearer");
	r.expires_on = NOW + 3600;
	fx->fetching->fetch = NULL;
	cache_fetch_done(fx->cache, fx->fetching, &r);
	token_result_clear(&r);
	fx->fetching = NULL;
}

static void test_hello_first(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	uint32_t id = send_empty(fx, BT_PING);

	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_VERSION);
	assert_non_null(strstr(msg, "first request must be HELLO"));
	assert_true(client_wait_eof(&fx->loop, &fx->cl));
}

static void test_hello_versions(void **state)
{
	struct fixture *fx = *state;
	struct bt_hello_reply rep = {0};
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	struct bt_buf body;
	uint32_t id;

	id = send_hello(fx, 1, 9);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_HELLO | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_hello_reply(&body, &rep), 0);
	assert_int_equal(rep.version, BT_PROTO_VERSION_MAX);
	assert_true(rep.requests & BT_REQUEST_BIT(BT_GET_TOKEN));
	assert_true(rep.requests & BT_REQUEST_BIT(BT_COMPAT_REVOKE));
	bt_hello_reply_clear(&rep);
	client_next(&fx->cl, &f);
	/* Once is enough. */
	id = send_hello(fx, 1, 2);
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	id = send_empty(fx, BT_PING);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_PING | BT_REPLY);
	client_next(&fx->cl, &f);
	/* A client that speaks no version of ours is told and closed. */
	client_close(&fx->cl);
	assert_int_equal(client_connect(&fx->cl, fx->path), 0);
	id = send_hello(fx, 7, 9);
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_VERSION);
	assert_true(client_wait_eof(&fx->loop, &fx->cl));
	/* A version 1 client gets version 1. */
	client_close(&fx->cl);
	assert_int_equal(client_connect(&fx->cl, fx->path), 0);
	id = send_hello(fx, 1, 1);
	wait_reply(fx, id, &f);
	body = f.body;
	assert_int_equal(bt_decode_hello_reply(&body, &rep), 0);
	assert_int_equal(rep.version, 1);
	bt_hello_reply_clear(&rep);
	client_next(&fx->cl, &f);
}

static void test_get_token(void **state)
{
	struct fixture *fx = *state;
	struct bt_token_reply rep = {0};
	struct bt_frame f;
	struct bt_buf body;
	uint32_t id, id2;

	hello(fx);
	id = send_query(fx, BT_GET_TOKEN, "", "", "");
	id2 = send_query(fx, BT_GET_TOKEN, "sp", "", BATCH ".default");
	run_turns(&fx->loop, 5);
	/* Both wait on one fetch. */
	assert_int_equal(fx->fetches, 1);
	fetched(fx, "tok-1");
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_GET_TOKEN | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_token_reply(&body, &rep), 0);
	assert_string_equal(rep.access_token, "tok-1");
	assert_string_equal(rep.identity, "sp");
	assert_string_equal(rep.resource, BATCH);
	assert_string_equal(rep.tenant, "t");
	assert_string_equal(rep.token_type, "Bearer");
	assert_int_equal(rep.expires_on, NOW + 3600);
	bt_token_reply_clear(&rep);
	client_next(&fx->cl, &f);
	wait_reply(fx, id2, &f);
	assert_int_equal(f.type, BT_GET_TOKEN | BT_REPLY);
	client_next(&fx->cl, &f);
	/* From the cache now. */
	id = send_query(fx, BT_GET_TOKEN, "sp", BATCH, "");
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_GET_TOKEN | BT_REPLY);
	client_next(&fx->cl, &f);
	assert_int_equal(fx->fetches, 1);
}

static void test_get_token_refused(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	struct bt_buf b;
	uint32_t id;

	hello(fx);
	id = send_query(fx, BT_GET_TOKEN, "nope", "", "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_UNKNOWN_IDENTITY);
	assert_non_null(strstr(msg, "no identity named 'nope'"));
	id = send_query(fx, BT_GET_TOKEN, "sp", "https://vault.azure.net", "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_RESOURCE_NOT_ALLOWED);
	/* A body that is not a token query. */
	bt_buf_init(&b, 4096);
	assert_int_equal(bt_encode_empty(&b, BT_GET_TOKEN, ++fx->next_id), 0);
	send_buf(fx, &b);
	assert_int_equal(wait_error(fx, fx->next_id, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	/* A uid allowed nothing is told, with its name looked up off the
	 * loop; the connection stays usable. */
	fx->as_uid = STRANGER;
	id = send_query(fx, BT_GET_TOKEN, "sp", "", "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	assert_non_null(strstr(msg, "user stranger (uid 4242) may not use identity 'sp'"));
	assert_int_equal(fx->fetches, 0);
	/* The uid in allow_users is served. */
	fx->as_uid = ALLOWED;
	id = send_query(fx, BT_GET_TOKEN, "sp", "", "");
	run_turns(&fx->loop, 3);
	fetched(fx, "tok-2");
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_GET_TOKEN | BT_REPLY);
	client_next(&fx->cl, &f);
}

static void test_inspect(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX], *json = NULL;
	struct bt_frame f;
	struct bt_buf body;
	uint32_t id;

	hello(fx);
	id = send_query(fx, BT_INSPECT, "sp", "", "");
	run_turns(&fx->loop, 3);
	fetched(fx, JWT);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_INSPECT | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_text_reply(&body, &json), 0);
	assert_non_null(strstr(json, "\"oid\""));
	assert_null(strstr(json, "c2ln")); /* never the signature */
	free(json);
	client_next(&fx->cl, &f);
	/* Not a JWT: nothing to show. */
	id = send_query(fx, BT_INSPECT, "sp", "https://x/", "");
	run_turns(&fx->loop, 3);
	fetched(fx, "opaque");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_UNSUPPORTED);
}

/* Counts the identities a STATUS reply lists. */
static int status_identities(struct fixture *fx, bool *has_pid)
{
	struct bt_record rec = {0};
	struct bt_frame f;
	struct bt_buf body;
	uint32_t id = send_empty(fx, BT_STATUS);
	int n;

	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_STATUS | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_record_reply(&body, &rec), 0);
	assert_string_equal(bt_record_get(&rec, "daemon")->str, "batchtokd test");
	*has_pid = bt_record_get(&rec, "pid") != NULL;
	n = (int)rec.n_children;
	bt_record_clear(&rec);
	client_next(&fx->cl, &f);
	return n;
}

static void test_status(void **state)
{
	struct fixture *fx = *state;
	bool pid;

	hello(fx);
	assert_int_equal(status_identities(fx, &pid), 2);
	assert_true(pid);
	fx->as_uid = ALLOWED;
	assert_int_equal(status_identities(fx, &pid), 1);
	assert_false(pid);
	fx->as_uid = STRANGER;
	assert_int_equal(status_identities(fx, &pid), 0);
	assert_false(pid);
}

/* This process, presented as a program in unit with exe. */
static void attest_as(struct attestation *a, const char *unit, const char *exe)
{
	memset(a, 0, sizeof(*a));
	a->pid = getpid();
	a->pidfd = pidfd_open(getpid(), 0);
	assert_true(a->pidfd >= 0);
	a->unit = strdup(unit);
	a->exe = strdup(exe);
	a->cgroup = strdup("/system.slice/x.service");
	a->user_unit_uid = (uid_t)-1;
	snprintf(a->invocation_id, sizeof(a->invocation_id), "%032x", 7);
}

/* The STATUS reply's record (rec_clear() it). */
static void status_record(struct fixture *fx, struct bt_record *rec)
{
	struct bt_frame f;
	struct bt_buf body;
	uint32_t id = send_empty(fx, BT_STATUS);

	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_STATUS | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_record_reply(&body, rec), 0);
	client_next(&fx->cl, &f);
}

/* An identity granted by its unit: any uid in the unit may use it, a
 * program in another is told what it is and what the identity allows,
 * status lists it to whom GET would give it, and an administrator sees the
 * rules and the requests per unit. */
static void test_program_rules(void **state)
{
	struct fixture *fx = *state;
	struct attestation in, out;
	struct bt_record rec = {0};
	const struct bt_field *fl;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	bool pid;
	uint32_t id;

	attest_as(&in, "etl@1.service", "/usr/bin/python3");
	attest_as(&out, "backup.service", "/usr/bin/curl");
	hello(fx);
	fx->present_att = true;
	fx->as_uid = STRANGER;
	fx->att = &out;
	id = send_query(fx, BT_GET_TOKEN, "etl", "", "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	assert_string_equal(msg, "unit backup.service, exe /usr/bin/curl: identity etl allows "
				 "etl@*.service");
	assert_int_equal(status_identities(fx, &pid), 0);
	/* In its unit: served, whatever the uid. */
	fx->att = &in;
	assert_int_equal(status_identities(fx, &pid), 1);
	id = send_query(fx, BT_GET_TOKEN, "etl", "", "");
	run_turns(&fx->loop, 3);
	fetched(fx, "tok-etl");
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_GET_TOKEN | BT_REPLY);
	client_next(&fx->cl, &f);
	/* Nothing attested, as on the compat endpoint: refused, saying why. */
	fx->att = NULL;
	id = send_query(fx, BT_GET_TOKEN, "etl", "", "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	assert_non_null(strstr(msg, "cannot tell which program is asking: identity etl allows "
				    "etl@*.service"));
	/* The uid rules of another identity are as before, and counted. */
	fx->att = &out;
	id = send_query(fx, BT_GET_TOKEN, "sp", "", "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	assert_non_null(strstr(msg, "user stranger (uid 4242) may not use identity 'sp'"));
	/* An administrator's status (root: the connection keeps the uid it
	 * was presented as). */
	fx->as_uid = 0;
	status_record(fx, &rec);
	fl = bt_record_get(&rec, "unit_requests");
	assert_non_null(fl);
	assert_string_equal(fl->str, "backup.service=2/2 (compat-endpoint)=1/1 etl@1.service=1/0");
	assert_int_equal(rec.n_children, 3);
	assert_string_equal(rec.children[2].fields[0].str, "etl");
	fl = bt_record_get(&rec.children[2], "allow_units");
	assert_non_null(fl);
	assert_string_equal(fl->str, "etl@*.service");
	assert_null(bt_record_get(&rec.children[0], "allow_units"));
	bt_record_clear(&rec);
	/* Others see neither. */
	fx->as_uid = STRANGER;
	fx->att = &in;
	status_record(fx, &rec);
	assert_null(bt_record_get(&rec, "unit_requests"));
	assert_int_equal(rec.n_children, 1);
	assert_null(bt_record_get(&rec.children[0], "allow_units"));
	bt_record_clear(&rec);
	fx->present_att = false;
	attest_clear(&in);
	attest_clear(&out);
}

static void test_reload(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	uint32_t id;

	hello(fx);
	id = send_empty(fx, BT_RELOAD);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_RELOAD | BT_REPLY);
	client_next(&fx->cl, &f);
	assert_int_equal(fx->reloads, 1);
	/* The daemon's reason reaches the client. */
	fx->reload_r = -EINVAL;
	id = send_empty(fx, BT_RELOAD);
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	assert_non_null(strstr(msg, "unknown key 'bogus'"));
	assert_int_equal(fx->reloads, 2);
	/* Administrators only. */
	fx->as_uid = ALLOWED;
	id = send_empty(fx, BT_RELOAD);
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	assert_int_equal(fx->reloads, 2);
}

static void test_signin(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	uint32_t id;

	hello(fx);
	/* Nothing under way: LOGIN_WAIT is answered at once. */
	id = send_name(fx, BT_LOGIN_WAIT, "me");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	assert_non_null(strstr(msg, "no sign-in is in progress"));
	id = send_name(fx, BT_LOGOUT, "me");
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_LOGOUT | BT_REPLY);
	client_next(&fx->cl, &f);
	/* Only device-code identities have a user. */
	id = send_name(fx, BT_LOGIN, "sp");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	assert_non_null(strstr(msg, "only device-code identities"));
	id = send_name(fx, BT_LOGIN, "nope");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_UNKNOWN_IDENTITY);
	/* A plain user learns nothing of the identity: rights come first. */
	fx->as_uid = ALLOWED;
	id = send_name(fx, BT_LOGIN, "nope");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	id = send_name(fx, BT_LOGOUT, "me");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
}

static void test_compat(void **state)
{
	struct fixture *fx = *state;
	struct bt_compat_reply rep = {0};
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	struct bt_buf body;
	uint32_t id;

	hello(fx);
	id = send_name(fx, BT_COMPAT, "sp");
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_COMPAT | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_compat_reply(&body, &rep), 0);
	assert_string_equal(rep.capability, "cap-for-sp");
	assert_string_equal(rep.identity, "sp");
	assert_string_equal(rep.endpoint, "http://127.0.0.1:50342");
	assert_int_equal(rep.expires_on, NOW + 600);
	bt_compat_reply_clear(&rep);
	client_next(&fx->cl, &f);
	/* What the endpoint says becomes a status the client understands. */
	fx->grant_r = -EOPNOTSUPP;
	id = send_name(fx, BT_COMPAT, "");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_UNSUPPORTED);
	assert_non_null(strstr(msg, "compat_endpoint"));
	fx->grant_r = -EBUSY;
	id = send_name(fx, BT_COMPAT, "sp");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BUSY);
	fx->grant_r = -ENOSPC;
	id = send_name(fx, BT_COMPAT, "sp");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BUSY);
	assert_int_equal(fx->grants, 4);
	/* No capability for an identity the user may not use. */
	fx->grant_r = 0;
	fx->as_uid = STRANGER;
	id = send_name(fx, BT_COMPAT, "sp");
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_DENIED);
	assert_int_equal(fx->grants, 4);
}

static void test_compat_renew_revoke(void **state)
{
	static const struct {
		int r;
		uint32_t status;
	} errors[] = {{-EOPNOTSUPP, BT_E_UNSUPPORTED},
		      {-ENOENT, BT_E_BAD_REQUEST},
		      {-EPERM, BT_E_DENIED},
		      {-EIO, BT_E_INTERNAL}};
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	struct bt_buf b, body;
	uint64_t expires_on = 0;
	uint32_t id;

	hello(fx);
	bt_buf_init(&b, 4096);
	assert_int_equal(
	    bt_encode_capability_request(&b, BT_COMPAT_RENEW, id = ++fx->next_id, "cap-for-sp"), 0);
	send_buf(fx, &b);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_COMPAT_RENEW | BT_REPLY);
	body = f.body;
	assert_int_equal(bt_decode_expiry_reply(&body, &expires_on), 0);
	assert_int_equal(expires_on, NOW + 900);
	client_next(&fx->cl, &f);
	bt_buf_init(&b, 4096);
	assert_int_equal(
	    bt_encode_capability_request(&b, BT_COMPAT_REVOKE, id = ++fx->next_id, "cap-for-sp"),
	    0);
	send_buf(fx, &b);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_COMPAT_REVOKE | BT_REPLY);
	client_next(&fx->cl, &f);
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
		fx->renew_r = fx->revoke_r = errors[i].r;
		for (uint8_t t = BT_COMPAT_RENEW; t <= BT_COMPAT_REVOKE; t++) {
			bt_buf_init(&b, 4096);
			assert_int_equal(
			    bt_encode_capability_request(&b, t, id = ++fx->next_id, "cap-for-sp"),
			    0);
			send_buf(fx, &b);
			assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), errors[i].status);
		}
	}
	assert_int_equal(fx->renews, 5);
	assert_int_equal(fx->revokes, 5);
}

/* An unknown type is answered and the connection stays; a malformed PING
 * is refused. */
static void test_unknown_type(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	struct bt_buf b;
	uint32_t id;

	hello(fx);
	id = send_empty(fx, 60);
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_UNSUPPORTED);
	assert_non_null(strstr(msg, "unknown request type 60"));
	bt_buf_init(&b, 4096);
	assert_int_equal(bt_encode_text_reply(&b, BT_PING, id = ++fx->next_id, "x"), 0);
	send_buf(fx, &b);
	assert_int_equal(wait_error(fx, id, msg, sizeof(msg)), BT_E_BAD_REQUEST);
	id = send_empty(fx, BT_PING);
	wait_reply(fx, id, &f);
	assert_int_equal(f.type, BT_PING | BT_REPLY);
	client_next(&fx->cl, &f);
}

/* A client that goes away while it waits leaves nothing behind: its
 * waiter is cancelled, and the token that comes later is cached. */
static void test_client_gone_while_waiting(void **state)
{
	struct fixture *fx = *state;

	hello(fx);
	send_query(fx, BT_GET_TOKEN, "sp", "", "");
	run_turns(&fx->loop, 3);
	assert_non_null(fx->fetching);
	assert_int_equal(fx->fetching->n_waiters, 1);
	client_close(&fx->cl);
	run_turns(&fx->loop, 3);
	assert_int_equal(server_client_count(fx->srv), 0);
	assert_int_equal(fx->fetching->n_waiters, 0);
	fetched(fx, "tok-late");
	assert_non_null(cache_first(fx->cache)->token);
}

/* Stopping: the waiting request is answered UNAVAILABLE before the
 * connection closes. */
static void test_stopping(void **state)
{
	struct fixture *fx = *state;
	char msg[BT_MESSAGE_MAX];
	struct bt_frame f;
	uint32_t id;

	hello(fx);
	id = send_query(fx, BT_GET_TOKEN, "sp", "", "");
	run_turns(&fx->loop, 3);
	server_close(fx->srv);
	fx->srv = NULL;
	client_read(&fx->cl);
	assert_int_equal(bt_frame_peek(&fx->cl.in, BT_REPLY_MAX, &f), 0);
	assert_int_equal(f.id, id);
	assert_int_equal(frame_error(&f, msg, sizeof(msg)), BT_E_UNAVAILABLE);
	assert_non_null(strstr(msg, "batchtokd is stopping"));
	client_next(&fx->cl, &f);
	assert_int_equal(fx->fetching->n_waiters, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_hello_first, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hello_versions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_get_token, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_get_token_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_inspect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_signin, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compat, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compat_renew_revoke, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_type, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_gone_while_waiting, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stopping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_program_rules, setup_programs, teardown),
	};

	log_init(LOG_CRIT);
	secmem_init(1 << 16);
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
