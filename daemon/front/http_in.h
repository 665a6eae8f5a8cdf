/* http_in.h - HTTP/1.1 requests read by the compat endpoint.
 *
 * http-parser (libhttp-parser) does the parsing; this module keeps what the
 * endpoint needs of each request (method, request target, the few headers
 * the managed-identity protocols use) and enforces limits on everything a
 * client can send: the target, the head as a whole, the values kept, and the
 * body, which only a POST may have (the Cloud Shell and VM-extension shape:
 * a form of a few parameters, with a Content-Length). A connection may carry
 * several requests (keep-alive); the parser stops after each whole one until
 * http_in_next(). */
#ifndef BATCHTOK_DAEMON_HTTP_IN_H
#define BATCHTOK_DAEMON_HTTP_IN_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

#define HTTP_TARGET_MAX	    4096
#define HTTP_HEAD_MAX	    16384 /* request line and headers together */
#define HTTP_VALUE_MAX	    512	  /* a kept header's value */
#define HTTP_FIELD_NAME_MAX 32	  /* longer header names are not ones we keep */
#define HTTP_BODY_MAX	    4096  /* a POST's form body */

/* The headers kept. */
enum http_header {
	HTTP_H_IDENTITY,      /* X-IDENTITY-HEADER (App Service 2019-08-01) */
	HTTP_H_SECRET,	      /* secret (App Service 2017-09-01) */
	HTTP_H_METADATA,      /* Metadata (IMDS) */
	HTTP_H_FORWARDED_FOR, /* X-Forwarded-For: IMDS refuses proxied requests */
	HTTP_H_CONTENT_TYPE,  /* a POST's form must say it is one */
	HTTP_H_HOST,	      /* must name loopback: no DNS rebinding */
	HTTP_H_COUNT,
};

struct http_in {
	http_parser parser;
	char target[HTTP_TARGET_MAX + 1];
	size_t target_len;
	struct http_parser_url url; /* the target's parts, once it is whole */
	bool url_ok;
	char field[HTTP_FIELD_NAME_MAX + 1];
	size_t field_len;
	bool field_long;
	bool in_value;
	int cur; /* the kept header being read, or -1 */
	struct {
		char value[HTTP_VALUE_MAX + 1]; /* may hold a capability: wiped */
		size_t len;
		unsigned count; /* how many times it appeared */
	} h[HTTP_H_COUNT];
	size_t head_len;
	char body[HTTP_BODY_MAX + 1];
	size_t body_len;
	unsigned method; /* enum http_method */
	bool keep_alive;
	bool complete; /* a whole request is here */
	int status;    /* an HTTP error status when the request is refused */
	const char *error;
};

void http_in_init(struct http_in *r);
/* Parses up to len bytes and returns how many were used. It stops early
 * after a whole request (r->complete) or at an error (r->status set, with
 * r->error saying what is wrong). */
size_t http_in_feed(struct http_in *r, const char *data, size_t len);
/* Wipes the last request and readies the parser for the next one. */
void http_in_next(struct http_in *r);
/* Wipes everything kept. */
void http_in_wipe(struct http_in *r);

/* The request target's path (not NUL-terminated): 0 or -EINVAL. */
int http_in_path(const struct http_in *r, const char **path, size_t *len);
/* Whether the request has a query string (a '?' in its target). */
bool http_in_has_query(const struct http_in *r);
/* Whether the body is a form: Content-Type application/x-www-form-urlencoded,
 * parameters after a ';' allowed. */
bool http_in_body_is_form(const struct http_in *r);
/* Whether the Host header, if there is one (HTTP/1.0 clients may send
 * none; a browser always does), names loopback (localhost, 127.0.0.0/8,
 * [::1]) and port, or no port: a web page that rebound its own name to
 * 127.0.0.1 sends that name. */
bool http_in_host_is_loopback(const struct http_in *r, unsigned port);
/* The request's parameter name, decoded (%XX, '+'), in *ret (free()): from
 * the query of a GET, from the form body of a POST. Returns 0, -ENOENT if
 * absent, -EINVAL if it appears twice or decodes to control characters,
 * -E2BIG beyond max bytes, -ENOMEM. */
int http_in_param(const struct http_in *r, const char *name, size_t max, char **ret);

#endif
