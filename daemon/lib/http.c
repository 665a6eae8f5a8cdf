/* http.c - libcurl's multi interface driven by the libuv loop.
 *
 * The shape is curl's docs/examples/multi-uv.c: one state struct handed to
 * curl as socket and timer data, one uv_poll_t per socket (freed in its close
 * callback), a zero-delay timer instead of acting inside curl's timer
 * callback, and curl_multi_info_read() drained after every socket action.
 * The timer is libcurl's alone: a transfer we could not start is reported
 * from an idle handle of our own, because libcurl re-arms or stops its timer
 * whenever it likes (a stop would lose that report). */
#include "http.h"
#include "list.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER_AGENT "batchtokd/" BATCHTOK_VERSION_STRING
/* With ca_file the system's CAs still count: curl with OpenSSL reads both
 * CAINFO and CAPATH. */
#define SYSTEM_CA_PATH "/etc/ssl/certs"

enum state { QUEUED, ACTIVE, COMPLETED };

struct http_transfer {
	struct http *h;
	struct list node; /* on the queued, active or completed list */
	enum state state;
	CURL *easy;
	struct curl_slist *headers;
	struct http_request req;
	struct secstr body; /* the response; may hold a token */
	bool too_big;
	CURLcode result;
	http_done_fn done;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
};

struct http {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer; /* libcurl's: armed only from timer_cb() */
	uv_idle_t report; /* runs while transfers we failed to start await their report */
	int open_handles; /* timer and report until their close callbacks */
	struct http_options opts;
	char *ca_file;
	char *proxy;
	struct list queued, active, completed;
	size_t n_active;
	struct list socks;
	bool closing;
};

struct sock {
	uv_poll_t poll;
	curl_socket_t fd;
	struct http *h;
	struct list node; /* all open sockets, closed at shutdown */
};

/* Moves t to the list of its new state. */
static void set_state(struct http_transfer *t, enum state state)
{
	struct http *h = t->h;

	if (t->state == ACTIVE)
		h->n_active--;
	list_del(&t->node);
	t->state = state;
	if (state == ACTIVE)
		h->n_active++;
	list_add_tail(state == QUEUED	? &h->queued
		      : state == ACTIVE ? &h->active
					: &h->completed,
		      &t->node);
}

void http_request_clear(struct http_request *r)
{
	free(r->url);
	secstr_free(&r->body);
	memset(r, 0, sizeof(*r));
}

static void transfer_free(struct http_transfer *t)
{
	if (t->state == ACTIVE)
		t->h->n_active--;
	list_del(&t->node);
	if (t->easy) {
		if (t->state == ACTIVE)
			curl_multi_remove_handle(t->h->multi, t->easy);
		curl_easy_cleanup(t->easy);
	}
	curl_slist_free_all(t->headers);
	http_request_clear(&t->req);
	secstr_free(&t->body);
	free(t);
}

static void check_done(struct http *h);
static void start_queued(struct http *h);

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = (struct sock *)p;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (!status && (events & UV_READABLE))
		flags |= CURL_CSELECT_IN;
	if (!status && (events & UV_WRITABLE))
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(s->h->multi, s->fd, flags, &running);
	check_done(s->h);
}

static void on_sock_closed(uv_handle_t *handle)
{
	free(handle);
}

static void sock_close(struct sock *s)
{
	list_del(&s->node);
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
	struct http *h = userp;
	struct sock *s = socketp;
	int events = 0;

	(void)easy;
	if (action == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(h->multi, fd, NULL);
			sock_close(s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		if (uv_poll_init_socket(h->loop, &s->poll, fd) < 0) {
			free(s);
			return -1;
		}
		s->fd = fd;
		s->h = h;
		list_add_tail(&h->socks, &s->node);
		curl_multi_assign(h->multi, fd, s);
	}
	if (action & CURL_POLL_IN)
		events |= UV_READABLE;
	if (action & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	return uv_poll_start(&s->poll, events, on_poll) < 0 ? -1 : 0;
}

static void on_timer(uv_timer_t *timer)
{
	struct http *h = timer->data;
	int running;

	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(h);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct http *h = userp;

	(void)multi;
	if (timeout_ms < 0)
		uv_timer_stop(&h->timer);
	else
		uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userp)
{
	struct http_transfer *t = userp;
	size_t n = size * nmemb;

	if (t->body.len + n > HTTP_RESPONSE_MAX) {
		t->too_big = true;
		return 0;
	}
	return secstr_append(&t->body, ptr, n) < 0 ? 0 : n;
}

/* Every TLS connection, before its handshake (a reused one keeps what it was
 * made with; all of ours are made here). OpenSSL decrypts a record in place
 * in its read buffer and leaves the plaintext there until the next record
 * overwrites it: the token service's reply, access and refresh tokens
 * included, would outlive the transfer in ordinary heap. With
 * SSL_OP_CLEANSE_PLAINTEXT it wipes what it has handed to libcurl, and the
 * buffer when it is released. libcurl's own buffers are wiped when freed
 * (main.c gives it secmem's allocator) and the reply is collected in secure
 * memory (on_data). Setting this callback fails with a libcurl that is not
 * built on OpenSSL, and with it every transfer: batchtokd is built for
 * libcurl's OpenSSL flavour and does not run without this protection. */
static CURLcode on_ssl_ctx(CURL *easy, void *ssl_ctx, void *arg)
{
	(void)easy;
	(void)arg;
	SSL_CTX_set_options(ssl_ctx, SSL_OP_CLEANSE_PLAINTEXT);
	return CURLE_OK;
}

static enum http_failure classify(CURLcode c, bool too_big)
{
	switch (c) {
	case CURLE_OK:
		return HTTP_OK;
	case CURLE_OPERATION_TIMEDOUT:
		return HTTP_TIMEOUT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		return HTTP_TLS;
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
		return too_big || c == CURLE_FILESIZE_EXCEEDED ? HTTP_TOO_BIG : HTTP_INTERNAL;
	case CURLE_OUT_OF_MEMORY:
	case CURLE_FAILED_INIT:
	case CURLE_BAD_FUNCTION_ARGUMENT:
		return HTTP_INTERNAL;
	default:
		return HTTP_NETWORK;
	}
}

static void deliver(struct http_transfer *t)
{
	struct http_response resp = {0};
	curl_off_t retry = 0;

	resp.failure = classify(t->result, t->too_big);
	if (resp.failure == HTTP_OK) {
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &resp.status);
		if (curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry) == CURLE_OK &&
		    retry > 0)
			resp.retry_after = retry > UINT32_MAX ? UINT32_MAX : (uint32_t)retry;
		resp.body = t->body.p ? t->body.p : "";
		resp.body_len = t->body.len;
	} else if (resp.failure == HTTP_TOO_BIG) {
		snprintf(resp.error, sizeof(resp.error), "the response is larger than %d bytes",
			 HTTP_RESPONSE_MAX);
	} else {
		snprintf(resp.error, sizeof(resp.error), "%s%s%s", curl_easy_strerror(t->result),
			 t->errbuf[0] ? ": " : "", t->errbuf);
		resp.error[strcspn(resp.error, "\n")] = 0;
	}
	t->done(t->arg, &resp);
}

static void check_done(struct http *h)
{
	struct http_transfer *t;
	CURLMsg *msg;
	int left;

	/* Take every finished transfer off curl first, then call back: a
	 * callback may cancel or submit transfers. */
	while ((msg = curl_multi_info_read(h->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
		t->result = msg->data.result;
		curl_multi_remove_handle(h->multi, t->easy);
		set_state(t, COMPLETED);
	}
	while ((t = list_first(&h->completed, struct http_transfer, node))) {
		list_del(&t->node);
		deliver(t);
		transfer_free(t);
	}
	start_queued(h);
}

static int setup_easy(struct http *h, struct http_transfer *t)
{
	CURL *e = curl_easy_init();
	CURLcode c = CURLE_OK;

	if (!e)
		return -ENOMEM;
	t->easy = e;
	for (size_t i = 0; i < 4 && t->req.headers[i]; i++) {
		struct curl_slist *l = curl_slist_append(t->headers, t->req.headers[i]);
		if (!l)
			return -ENOMEM;
		t->headers = l;
	}
#define SET(opt, val)                                                                              \
	if (c == CURLE_OK)                                                                         \
	c = curl_easy_setopt(e, opt, val)
	SET(CURLOPT_URL, t->req.url);
	SET(CURLOPT_PRIVATE, t);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_WRITEFUNCTION, on_data);
	SET(CURLOPT_WRITEDATA, t);
	SET(CURLOPT_ERRORBUFFER, t->errbuf);
	SET(CURLOPT_PROTOCOLS_STR, t->req.direct ? "http,https" : "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_TIMEOUT, (long)h->opts.timeout);
	SET(CURLOPT_CONNECTTIMEOUT, (long)h->opts.connect_timeout);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTP_RESPONSE_MAX);
	SET(CURLOPT_USERAGENT, USER_AGENT);
	SET(CURLOPT_HTTPHEADER, t->headers);
	SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
	/* HTTP/2 would keep the reply's bytes in a per-connection input buffer
	 * of libcurl's that lives as long as the cached connection; a token
	 * request is one small exchange that gains nothing from it. */
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	if (h->ca_file) {
		SET(CURLOPT_CAINFO, h->ca_file);
		SET(CURLOPT_CAPATH, SYSTEM_CA_PATH);
	}
	/* Metadata service requests bypass every proxy, configured or from
	 * the environment. */
	SET(CURLOPT_NOPROXY, t->req.direct ? "*" : NULL);
	SET(CURLOPT_PROXY, t->req.direct ? NULL : h->proxy);
	if (t->req.body.len) {
		/* Our buffer, not a copy: it holds the secret and is wiped with
		 * the transfer. */
		SET(CURLOPT_POSTFIELDS, t->req.body.p);
		SET(CURLOPT_POSTFIELDSIZE, (long)t->req.body.len);
	}
#undef SET
	return c == CURLE_OK ? 0 : (c == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL);
}

/* Delivers the transfers that could not start (and whatever libcurl has
 * finished meanwhile), on the loop's next turn. */
static void on_report(uv_idle_t *idle)
{
	struct http *h = idle->data;

	uv_idle_stop(idle);
	check_done(h);
}

static void start_queued(struct http *h)
{
	struct http_transfer *t;

	while (!h->closing && h->n_active < h->opts.concurrency &&
	       (t = list_first(&h->queued, struct http_transfer, node))) {
		if (setup_easy(h, t) < 0 || curl_multi_add_handle(h->multi, t->easy) != CURLM_OK) {
			/* Reported once, from the loop (never inside
			 * http_submit()), through the same path as a finished
			 * transfer. uv_idle_start() on an active idle is a
			 * no-op, and cannot fail with a callback given. */
			t->result = CURLE_FAILED_INIT;
			snprintf(t->errbuf, sizeof(t->errbuf), "could not set up the transfer");
			set_state(t, COMPLETED);
			uv_idle_start(&h->report, on_report);
			continue;
		}
		set_state(t, ACTIVE);
	}
}

static int copy_opt(char **dst, const char *src)
{
	char *s = NULL;

	if (src && *src && !(s = strdup(src)))
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

int http_configure(struct http *h, const struct http_options *opts)
{
	int r = copy_opt(&h->ca_file, opts->ca_file) ?: copy_opt(&h->proxy, opts->proxy);

	if (r < 0)
		return r;
	h->opts = *opts;
	h->opts.ca_file = h->opts.proxy = NULL;
	if (h->opts.concurrency == 0)
		h->opts.concurrency = 1;
	start_queued(h);
	return 0;
}

int http_new(uv_loop_t *loop, const struct http_options *opts, struct http **ret)
{
	struct http *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return -ENOMEM;
	h->loop = loop;
	list_init(&h->queued);
	list_init(&h->active);
	list_init(&h->completed);
	list_init(&h->socks);
	h->multi = curl_multi_init();
	if (!h->multi || (r = http_configure(h, opts)) < 0) {
		if (h->multi)
			curl_multi_cleanup(h->multi);
		free(h->ca_file);
		free(h->proxy);
		free(h);
		return -ENOMEM;
	}
	uv_timer_init(loop, &h->timer);
	h->timer.data = h;
	uv_idle_init(loop, &h->report);
	h->report.data = h;
	h->open_handles = 2;
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	*ret = h;
	return 0;
}

int http_submit(struct http *h, struct http_request *req, http_done_fn done, void *arg,
		struct http_transfer **ret)
{
	struct http_transfer *t;

	if (h->closing) {
		http_request_clear(req);
		return -ESHUTDOWN;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		http_request_clear(req);
		return -ENOMEM;
	}
	t->h = h;
	t->req = *req;
	memset(req, 0, sizeof(*req));
	t->done = done;
	t->arg = arg;
	t->state = QUEUED;
	list_add_tail(&h->queued, &t->node);
	start_queued(h);
	*ret = t;
	return 0;
}

void http_cancel(struct http_transfer *t)
{
	transfer_free(t);
}

static void on_handle_closed(uv_handle_t *handle)
{
	struct http *h = handle->data;

	if (--h->open_handles > 0)
		return;
	free(h->ca_file);
	free(h->proxy);
	free(h);
}

void http_close(struct http *h)
{
	struct http_transfer *t;

	if (!h)
		return;
	h->closing = true;
	while ((t = list_first(&h->queued, struct http_transfer, node)) ||
	       (t = list_first(&h->active, struct http_transfer, node)) ||
	       (t = list_first(&h->completed, struct http_transfer, node)))
		http_cancel(t);
	curl_multi_cleanup(h->multi);
	/* Whatever curl did not report removed (cached connections) is closed
	 * here, so that the loop ends with no handle left. */
	while (!list_empty(&h->socks))
		sock_close(list_entry(h->socks.next, struct sock, node));
	uv_close((uv_handle_t *)&h->timer, on_handle_closed);
	uv_close((uv_handle_t *)&h->report, on_handle_closed);
}
