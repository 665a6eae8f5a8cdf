/* fuzz_signin.c - libFuzzer target for state files: the input is opened as
 * a sealed file (it must fail authentication, never crash) and parsed as a
 * sign-in record. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/lib/sealed.h"
#include "../../daemon/lib/secmem.h"
#include "../../daemon/identity/signin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char key[SEALED_KEY_LEN];
	char *text, *out = NULL, *rt = NULL, user[256];
	int64_t at;

	if (!key[0] && sealed_derive_key("fuzz", 4, key) < 0)
		abort();
	if (sealed_open(key, "me\nt\nc\na", data, size, &out) == 0)
		abort(); /* forging a tag by chance: the fuzzer found a break */
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;
	if (signin_record_parse(text, &rt, user, sizeof(user), &at) == 0) {
		if (!rt || !*rt || strchr(user, '\n'))
			abort();
		secmem_free_str(rt);
	}
	free(text);
	return 0;
}
