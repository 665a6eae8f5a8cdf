/* fuzz_entra.c - libFuzzer target for token-service replies: the first two
 * bytes pick the HTTP status, the rest is the body. Every reply yields a
 * token or a one-line message, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/entra.h"
#include "../../daemon/jwt.h"
#include "../../proto/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[] = {200, 200, 200, 400, 401, 429, 500, 503};
	struct http_response resp = {0};
	struct token_result r;
	char *body, *desc;

	if (size < 2)
		return 0;
	body = malloc(size - 1);
	if (!body)
		return 0;
	memcpy(body, data + 2, size - 2);
	body[size - 2] = 0;
	resp.status = statuses[data[0] % 8];
	resp.retry_after = data[1] & 0x80 ? data[1] & 0x7f : 0;
	resp.body = body;
	resp.body_len = size - 2;
	entra_parse_response(&resp, 1700000000, &r);
	if ((r.status == BT_OK) != (r.access_token != NULL) || strchr(r.message, '\n'))
		abort();
	if (r.access_token && jwt_describe(r.access_token, &desc) == 0)
		free(desc);
	token_result_clear(&r);
	if (jwt_describe(body, &desc) == 0)
		free(desc);
	free(body);
	return 0;
}
