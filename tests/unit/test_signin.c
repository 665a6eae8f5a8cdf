/* test_signin.c - device-code sign-in: the flow's states (code issued,
 * pending, slow_down, signed in, expired, signed out midway, joined by a
 * second terminal), the polling interval, the code's expiry by the wall
 * clock, refresh-token rotation and the end of a sign-in, and the sealed
 * state file that carries a sign-in across a restart.
 *
 * Three seams, at link time (the Makefile wraps these symbols for this test
 * only): HTTP transfers (http_submit, http_cancel: the test sees each
 * request and answers it as the token service would), the poll timer
 * (uv_timer_start, uv_timer_stop: the test sees the interval and fires the
 * timer itself), and the wall clock (clock_wall_now). State files are
 * written by libuv's thread pool for real, in a temporary directory. */
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

#include "../../daemon/identity/signin.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"
#include "../../proto/msg.h"

#define NOW 1700000000
/* An id_token naming alice@example.com (unsigned: only read, never trusted). */
#define ID_TOKEN                                                                                   \
	"eyJhbGciOiJub25lIn0."                                                                     \
	"eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhbGljZUBleGFtcGxlLmNvbSIsInRpZCI6InQif"                    \
	"Q.c2ln"
#define DEVICE_CODE_REPLY                                                                          \
	"{\"device_code\":\"dc-1\",\"user_code\":\"ABCD-EFGH\",\"verification_uri\":"              \
	"\"https://microsoft.com/devicelogin\",\"expires_in\":900,\"interval\":5,\"message\":"     \
	"\"To sign in, use a web browser\"}"
#define PENDING	  "{\"error\":\"authorization_pending\",\"error_description\":\"AADSTS70016: x\"}"
#define SLOW_DOWN "{\"error\":\"slow_down\",\"error_description\":\"AADSTS70016: slow\"}"
#define EXPIRED	  "{\"error\":\"expired_token\",\"error_description\":\"AADSTS70020: gone\"}"
#define SIGNED_IN                                                                                  \
	"{\"token_type\":\"Bearer\",\"expires_in\":3600,\"access_token\":\"at-1\","                \
	"\"refresh_token\":\"rt-secret-1\",\"id_token\":\"" ID_TOKEN "\"}"

/* --- the seams --- */

static int64_t wall;

/* The one request in flight. */
static struct {
	http_done_fn done;
	void *arg;
	char url[512];
	char body[4096];
	int submitted, cancelled;
} http;
static struct http_transfer *const FAKE_TRANSFER = (struct http_transfer *)&http;

/* The poll timer, armed or not. */
static struct {
	uv_timer_t *t;
	uv_timer_cb cb;
	uint64_t timeout;
	bool armed;
} timer;

int64_t __wrap_clock_wall_now(void);
int __wrap_http_submit(struct http *h, struct http_request *req, http_done_fn done, void *arg,
		       struct http_transfer **ret);
void __wrap_http_cancel(struct http_transfer *t);
int __wrap_uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout, uint64_t repeat);
int __wrap_uv_timer_stop(uv_timer_t *t);
int __real_uv_timer_stop(uv_timer_t *t);

int64_t __wrap_clock_wall_now(void)
{
	return wall;
}

int __wrap_http_submit(struct http *h, struct http_request *req, http_done_fn done, void *arg,
		       struct http_transfer **ret)
{
	(void)h;
	assert_null(http.done); /* one at a time */
	http.done = done;
	http.arg = arg;
	http.submitted++;
	snprintf(http.url, sizeof(http.url), "%s", req->url);
	snprintf(http.body, sizeof(http.body), "%.*s", (int)req->body.len,
		 req->body.p ? req->body.p : "");
	http_request_clear(req);
	*ret = FAKE_TRANSFER;
	return 0;
}

void __wrap_http_cancel(struct http_transfer *t)
{
	assert_ptr_equal(t, FAKE_TRANSFER);
	http.cancelled++;
	http.done = NULL;
}

int __wrap_uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout, uint64_t repeat)
{
	assert_int_equal(repeat, 0);
	timer.t = t;
	timer.cb = cb;
	timer.timeout = timeout;
	timer.armed = true;
	return 0;
}

int __wrap_uv_timer_stop(uv_timer_t *t)
{
	if (t == timer.t)
		timer.armed = false;
	return __real_uv_timer_stop(t);
}

/* The token service answers the request in flight. */
static void reply(long status, const char *body)
{
	struct http_response resp = {
	    .failure = HTTP_OK, .status = status, .body = body, .body_len = strlen(body)};
	http_done_fn done = http.done;

	assert_non_null(done);
	http.done = NULL;
	done(http.arg, &resp);
}

/* The poll timer fires. */
static void fire(void)
{
	assert_true(timer.armed);
	timer.armed = false;
	timer.cb(timer.t);
}

/* --- the fixture --- */

struct waiter {
	struct signin_waiter w;
	int calls;
	uint32_t status;
	char message[600], user[256], user_code[64];
	uint32_t interval;
};

struct fixture {
	uv_loop_t loop;
	char dir[32], state[64];
	struct config *cfg;
	struct signin_store *store;
	const struct identity *id;
	int changed;
};

static void on_event(struct signin_waiter *sw, const struct signin_event *ev)
{
	struct waiter *w = (struct waiter *)sw;

	w->calls++;
	w->status = ev->status;
	snprintf(w->message, sizeof(w->message), "%s", ev->message ? ev->message : "");
	snprintf(w->user, sizeof(w->user), "%s", ev->user ? ev->user : "");
	if (ev->prompt) {
		snprintf(w->user_code, sizeof(w->user_code), "%s", ev->prompt->user_code);
		w->interval = ev->prompt->interval;
	}
}

static void waiter_init(struct waiter *w, bool want_prompt)
{
	memset(w, 0, sizeof(*w));
	w->w.fn = on_event;
	w->w.want_prompt = want_prompt;
}

static void on_changed(void *arg, const struct identity *id)
{
	struct fixture *fx = arg;

	assert_string_equal(id->name, "me");
	fx->changed++;
}

static void open_store(struct fixture *fx)
{
	assert_int_equal(
	    signin_store_new(&fx->loop, (struct http *)&http, on_changed, fx, &fx->store), 0);
	signin_configure(fx->store, fx->cfg);
}

/* Lets the thread pool's disk writes end: each is an event the loop waits
 * for, and the loop has nothing else. */
static void drain(struct fixture *fx)
{
	for (int i = 0; i < 100 && uv_loop_alive(&fx->loop); i++)
		uv_run(&fx->loop, UV_RUN_ONCE);
	assert_false(uv_loop_alive(&fx->loop));
}

static void close_store(struct fixture *fx)
{
	signin_store_free(fx->store);
	fx->store = NULL;
	drain(fx);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct config_errors errs = {0};
	char text[512];

	assert_non_null(fx);
	memset(&http, 0, sizeof(http));
	memset(&timer, 0, sizeof(timer));
	wall = NOW;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/bt-signin-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->state, sizeof(fx->state), "%s/state/me.signin", fx->dir);
	snprintf(text, sizeof(text),
		 "[daemon]\nstate_dir = %s/state\n"
		 "[identity me]\ncredential = device-code\ntenant = t\nclient_id = c\n",
		 fx->dir);
	if (config_parse_string(text, "t.conf", &fx->cfg, &errs) < 0)
		fail_msg("config: %s", errs.n ? errs.msgs[0] : "?");
	fx->id = config_find_identity(fx->cfg, "me");
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	open_store(fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char path[64];

	close_store(fx);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	config_free(fx->cfg);
	unlink(fx->state);
	snprintf(path, sizeof(path), "%s/state/state.key", fx->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/state", fx->dir);
	rmdir(path);
	assert_int_equal(rmdir(fx->dir), 0);
	free(fx);
	return 0;
}

static struct signin *si_of(struct fixture *fx)
{
	struct signin *si = signin_find(fx->store, fx->id);

	assert_non_null(si);
	return si;
}

/* LOGIN: the device code is asked for and its prompt handed to w. */
static void login(struct fixture *fx, struct waiter *w)
{
	waiter_init(w, true);
	assert_int_equal(signin_login(fx->store, fx->id, &w->w), 0);
	assert_true(signin_pending(si_of(fx)));
	assert_non_null(strstr(http.url, "/t/oauth2/v2.0/devicecode"));
	assert_non_null(strstr(http.body, "client_id=c"));
	assert_int_equal(w->calls, 0);
	reply(200, DEVICE_CODE_REPLY);
	assert_int_equal(w->calls, 1);
	assert_int_equal(w->status, BT_OK);
	assert_string_equal(w->user_code, "ABCD-EFGH");
	assert_int_equal(w->interval, 5);
	assert_true(timer.armed);
	assert_int_equal(timer.timeout, 5000);
}

/* The timer fires and the poll it sends is answered with body. */
static void poll_answered(long status, const char *body)
{
	int before = http.submitted;

	fire();
	assert_int_equal(http.submitted, before + 1);
	assert_non_null(strstr(http.url, "/t/oauth2/v2.0/token"));
	assert_non_null(strstr(http.body, "device_code=dc-1"));
	reply(status, body);
}

static void test_flow_signs_in(void **state)
{
	struct fixture *fx = *state;
	struct waiter prompt, end;
	uint64_t gen = signin_generation(si_of(fx));
	struct stat st;

	login(fx, &prompt);
	/* LOGIN_WAIT from another terminal waits for the end. */
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	assert_int_equal(end.calls, 0);
	poll_answered(400, PENDING);
	assert_true(timer.armed);
	assert_int_equal(timer.timeout, 5000);
	assert_int_equal(end.calls, 0);
	wall += 30;
	poll_answered(200, SIGNED_IN);
	assert_int_equal(end.calls, 1);
	assert_int_equal(end.status, BT_OK);
	assert_string_equal(end.user, "alice@example.com");
	assert_int_equal(prompt.calls, 1); /* told once, at the prompt */
	assert_false(timer.armed);
	assert_false(signin_pending(si_of(fx)));
	assert_string_equal(signin_refresh_token(si_of(fx)), "rt-secret-1");
	assert_string_equal(signin_user(si_of(fx)), "alice@example.com");
	assert_int_equal(signin_time(si_of(fx)), NOW + 30);
	assert_true(signin_generation(si_of(fx)) > gen);
	assert_int_equal(fx->changed, 1);
	/* Saved, owner-only. */
	drain(fx);
	assert_int_equal(stat(fx->state, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Asked afterwards, LOGIN_WAIT says who is signed in. */
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	assert_int_equal(end.calls, 1);
	assert_string_equal(end.user, "alice@example.com");
}

/* RFC 8628: each slow_down adds 5 s to the interval, for the rest of the
 * flow. */
static void test_slow_down(void **state)
{
	struct fixture *fx = *state;
	struct waiter w;

	login(fx, &w);
	poll_answered(400, SLOW_DOWN);
	assert_int_equal(timer.timeout, 10000);
	poll_answered(400, SLOW_DOWN);
	assert_int_equal(timer.timeout, 15000);
	poll_answered(400, PENDING);
	assert_int_equal(timer.timeout, 15000);
	/* A transient failure is polled again too. */
	poll_answered(503, "{}");
	assert_true(timer.armed);
	assert_true(signin_pending(si_of(fx)));
}

/* The code's lifetime is judged by the wall clock: once past, no more
 * polls, and waiters are told to start again. */
static void test_code_expires(void **state)
{
	struct fixture *fx = *state;
	struct waiter w, end;
	int polls;

	login(fx, &w);
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	poll_answered(400, PENDING);
	wall += 899;
	poll_answered(400, PENDING);
	wall += 1;
	polls = http.submitted;
	fire();
	assert_int_equal(http.submitted, polls);
	assert_int_equal(end.calls, 1);
	assert_int_equal(end.status, BT_E_TIMEOUT);
	assert_non_null(strstr(end.message, "expired before the sign-in was completed"));
	assert_false(signin_pending(si_of(fx)));
	assert_null(signin_refresh_token(si_of(fx)));
	/* The outcome stays for a LOGIN_WAIT that comes late. */
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	assert_int_equal(end.status, BT_E_TIMEOUT);
	/* The token service may say so first. */
	login(fx, &w);
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	poll_answered(400, EXPIRED);
	assert_int_equal(end.status, BT_E_TIMEOUT);
	assert_false(timer.armed);
	assert_int_equal(fx->changed, 0);
}

/* A refusal ends the flow with the token service's reason; a reply
 * without a refresh token is refused too. */
static void test_refused(void **state)
{
	struct fixture *fx = *state;
	struct waiter w, end;

	login(fx, &w);
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	poll_answered(400, "{\"error\":\"access_denied\",\"error_description\":\"AADSTS70000: "
			   "the user declined\"}");
	assert_int_equal(end.calls, 1);
	assert_int_not_equal(end.status, BT_OK);
	assert_non_null(strstr(end.message, "declined"));
	login(fx, &w);
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	poll_answered(200,
		      "{\"token_type\":\"Bearer\",\"expires_in\":3600,\"access_token\":\"a\"}");
	assert_int_equal(end.status, BT_E_CREDENTIAL_REJECTED);
	assert_non_null(strstr(end.message, "offline_access"));
	assert_null(signin_refresh_token(si_of(fx)));
}

/* A second LOGIN joins the running flow: the same code, one request. */
static void test_second_login_joins(void **state)
{
	struct fixture *fx = *state;
	struct waiter first, second, gone;

	login(fx, &first);
	waiter_init(&second, true);
	assert_int_equal(signin_login(fx->store, fx->id, &second.w), 0);
	assert_int_equal(second.calls, 1);
	assert_string_equal(second.user_code, "ABCD-EFGH");
	assert_int_equal(http.submitted, 1);
	/* A waiter whose client went away is not called. */
	waiter_init(&gone, false);
	signin_wait(fx->store, fx->id, &gone.w);
	signin_waiter_cancel(&gone.w);
	poll_answered(200, SIGNED_IN);
	assert_int_equal(gone.calls, 0);
	assert_int_equal(first.calls, 1);
}

/* Signing out midway ends the flow and its request in flight. */
static void test_logout_during_flow(void **state)
{
	struct fixture *fx = *state;
	struct waiter w, end;

	login(fx, &w);
	waiter_init(&end, false);
	signin_wait(fx->store, fx->id, &end.w);
	fire(); /* a poll is in flight */
	assert_non_null(http.done);
	signin_logout(fx->store, fx->id);
	assert_int_equal(http.cancelled, 1);
	assert_null(http.done);
	assert_false(timer.armed);
	assert_int_equal(end.status, BT_E_CREDENTIAL_REJECTED);
	assert_non_null(strstr(end.message, "signed out while signing in"));
	assert_int_equal(fx->changed, 1);
}

static void sign_in(struct fixture *fx)
{
	struct waiter w;

	login(fx, &w);
	poll_answered(200, SIGNED_IN);
	assert_non_null(signin_refresh_token(si_of(fx)));
	drain(fx);
}

/* The refresh token is kept sealed: a restart signs the user in again from
 * the file; a damaged file, or one sealed for another client, signs nobody
 * in; signing out deletes it. */
static void test_sealed_state(void **state)
{
	struct fixture *fx = *state;
	char buf[8192];
	ssize_t n;
	int fd;

	sign_in(fx);
	fd = open(fx->state, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = 0;
	assert_null(memmem(buf, (size_t)n, "rt-secret-1", 11));
	assert_null(memmem(buf, (size_t)n, "alice", 5));

	close_store(fx);
	open_store(fx);
	assert_string_equal(signin_refresh_token(si_of(fx)), "rt-secret-1");
	assert_string_equal(signin_user(si_of(fx)), "alice@example.com");
	assert_int_equal(signin_time(si_of(fx)), NOW);

	/* One byte changed. */
	close_store(fx);
	buf[n / 2] ^= 1;
	fd = open(fx->state, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, (size_t)n), n);
	close(fd);
	open_store(fx);
	assert_null(signin_refresh_token(si_of(fx)));
	assert_string_equal(signin_user(si_of(fx)), "");

	/* Sealed for another client: not this identity's. */
	sign_in(fx);
	close_store(fx);
	free(fx->cfg->identities[0].client_id);
	fx->cfg->identities[0].client_id = strdup("another-client");
	open_store(fx);
	assert_null(signin_refresh_token(si_of(fx)));

	/* Signing out deletes the file. */
	free(fx->cfg->identities[0].client_id);
	fx->cfg->identities[0].client_id = strdup("c");
	close_store(fx);
	open_store(fx);
	assert_non_null(signin_refresh_token(si_of(fx)));
	signin_logout(fx->store, fx->id);
	drain(fx);
	assert_int_equal(access(fx->state, F_OK), -1);
	close_store(fx);
	open_store(fx);
	assert_null(signin_refresh_token(si_of(fx)));
}

/* Entra rotates refresh tokens: the new one is kept (and saved) only if it
 * answers a request made with the current sign-in; invalid_grant ends the
 * sign-in it was made with, not a newer one. */
static void test_rotate_and_end(void **state)
{
	struct fixture *fx = *state;
	struct signin *si;
	uint64_t gen;

	sign_in(fx);
	si = si_of(fx);
	gen = signin_generation(si);
	signin_rotate(si, gen - 1, "rt-stale");
	assert_string_equal(signin_refresh_token(si), "rt-secret-1");
	signin_rotate(si, gen, "rt-secret-2");
	assert_string_equal(signin_refresh_token(si), "rt-secret-2");
	assert_int_equal(signin_generation(si), gen + 1);
	drain(fx);
	close_store(fx);
	open_store(fx);
	si = si_of(fx);
	assert_string_equal(signin_refresh_token(si), "rt-secret-2");
	gen = signin_generation(si);
	assert_false(signin_expired(si, gen - 1, "AADSTS700082"));
	assert_non_null(signin_refresh_token(si));
	assert_true(signin_expired(si, gen, "AADSTS700082"));
	assert_null(signin_refresh_token(si));
	drain(fx);
	assert_int_equal(access(fx->state, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_flow_signs_in, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_slow_down, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_code_expires, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_login_joins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_logout_during_flow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sealed_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rotate_and_end, setup, teardown),
	};

	log_init(LOG_CRIT);
	secmem_init(1 << 16);
	unsetenv("CREDENTIALS_DIRECTORY");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
