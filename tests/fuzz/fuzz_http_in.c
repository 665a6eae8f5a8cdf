/* fuzz_http_in.c - libFuzzer target for the compat endpoint's request
 * reader: any bytes, cut at a point the input chooses, as a client could
 * send them, several requests per connection. Every kept value must stay
 * inside its limit and be NUL-terminated, only a POST has a body;
 * parameters (of the query, or a POST's form) decode without control
 * characters. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/front/http_in.h"

static void check(const struct http_in *r)
{
	static const char *const params[] = {"resource", "api-version", "client_id", "x"};
	const char *path;
	size_t plen;

	if (r->target_len > HTTP_TARGET_MAX || r->target[r->target_len] != '\0')
		abort();
	for (int i = 0; i < HTTP_H_COUNT; i++)
		if (r->h[i].len > HTTP_VALUE_MAX || r->h[i].value[r->h[i].len] != '\0')
			abort();
	if (http_in_path(r, &path, &plen) == 0 && plen > r->target_len)
		abort();
	if (r->body_len > HTTP_BODY_MAX || r->body[r->body_len] != '\0' ||
	    (r->body_len && r->method != HTTP_POST))
		abort();
	(void)http_in_body_is_form(r);
	(void)http_in_has_query(r);
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		char *v = NULL;
		if (http_in_param(r, params[i], 256, &v) == 0) {
			for (const unsigned char *p = (const unsigned char *)v; *p; p++)
				if (*p < 0x20 || *p == 0x7f)
					abort();
			if (strlen(v) > 256)
				abort();
			free(v);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_in r;
	size_t cut = size ? data[0] % (size + 1) : 0, off = 0;
	int requests = 0;

	http_in_init(&r);
	while (off < size && requests < 16) {
		size_t end = off < cut ? cut : size;
		size_t n = http_in_feed(&r, (const char *)data + off, end - off);
		off += n;
		if (r.status)
			break;
		if (r.complete) {
			check(&r);
			http_in_next(&r);
			requests++;
		} else if (n == 0 && off < cut) {
			off = cut;
		} else if (n == 0) {
			break;
		}
	}
	http_in_wipe(&r);
	return 0;
}
