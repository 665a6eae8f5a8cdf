/* fuzz_tokensnap.c - libFuzzer target for the token snapshot a restart
 * brings back through systemd's descriptor store (core/tokensnap.h): any
 * bytes restore tokens or are refused, never a crash; what a snapshot of
 * the restored cache says is restored again the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/core/tokensnap.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"

static int64_t now = 1800000000;

static int fetch(void *arg, struct token_entry *e, struct token_result *err)
{
	(void)arg;
	(void)err;
	e->fetch = e;
	return 0;
}

static void cancel(void *arg, struct token_entry *e)
{
	(void)arg;
	e->fetch = NULL;
}

static void arm(void *arg, int64_t due)
{
	(void)arg;
	(void)due;
}

static int64_t clock_now(void *arg)
{
	(void)arg;
	return now;
}

static uint32_t rnd(void *arg)
{
	(void)arg;
	return 7;
}

static const struct cache_ops ops = {fetch, cancel, arm, clock_now, rnd};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config *cfg;
	struct config_errors errs = {0};
	struct cache_settings set = {.min_validity = 60, .idle_timeout = 3600};
	struct cache *c;
	unsigned restored, skipped, again, count;
	char *snap;
	size_t n;

	if (!cfg) {
		log_set_level(-1);
		if (config_parse_string("[identity a]\ncredential = managed-identity\n"
					"resources = https://batch.core.windows.net/ r1\n",
					"fuzz.conf", &cfg, &errs) < 0)
			abort();
	}
	if (cache_new(&ops, NULL, &set, &c) < 0)
		return 0;
	if (tokensnap_load(c, cfg, (const char *)data, size, now, &restored, &skipped) == 0 &&
	    restored) {
		struct cache *c2;
		if (tokensnap_save(c, now, 60, &snap, &n, &count) < 0 || count != restored ||
		    cache_new(&ops, NULL, &set, &c2) < 0)
			abort();
		if (tokensnap_load(c2, cfg, snap, n, now, &again, &skipped) < 0 || again != count)
			abort();
		secmem_free(snap, n);
		cache_free(c2);
	}
	cache_free(c);
	return 0;
}
