/* compat.c - the managed-identity compatible endpoint: connections, the
 * three request shapes, authorisation, answers. */
#include "compat.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../identity/credential.h"
#include "../lib/clock.h"
#include "http_in.h"
#include "../lib/counters.h"
#include "../lib/log.h"
#include "../lib/ratelimit.h"
#include "../lib/secmem.h"
#include "../lib/uidcount.h"
#include "sockdiag.h"

#define READ_SIZE    4096
#define IMDS_PATH    "/metadata/identity/oauth2/token"
#define APPSVC_PATH  "/msi/token"
#define SELECTOR_MAX 1024 /* a client_id, object id or resource ID */
/* After a last response the connection is shut down for writing and what the
 * client still sends is read and dropped for at most this long, so closing
 * with unread input does not reset the connection before the client has read
 * the response. */
#define LINGER_MS 2000
/* Refused connections lingering at once, at most. */
#define REFUSING_MAX 1024

struct compat {
	struct service *s;
	uv_tcp_t listener;
	int nl_fd;
	struct list conns;
	unsigned n_conns;	 /* counted against max_clients */
	unsigned n_refusing;	 /* refused, lingering so that their 503 arrives */
	struct uidcount per_uid; /* connections of each owner */
	struct capability_store caps;
	char url[80];
	unsigned port; /* the one listened on */
};

enum shape {
	SHAPE_APPSVC_2019, /* X-IDENTITY-HEADER */
	SHAPE_APPSVC_2017, /* secret */
	SHAPE_IMDS,	   /* Metadata: true; the capability in the path or header */
	SHAPE_FORM,	   /* Cloud Shell, VM extension: POST form, Metadata: true;
			    * the capability in the path */
};

struct compat_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	struct compat *cp;
	struct list node;
	int handles; /* open libuv handles and writes; freed at 0 */
	bool closing;
	bool reading;
	bool busy;	 /* a request is being answered */
	bool keep_alive; /* for the request being answered */
	bool lingering;	 /* shut down after the last response; input is dropped */
	uid_t uid;	 /* owner of the client's socket */
	int owner_err;	 /* why the owner is unknown, 0: known */
	bool counted;	 /* in per_uid, as counted_uid */
	bool refusing;	 /* in n_refusing, not n_conns */
	uid_t counted_uid;
	char peer[64];		  /* "127.0.0.1:PORT" for logs */
	struct service_request q; /* the token request, while waiting */
	bool waiting;
	char *resource; /* as the client asked: echoed back */
	char *identity; /* the identity's name, for logs */
	/* The request being read: allocated on the first byte and freed
	 * between requests, so that an idle connection costs little. */
	struct compat_input {
		struct http_in req;
		char in[READ_SIZE];
	} * b;
	size_t in_off, in_len;
	size_t partial; /* bytes fed to the parser since the last whole request */
	uv_write_t wr;
	uv_shutdown_t sd;
	char *out; /* a response, wiped when written */
	size_t out_len;
};

static void conn_process(struct compat_conn *c);
static void conn_resume(struct compat_conn *c);

static struct log_ctx conn_ctx(const struct compat_conn *c)
{
	return (struct log_ctx){.identity = c->identity,
				.resource = c->resource,
				.uid = c->owner_err ? -1 : (long)c->uid,
				.pid = -1};
}

static void forget_request(struct compat_conn *c)
{
	free(c->resource);
	free(c->identity);
	c->resource = c->identity = NULL;
}

/* Frees the input buffer and parser, wiped: they may hold a capability. */
static void release_input(struct compat_conn *c)
{
	if (!c->b)
		return;
	http_in_wipe(&c->b->req);
	explicit_bzero(c->b->in, sizeof(c->b->in));
	free(c->b);
	c->b = NULL;
}

/* The uid that owns the client's socket, or -1 if it is unknown. */
static long owner(const struct compat_conn *c)
{
	return c->owner_err ? -1L : (long)c->uid;
}

static void conn_unref(struct compat_conn *c)
{
	if (--c->handles > 0)
		return;
	forget_request(c);
	release_input(c);
	free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	conn_unref(h->data);
}

static void conn_close(struct compat_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->waiting) {
		service_cancel(&c->q);
		c->waiting = false;
	}
	list_del(&c->node);
	counters.connections[LISTEN_COMPAT]--;
	if (c->refusing)
		c->cp->n_refusing--;
	else
		c->cp->n_conns--;
	if (c->counted)
		uidcount_del(&c->cp->per_uid, c->counted_uid);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void free_compat(uv_handle_t *h)
{
	struct compat *cp = h->data;

	uidcount_free(&cp->per_uid);
	free(cp);
}

/* How long a connection may wait for its next request: client_idle_timeout,
 * but at most COMPAT_IDLE_TIMEOUT, which also bounds a request that does not
 * arrive whole. */
static uint64_t idle_ms(const struct compat *cp)
{
	uint32_t t = service_config(cp->s)->client_idle_timeout;

	return (uint64_t)(t < COMPAT_IDLE_TIMEOUT ? t : COMPAT_IDLE_TIMEOUT) * 1000;
}

static void on_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_shut_down(uv_shutdown_t *sd, int status)
{
	struct compat_conn *c = sd->data;

	(void)status;
	conn_unref(c);
}

/* The last response is out: say so, then drop input until the client
 * closes or LINGER_MS passes. */
static void conn_linger(struct compat_conn *c)
{
	c->lingering = true;
	c->sd.data = c;
	if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shut_down) < 0) {
		conn_close(c);
		return;
	}
	c->handles++;
	if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		conn_close(c);
		return;
	}
	c->reading = true;
	uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
}

static void on_written(uv_write_t *w, int status)
{
	struct compat_conn *c = w->data;

	explicit_bzero(c->out, c->out_len);
	free(c->out);
	c->out = NULL;
	c->out_len = 0;
	if (c->closing) { /* the write was cancelled by the close */
		conn_unref(c);
		return;
	}
	c->handles--; /* the connection's handles keep it alive */
	if (status < 0) {
		conn_close(c);
		return;
	}
	if (!c->keep_alive) {
		conn_linger(c);
		return;
	}
	c->busy = false;
	forget_request(c);
	http_in_next(&c->b->req);
	uv_timer_start(&c->timer, on_timeout, idle_ms(c->cp), 0);
	conn_process(c);
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 411:
		return "Length Required";
	case 413:
		return "Payload Too Large";
	case 415:
		return "Unsupported Media Type";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	}
	return "Internal Server Error";
}

/* The response of status with body (a JSON document, taken and wiped) in
 * c->out; -ENOMEM if there is no room. */
static int format_response(struct compat_conn *c, int status, char *body)
{
	size_t blen = body ? strlen(body) : 0;
	char head[256];
	int hlen;

	hlen = snprintf(head, sizeof(head),
			"HTTP/1.1 %d %s\r\n"
			"Content-Type: application/json; charset=utf-8\r\n"
			"Content-Length: %zu\r\n"
			"Cache-Control: no-store\r\n"
			"Connection: %s\r\n\r\n",
			status, reason(status), blen, c->keep_alive ? "keep-alive" : "close");
	c->out_len = (size_t)hlen + blen;
	c->out = malloc(c->out_len);
	if (!c->out) {
		secmem_lib_free(body);
		return -ENOMEM;
	}
	memcpy(c->out, head, (size_t)hlen);
	if (body)
		memcpy(c->out + hlen, body, blen);
	secmem_lib_free(body);
	return 0;
}

static void forget_response(struct compat_conn *c)
{
	explicit_bzero(c->out, c->out_len);
	free(c->out);
	c->out = NULL;
	c->out_len = 0;
}

/* Sends status with body (a JSON document, taken and wiped). */
static void respond(struct compat_conn *c, int status, char *body)
{
	uv_buf_t buf;

	if (format_response(c, status, body) < 0) {
		conn_close(c);
		return;
	}
	buf = uv_buf_init(c->out, (unsigned)c->out_len);
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0) {
		explicit_bzero(c->out, c->out_len);
		free(c->out);
		c->out = NULL;
		conn_close(c);
		return;
	}
	c->handles++;
	/* A client that does not read its response is given as long as an
	 * idle one: the timer stopped while the token was fetched. */
	if (!uv_is_active((uv_handle_t *)&c->timer))
		uv_timer_start(&c->timer, on_timeout, idle_ms(c->cp), 0);
}

static void respond_error(struct compat_conn *c, int status, const char *error, const char *fmt,
			  ...) __attribute__((format(printf, 4, 5)));

/* {"error": error, "error_description": msg}, or NULL without memory. */
static char *error_body(const char *error, const char *msg)
{
	json_t *doc = json_pack("{s:s, s:s}", "error", error, "error_description", msg);
	char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

	json_decref(doc);
	return body;
}

static void respond_error(struct compat_conn *c, int status, const char *error, const char *fmt,
			  ...)
{
	char msg[BT_MESSAGE_MAX];
	char *body;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	body = error_body(error, msg);
	if (!body) {
		conn_close(c);
		return;
	}
	respond(c, status, body);
}

/* A service error as an HTTP status and error code: 4xx for what the
 * request (or its user) got wrong, 503 for what may pass, 500 for what will
 * not. */
static int http_status_for(uint32_t bt_status, const char **error)
{
	switch (bt_status) {
	case BT_E_DENIED:
	case BT_E_UNKNOWN_IDENTITY:
		*error = "forbidden";
		return 403;
	case BT_E_RESOURCE_NOT_ALLOWED:
		*error = "invalid_resource";
		return 400;
	case BT_E_UNAVAILABLE:
	case BT_E_TIMEOUT:
	case BT_E_BUSY:
		*error = "service_unavailable";
		return 503;
	case BT_E_CREDENTIAL_REJECTED:
		*error = "credential_rejected";
		return 500;
	}
	*error = "internal_error";
	return 500;
}

static void on_answer(struct service_request *q, const struct service_answer *a)
{
	struct compat_conn *c = container_of(q, struct compat_conn, q);
	int64_t now = clock_wall_now();
	struct log_ctx ctx = conn_ctx(c);
	char exp_in[24], exp_on[24], nbf[24];
	json_t *doc;
	char *body;

	c->waiting = false;
	if (a->status != BT_OK) {
		const char *error;
		int status = http_status_for(a->status, &error);
		respond_error(c, status, error, "%s", a->message);
		return;
	}
	snprintf(exp_in, sizeof(exp_in), "%lld", (long long)(a->expires_on - now));
	snprintf(exp_on, sizeof(exp_on), "%lld", (long long)a->expires_on);
	snprintf(nbf, sizeof(nbf), "%lld", (long long)now);
	doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "access_token", a->access_token,
			"expires_in", exp_in, "expires_on", exp_on, "not_before", nbf, "resource",
			c->resource, "token_type", "Bearer");
	if (doc && a->client_id &&
	    json_object_set_new(doc, "client_id", json_string(a->client_id)) < 0) {
		json_decref(doc);
		doc = NULL;
	}
	body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!body) {
		respond_error(c, 500, "internal_error", "out of memory");
		return;
	}
	ctx.fingerprint = a->fingerprint;
	log_msg(LOG_DEBUG, &ctx, "handed token %s for %s to uid %u over the compat endpoint (%s)",
		a->fingerprint, c->resource, (unsigned)c->uid, c->peer);
	respond(c, 200, body);
}

static bool path_is(const char *p, size_t n, const char *want)
{
	size_t w = strlen(want);

	/* A trailing slash is tolerated: MSI_ENDPOINT values often end in one. */
	return (n == w || (n == w + 1 && p[w] == '/')) && memcmp(p, want, w) == 0;
}

/* Whether the path is want, or "/CAPABILITY" then want, the capability set
 * in *cap (NULL when there is none). Tools that only let a base URL be set
 * carry the capability there. */
static bool path_names(const char *p, size_t n, const char *want, const char **cap, size_t *cap_len)
{
	const char *slash;

	*cap = NULL;
	*cap_len = 0;
	if (path_is(p, n, want))
		return true;
	if (n < 2 || p[0] != '/' || !(slash = memchr(p + 1, '/', n - 1)) || slash == p + 1 ||
	    !path_is(slash, n - (size_t)(slash - p), want))
		return false;
	*cap = p + 1;
	*cap_len = (size_t)(slash - p - 1);
	return true;
}

/* Optional selectors must name the capability's identity. Returns 0 or
 * answers the request and returns -1. An identity that is gone is left to
 * the service to report. */
static int check_selectors(struct compat_conn *c, const char *name)
{
	const struct identity *id = config_find_identity(service_config(c->cp->s), name);

	static const struct {
		const char *param;
		enum azure_selector which;
	} sel[] = {
	    {"client_id", SELECT_CLIENT_ID},	{"clientid", SELECT_CLIENT_ID},
	    {"principal_id", SELECT_OBJECT_ID}, {"object_id", SELECT_OBJECT_ID},
	    {"mi_res_id", SELECT_RESOURCE_ID},	{"msi_res_id", SELECT_RESOURCE_ID},
	};
	for (size_t i = 0; id && i < sizeof(sel) / sizeof(sel[0]); i++) {
		const char *have = identity_selector(id, sel[i].which);
		char *v = NULL;
		int r = http_in_param(&c->b->req, sel[i].param, SELECTOR_MAX, &v);
		if (r == -ENOENT)
			continue;
		if (r < 0) {
			respond_error(c, 400, "invalid_request", "the %s parameter is malformed",
				      sel[i].param);
			return -1;
		}
		if (!have || strcasecmp(v, have) != 0) {
			respond_error(c, 400, "invalid_request",
				      "%s=%s does not name identity '%s', the one this capability "
				      "is for: drop the parameter (or AZURE_CLIENT_ID), or get a "
				      "capability for the identity you mean",
				      sel[i].param, v, id->name);
			free(v);
			return -1;
		}
		free(v);
	}
	return 0;
}

/* The capability presented; NULL (and the request answered) if there is
 * none usable. Where it may be depends on the shape: the App Service shapes
 * need their header, since they are not held to Metadata: true and a bare
 * URL must not be enough; the shapes that need Metadata: true take it from
 * the path (the form's only place) or, for IMDS, X-IDENTITY-HEADER. Every
 * copy sent (the path, X-IDENTITY-HEADER, secret) must be the same. */
static const char *presented(struct compat_conn *c, enum shape shape, const char *path_cap,
			     size_t path_cap_len, size_t *len)
{
	static const struct {
		int h;
		const char *name;
	} carriers[] = {{HTTP_H_IDENTITY, "X-IDENTITY-HEADER"}, {HTTP_H_SECRET, "secret"}};
	const struct http_in *q = &c->b->req;
	int need = shape == SHAPE_APPSVC_2019	? HTTP_H_IDENTITY
		   : shape == SHAPE_APPSVC_2017 ? HTTP_H_SECRET
						: -1;
	const char *cap = path_cap;
	size_t cap_len = path_cap_len;

	for (size_t i = 0; i < sizeof(carriers) / sizeof(carriers[0]); i++) {
		int h = carriers[i].h;
		if (q->h[h].count > 1) {
			respond_error(c, 400, "invalid_request",
				      "the %s header appears more than once", carriers[i].name);
			return NULL;
		}
		if (!q->h[h].count)
			continue;
		if (cap && (q->h[h].len != cap_len || memcmp(q->h[h].value, cap, cap_len) != 0)) {
			respond_error(c, 400, "invalid_request",
				      "the request carries different capabilities (path, "
				      "X-IDENTITY-HEADER, secret): send one");
			return NULL;
		}
		cap = q->h[h].value;
		cap_len = q->h[h].len;
	}
	if (need >= 0 && !q->h[need].count) {
		respond_error(c, 401, "unauthorized",
			      "no %s header: run the program under 'batchtok exec --compat -i "
			      "IDENTITY', which sets %s",
			      need == HTTP_H_SECRET ? "secret" : "X-IDENTITY-HEADER",
			      need == HTTP_H_SECRET ? "MSI_SECRET" : "IDENTITY_HEADER");
		return NULL;
	}
	if (shape == SHAPE_FORM && !path_cap) {
		respond_error(c, 401, "unauthorized",
			      "no capability in the path: run the program under 'batchtok exec "
			      "--compat -i IDENTITY', whose MSI_ENDPOINT carries one");
		return NULL;
	}
	if (!cap) {
		respond_error(
		    c, 401, "unauthorized",
		    "no capability: put it in the path (BASE/CAPABILITY/metadata/identity/"
		    "oauth2/token) or send X-IDENTITY-HEADER; 'batchtok exec --compat -i "
		    "IDENTITY' sets IDENTITY_HEADER");
		return NULL;
	}
	*len = cap_len;
	return cap;
}

/* Asks the service for the token, as the capability's user: the same
 * lookup, access check and resource rules as the Unix socket's. */
static void ask(struct compat_conn *c, const struct capability *cap)
{
	struct peer who = {.uid = cap->uid,
			   .gid = cap->gid,
			   .pid = -1,
			   .groups = cap->groups,
			   .n_groups = cap->n_groups};

	free(c->identity);
	if (!(c->identity = strdup(cap->identity))) {
		respond_error(c, 500, "internal_error", "out of memory");
		return;
	}
	c->q.fn = on_answer;
	c->waiting = true;
	/* May answer before it returns. */
	service_get_token(c->cp->s, &who, cap->identity, c->resource, NULL, 0, false, &c->q);
}

/* The Host header, when there is one (HTTP/1.0 clients may send none; a
 * browser always does), must name loopback and this port: a web page that
 * has rebound its own name to 127.0.0.1 sends that name. Returns 0, or
 * answers the request and returns -1. */
static int check_host(struct compat_conn *c)
{
	if (http_in_host_is_loopback(&c->b->req, c->cp->port))
		return 0;
	if (ratelimit_log_uid(LOG_LIMIT_DENIAL, owner(c)))
		log_msg(LOG_WARNING, LOG_CTX_NONE,
			"compat endpoint: refused a request from %s (uid %ld) naming another "
			"host: a web page's DNS rebinding looks like this",
			c->peer, owner(c));
	respond_error(c, 400, "bad_request",
		      "the Host header must name this endpoint (127.0.0.1:%u, localhost:%u): "
		      "only local programs may use it",
		      c->cp->port, c->cp->port);
	return -1;
}

/* Checks what IMDS checks: Metadata: true, and no proxy in between.
 * Returns 0, or answers the request and returns -1. */
static int check_metadata(struct compat_conn *c)
{
	const struct http_in *q = &c->b->req;

	if (q->h[HTTP_H_METADATA].count != 1 || strcmp(q->h[HTTP_H_METADATA].value, "true") != 0)
		respond_error(c, 400, "bad_request",
			      "Required metadata header not specified: send Metadata: true");
	else if (q->h[HTTP_H_FORWARDED_FOR].count)
		respond_error(c, 400, "bad_request",
			      "proxied requests (X-Forwarded-For) are refused");
	else
		return 0;
	return -1;
}

/* The shape of a POST to /msi/token: Cloud Shell's, and the VM extension's
 * that msrestazure (and so az CLI) sends when MSI_ENDPOINT is set outside
 * App Service. Its parameters are in the body. Returns 0, or answers the
 * request and returns -1. */
static int read_form_shape(struct compat_conn *c)
{
	if (http_in_has_query(&c->b->req)) {
		respond_error(c, 400, "invalid_request",
			      "a POST carries its parameters in its form body, not in the query");
		return -1;
	}
	if (!http_in_body_is_form(&c->b->req)) {
		respond_error(c, 415, "invalid_request",
			      "a POST's body must be a form: Content-Type: "
			      "application/x-www-form-urlencoded");
		return -1;
	}
	return check_metadata(c);
}

/* The request's shape, from its method, path, api-version and headers, and
 * the capability when the path carries one. Returns 0, or answers the
 * request and returns -1. */
static int read_shape(struct compat_conn *c, enum shape *shape, const char **path_cap,
		      size_t *path_cap_len)
{
	unsigned method = c->b->req.method;
	const char *path;
	size_t plen;
	char *api = NULL;
	int r = -1;

	if (method != HTTP_GET && method != HTTP_POST) {
		respond_error(c, 405, "invalid_request",
			      "only GET is served here, and POST with a form to " APPSVC_PATH);
		return -1;
	}
	if (check_host(c) < 0)
		return -1;
	if (http_in_path(&c->b->req, &path, &plen) < 0) {
		respond_error(c, 400, "invalid_request", "the request target is not a path");
		return -1;
	}
	if (path_names(path, plen, APPSVC_PATH, path_cap, path_cap_len)) {
		if (method == HTTP_POST) {
			*shape = SHAPE_FORM;
			return read_form_shape(c);
		}
		if (http_in_param(&c->b->req, "api-version", 32, &api) < 0)
			api = NULL;
		if (api && strcmp(api, "2019-08-01") == 0)
			*shape = SHAPE_APPSVC_2019, r = 0;
		else if (api && strcmp(api, "2017-09-01") == 0)
			*shape = SHAPE_APPSVC_2017, r = 0;
		else
			respond_error(c, 400, "invalid_request",
				      "api-version must be 2019-08-01 (X-IDENTITY-HEADER) or "
				      "2017-09-01 (secret)");
		free(api);
		return r;
	}
	if (!path_names(path, plen, IMDS_PATH, path_cap, path_cap_len)) {
		respond_error(c, 404, "not_found",
			      "not a managed-identity token path: use " APPSVC_PATH
			      " or " IMDS_PATH);
		return -1;
	}
	if (method == HTTP_POST) {
		respond_error(c, 405, "invalid_request",
			      "IMDS's path takes GET; POST a form to " APPSVC_PATH " instead");
		return -1;
	}
	*shape = SHAPE_IMDS;
	if (http_in_param(&c->b->req, "api-version", 32, &api) < 0) {
		respond_error(c, 400, "invalid_request", "api-version is required");
		return -1;
	}
	free(api);
	return check_metadata(c);
}

/* The live capability the request presents, issued to the uid that owns
 * the connection; NULL (and the request answered) otherwise. */
static const struct capability *check_capability(struct compat_conn *c, enum shape shape,
						 const char *path_cap, size_t path_cap_len)
{
	int64_t now = clock_wall_now();
	const struct capability *cap;
	const char *text;
	size_t len;
	int r;

	if (!(text = presented(c, shape, path_cap, path_cap_len, &len)))
		return NULL;
	if ((r = capability_find(&c->cp->caps, text, len, now, &cap)) == -EKEYEXPIRED) {
		respond_error(c, 401, "unauthorized",
			      "the capability expired (compat_lifetime): run the program under "
			      "'batchtok exec --compat' again, which renews it while the program "
			      "runs");
		return NULL;
	}
	if (r < 0) {
		if (ratelimit_log_uid(LOG_LIMIT_CAPABILITY, owner(c)))
			log_msg(LOG_WARNING, LOG_CTX_NONE,
				"compat endpoint: unknown capability from %s (uid %ld)", c->peer,
				c->owner_err ? -1L : (long)c->uid);
		respond_error(c, 401, "unauthorized",
			      "the capability is not one this batchtokd issued, or it was given "
			      "back when its program ended (or batchtokd restarted): run the "
			      "program under 'batchtok exec --compat' again");
		return NULL;
	}
	if (c->owner_err || c->uid != cap->uid) {
		bool say = ratelimit_log_uid(LOG_LIMIT_DENIAL, owner(c));
		if (say && c->owner_err)
			log_msg(LOG_WARNING, LOG_CTX_NONE,
				"compat endpoint: cannot tell who owns the connection from %s: %s",
				c->peer, strerror(-c->owner_err));
		else if (say)
			log_msg(
			    LOG_WARNING, LOG_CTX_NONE,
			    "compat endpoint: uid %u presented a capability of uid %u (from %s)",
			    (unsigned)c->uid, (unsigned)cap->uid, c->peer);
		respond_error(c, 403, "forbidden",
			      "this capability was issued to another user: get your own with "
			      "'batchtok exec --compat'");
		return NULL;
	}
	return cap;
}

static void handle_request(struct compat_conn *c)
{
	const struct capability *cap;
	const char *path_cap;
	size_t path_cap_len;
	enum shape shape;
	int r;

	if (read_shape(c, &shape, &path_cap, &path_cap_len) < 0 ||
	    !(cap = check_capability(c, shape, path_cap, path_cap_len)) ||
	    check_selectors(c, cap->identity) < 0)
		return;
	r = http_in_param(&c->b->req, "resource", BT_RESOURCE_MAX, &c->resource);
	if (r < 0) {
		respond_error(c, 400, "invalid_request",
			      r == -ENOENT ? "resource is required, for example "
					     "resource=https://batch.core.windows.net/"
					   : "the resource parameter is malformed or too long");
		return;
	}
	ask(c, cap);
}

/* Parses what has been read; answers one request at a time. */
static void conn_process(struct compat_conn *c)
{
	while (!c->closing && !c->busy && c->in_off < c->in_len) {
		size_t used = http_in_feed(&c->b->req, c->b->in + c->in_off, c->in_len - c->in_off);
		c->in_off += used;
		c->partial += used;
		if (c->b->req.status) {
			c->busy = true;
			c->keep_alive = false;
			respond_error(c, c->b->req.status, "invalid_request", "%s",
				      c->b->req.error);
			return;
		}
		if (c->b->req.complete) {
			c->partial = 0;
			c->busy = true;
			c->keep_alive = c->b->req.keep_alive;
			uv_timer_stop(&c->timer);
			handle_request(c);
			return;
		}
	}
	if (c->closing || c->busy)
		return;
	c->in_off = c->in_len = 0;
	if (c->partial == 0)
		release_input(c); /* between requests */
	conn_resume(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct compat_conn *c = h->data;

	(void)suggested;
	if (!c->b && (c->b = malloc(sizeof(*c->b))))
		http_in_init(&c->b->req);
	/* Reading resumes only once everything read before is parsed. No
	 * buffer: on_read() hears UV_ENOBUFS and closes. */
	*buf = c->b ? uv_buf_init(c->b->in, sizeof(c->b->in)) : uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct compat_conn *c = s->data;

	(void)buf;
	if (n < 0) {
		conn_close(c);
		return;
	}
	if (n == 0 || c->lingering)
		return;
	c->in_off = 0;
	c->in_len = (size_t)n;
	/* While a request is answered nothing more is read; the rest of this
	 * read waits in c->b->in. */
	uv_read_stop(s);
	c->reading = false;
	conn_process(c);
}

/* Resumes reading after a response, through conn_process(). */
static void conn_resume(struct compat_conn *c)
{
	if (!c->closing && !c->busy && !c->reading && c->in_off >= c->in_len) {
		c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
		if (!c->reading)
			conn_close(c);
	}
}

/* Writes "HOST:PORT" into buf; returns the port. */
static unsigned describe(const struct sockaddr_storage *ss, char *buf, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(buf, n, "%s:%u", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(buf, n, "[%s]:%u", host, port);
	} else {
		snprintf(buf, n, "?");
	}
	return port;
}

/* Counts c against its owner's max_clients_per_uid (connections whose
 * owner is unknown share one count). Over it, the client is told with a 503
 * before it asks, and -EDQUOT returned; -ENOMEM closes it. */
static int count_owner(struct compat_conn *c)
{
	struct compat *cp = c->cp;
	uint32_t max = service_config(cp->s)->max_clients_per_uid;
	uid_t who = c->owner_err ? (uid_t)-1 : c->uid;
	int r = uidcount_add(&cp->per_uid, who, max);

	if (r == 0) {
		c->counted = true;
		c->counted_uid = who;
		return 0;
	}
	if (r == -ENOMEM) {
		conn_close(c);
		return r;
	}
	if (ratelimit_log_uid(LOG_LIMIT_CLIENT, owner(c)))
		log_msg(LOG_WARNING,
			&(struct log_ctx){.uid = c->owner_err ? -1 : (long)c->uid, .pid = -1},
			"compat endpoint: refused a connection from %s (uid %ld): it has "
			"max_clients_per_uid (%u) already",
			c->peer, c->owner_err ? -1L : (long)c->uid, max);
	/* Answered at once and closed, lingering (conn_linger()) so that the
	 * request the client sends meanwhile does not reset the connection.
	 * A lingering refusal takes no slot of max_clients, and at most
	 * REFUSING_MAX linger at once: past that they are closed unanswered. */
	cp->n_conns--;
	cp->n_refusing++;
	c->refusing = true;
	if (cp->n_refusing > REFUSING_MAX) {
		conn_close(c);
		return r;
	}
	c->busy = true;
	c->keep_alive = false;
	uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
	respond_error(c, 503, "service_unavailable",
		      "uid %ld has max_clients_per_uid (%u) connections to the compat endpoint "
		      "already: close idle ones, or an administrator can raise "
		      "max_clients_per_uid",
		      c->owner_err ? -1L : (long)c->uid, max);
	return r;
}

static void on_connection(uv_stream_t *server, int status)
{
	struct compat *cp = server->data;
	struct sockaddr_storage peer, local;
	int plen = sizeof(peer), llen = sizeof(local);
	struct compat_conn *c;

	if (status < 0) {
		log_warning("compat endpoint: accept failed: %s", uv_strerror(status));
		return;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		log_error("compat endpoint: out of memory accepting a connection");
		return;
	}
	c->cp = cp;
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	list_add_tail(&cp->conns, &c->node);
	cp->n_conns++;
	counters.connections[LISTEN_COMPAT]++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	counters.accepted[LISTEN_COMPAT]++;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) < 0 ||
	    uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &llen) < 0) {
		conn_close(c);
		return;
	}
	describe(&peer, c->peer, sizeof(c->peer));
	c->owner_err = sockdiag_tcp_owner(cp->nl_fd, &peer, &local, &c->uid);
	/* A user's own cap first: one over it takes no slot of the others. */
	if (count_owner(c) < 0)
		return;
	if (cp->n_conns > service_config(cp->s)->max_clients) {
		if (ratelimit_log_uid(LOG_LIMIT_CLIENT, owner(c)))
			log_warning(
			    "compat endpoint: max_clients (%u) reached; closing a new connection",
			    service_config(cp->s)->max_clients);
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, idle_ms(cp), 0);
	conn_process(c);
}

int compat_new(uv_loop_t *loop, struct service *s, struct compat **ret)
{
	const struct config *cfg = service_config(s);
	const struct sockaddr_storage *addr = &cfg->compat_addr;
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	struct compat *cp = calloc(1, sizeof(*cp));
	int r;

	if (!cp)
		return -ENOMEM;
	cp->s = s;
	list_init(&cp->conns);
	capability_store_init(&cp->caps);
	if ((cp->nl_fd = sockdiag_open()) < 0) {
		r = cp->nl_fd;
		log_error("compat endpoint: cannot open a sock_diag netlink socket (%s): it is "
			  "needed to tell who connects; allow AF_NETLINK, or unset "
			  "compat_endpoint",
			  strerror(-r));
		free(cp);
		return r;
	}
	uv_tcp_init(loop, &cp->listener);
	cp->listener.data = cp;
	if ((r = uv_tcp_bind(&cp->listener, (const struct sockaddr *)addr, 0)) < 0 ||
	    (r = uv_listen((uv_stream_t *)&cp->listener, SOMAXCONN, on_connection)) < 0 ||
	    (r = uv_tcp_getsockname(&cp->listener, (struct sockaddr *)&bound, &blen)) < 0) {
		log_error("compat endpoint: cannot listen on %s: %s", cfg->compat_endpoint,
			  uv_strerror(r));
		close(cp->nl_fd);
		cp->nl_fd = -1;
		uv_close((uv_handle_t *)&cp->listener, free_compat);
		return r;
	}
	cp->port = describe(&bound, cp->url + 7, sizeof(cp->url) - 7);
	memcpy(cp->url, "http://", 7);
	log_info("compat endpoint listening on %s", cp->url);
	*ret = cp;
	return 0;
}

const char *compat_url(const struct compat *cp)
{
	return cp->url;
}

unsigned compat_client_count(const struct compat *cp)
{
	return cp ? cp->n_conns : 0;
}

size_t compat_capability_count(struct compat *cp)
{
	return cp ? capability_count(&cp->caps, clock_wall_now()) : 0;
}

int compat_grant(struct compat *cp, const struct peer *p, const char *identity,
		 char text[CAPABILITY_TEXT_SIZE], int64_t *expires_on)
{
	const struct capability *cap;
	int r;

	r = capability_issue(&cp->caps, p->uid, p->gid, p->groups, p->n_groups, identity,
			     clock_wall_now(), service_config(cp->s)->compat_lifetime, text, &cap);
	if (r == 0)
		*expires_on = cap->expires_on;
	return r;
}

/* The daemon is stopping: a client waiting for a token is told, as far as
 * its socket takes the answer now. */
static void tell_stopping(struct compat_conn *c)
{
	char *body = error_body("service_unavailable",
				"batchtokd is stopping: ask again once it is running");
	uv_buf_t buf;

	c->keep_alive = false;
	if (!body || format_response(c, 503, body) < 0)
		return;
	buf = uv_buf_init(c->out, (unsigned)c->out_len);
	(void)uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
	forget_response(c);
}

int compat_renew(struct compat *cp, const struct peer *p, const char *text, int64_t *expires_on)
{
	return capability_renew(&cp->caps, text, strlen(text), p->uid, clock_wall_now(),
				service_config(cp->s)->compat_lifetime, expires_on);
}

int compat_revoke(struct compat *cp, const struct peer *p, const char *text)
{
	return capability_revoke(&cp->caps, text, strlen(text), p->uid, clock_wall_now());
}

void compat_close(struct compat *cp)
{
	struct compat_conn *c;

	if (!cp)
		return;
	while ((c = list_first(&cp->conns, struct compat_conn, node))) {
		if (c->waiting && !c->out)
			tell_stopping(c);
		conn_close(c);
	}
	capability_store_clear(&cp->caps);
	close(cp->nl_fd);
	uv_close((uv_handle_t *)&cp->listener, free_compat);
}
