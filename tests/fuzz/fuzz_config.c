/* fuzz_config.c - libFuzzer target for the config parser (inih plus our
 * validation): any text gives a config or a list of errors, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/identity/config.h"
#include "../../daemon/lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors errs = {0};
	struct config *c = NULL;
	char *text;

	if (size > 64 * 1024)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;
	if (config_parse_string(text, "fuzz.conf", &c, &errs) == 0) {
		for (size_t i = 0; i < c->n_identities; i++)
			(void)identity_resource(&c->identities[i], "x", "y/.default");
		config_free(c);
	} else if (errs.n == 0) {
		abort(); /* a failure always says why */
	}
	config_errors_clear(&errs);
	free(text);
	return 0;
}
