/* http.h - HTTP transfers with libcurl's multi interface on the libuv loop.
 *
 * Knows nothing of Entra ID: it moves bytes. At most `concurrency` transfers
 * run at once, the rest wait in order. Connections are reused through the
 * multi handle's cache. HTTPS only (but for the metadata service), no redirects, TLS always
 * verified, explicit timeouts, a cap on response size. curl's error codes are translated here and
 * nowhere else. */
#ifndef BATCHTOK_DAEMON_HTTP_H
#define BATCHTOK_DAEMON_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "secmem.h"

/* Largest response body kept; a token response is a few KiB. */
#define HTTP_RESPONSE_MAX (256 * 1024)

struct http_request {
	char *url;		/* owned */
	struct secstr body;	/* POST body (may hold a secret); empty: GET */
	const char *headers[4]; /* static "Name: value" strings, NULL-terminated */
	/* The instance metadata service: plain http:// allowed and never
	 * through a proxy (IMDS is link-local and refuses proxied requests). */
	bool direct;
};

void http_request_clear(struct http_request *r);

enum http_failure {
	HTTP_OK = 0,   /* a status line was received */
	HTTP_TIMEOUT,  /* connect or total timeout */
	HTTP_NETWORK,  /* DNS, connect, reset */
	HTTP_TLS,      /* handshake or verification */
	HTTP_TOO_BIG,  /* the body passed HTTP_RESPONSE_MAX */
	HTTP_INTERNAL, /* setup failed on our side */
};

struct http_response {
	enum http_failure failure;
	long status;	  /* HTTP status when failure == HTTP_OK */
	const char *body; /* NUL-terminated, valid during the callback */
	size_t body_len;
	uint32_t retry_after; /* seconds from Retry-After, 0 if none */
	char error[256];      /* what went wrong, for failure != HTTP_OK */
};

struct http_transfer;
typedef void (*http_done_fn)(void *arg, const struct http_response *resp);

struct http_options {
	uint32_t concurrency;
	uint32_t timeout;	  /* seconds for a whole transfer */
	uint32_t connect_timeout; /* seconds */
	const char *ca_file;	  /* added to the system's CAs */
	const char *proxy;
};

struct http;

/* Creates the transfer engine on loop. Options are copied. */
int http_new(uv_loop_t *loop, const struct http_options *opts, struct http **ret);
/* Applies new options (reload); running transfers keep theirs. */
int http_configure(struct http *h, const struct http_options *opts);
/* Takes ownership of req (cleared on return, also on failure). done is
 * called once, from the loop, never from inside http_submit(). */
int http_submit(struct http *h, struct http_request *req, http_done_fn done, void *arg,
		struct http_transfer **ret);
/* Stops a transfer; its done function is not called. */
void http_cancel(struct http_transfer *t);
/* Cancels everything and closes the handles; free happens in their close
 * callbacks, so run the loop afterwards until it has nothing left. */
void http_close(struct http *h);

#endif
