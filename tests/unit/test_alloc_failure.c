/* test_alloc_failure.c - allocation-failure torture, in the style of curl's:
 * every operation below is run again and again, the Nth allocation failing
 * on the Nth run, until a run makes fewer than N. Each run must end in
 * success or a clean -ENOMEM (or the module's own "out of memory" answer),
 * with nothing leaked: the ASan build's leak check covers the whole
 * process.
 *
 * The binary is linked with --wrap for malloc, calloc, realloc, strdup,
 * strndup and vasprintf, and the secure heap's secmem_alloc and
 * secmem_strndup, which reroutes our own code's calls, not the libraries'. jansson could be given
 * the failing allocator through json_set_alloc_funcs(), but its lexer then corrupts its own heap
 * (Debian 12's 2.14: lex_save() drops the failure, akheron/jansson#362),
 * so its allocations never fail here. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../daemon/core/cache.h"
#include "../../daemon/identity/config.h"
#include "../../daemon/identity/credential.h"
#include "../../daemon/identity/entra.h"
#include "../../daemon/lib/log.h"
#include "../../daemon/lib/secmem.h"
#include "../../proto/msg.h"

/* Runs fail once this many allocations have been made; -1: none fails. */
static long countdown = -1;
static bool failed, paused; /* paused: the test's own allocations */

static bool fail_now(void)
{
	if (countdown < 0 || paused)
		return false;
	if (countdown-- > 0)
		return false;
	failed = true;
	return true;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **ret, const char *fmt, va_list ap);
void *__real_secmem_alloc(size_t n);
char *__real_secmem_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : __real_strndup(s, n);
}

int __wrap_vasprintf(char **ret, const char *fmt, va_list ap)
{
	return fail_now() ? -1 : __real_vasprintf(ret, fmt, ap);
}

void *__wrap_secmem_alloc(size_t n)
{
	return fail_now() ? NULL : __real_secmem_alloc(n);
}

char *__wrap_secmem_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : __real_secmem_strndup(s, n);
}

/* Runs op with the first, second, ... allocation failing until a run
 * completes without a failure, which must then succeed. op returns 0, or
 * -ENOMEM when it met the failure. Returns how many runs it took. */
static long torture(const char *what, int (*op)(void *), void *arg)
{
	long n;
	int r;

	for (n = 0; n < 100000; n++) {
		countdown = n;
		failed = false;
		r = op(arg);
		countdown = -1;
		if (!failed) {
			assert_int_equal(r, 0);
			print_message("%s: %ld allocations, each failed in turn\n", what, n);
			return n;
		}
		if (r != 0 && r != -ENOMEM)
			fail_msg("allocation %ld failed and the operation returned %d", n, r);
	}
	fail_msg("more than %ld allocations", n);
	return n;
}

/* --- the wire codec --- */

static int codec_roundtrip(void *arg)
{
	struct bt_record rec = {0}, back = {0}, *child;
	struct bt_token_reply tr = {0}, tr2 = {0};
	struct bt_buf out, body;
	struct bt_frame f;
	int r;

	(void)arg;
	bt_buf_init(&out, 1 << 20);
	r = bt_record_add_str(&rec, "daemon", "batchtokd") ?: bt_record_add_child(&rec, &child);
	if (r == 0)
		r = bt_record_add_str(child, "identity", "batch")
			?: bt_record_add_int(child, "expires", BT_FIELD_TIME, 1700000000);
	if (r == 0)
		r = bt_encode_record_reply(&out, BT_STATUS, 7, &rec);
	if (r == 0 && (r = bt_frame_peek(&out, 1 << 20, &f)) == 0) {
		body = f.body;
		r = bt_decode_record_reply(&body, &back);
	}
	if (r == 0) {
		assert_string_equal(bt_record_get(&back, "daemon")->str, "batchtokd");
		bt_buf_reset(&out);
		tr.access_token = "eyJ0.x.y";
		tr.token_type = "Bearer";
		tr.resource = "https://batch.core.windows.net/";
		tr.identity = "batch";
		tr.expires_on = 1700000000;
		r = bt_encode_token_reply(&out, 8, &tr);
	}
	if (r == 0 && (r = bt_frame_peek(&out, 1 << 20, &f)) == 0) {
		body = f.body;
		r = bt_decode_token_reply(&body, &tr2);
	}
	if (r == 0)
		assert_string_equal(tr2.access_token, "eyJ0.x.y");
	bt_token_reply_clear(&tr2);
	bt_record_clear(&rec);
	bt_record_clear(&back);
	bt_buf_free(&out);
	return r;
}

static void test_codec(void **state)
{
	(void)state;
	assert_true(torture("codec", codec_roundtrip, NULL) > 5);
}

/* --- config parsing --- */

static const char every_kind[] =
    "[daemon]\nsocket = /run/bt/s\nsocket_group = 0\nadmin_group = 0\nlog_level = debug\n"
    "min_validity = 5m\ncompat_endpoint = 127.0.0.1:50342\nstate_dir = /var/lib/bt\n"
    "[identity sp]\ncredential = secret\ntenant = t\nclient_id = c\nsecret_file = /s\n"
    "resources = https://a/, https://b/\nresources = https://c/\nallow_users = 0, 1\n"
    "allow_groups = 0\ndefault = yes\n"
    "[identity cert]\ncredential = certificate\ntenant = t\nclient_id = c\n"
    "certificate_file = /c.pem\nassertion_algorithm = RS256\nsend_x5c = yes\n"
    "[identity node]\ncredential = managed-identity\nobject_id = o\n"
    "imds_endpoint = http://127.0.0.1:8080/\n"
    "[identity aks]\ncredential = federated\ntenant = t\nclient_id = c\n"
    "federated_token_file = /tok\n"
    "[identity me]\ncredential = device-code\ncloud = usgov\n"
    "[identity bad]\ncredential = secret\nobject_id = o\nbogus = 1\n";

static int parse_config(void *arg)
{
	struct config_errors e = {0};
	struct config *c = NULL;
	int r = config_parse_string(arg, "t.conf", &c, &e);

	config_free(c);
	config_errors_clear(&e);
	/* The text has mistakes on purpose: -EINVAL is its complete answer. */
	return r == -EINVAL ? 0 : r;
}

static void test_config(void **state)
{
	(void)state;
	assert_true(torture("config", parse_config, (void *)every_kind) > 50);
	assert_true(torture("small config", parse_config,
			    "[identity x]\ncredential = managed-identity\n") > 3);
}

/* --- Entra and IMDS replies --- */

static int parse_reply(void *arg)
{
	struct http_response resp = {.status = 200, .body = arg, .body_len = strlen(arg)};
	struct token_result r;

	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	/* Short of memory the answer is an error (what the reply looked like
	 * unparsed), never a token that lost a part. */
	if (failed) {
		assert_int_not_equal(r.status, BT_OK);
		assert_null(r.access_token);
	} else {
		assert_int_equal(r.status, BT_OK);
		assert_string_equal(r.access_token, "eyJ0.eyJ1.sig");
	}
	token_result_clear(&r);
	return failed ? -ENOMEM : 0;
}

static int parse_error_reply(void *arg)
{
	struct http_response resp = {.status = 400, .body = arg, .body_len = strlen(arg)};
	struct token_result r;

	entra_parse_response(&resp, 1000, SERVICE_ENTRA, &r);
	token_result_clear(&r);
	return 0;
}

static void test_entra(void **state)
{
	(void)state;
	torture("token reply", parse_reply,
		"{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":"
		"3599,\"refresh_in\":1800,\"access_token\":\"eyJ0.eyJ1.sig\","
		"\"refresh_token\":\"rt\",\"id_token\":\"a.b.c\"}");
	torture("error reply", parse_error_reply,
		"{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid "
		"client secret provided.\",\"error_codes\":[7000215],\"trace_id\":\"t\"}");
}

/* --- a reload: the new config loaded beside the old, cached tokens moved
 * to the identities whose credential is unchanged, the old config freed --- */

struct reload {
	char dir[32], conf[64], secret[64];
};

static int64_t fake_now(void *arg)
{
	(void)arg;
	return 1000000;
}

static uint32_t fake_random(void *arg)
{
	(void)arg;
	return 0;
}

static int fake_fetch(void *arg, struct token_entry *e, struct token_result *err)
{
	(void)arg;
	(void)err;
	e->fetch = e;
	return 0;
}

static void fake_cancel(void *arg, struct token_entry *e)
{
	(void)arg;
	e->fetch = NULL;
}

static void fake_arm(void *arg, int64_t due)
{
	(void)arg;
	(void)due;
}

static void on_answer(struct cache_waiter *w, const struct cache_answer *a)
{
	(void)w;
	(void)a;
}

static const struct identity *same_in(void *arg, const struct identity *old)
{
	const struct identity *n = config_find_identity(arg, old->name);

	return n && identity_same_credential(old, n) ? n : NULL;
}

static int load(struct reload *rl, const char *text, struct config **ret)
{
	struct config_options o = {.path = rl->conf};
	struct config_errors e = {0};
	FILE *f;
	int r;

	paused = true; /* the test's own writing never fails */
	f = fopen(rl->conf, "w");
	assert_non_null(f);
	fputs(text, f);
	fprintf(f, "secret_file = %s\n", rl->secret);
	fclose(f);
	paused = false;
	r = config_load(&o, ret, &e);
	config_errors_clear(&e);
	return r;
}

static int reload(void *arg)
{
	static const struct cache_ops ops = {fake_fetch, fake_cancel, fake_arm, fake_now,
					     fake_random};
	static const char one[] = "[identity node]\ncredential = managed-identity\n"
				  "[identity sp]\ncredential = secret\ntenant = t\nclient_id = c\n";
	static const char two[] = "[identity sp]\ncredential = secret\ntenant = t\nclient_id = c\n"
				  "resources = https://batch.core.windows.net/, https://x/\n";
	struct cache_settings s = {.min_validity = 60, .idle_timeout = 3600};
	struct config *old = NULL, *new = NULL;
	struct cache *c = NULL;
	struct cache_waiter w = {.fn = on_answer};
	struct token_result tr = {0};
	int r;

	r = load(arg, one, &old);
	if (r == 0)
		r = cache_new(&ops, NULL, &s, &c);
	for (size_t i = 0; r == 0 && i < old->n_identities; i++) {
		const struct identity *id = &old->identities[i];
		memset(&w, 0, sizeof(w));
		w.fn = on_answer;
		r = cache_get(c, id, id->resources[0], 0, false, &w);
		if (r == 0 && cache_first(c)) {
			for (struct token_entry *e = cache_first(c); e; e = cache_next(e))
				if (e->fetch && e->id == id) {
					paused = true;
					tr.status = BT_OK;
					tr.expires_on = 1000000 + 3600;
					tr.access_token = secmem_strndup("tok", 3);
					snprintf(tr.token_type, sizeof(tr.token_type), "Bearer");
					paused = false;
					cache_fetch_done(c, e, &tr);
					token_result_clear(&tr);
				}
		}
	}
	if (r == 0)
		r = load(arg, two, &new);
	if (r == 0) {
		cache_rebind(c, same_in, new);
		config_free(old);
		old = new;
		new = NULL;
		assert_non_null(cache_first(c));
		assert_string_equal(cache_first(c)->id->name, "sp");
	}
	cache_free(c);
	config_free(old);
	config_free(new);
	return r;
}

static void test_reload(void **state)
{
	struct reload rl = {.dir = "/tmp/bt-oom-XXXXXX"};
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(rl.dir));
	snprintf(rl.conf, sizeof(rl.conf), "%s/batchtokd.conf", rl.dir);
	snprintf(rl.secret, sizeof(rl.secret), "%s/secret", rl.dir);
	f = fopen(rl.secret, "w");
	assert_non_null(f);
	fputs("s3cret\n", f);
	fclose(f);
	assert_int_equal(chmod(rl.secret, 0600), 0);
	assert_true(torture("reload", reload, &rl) > 20);
	unlink(rl.secret);
	unlink(rl.conf);
	rmdir(rl.dir);
}

/* --- a config with drop-ins: the directory listed and sorted, each file
 * read and parsed, a kind's keys checked where a drop-in wrote them --- */

static int load_dropins(void *arg)
{
	struct config_options o = {.path = arg};
	struct config_errors e = {0};
	struct config *c = NULL;
	int r = config_load(&o, &c, &e);

	if (r == 0)
		assert_int_equal(c->n_files, 3);
	config_free(c);
	config_errors_clear(&e);
	return r;
}

static void put(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static void test_dropins(void **state)
{
	char dir[] = "/tmp/bt-oom-XXXXXX", conf[64], d[80], a[128], b[128], secret[64], text[256];

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/batchtokd.conf", dir);
	snprintf(d, sizeof(d), "%s.d", conf);
	snprintf(a, sizeof(a), "%s/10-a.conf", d);
	snprintf(b, sizeof(b), "%s/20-b.conf", d);
	snprintf(secret, sizeof(secret), "%s/secret", dir);
	put(conf, "[daemon]\nlog_level = debug\n[identity node]\ncredential = managed-identity\n",
	    0644);
	assert_int_equal(mkdir(d, 0755), 0);
	put(a,
	    "[daemon]\nmin_validity = 2m\n[identity a]\ncredential = managed-identity\n"
	    "resources = https://a/, https://b/\n",
	    0644);
	snprintf(text, sizeof(text),
		 "[identity b]\ncredential = secret\ntenant = t\nclient_id = c\nsecret_file = %s\n",
		 secret);
	put(b, text, 0644);
	put(secret, "s3cret\n", 0600);
	assert_true(torture("drop-ins", load_dropins, conf) > 20);
	unlink(a);
	unlink(b);
	rmdir(d);
	unlink(secret);
	unlink(conf);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec),   cmocka_unit_test(test_config),
	    cmocka_unit_test(test_entra),   cmocka_unit_test(test_reload),
	    cmocka_unit_test(test_dropins),
	};

	log_init(LOG_ERR);
	secmem_init(1 << 16);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
