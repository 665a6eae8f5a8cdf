/* test_compat.c - the compat endpoint over loopback TCP: the three request
 * shapes and their answers, the capability checks (missing, unknown,
 * expired, given back, another uid's, an owner the kernel cannot name),
 * selectors, the HTTP statuses of every error, max_clients_per_uid, and
 * stopping. Tokens come from the real service and a cache whose fetches
 * the test completes.
 *
 * Two seams, both at link time (the Makefile wraps the symbols for this
 * test only): who owns a TCP connection (sockdiag_open and
 * sockdiag_tcp_owner: every connection comes from this process, so the test
 * says which uid the kernel would have named) and the wall clock
 * (clock_wall_now, which capabilities and expires_in are judged by). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../daemon/core/cache.h"
#include "../../daemon/core/service.h"
#include "../../daemon/front/compat.h"
#include "../../daemon/front/sockdiag.h"
#include "../../daemon/lib/clock.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"
#include "../../daemon/lib/usernames.h"
#include "unix_client.h"

#define NOW	 1700000000
#define BATCH	 "https://batch.core.windows.net/"
#define ALLOWED	 1000 /* in sp's allow_users */
#define STRANGER 4242
#define LIFETIME 600

/* The seams. */
static int64_t wall = NOW;
static uid_t owner = ALLOWED;
static int owner_err;

int64_t __wrap_clock_wall_now(void);
int __wrap_sockdiag_open(void);
int __wrap_sockdiag_tcp_owner(int fd, const struct sockaddr_storage *peer,
			      const struct sockaddr_storage *local, uid_t *ret);

int64_t __wrap_clock_wall_now(void)
{
	return wall;
}

int __wrap_sockdiag_open(void)
{
	return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

int __wrap_sockdiag_tcp_owner(int fd, const struct sockaddr_storage *peer,
			      const struct sockaddr_storage *local, uid_t *ret)
{
	(void)fd;
	(void)peer;
	(void)local;
	if (owner_err)
		return owner_err;
	*ret = owner;
	return 0;
}

struct fixture {
	uv_loop_t loop;
	struct config *cfg;
	struct cache *cache;
	struct usernames *usernames;
	struct service *service;
	struct compat *compat;
	unsigned short port;
	char cap[CAPABILITY_TEXT_SIZE]; /* issued to ALLOWED for sp */
	struct token_entry *fetching;
	int fetches;
};

struct http_client {
	int fd;
	char buf[65536];
	size_t len;
	bool eof;
};

struct reply {
	int status;
	bool keep_alive;
	json_t *doc;
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
	return wall;
}

static uint32_t fake_random(void *arg)
{
	(void)arg;
	return 0;
}

static int hook_describe(void *arg, struct bt_record *rec, bool admin)
{
	(void)arg;
	(void)rec;
	(void)admin;
	return 0;
}

static bool resolve_name(uid_t uid, char *name, size_t n)
{
	snprintf(name, n, "user%u", (unsigned)uid);
	return true;
}

static struct peer peer_of(uid_t uid)
{
	return (struct peer){.uid = uid, .gid = uid, .pid = 1};
}

static int setup_with(void **state, const char *daemon_keys)
{
	static const struct cache_ops ops = {fake_fetch, fake_cancel, fake_arm, fake_now,
					     fake_random};
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct cache_settings cs = {.min_validity = 60, .idle_timeout = 3600};
	struct config_errors errs = {0};
	struct service_hooks hooks = {.arg = fx, .describe = hook_describe};
	struct peer p = peer_of(ALLOWED);
	char text[1024];
	int64_t exp;

	assert_non_null(fx);
	wall = NOW;
	owner = ALLOWED;
	owner_err = 0;
	snprintf(text, sizeof(text),
		 "[daemon]\ncompat_endpoint = 127.0.0.1:0\ncompat_lifetime = %d\n%s"
		 "[identity sp]\ncredential = secret\ntenant = t\nclient_id = cid\n"
		 "secret_file = /nonexistent\nresources = " BATCH ", https://x/\n"
		 "allow_users = %d\ndefault = yes\n"
		 "[identity other]\ncredential = managed-identity\n",
		 LIFETIME, daemon_keys, ALLOWED);
	if (config_parse_string(text, "t.conf", &fx->cfg, &errs) < 0)
		fail_msg("config: %s", errs.n ? errs.msgs[0] : "?");
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	assert_int_equal(cache_new(&ops, fx, &cs, &fx->cache), 0);
	assert_int_equal(usernames_new(&fx->loop, &fx->usernames), 0);
	usernames_set_resolver(fx->usernames, resolve_name, 1000);
	assert_int_equal(service_new(fx->cache, NULL, fx->usernames, fx->cfg, &hooks, &fx->service),
			 0);
	assert_int_equal(compat_new(&fx->loop, fx->service, &fx->compat), 0);
	assert_int_equal(strncmp(compat_url(fx->compat), "http://127.0.0.1:", 17), 0);
	fx->port = (unsigned short)strtoul(compat_url(fx->compat) + 17, NULL, 10);
	assert_int_equal(compat_grant(fx->compat, &p, "sp", fx->cap, &exp), 0);
	assert_int_equal(exp, NOW + LIFETIME);
	*state = fx;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, "");
}

static int setup_two_per_uid(void **state)
{
	return setup_with(state, "max_clients_per_uid = 2\n");
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	compat_close(fx->compat);
	service_free(fx->service);
	usernames_free(fx->usernames);
	cache_free(fx->cache);
	assert_int_equal(loop_finish(&fx->loop), 0);
	config_free(fx->cfg);
	free(fx);
	return 0;
}

static void http_connect(struct fixture *fx, struct http_client *hc)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(fx->port)};

	memset(hc, 0, sizeof(*hc));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	hc->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(hc->fd >= 0);
	assert_int_equal(connect(hc->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(fcntl(hc->fd, F_SETFL, O_NONBLOCK), 0);
	run_turns(&fx->loop, 3);
}

static void hc_close(struct http_client *hc)
{
	close(hc->fd);
}

static void http_send(struct http_client *hc, const char *req)
{
	assert_int_equal(send(hc->fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
}

static void http_read(struct http_client *hc)
{
	ssize_t n = -1;

	while (hc->len < sizeof(hc->buf) - 1 &&
	       (n = recv(hc->fd, hc->buf + hc->len, sizeof(hc->buf) - 1 - hc->len, MSG_DONTWAIT)) >
		   0)
		hc->len += (size_t)n;
	if (n == 0)
		hc->eof = true;
	hc->buf[hc->len] = 0;
}

/* One whole response at the front of hc->buf, taken into *r; false if it
 * has not all arrived. */
static bool take_response(struct http_client *hc, struct reply *r)
{
	char *end = strstr(hc->buf, "\r\n\r\n"), *cl;
	size_t head, body;

	if (!end)
		return false;
	head = (size_t)(end - hc->buf) + 4;
	cl = strcasestr(hc->buf, "Content-Length: ");
	assert_non_null(cl);
	body = strtoul(cl + 16, NULL, 10);
	if (hc->len < head + body)
		return false;
	assert_int_equal(sscanf(hc->buf, "HTTP/1.1 %d", &r->status), 1);
	r->keep_alive = strcasestr(hc->buf, "Connection: keep-alive") &&
			strcasestr(hc->buf, "Connection: keep-alive") < end;
	r->doc = json_loadb(hc->buf + head, body, 0, NULL);
	assert_non_null(r->doc);
	memmove(hc->buf, hc->buf + head + body, hc->len - head - body);
	hc->len -= head + body;
	hc->buf[hc->len] = 0;
	return true;
}

/* Turns the loop until a response has arrived. */
static void wait_response(struct fixture *fx, struct http_client *hc, struct reply *r)
{
	for (int i = 0; i < TURNS_MAX; i++) {
		http_read(hc);
		if (take_response(hc, r))
			return;
		if (hc->eof)
			break;
		run_turn(&fx->loop, i);
	}
	fail_msg("no response (%zu bytes: %s)", hc->len, hc->buf);
}

static const char *field(const struct reply *r, const char *key)
{
	return json_string_value(json_object_get(r->doc, key));
}

/* Sends req on a new connection and returns the response's status; its
 * error code in *error unless NULL. */
static int ask(struct fixture *fx, const char *req, char *error, size_t n)
{
	struct http_client hc;
	struct reply r;

	http_connect(fx, &hc);
	http_send(&hc, req);
	wait_response(fx, &hc, &r);
	if (error)
		snprintf(error, n, "%s", field(&r, "error") ? field(&r, "error") : "");
	json_decref(r.doc);
	hc_close(&hc);
	return r.status;
}

/* Completes the fetch in flight. */
static void fetched(struct fixture *fx, const char *token, int64_t lifetime)
{
	struct token_result r = {.status = BT_OK};

	assert_non_null(fx->fetching);
	r.access_token = secmem_strndup(token, strlen(token));
	snprintf(r.token_type, sizeof(r.token_type), "Bearer");
	r.expires_on = wall + lifetime;
	fx->fetching->fetch = NULL;
	cache_fetch_done(fx->cache, fx->fetching, &r);
	token_result_clear(&r);
	fx->fetching = NULL;
}

static void failed(struct fixture *fx, uint32_t status)
{
	struct token_result r = {.status = status};

	assert_non_null(fx->fetching);
	snprintf(r.message, sizeof(r.message), "token service: it said no");
	fx->fetching->fetch = NULL;
	cache_fetch_done(fx->cache, fx->fetching, &r);
	token_result_clear(&r);
	fx->fetching = NULL;
}

static void test_appsvc_2019(void **state)
{
	struct fixture *fx = *state;
	struct http_client hc;
	struct reply r;
	char req[1024];

	snprintf(req, sizeof(req),
		 "GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\n"
		 "Host: 127.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
		 BATCH, fx->cap);
	http_connect(fx, &hc);
	http_send(&hc, req);
	run_turns(&fx->loop, 5);
	assert_int_equal(fx->fetches, 1);
	wall += 5; /* the token comes a little later */
	fetched(fx, "tok-1", 3600);
	wait_response(fx, &hc, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.keep_alive);
	assert_string_equal(field(&r, "access_token"), "tok-1");
	assert_string_equal(field(&r, "token_type"), "Bearer");
	assert_string_equal(field(&r, "resource"), BATCH);
	assert_string_equal(field(&r, "client_id"), "cid");
	/* Strings, as App Service sends them; expires_in by the clock. */
	assert_int_equal(atoll(field(&r, "expires_on")), NOW + 5 + 3600);
	assert_int_equal(atoll(field(&r, "expires_in")), 3600);
	assert_int_equal(atoll(field(&r, "not_before")), NOW + 5);
	json_decref(r.doc);
	/* The same connection again, answered from the cache later on. */
	wall += 300;
	http_send(&hc, req);
	wait_response(fx, &hc, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(atoll(field(&r, "expires_in")), 3300);
	assert_int_equal(fx->fetches, 1);
	json_decref(r.doc);
	hc_close(&hc);
}

static void test_appsvc_2017_and_imds(void **state)
{
	struct fixture *fx = *state;
	struct http_client hc;
	struct reply r;
	char req[1024];

	http_connect(fx, &hc);
	snprintf(req, sizeof(req),
		 "GET /msi/token/?api-version=2017-09-01&resource=https://x HTTP/1.1\r\n"
		 "Host: 127.0.0.1\r\nsecret: %s\r\n\r\n",
		 fx->cap);
	http_send(&hc, req);
	run_turns(&fx->loop, 5);
	fetched(fx, "tok-x", 3600);
	wait_response(fx, &hc, &r);
	assert_int_equal(r.status, 200);
	/* The resource echoed as asked, not as configured. */
	assert_string_equal(field(&r, "resource"), "https://x");
	json_decref(r.doc);
	/* IMDS, the capability in the path; Connection: close is kept. */
	snprintf(req, sizeof(req),
		 "GET /%s/metadata/identity/oauth2/token?api-version=2018-02-01&resource=%s "
		 "HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nConnection: close\r\n\r\n",
		 fx->cap, BATCH);
	http_send(&hc, req);
	run_turns(&fx->loop, 5);
	fetched(fx, "tok-b", 3600);
	wait_response(fx, &hc, &r);
	assert_int_equal(r.status, 200);
	assert_false(r.keep_alive);
	assert_string_equal(field(&r, "access_token"), "tok-b");
	json_decref(r.doc);
	hc_close(&hc);
	/* IMDS, the capability in X-IDENTITY-HEADER. */
	snprintf(req, sizeof(req),
		 "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=%s "
		 "HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
		 BATCH, fx->cap);
	assert_int_equal(ask(fx, req, NULL, 0), 200);
}

static void test_capability_checks(void **state)
{
	struct fixture *fx = *state;
	struct peer p = peer_of(ALLOWED);
	char req[1024], err[64];
	int64_t exp;

	/* No capability at all. */
	assert_int_equal(ask(fx,
			     "GET /msi/token?api-version=2019-08-01&resource=" BATCH
			     " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
			     err, sizeof(err)),
			 401);
	assert_string_equal(err, "unauthorized");
	/* One this daemon never issued. */
	assert_int_equal(ask(fx,
			     "GET /msi/token?api-version=2019-08-01&resource=" BATCH
			     " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-IDENTITY-HEADER: "
			     "bt1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n",
			     err, sizeof(err)),
			 401);
	snprintf(req, sizeof(req),
		 "GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\n"
		 "Host: 127.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
		 BATCH, fx->cap);
	/* Presented from a connection of another uid, or of one the kernel
	 * cannot name. */
	owner = STRANGER;
	assert_int_equal(ask(fx, req, err, sizeof(err)), 403);
	assert_string_equal(err, "forbidden");
	owner = ALLOWED;
	owner_err = -ENOENT;
	assert_int_equal(ask(fx, req, err, sizeof(err)), 403);
	owner_err = 0;
	assert_int_equal(fx->fetches, 0);
	/* Renewed, it lives on past its first lifetime; then it expires. */
	wall += LIFETIME - 1;
	assert_int_equal(compat_renew(fx->compat, &p, fx->cap, &exp), 0);
	assert_int_equal(exp, NOW + 2 * LIFETIME - 1);
	wall += LIFETIME - 1;
	assert_int_equal(compat_capability_count(fx->compat), 1);
	wall += 1;
	assert_int_equal(ask(fx, req, err, sizeof(err)), 401);
	assert_int_equal(compat_capability_count(fx->compat), 0);
	/* Given back: no longer good. */
	assert_int_equal(compat_grant(fx->compat, &p, "sp", fx->cap, &exp), 0);
	snprintf(req, sizeof(req),
		 "GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\n"
		 "Host: 127.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
		 BATCH, fx->cap);
	p.uid = STRANGER;
	assert_int_equal(compat_revoke(fx->compat, &p, fx->cap), -EPERM);
	p.uid = ALLOWED;
	assert_int_equal(compat_revoke(fx->compat, &p, fx->cap), 0);
	assert_int_equal(ask(fx, req, err, sizeof(err)), 401);
	assert_int_equal(fx->fetches, 0);
}

/* A request whose shape is wrong, and each kind of refusal, with its
 * status and error code. */
static void test_error_statuses(void **state)
{
	struct fixture *fx = *state;
	struct peer stranger = peer_of(STRANGER);
	char stranger_cap[CAPABILITY_TEXT_SIZE];
	const struct {
		const char *target, *headers;
		int status;
		const char *error;
	} cases[] = {
	    {"/other", "", 404, "not_found"},
	    {"/msi/token?api-version=2020-01-01&resource=" BATCH, "X-IDENTITY-HEADER: %s\r\n", 400,
	     "invalid_request"},
	    {"/msi/token?api-version=2019-08-01", "X-IDENTITY-HEADER: %s\r\n", 400,
	     "invalid_request"},
	    {"/msi/token?api-version=2019-08-01&resource=https://vault.azure.net",
	     "X-IDENTITY-HEADER: %s\r\n", 400, "invalid_resource"},
	    {"/msi/token?api-version=2019-08-01&resource=" BATCH "&client_id=someone-else",
	     "X-IDENTITY-HEADER: %s\r\n", 400, "invalid_request"},
	    {"/msi/token?api-version=2019-08-01&resource=" BATCH,
	     "X-IDENTITY-HEADER: %s\r\nX-IDENTITY-HEADER: %s\r\n", 400, "invalid_request"},
	    {"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" BATCH,
	     "X-IDENTITY-HEADER: %s\r\n", 400, "bad_request"}, /* no Metadata: true */
	    {"/metadata/identity/oauth2/token?resource=" BATCH,
	     "Metadata: true\r\nX-IDENTITY-HEADER: %s\r\n", 400, "invalid_request"},
	    {"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" BATCH,
	     "Metadata: true\r\nX-Forwarded-For: 10.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n", 400,
	     "bad_request"},
	};
	char req[2048], headers[512], err[64];
	int64_t exp;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(headers, sizeof(headers), cases[i].headers, fx->cap, fx->cap);
		snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n",
			 cases[i].target, headers);
		if (ask(fx, req, err, sizeof(err)) != cases[i].status ||
		    strcmp(err, cases[i].error) != 0)
			fail_msg("%s: want %d %s, got %s", cases[i].target, cases[i].status,
				 cases[i].error, err);
	}
	assert_int_equal(
	    ask(fx, "DELETE /msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", err, sizeof(err)),
	    405);
	/* The form shape: POST, a form, Metadata: true, the capability in the
	 * path and nowhere else. */
	assert_int_equal(
	    ask(fx, "POST /msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", err,
		sizeof(err)),
	    415);
	snprintf(
	    req, sizeof(req),
	    "POST /msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\nX-IDENTITY-HEADER: "
	    "%s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
	    "%zu\r\n\r\nresource=%s",
	    fx->cap, strlen("resource=" BATCH), BATCH);
	assert_int_equal(ask(fx, req, err, sizeof(err)), 401);
	snprintf(req, sizeof(req),
		 "POST /%s/msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
		 "application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\nresource=%s",
		 fx->cap, strlen("resource=" BATCH), BATCH);
	assert_int_equal(ask(fx, req, err, sizeof(err)), 400);
	assert_string_equal(err, "bad_request"); /* no Metadata: true */
	/* A capability whose user may not (or no longer) use the identity. */
	assert_int_equal(compat_grant(fx->compat, &stranger, "sp", stranger_cap, &exp), 0);
	owner = STRANGER;
	snprintf(req, sizeof(req),
		 "GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\n"
		 "Host: 127.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
		 BATCH, stranger_cap);
	assert_int_equal(ask(fx, req, err, sizeof(err)), 403);
	assert_string_equal(err, "forbidden");
	assert_int_equal(fx->fetches, 0);
}

/* What the token service says becomes 500 (will not pass) or 503 (may). */
static void test_token_service_errors(void **state)
{
	static const struct {
		uint32_t status;
		int http;
		const char *error;
	} cases[] = {{BT_E_CREDENTIAL_REJECTED, 500, "credential_rejected"},
		     {BT_E_UNAVAILABLE, 503, "service_unavailable"}};
	struct fixture *fx = *state;
	char req[1024];

	/* A resource each: a refused credential is remembered per token. */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_client hc;
		struct reply r;
		http_connect(fx, &hc);
		snprintf(req, sizeof(req),
			 "GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\n"
			 "Host: 127.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
			 i ? BATCH : "https://x/", fx->cap);
		http_send(&hc, req);
		run_turns(&fx->loop, 5);
		failed(fx, cases[i].status);
		wait_response(fx, &hc, &r);
		assert_int_equal(r.status, cases[i].http);
		assert_string_equal(field(&r, "error"), cases[i].error);
		assert_non_null(strstr(field(&r, "error_description"), "it said no"));
		json_decref(r.doc);
		hc_close(&hc);
	}
}

/* max_clients_per_uid on the endpoint: the third connection of one owner
 * is answered 503 before it asks; another owner still gets in. */
static void test_per_uid_cap(void **state)
{
	struct fixture *fx = *state;
	struct http_client a, b, c, d;
	struct reply r;

	http_connect(fx, &a);
	http_connect(fx, &b);
	http_connect(fx, &c);
	/* The refused one lingers to deliver its 503, but takes no slot of
	 * max_clients. */
	assert_int_equal(compat_client_count(fx->compat), 2);
	wait_response(fx, &c, &r);
	assert_int_equal(r.status, 503);
	assert_non_null(strstr(field(&r, "error_description"), "max_clients_per_uid (2)"));
	json_decref(r.doc);
	owner = STRANGER;
	http_connect(fx, &d);
	http_read(&d);
	assert_int_equal(d.len, 0);
	hc_close(&d);
	hc_close(&c);
	/* A slot given back is free again. */
	owner = ALLOWED;
	hc_close(&a);
	run_turns(&fx->loop, 10);
	http_connect(fx, &a);
	run_turns(&fx->loop, 3);
	http_read(&a);
	assert_int_equal(a.len, 0);
	assert_false(a.eof);
	hc_close(&a);
	hc_close(&b);
}

/* Stopping: a client waiting for its token is told so, then closed. */
static void test_close_tells_waiting(void **state)
{
	struct fixture *fx = *state;
	struct http_client hc;
	struct reply r;
	char req[1024];

	snprintf(req, sizeof(req),
		 "GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\n"
		 "Host: 127.0.0.1\r\nX-IDENTITY-HEADER: %s\r\n\r\n",
		 BATCH, fx->cap);
	http_connect(fx, &hc);
	http_send(&hc, req);
	run_turns(&fx->loop, 5);
	assert_non_null(fx->fetching);
	compat_close(fx->compat);
	fx->compat = NULL;
	assert_int_equal(fx->fetching->n_waiters, 0);
	run_turns(&fx->loop, 5);
	wait_response(fx, &hc, &r);
	assert_int_equal(r.status, 503);
	assert_non_null(strstr(field(&r, "error_description"), "stopping"));
	json_decref(r.doc);
	hc_close(&hc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_appsvc_2019, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_appsvc_2017_and_imds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_capability_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_error_statuses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_service_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_per_uid_cap, setup_two_per_uid, teardown),
	    cmocka_unit_test_setup_teardown(test_close_tells_waiting, setup, teardown),
	};

	log_init(LOG_CRIT);
	secmem_init(1 << 16);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
