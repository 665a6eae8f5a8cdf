/* http_in.c - the compat endpoint's requests, via http-parser. */
#include "http_in.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>

static const char *const header_names[HTTP_H_COUNT] = {
    [HTTP_H_IDENTITY] = "x-identity-header", [HTTP_H_SECRET] = "secret",
    [HTTP_H_METADATA] = "metadata",	     [HTTP_H_FORWARDED_FOR] = "x-forwarded-for",
    [HTTP_H_CONTENT_TYPE] = "content-type",  [HTTP_H_HOST] = "host",
};

static int refuse(struct http_in *r, int status, const char *why)
{
	if (!r->status) {
		r->status = status;
		r->error = why;
	}
	return -1;
}

/* Every byte of the head counts against HTTP_HEAD_MAX. */
static int count(struct http_in *r, size_t n)
{
	r->head_len += n;
	return r->head_len > HTTP_HEAD_MAX ? refuse(r, 431, "the request's headers are too large")
					   : 0;
}

static int on_message_begin(http_parser *p)
{
	struct http_in *r = p->data;

	r->target_len = 0;
	r->url_ok = false;
	r->field_len = 0;
	r->field_long = false;
	r->in_value = false;
	r->cur = -1;
	r->head_len = 0;
	OPENSSL_cleanse(r->body, r->body_len);
	r->body_len = 0;
	for (int i = 0; i < HTTP_H_COUNT; i++) {
		OPENSSL_cleanse(r->h[i].value, r->h[i].len);
		r->h[i].len = 0;
		r->h[i].count = 0;
	}
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct http_in *r = p->data;

	if (count(r, n) < 0)
		return -1;
	if (n > HTTP_TARGET_MAX - r->target_len)
		return refuse(r, 414, "the request target is too long");
	memcpy(r->target + r->target_len, at, n);
	r->target_len += n;
	r->target[r->target_len] = '\0';
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct http_in *r = p->data;

	if (count(r, n) < 0)
		return -1;
	if (r->in_value) {
		r->in_value = false;
		r->field_len = 0;
		r->field_long = false;
	}
	if (n > HTTP_FIELD_NAME_MAX - r->field_len) {
		r->field_long = true;
		return 0;
	}
	memcpy(r->field + r->field_len, at, n);
	r->field_len += n;
	r->field[r->field_len] = '\0';
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct http_in *r = p->data;

	if (count(r, n) < 0)
		return -1;
	if (!r->in_value) {
		r->in_value = true;
		r->cur = -1;
		for (int i = 0; !r->field_long && i < HTTP_H_COUNT; i++)
			if (strcasecmp(r->field, header_names[i]) == 0)
				r->cur = i;
		if (r->cur >= 0)
			r->h[r->cur].count++;
	}
	if (r->cur < 0 || r->h[r->cur].count > 1)
		return 0;
	if (n > HTTP_VALUE_MAX - r->h[r->cur].len)
		return refuse(r, 431, "a header value is too long");
	memcpy(r->h[r->cur].value + r->h[r->cur].len, at, n);
	r->h[r->cur].len += n;
	r->h[r->cur].value[r->h[r->cur].len] = '\0';
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_in *r = p->data;

	r->method = p->method;
	r->keep_alive = http_should_keep_alive(p) != 0;
	http_parser_url_init(&r->url);
	r->url_ok = http_parser_parse_url(r->target, r->target_len, 0, &r->url) == 0;
	if (p->upgrade)
		return refuse(r, 400, "protocol upgrades are not supported");
	/* Only a POST has a body: a small form, whose length is said up
	 * front so that too much is refused before it is read. */
	if (p->method != HTTP_POST) {
		if ((p->flags & F_CHUNKED) ||
		    (p->content_length > 0 && p->content_length != ULLONG_MAX))
			return refuse(r, 413, "only a POST may have a body");
		return 0;
	}
	if ((p->flags & F_CHUNKED) || p->content_length == ULLONG_MAX)
		return refuse(r, 411, "a POST needs a Content-Length");
	if (p->content_length > HTTP_BODY_MAX)
		return refuse(r, 413, "the request's body is too large");
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct http_in *r = p->data;

	/* Bounded by the Content-Length checked above; kept in case. */
	if (n > HTTP_BODY_MAX - r->body_len)
		return refuse(r, 413, "the request's body is too large");
	memcpy(r->body + r->body_len, at, n);
	r->body_len += n;
	r->body[r->body_len] = '\0';
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_in *r = p->data;

	r->complete = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http_in_init(struct http_in *r)
{
	memset(r, 0, sizeof(*r));
	http_parser_init(&r->parser, HTTP_REQUEST);
	r->parser.data = r;
	r->cur = -1;
}

size_t http_in_feed(struct http_in *r, const char *data, size_t len)
{
	size_t n;

	if (r->complete || r->status)
		return 0;
	n = http_parser_execute(&r->parser, &settings, data, len);
	if (r->complete)
		return n;
	if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK)
		refuse(r, 400, http_errno_description(HTTP_PARSER_ERRNO(&r->parser)));
	return n;
}

void http_in_next(struct http_in *r)
{
	on_message_begin(&r->parser);
	r->complete = false;
	http_parser_pause(&r->parser, 0);
}

void http_in_wipe(struct http_in *r)
{
	OPENSSL_cleanse(r, sizeof(*r));
}

int http_in_path(const struct http_in *r, const char **path, size_t *len)
{
	if (!r->url_ok || !(r->url.field_set & (1 << UF_PATH)))
		return -EINVAL;
	*path = r->target + r->url.field_data[UF_PATH].off;
	*len = r->url.field_data[UF_PATH].len;
	return 0;
}

/* Decodes one application/x-www-form-urlencoded value. */
static int decode(const char *v, size_t n, size_t max, char **ret)
{
	char *plus, *dec, *out;
	int dlen;

	if (n > 3 * max)
		return -E2BIG;
	if (memchr(v, '\0', n)) /* a body may hold one; a target may not */
		return -EINVAL;
	if (!(plus = strndup(v, n)))
		return -ENOMEM;
	for (char *c = plus; *c; c++)
		if (*c == '+')
			*c = ' ';
	dec = curl_easy_unescape(NULL, plus, (int)n, &dlen);
	free(plus);
	if (!dec)
		return -ENOMEM;
	for (int i = 0; i < dlen; i++)
		if ((unsigned char)dec[i] < 0x20 || dec[i] == 0x7f) {
			curl_free(dec);
			return -EINVAL;
		}
	if ((size_t)dlen > max) {
		curl_free(dec);
		return -E2BIG;
	}
	out = strdup(dec);
	curl_free(dec);
	if (!out)
		return -ENOMEM;
	*ret = out;
	return 0;
}

bool http_in_has_query(const struct http_in *r)
{
	return r->url_ok && (r->url.field_set & (1 << UF_QUERY));
}

bool http_in_body_is_form(const struct http_in *r)
{
	static const char form[] = "application/x-www-form-urlencoded";
	const char *v = r->h[HTTP_H_CONTENT_TYPE].value;
	size_t n = strlen(form);

	if (r->h[HTTP_H_CONTENT_TYPE].count != 1 || strncasecmp(v, form, n) != 0)
		return false;
	v += n;
	v += strspn(v, " \t");
	return *v == '\0' || *v == ';';
}

int http_in_param(const struct http_in *r, const char *name, size_t max, char **ret)
{
	const char *q, *end, *found = NULL;
	size_t nlen = strlen(name), found_len = 0;

	if (r->method == HTTP_POST) {
		q = r->body;
		end = q + r->body_len;
	} else if (!r->url_ok) {
		return -EINVAL;
	} else if (!(r->url.field_set & (1 << UF_QUERY))) {
		return -ENOENT;
	} else {
		q = r->target + r->url.field_data[UF_QUERY].off;
		end = q + r->url.field_data[UF_QUERY].len;
	}
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pair_end = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pair_end - q));
		const char *key_end = eq ? eq : pair_end;
		if ((size_t)(key_end - q) == nlen && memcmp(q, name, nlen) == 0) {
			if (found)
				return -EINVAL;
			found = eq ? eq + 1 : pair_end;
			found_len = (size_t)(pair_end - found);
		}
		q = amp ? amp + 1 : end;
	}
	if (!found)
		return -ENOENT;
	return decode(found, found_len, max, ret);
}

/* Whether host (len bytes) is a name of this host's loopback: localhost,
 * 127.0.0.0/8 or [::1]. */
static bool loopback_name(const char *host, size_t len)
{
	char ip[INET_ADDRSTRLEN];
	struct in_addr a;

	if ((len == 9 && strncasecmp(host, "localhost", 9) == 0) ||
	    (len == 5 && memcmp(host, "[::1]", 5) == 0))
		return true;
	if (len >= sizeof(ip))
		return false;
	memcpy(ip, host, len);
	ip[len] = '\0';
	return inet_pton(AF_INET, ip, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

bool http_in_host_is_loopback(const struct http_in *r, unsigned port)
{
	const char *v = r->h[HTTP_H_HOST].value, *end, *p;
	char want[8];

	if (!r->h[HTTP_H_HOST].count)
		return true;
	end = v[0] == '[' ? strchr(v, ']') : NULL;
	end = end ? end + 1 : v + strcspn(v, ":");
	p = *end == ':' ? end + 1 : NULL;
	snprintf(want, sizeof(want), "%u", port);
	return r->h[HTTP_H_HOST].count == 1 && loopback_name(v, (size_t)(end - v)) &&
	       (*end == '\0' || (p && strcmp(p, want) == 0));
}
