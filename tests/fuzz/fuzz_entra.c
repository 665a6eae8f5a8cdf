/* fuzz_entra.c - libFuzzer target for token-service and metadata-service
 * replies: the first two bytes pick the HTTP status, the service and a
 * Retry-After, the rest is the body, read as a token reply and as a
 * device-code reply. Every reply yields a token, a device code or a one-line
 * message, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/identity/entra.h"
#include "../../daemon/lib/jwt.h"
#include "../../proto/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[] = {200, 200, 200, 400, 401, 429, 500, 503};
	struct http_response resp = {0};
	struct token_result r;
	struct device_code dc;
	char *body, *desc;

	if (size < 2)
		return 0;
	body = malloc(size - 1);
	if (!body)
		return 0;
	memcpy(body, data + 2, size - 2);
	body[size - 2] = 0;
	resp.status = statuses[data[0] % 8];
	resp.retry_after = data[1] & 0x80 ? data[1] & 0x3f : 0;
	resp.body = body;
	resp.body_len = size - 2;
	entra_parse_response(&resp, 1700000000, data[1] & 0x40 ? SERVICE_IMDS : SERVICE_ENTRA, &r);
	if ((r.status == BT_OK) != (r.access_token != NULL) || strchr(r.message, '\n') ||
	    strchr(r.user, '\n') || (r.refresh_token && r.status != BT_OK) ||
	    (r.error_kind != ENTRA_E_NONE && r.status == BT_OK))
		abort();
	/* A served token goes into a header as it is: nothing outside
	 * printable ASCII, no space (RFC 6750). */
	for (const char *c = r.access_token; c && *c; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
			abort();
	if (r.access_token && jwt_describe(r.access_token, &desc) == 0)
		free(desc);
	token_result_clear(&r);
	entra_parse_device_code(&resp, &dc, &r);
	if (!dc.device_code == !r.status || strchr(dc.message, '\n') || strchr(r.message, '\n') ||
	    (dc.device_code && (dc.interval < 1 || dc.expires_in < 1)))
		abort();
	device_code_clear(&dc);
	token_result_clear(&r);
	if (jwt_describe(body, &desc) == 0)
		free(desc);
	/* The body as a client's claims challenge: canonical form is a fixed
	 * point, and merges with the cp1 capability into one form field. */
	{
		struct identity cp1 = {.cp1 = data[1] & 1};
		struct secstr form = {0};
		char *canon, *again, why[200];
		if (entra_canonical_claims(body, &canon, why, sizeof(why)) == 0) {
			if (entra_canonical_claims(canon, &again, why, sizeof(why)) != 0 ||
			    strcmp(canon, again) || entra_add_claims(&cp1, canon, &form) != 0 ||
			    !form.p || strncmp(form.p, "claims=", 7))
				abort();
			free(again);
			free(canon);
			secstr_free(&form);
		} else if (strchr(why, '\n')) {
			abort();
		}
	}
	free(body);
	return 0;
}
