/* test_http.c - transfers on the loop: a transfer that cannot be set up is
 * reported once, from the loop, by a mechanism of its own: libcurl's timer
 * is libcurl's, and whatever libcurl does with it next must neither lose
 * that report nor a running transfer's timeout. The server is a loopback
 * socket in the test that reads requests and never answers; every wait is
 * bounded by a watchdog timer on the same loop. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "../../daemon/lib/http.h"

/* Longer than libcurl accepts for a string option (CURL_MAX_INPUT_LENGTH,
 * 8,000,000): curl_easy_setopt(CURLOPT_URL) refuses it, so setting the
 * transfer up fails. */
#define UNSETTABLE_URL_LEN 8000001
/* How long the test waits for a transfer whose timeout is 1 s. */
#define WATCHDOG_MS 8000
/* When the transfer that cannot be set up is submitted, counted from the
 * arrival of the hanging transfer's request: inside its 1 s timeout, and
 * after the short timers libcurl arms while connecting (happy eyeballs,
 * 200 ms) have fired, so that libcurl's timer holds that timeout and nothing
 * else would re-arm it. */
#define SUBMIT_AFTER_MS 500

struct done {
	int calls;
	enum http_failure failure;
};

struct fixture {
	uv_loop_t loop;
	struct http *h;
	int listen_fd, conn_fd;
	uv_poll_t listen_poll, conn_poll;
	uv_timer_t watchdog, later;
	struct done hanging, unsettable;
	bool server; /* the silent server and its handles are in use */
	bool stuck, closed;
};

static void on_done(void *arg, const struct http_response *resp)
{
	struct done *d = arg;

	d->calls++;
	d->failure = resp->failure;
}

/* Ends the test's loop: everything is closed, so uv_run() returns. */
static void close_all(struct fixture *f)
{
	if (f->closed)
		return;
	f->closed = true;
	http_close(f->h);
	uv_close((uv_handle_t *)&f->watchdog, NULL);
	if (!f->server)
		return;
	uv_close((uv_handle_t *)&f->listen_poll, NULL);
	if (f->conn_fd >= 0)
		uv_close((uv_handle_t *)&f->conn_poll, NULL);
	uv_close((uv_handle_t *)&f->later, NULL);
}

static void on_watchdog(uv_timer_t *t)
{
	struct fixture *f = t->data;

	f->stuck = true;
	close_all(f);
}

/* Both transfers have been reported: the test is over. */
static void check_finished(struct fixture *f)
{
	if (f->hanging.calls && f->unsettable.calls)
		close_all(f);
}

static void on_hanging_done(void *arg, const struct http_response *resp)
{
	struct fixture *f = arg;

	on_done(&f->hanging, resp);
	check_finished(f);
}

static void on_unsettable_done(void *arg, const struct http_response *resp)
{
	struct fixture *f = (struct fixture *)((char *)arg - offsetof(struct fixture, unsettable));

	on_done(arg, resp);
	check_finished(f);
}

static void submit(struct fixture *f, const char *url, struct done *d)
{
	struct http_request req = {.direct = true};
	struct http_transfer *t;

	req.url = strdup(url);
	assert_non_null(req.url);
	assert_int_equal(
	    http_submit(f->h, &req, d == &f->unsettable ? on_unsettable_done : on_done, d, &t), 0);
	assert_null(req.url);
}

/* Submits a transfer whose URL libcurl refuses. */
static void submit_unsettable(struct fixture *f)
{
	char *url = malloc(UNSETTABLE_URL_LEN + 1);

	assert_non_null(url);
	memset(url, 'a', UNSETTABLE_URL_LEN);
	memcpy(url, "http://", 7);
	url[UNSETTABLE_URL_LEN] = 0;
	submit(f, url, &f->unsettable);
	free(url);
	/* Reported from the loop, never from inside http_submit(). */
	assert_int_equal(f->unsettable.calls, 0);
}

/* libcurl's timer now holds the hanging transfer's timeout: a transfer that
 * cannot be set up. */
static void on_later(uv_timer_t *t)
{
	submit_unsettable(t->data);
}

/* The hanging transfer's request has arrived and is never answered. */
static void on_request(uv_poll_t *p, int status, int events)
{
	struct fixture *f = p->data;

	(void)status;
	(void)events;
	uv_poll_stop(p);
	assert_int_equal(uv_timer_start(&f->later, on_later, SUBMIT_AFTER_MS, 0), 0);
}

static void on_connection(uv_poll_t *p, int status, int events)
{
	struct fixture *f = p->data;

	(void)status;
	(void)events;
	uv_poll_stop(p);
	f->conn_fd = accept(f->listen_fd, NULL, NULL);
	assert_true(f->conn_fd >= 0);
	assert_int_equal(uv_poll_init(&f->loop, &f->conn_poll, f->conn_fd), 0);
	f->conn_poll.data = f;
	assert_int_equal(uv_poll_start(&f->conn_poll, UV_READABLE, on_request), 0);
}

/* The failure is reported once, as ours, and the running transfer still
 * times out on time: libcurl's timer kept its deadline. */
static void test_running_transfer_keeps_its_timeout(void **state)
{
	struct http_options opts = {.concurrency = 4, .timeout = 1, .connect_timeout = 1};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	struct http_request req = {.direct = true};
	struct http_transfer *t;
	char url[64];

	struct fixture fx = {.conn_fd = -1, .server = true}, *f = &fx;

	(void)state;
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(http_new(&f->loop, &opts, &f->h), 0);
	f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listen_fd >= 0);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->listen_fd, 4), 0);
	assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&sa, &len), 0);
	assert_int_equal(uv_poll_init(&f->loop, &f->listen_poll, f->listen_fd), 0);
	f->listen_poll.data = f;
	assert_int_equal(uv_poll_start(&f->listen_poll, UV_READABLE, on_connection), 0);
	assert_int_equal(uv_timer_init(&f->loop, &f->watchdog), 0);
	f->watchdog.data = f;
	assert_int_equal(uv_timer_start(&f->watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
	assert_int_equal(uv_timer_init(&f->loop, &f->later), 0);
	f->later.data = f;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(sa.sin_port));
	req.url = strdup(url);
	assert_non_null(req.url);
	assert_int_equal(http_submit(f->h, &req, on_hanging_done, f, &t), 0);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	close(f->conn_fd);
	close(f->listen_fd);
	assert_false(f->stuck);
	assert_int_equal(f->unsettable.calls, 1);
	assert_int_equal(f->unsettable.failure, HTTP_INTERNAL);
	assert_int_equal(f->hanging.calls, 1);
	assert_int_equal(f->hanging.failure, HTTP_TIMEOUT);
}

/* The failure to start B, then the cancellation of A, the last transfer
 * libcurl runs, in the same turn of the loop (a reload forgetting a token
 * does that): libcurl, with nothing left to time, stops its timer. A failure
 * reported through that timer would never be heard of, and the fetch waiting
 * for it would never complete. */
static void test_failure_is_reported_after_curl_stops_its_timer(void **state)
{
	struct http_options opts = {.concurrency = 4, .timeout = 1, .connect_timeout = 1};
	struct http_request req = {.direct = true};
	struct http_transfer *a;
	struct fixture fx = {.conn_fd = -1}, *f = &fx;
	struct done da = {0};

	(void)state;
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(http_new(&f->loop, &opts, &f->h), 0);
	assert_int_equal(uv_timer_init(&f->loop, &f->watchdog), 0);
	f->watchdog.data = f;
	assert_int_equal(uv_timer_start(&f->watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
	req.url = strdup("http://127.0.0.1:9/");
	assert_non_null(req.url);
	assert_int_equal(http_submit(f->h, &req, on_done, &da, &a), 0);
	f->hanging.calls = 1; /* A is cancelled: only B's report is awaited */
	submit_unsettable(f);
	http_cancel(a);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	assert_false(f->stuck);
	assert_int_equal(f->unsettable.calls, 1);
	assert_int_equal(f->unsettable.failure, HTTP_INTERNAL);
	assert_int_equal(da.calls, 0);
}

/* Closing the engine while a failed transfer waits to be reported: no
 * callback, and no handle is left behind. */
static void test_close_with_a_failure_pending(void **state)
{
	struct http_options opts = {.concurrency = 4, .timeout = 1, .connect_timeout = 1};
	struct done d = {0};
	struct fixture f = {0};
	char *url = malloc(UNSETTABLE_URL_LEN + 1);

	(void)state;
	assert_non_null(url);
	memset(url, 'a', UNSETTABLE_URL_LEN);
	memcpy(url, "http://", 7);
	url[UNSETTABLE_URL_LEN] = 0;
	assert_int_equal(uv_loop_init(&f.loop), 0);
	assert_int_equal(http_new(&f.loop, &opts, &f.h), 0);
	submit(&f, url, &d);
	free(url);
	http_close(f.h);
	assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(d.calls, 0);
	assert_int_equal(uv_loop_close(&f.loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_running_transfer_keeps_its_timeout),
	    cmocka_unit_test(test_failure_is_reported_after_curl_stops_its_timer),
	    cmocka_unit_test(test_close_with_a_failure_pending),
	};
	int r;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return r;
}
