/* test_config.c - parsing, validation messages with file:line, resources. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <syslog.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/lib/certificate.h"
#include "../../daemon/identity/config.h"
#include "../../daemon/identity/credential.h"

#define IDENTITY                                                                                   \
	"[identity batch-prod]\ncredential = secret\ntenant = "                                    \
	"00000000-0000-0000-0000-000000000000\n"                                                   \
	"client_id = 11111111-1111-1111-1111-111111111111\nsecret_file = /etc/batchtok/s\n"

/* An identity config_load() accepts without reading any file. */
#define MANAGED_IDENTITY "[identity node]\ncredential = managed-identity\n"

static int has_error(const struct config_errors *e, const char *needle)
{
	for (size_t i = 0; i < e->n; i++)
		if (strstr(e->msgs[i], needle))
			return 1;
	return 0;
}

/* Asserts that status shows the identity's key as want. */
static void assert_described(const struct identity *id, const char *key, const char *want)
{
	struct bt_record rec = {0};
	const struct bt_field *f;

	assert_non_null(credential_for(id)->describe);
	assert_int_equal(credential_for(id)->describe(id, &rec), 0);
	f = bt_record_get(&rec, key);
	assert_non_null(f);
	assert_string_equal(f->str, want);
	bt_record_clear(&rec);
}

static void test_product_example(void **state)
{
	static const char text[] =
	    "[daemon]\nsocket = /run/batchtok/batchtokd.sock\nsocket_mode = 0660\n"
	    "log_level = debug                  ; inline comment\nmin_validity = 5m\n"
	    "max_clients = 4096\nfetch_concurrency = 8\nca_file =\nproxy =\n"
	    "# a comment\n" IDENTITY
	    "resources = https://batch.core.windows.net/, https://management.azure.com/\n"
	    "cloud = public\ntoken_version = 2\nallow_users = 0, root\nprefetch = yes\n"
	    "default = yes\n";
	struct config_errors e = {0};
	struct config *c = NULL;
	struct identity *id;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), 0);
	assert_int_equal(e.n, 0);
	assert_string_equal(c->socket, "/run/batchtok/batchtokd.sock");
	assert_int_equal(c->socket_mode, 0660);
	assert_int_equal(c->min_validity, 300);
	assert_null(c->ca_file);
	id = config_find_identity(c, "batch-prod");
	assert_non_null(id);
	assert_ptr_equal(c->default_identity, id);
	assert_int_equal(id->n_resources, 2);
	assert_string_equal(id->authority, "https://login.microsoftonline.com");
	assert_int_equal(id->n_allow_uids, 2);
	assert_true(id->prefetch);
	config_free(c);
}

static void test_errors_name_file_and_line(void **state)
{
	static const char text[] = "[daemon]\nmin_validity = soon\nbogus = 1\n"
				   "[identity x]\ncredential = telepathy\ntenant = a/b\n"
				   "[weird]\nk = v\nnot a key value line\n";
	struct config_errors e = {0};
	struct config *c = (struct config *)0x1;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), -EINVAL);
	assert_ptr_equal(c, (struct config *)0x1); /* untouched on failure */
	assert_true(has_error(&e, "t.conf:2: min_validity"));
	assert_true(has_error(&e, "t.conf:3: unknown key 'bogus'"));
	assert_true(has_error(&e, "t.conf:5: credential: 'telepathy'"));
	assert_true(has_error(&e, "t.conf:6: tenant"));
	assert_true(has_error(&e, "t.conf:7: unknown section [weird]"));
	assert_true(has_error(&e, "t.conf:9: syntax error"));
	config_errors_clear(&e);
}

/* An unknown key names the closest known key of its section, or the section
 * it belongs in; the message starts as it always did. */
static void test_unknown_key_hints(void **state)
{
	static const char text[] = "[daemon]\nsoket = /run/x.sock\nLOG_LEVEL = info\n"
				   "bogus = 1\nallow_users = root\nfetch = 2\n"
				   "[identity x]\nalow_groups = batch\ncredentail = secret\n"
				   "socket = /y\nxyz = 1\nsecret = /s\n";
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), -EINVAL);
	assert_true(
	    has_error(&e, "t.conf:2: unknown key 'soket' in [daemon]: did you mean socket?"));
	assert_true(has_error(&e, "t.conf:3: unknown key 'LOG_LEVEL' in [daemon]: did you mean "
				  "log_level?"));
	assert_true(has_error(&e, "t.conf:4: unknown key 'bogus' in [daemon]"));
	assert_false(has_error(&e, "'bogus' in [daemon]: "));
	assert_true(has_error(&e, "t.conf:5: unknown key 'allow_users' in [daemon]: allow_users = "
				  "belongs in an [identity NAME] section"));
	assert_true(has_error(&e, "t.conf:6: unknown key 'fetch' in [daemon]: did you mean "
				  "fetch_concurrency?"));
	assert_true(has_error(&e, "t.conf:8: unknown key 'alow_groups' in [identity x]: did you "
				  "mean allow_groups?"));
	assert_true(has_error(&e, "t.conf:9: unknown key 'credentail' in [identity x]: did you "
				  "mean credential?"));
	assert_true(has_error(&e, "t.conf:10: unknown key 'socket' in [identity x]: socket = "
				  "belongs in [daemon]"));
	assert_true(has_error(&e, "t.conf:11: unknown key 'xyz' in [identity x]"));
	assert_false(has_error(&e, "'xyz' in [identity x]: "));
	assert_true(has_error(&e, "t.conf:12: unknown key 'secret' in [identity x]: did you mean "
				  "secret_file?"));
	config_errors_clear(&e);
}

/* The hints come from the parser's own tables: every key listed is one the
 * parser takes (a value may be wrong, the key is never unknown). */
static void test_every_listed_key_is_accepted(void **state)
{
	char text[512];
	struct config_errors e = {0};
	struct config *c;
	const char *const *keys;
	size_t n;

	(void)state;
	/* The [daemon] keys, every identity's, then each kind's. */
	for (int identity = 0; identity <= 1 || credential_kind(identity - 2); identity++) {
		if (identity <= 1)
			keys = config_keys(identity, &n);
		else
			for (keys = credential_kind(identity - 2)->keys, n = 0; keys[n];)
				n++;
		assert_true(identity > 1 || n > 10);
		for (size_t i = 0; i < n; i++) {
			assert_non_null(keys[i]);
			snprintf(text, sizeof(text), "%s%s = x\n",
				 identity ? IDENTITY : "[daemon]\n", keys[i]);
			if (config_parse_string(text, "t", &c, &e) == 0)
				config_free(c);
			if (has_error(&e, "unknown key"))
				fail_msg("%s is listed but not accepted: %s", keys[i], e.msgs[0]);
			config_errors_clear(&e);
		}
	}
}

static void test_missing_pieces(void **state)
{
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string("[identity a]\ncredential = secret\n", "t", &c, &e),
			 -EINVAL);
	assert_true(has_error(&e, "tenant = is missing"));
	assert_true(has_error(&e, "client_id = is missing"));
	assert_true(has_error(&e, "exactly one of secret_file"));
	config_errors_clear(&e);
	assert_int_equal(config_parse_string("[daemon]\n", "t", &c, &e), -EINVAL);
	assert_true(has_error(&e, "no [identity NAME] section"));
	config_errors_clear(&e);
	assert_int_equal(config_parse_string(IDENTITY
					     "default = yes\n[identity b]\n"
					     "credential = secret\ntenant = t\nclient_id = c\n"
					     "secret_file = /x\ndefault = yes\n",
					     "t", &c, &e),
			 -EINVAL);
	assert_true(has_error(&e, "more than one identity says default = yes"));
	config_errors_clear(&e);
}

/* List keys may be repeated: each occurrence adds (PRODUCT.md), so long
 * lists fit on several lines. */
static void test_repeated_list_keys_add(void **state)
{
	struct config_errors e = {0};
	struct config *c;
	struct identity *id;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY
					     "resources = https://batch.core.windows.net/\n"
					     "resources = https://management.azure.com/ "
					     "api://x\nallow_users = 0\nallow_users = 1\n",
					     "t", &c, &e),
			 0);
	id = config_find_identity(c, "batch-prod");
	assert_int_equal(id->n_resources, 3);
	assert_string_equal(id->resources[0], "https://batch.core.windows.net/");
	assert_string_equal(id->resources[2], "api://x");
	assert_int_equal(id->n_allow_uids, 2);
	config_free(c);
}

/* Program rules: list keys like the others (commas or spaces, repeated
 * keys add), kept as written; an empty value adds nothing. */
static void test_program_rules(void **state)
{
	struct config_errors e = {0};
	struct config *c;
	struct identity *id;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY
					     "allow_units = etl@*.service backup.service\n"
					     "allow_units = foo\\x2dbar.service,run-u[0-9]*.scope\n"
					     "allow_user_units =\nallow_users = 0\n"
					     "allow_user_units = dev.service ; comment\n"
					     "allow_exes = /usr/bin/python3 /opt/etl/bin/*\n"
					     "allow_cgroups = /machine.slice/app-*.scope\n",
					     "t", &c, &e),
			 0);
	id = config_find_identity(c, "batch-prod");
	assert_int_equal(id->allow_units.n, 4);
	assert_string_equal(id->allow_units.v[0], "etl@*.service");
	assert_string_equal(id->allow_units.v[2], "foo\\x2dbar.service");
	assert_string_equal(id->allow_units.v[3], "run-u[0-9]*.scope");
	assert_int_equal(id->allow_user_units.n, 1);
	assert_string_equal(id->allow_user_units.v[0], "dev.service");
	assert_int_equal(id->allow_exes.n, 2);
	assert_string_equal(id->allow_exes.v[1], "/opt/etl/bin/*");
	assert_int_equal(id->allow_cgroups.n, 1);
	config_free(c);

	/* None written: none kept. */
	assert_int_equal(config_parse_string(IDENTITY "allow_units =\n", "t", &c, &e), 0);
	id = config_find_identity(c, "batch-prod");
	assert_int_equal(id->allow_units.n + id->allow_exes.n + id->allow_cgroups.n, 0);
	config_free(c);
}

/* A bad pattern is reported at its line, with what is wrong and the fix;
 * the other items and keys are still read. */
static void test_program_rule_errors(void **state)
{
	static const char text[] = IDENTITY	  /* lines 1-5 */
	    "allow_units = etl@*\n"		  /* 6 */
	    "allow_units = /usr/bin/curl\n"	  /* 7 */
	    "allow_units = backup.servic\n"	  /* 8 */
	    "allow_units = a$b.service\n"	  /* 9 */
	    "allow_units = run-[0-9.scope\n"	  /* 10 */
	    "allow_exes = python3\n"		  /* 11 */
	    "allow_exes = /usr//bin/python3\n"	  /* 12 */
	    "allow_exes = /opt/etl/../bin/x\n"	  /* 13 */
	    "allow_exes = /opt/etl/bin/\n"	  /* 14 */
	    "allow_cgroups = /system.slice/./x\n" /* 15 */
	    "allow_cgroups = /a/[/]b\n"		  /* 16 */
	    "allow_units = .service\n"		  /* 17 */
	    "allow_exes = /opt/\x01x\n";	  /* 18 */
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t.conf:6: allow_units: 'etl@*' is not NAME.TYPE: write the "
				  "unit's type too, such as etl@*.service"));
	assert_true(has_error(&e, "t.conf:7: allow_units: '/usr/bin/curl' has a '/', which unit "
				  "names do not (an executable goes in allow_exes"));
	assert_true(has_error(&e, "t.conf:8: allow_units: 'backup.servic' ends in '.servic', "
				  "which is not a unit type"));
	assert_true(has_error(&e, "t.conf:9: allow_units: 'a$b.service' has '$', which unit "
				  "names do not"));
	assert_true(has_error(&e, "t.conf:10: allow_units: 'run-[0-9.scope' has a '[' without "
				  "its ']'"));
	assert_true(has_error(&e, "t.conf:11: allow_exes: 'python3' is not an absolute path"));
	assert_true(has_error(&e, "t.conf:12: allow_exes: '/usr//bin/python3' has '//'"));
	assert_true(has_error(&e, "t.conf:13: allow_exes: '/opt/etl/../bin/x' has a '..' "
				  "component"));
	assert_true(has_error(&e, "t.conf:14: allow_exes: '/opt/etl/bin/' ends in '/': name the "
				  "executable file"));
	assert_true(has_error(&e, "t.conf:15: allow_cgroups: '/system.slice/./x' has a '.' "
				  "component"));
	assert_true(has_error(&e, "t.conf:16: allow_cgroups: '/a/[/]b' has a '[' without its "
				  "']', or a '/' inside [...]"));
	assert_true(has_error(&e, "t.conf:17: allow_units: '.service' is not NAME.TYPE"));
	assert_true(has_error(&e, "t.conf:18: allow_exes: '/opt/\x01x' has a control character"));
	assert_int_equal(e.n, 13);
	config_errors_clear(&e);
}

/* allow_user_units alone would let any user in (everyone names the units
 * of their own manager): it needs allow_users or allow_groups beside it. */
static void test_user_units_need_users(void **state)
{
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY "allow_units = etl.service\n"
						      "allow_user_units = dev.service\n",
					     "t.conf", &c, &e),
			 -EINVAL);
	assert_true(has_error(&e, "t.conf:1: [identity batch-prod]: allow_user_units = needs "
				  "allow_users or allow_groups beside it"));
	config_errors_clear(&e);
	assert_int_equal(config_parse_string(IDENTITY "allow_user_units = dev.service\n"
						      "allow_groups = 0\n",
					     "t.conf", &c, &e),
			 0);
	config_free(c);
	/* Units of the system manager are root's to name: they may decide
	 * alone. */
	assert_int_equal(config_parse_string(IDENTITY "allow_units = etl@*.service\n"
						      "allow_exes = /usr/bin/python3\n"
						      "allow_cgroups = /system.slice\n",
					     "t.conf", &c, &e),
			 0);
	config_free(c);
}

/* The new keys are known: a typo gets a hint, and [daemon] says where
 * they belong. */
static void test_program_rule_hints(void **state)
{
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string("[daemon]\nallow_exes = /x\n" IDENTITY
					     "allow_unit = a.service\nallow_exe = /x\n"
					     "allow_cgroup = /x\nallow_user_unit = a.service\n",
					     "t.conf", &c, &e),
			 -EINVAL);
	assert_true(has_error(&e, "t.conf:2: unknown key 'allow_exes' in [daemon]: allow_exes = "
				  "belongs in an [identity NAME] section"));
	assert_true(has_error(&e, "did you mean allow_units?"));
	assert_true(has_error(&e, "did you mean allow_exes?"));
	assert_true(has_error(&e, "did you mean allow_cgroups?"));
	assert_true(has_error(&e, "did you mean allow_user_units?"));
	config_errors_clear(&e);
}

/* A wrong credential = is reported once, where it is; it is not also
 * "missing". */
static void test_bad_credential_is_not_also_missing(void **state)
{
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string("[identity x]\ncredential = telepathy\ntenant = t\n"
					     "client_id = c\n",
					     "t.conf", &c, &e),
			 -EINVAL);
	assert_true(has_error(&e, "t.conf:2: credential: 'telepathy' is not one of"));
	assert_false(has_error(&e, "credential = is missing"));
	assert_int_equal(e.n, 1);
	config_errors_clear(&e);
	assert_int_equal(
	    config_parse_string("[identity x]\ntenant = t\nclient_id = c\n", "t.conf", &c, &e),
	    -EINVAL);
	assert_true(has_error(&e, "t.conf:1: [identity x]: credential = is missing"));
	config_errors_clear(&e);
}

static void test_empty_and_repeated_sections(void **state)
{
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY "[identity empty]\n", "t", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t:6: [identity empty]: credential = is missing"));
	config_errors_clear(&e);
	assert_int_equal(config_parse_string(IDENTITY IDENTITY, "t", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t:6: [identity batch-prod] is defined twice"));
	config_errors_clear(&e);
}

/* A key before any section header belongs nowhere: it is reported, not
 * dropped without a word. An empty value gives a key its default back,
 * groups included. */
static void test_keys_outside_sections_and_empty_values(void **state)
{
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	assert_int_equal(
	    config_parse_string("# top\nmin_validity = 1m\n" MANAGED_IDENTITY, "t", &c, &e),
	    -EINVAL);
	assert_true(has_error(&e, "t:2: min_validity = is outside any section: put it under "
				  "[daemon] or an [identity NAME] header"));
	assert_int_equal(e.n, 1);
	config_errors_clear(&e);
	assert_int_equal(config_parse_string("[daemon]\nadmin_group = 0\nsocket_group = 0\n"
					     "admin_group =\nsocket_group =\n" MANAGED_IDENTITY,
					     "t", &c, &e),
			 0);
	assert_int_equal(c->admin_gid, (gid_t)-1);
	assert_int_equal(c->socket_gid, (gid_t)-1);
	config_free(c);
}

/* PRODUCT.md: ';' or '#' start comments, also after a value. As inih does
 * for ';', a '#' starts a comment only after whitespace (or first in the
 * value); inside a word it is part of the value. */
static void test_comments_after_values(void **state)
{
	static const char text[] =
	    "[daemon]   # the daemon\nsocket = /run/bt#1/batchtokd.sock\n"
	    "log_level = debug   # comment\nmin_validity = 10m\t# tab before\n"
	    "ca_file = # nothing\nproxy = ; nothing\n"
	    "compat_endpoint = 127.0.0.1:50342 # off by default\n" IDENTITY
	    "resources = https://batch.core.windows.net/ api://x # two\n"
	    "allow_users = 0, root  # admins ; and more\n";
	struct config_errors e = {0};
	struct config *c = NULL;
	struct identity *id;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), 0);
	assert_string_equal(c->socket, "/run/bt#1/batchtokd.sock");
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_int_equal(c->min_validity, 600);
	assert_null(c->ca_file);
	assert_null(c->proxy);
	assert_string_equal(c->compat_endpoint, "127.0.0.1:50342");
	id = config_find_identity(c, "batch-prod");
	assert_int_equal(id->n_resources, 2);
	assert_string_equal(id->resources[1], "api://x");
	assert_int_equal(id->n_allow_uids, 2);
	config_free(c);
	/* Inside a word '#' stays in the value. */
	assert_int_equal(config_parse_string(IDENTITY "prefetch = yes#\n", "t.conf", &c, &e),
			 -EINVAL);
	assert_true(has_error(&e, "t.conf:6: prefetch: 'yes#' is not yes or no"));
	config_errors_clear(&e);
}

static void test_long_line_is_reported_not_split(void **state)
{
	char text[1024];
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	snprintf(text, sizeof(text), IDENTITY "resources = https://%0400d/\n", 0);
	assert_int_equal(config_parse_string(text, "t", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t:6: line longer than"));
	assert_true(has_error(&e, "repeating the key"));
	config_errors_clear(&e);
}

/* ...because a list key may repeat, and each occurrence adds: fifty
 * resources and a long list of users fit. */
static void test_list_keys_add_up(void **state)
{
	char text[8192];
	size_t n = (size_t)snprintf(text, sizeof(text), "%s", IDENTITY);
	struct config_errors e = {0};
	struct config *c;
	const struct identity *id;

	(void)state;
	for (int i = 0; i < 50; i += 2)
		n += (size_t)snprintf(
		    text + n, sizeof(text) - n,
		    "resources = https://r%02d.example/, https://r%02d.example/\n", i, i + 1);
	for (int i = 0; i < 10; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
				      "allow_users = %d %d\nallow_groups = %d\n", 1000 + 2 * i,
				      1001 + 2 * i, 2000 + i);
	assert_true(n < sizeof(text));
	assert_int_equal(config_parse_string(text, "t", &c, &e), 0);
	id = config_find_identity(c, "batch-prod");
	assert_int_equal(id->n_resources, 50);
	assert_string_equal(id->resources[0], "https://r00.example/");
	assert_string_equal(id->resources[49], "https://r49.example/");
	assert_int_equal(id->n_allow_uids, 20);
	assert_int_equal(id->allow_uids[19], 1019);
	assert_int_equal(id->n_allow_gids, 10);
	config_free(c);
}

static void test_resource_selection(void **state)
{
	struct config_errors e = {0};
	struct config *c;
	const struct identity *id;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY "resources = https://batch.core.windows.net/ "
						      "api://x\n",
					     "t", &c, &e),
			 0);
	id = &c->identities[0];
	assert_string_equal(identity_resource(id, NULL, NULL), "https://batch.core.windows.net/");
	assert_string_equal(identity_resource(id, "api://x", NULL), "api://x");
	assert_string_equal(identity_resource(id, NULL, "https://batch.core.windows.net//.default"),
			    "https://batch.core.windows.net/");
	/* The single-slash scope, or the resource without its slash: the
	 * configured resource, whose token Batch accepts (SDKs write both). */
	assert_string_equal(identity_resource(id, NULL, "https://batch.core.windows.net/.default"),
			    "https://batch.core.windows.net/");
	assert_string_equal(identity_resource(id, "https://batch.core.windows.net", NULL),
			    "https://batch.core.windows.net/");
	assert_string_equal(identity_resource(id, "api://x/", NULL), "api://x");
	assert_null(identity_resource(id, "https://batch.core.windows.net/x", NULL));
	assert_null(identity_resource(id, NULL, "api://x"));
	assert_null(identity_resource(id, "https://vault.azure.net/", NULL));
	config_free(c);
}

static void test_clouds_and_defaults(void **state)
{
	struct config_errors e = {0};
	struct config *c;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY "cloud = usgov\n", "t", &c, &e), 0);
	assert_string_equal(c->identities[0].authority, "https://login.microsoftonline.us");
	assert_string_equal(c->identities[0].resources[0], "https://batch.core.usgovcloudapi.net/");
	/* A lone identity is the default. */
	assert_ptr_equal(c->default_identity, &c->identities[0]);
	config_free(c);
	assert_int_equal(
	    config_parse_string(IDENTITY "authority_host = https://127.0.0.1:8443/\n", "t", &c, &e),
	    0);
	assert_string_equal(c->identities[0].authority, "https://127.0.0.1:8443");
	config_free(c);
	assert_int_equal(
	    config_parse_string(IDENTITY "authority_host = http://evil\n", "t", &c, &e), -EINVAL);
	assert_true(has_error(&e, "https:// URL"));
	config_errors_clear(&e);
}

/* The PRODUCT.md examples of every credential kind, and their defaults. */
static void test_credential_kinds(void **state)
{
	static const char text[] =
	    "[daemon]\nstate_dir = /var/lib/batchtok\nstate_key_credential = key\n"
	    "[identity sp-cert]\ncredential = certificate\ntenant = t\nclient_id = c\n"
	    "certificate_file = /etc/batchtok/sp-cert.pem\nsend_x5c = no\n"
	    "assertion_algorithm = RS256\n"
	    "[identity node]\ncredential = managed-identity\nclient_id = u-1\n"
	    "imds_endpoint = http://127.0.0.1:8080/\n"
	    "[identity sys]\ncredential = managed-identity\n"
	    "[identity aks]\ncredential = federated\ntenant = t\nclient_id = c\n"
	    "federated_token_file = /var/run/secrets/azure/tokens/azure-identity-token\n"
	    "[identity me]\ncredential = device-code\n"
	    "authority_host = https://adfs.contoso.com/adfs/\n";
	struct config_errors e = {0};
	struct config *c = NULL;
	struct identity *id;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), 0);
	assert_string_equal(c->state_dir, "/var/lib/batchtok");
	assert_string_equal(c->state_key_credential, "key");
	id = config_find_identity(c, "sp-cert");
	assert_ptr_equal(credential_for(id), &credential_certificate);
	id = config_find_identity(c, "node");
	assert_described(id, "imds_endpoint", "http://127.0.0.1:8080");
	assert_string_equal(id->client_id, "u-1");
	assert_null(id->tenant);
	id = config_find_identity(c, "sys");
	assert_described(id, "imds_endpoint", "http://169.254.169.254");
	assert_null(id->client_id);
	id = config_find_identity(c, "aks");
	assert_described(id, "federated_token_file",
			 "/var/run/secrets/azure/tokens/azure-identity-token");
	id = config_find_identity(c, "me");
	assert_string_equal(id->tenant, "organizations");
	/* Azure CLI's public client (ENTRA.md 6.5). */
	assert_string_equal(id->client_id, "04b07795-8ddb-461a-bbee-02f9e1bf7b46");
	/* ADFS-style authorities have a path; trailing slashes go. */
	assert_string_equal(id->authority, "https://adfs.contoso.com/adfs");
	assert_string_equal(credential_for(id)->name, "device-code");
	config_free(c);
}

static void test_credential_kind_errors(void **state)
{
	static const char text[] =
	    "[identity a]\ncredential = certificate\ntenant = t\nclient_id = c\n"
	    "secret_file = /s\ncertificate_passphrase_file = /p\n"
	    "certificate_passphrase_credential = p\n"
	    "[identity b]\ncredential = managed-identity\nclient_id = x\nobject_id = y\n"
	    "imds_endpoint = http://h/path\n"
	    "[identity c]\ncredential = federated\ntenant = t\nclient_id = c\n"
	    "[identity d]\ncredential = device-code\ntoken_version = 1\n"
	    "[identity e]\ncredential = secret\ntenant = t\nclient_id = c\nsecret_file = /s\n"
	    "imds_endpoint = http://h\nauthority_host = https://h/x?tenant=t\n";
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	unsetenv("AZURE_FEDERATED_TOKEN_FILE");
	setenv("AZURE_AUTHORITY_HOST", "http://login.example", 1);
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), -EINVAL);
	unsetenv("AZURE_AUTHORITY_HOST");
	/* A bad value in the environment is reported, not skipped. */
	assert_true(has_error(&e, "AZURE_AUTHORITY_HOST: 'http://login.example' must be an "
				  "https:// URL"));
	assert_true(has_error(&e, "secret_file = applies to credential = secret, not certificate"));
	assert_true(has_error(&e, "exactly one of certificate_file"));
	assert_true(has_error(&e, "at most one of certificate_passphrase_file"));
	assert_true(has_error(&e, "not several"));
	assert_true(has_error(&e, "imds_endpoint: 'http://h/path'"));
	assert_true(has_error(&e, "federated_token_file = is missing"));
	assert_true(has_error(&e, "device-code sign-in needs token_version = 2"));
	assert_true(has_error(&e, "imds_endpoint = applies to credential = managed-identity"));
	assert_true(has_error(&e, "authority_host: 'https://h/x?tenant=t'"));
	config_errors_clear(&e);
}

static void test_compat_endpoint(void **state)
{
	static const char good[] = "[daemon]\ncompat_endpoint = [::1]:50342\n"
				   "compat_lifetime = 1h\n" IDENTITY;
	static const char bad[] = "[daemon]\ncompat_endpoint = 10.0.0.1:50342\n"
				  "compat_endpoint = 127.0.0.1\ncompat_endpoint = [::1:80\n"
				  "compat_endpoint = 127.0.0.1:65536\ncompat_endpoint = "
				  "localhost:80\ncompat_lifetime = 0\n" IDENTITY;
	struct config_errors e = {0};
	struct config *c = NULL;
	const struct sockaddr_in *in;

	(void)state;
	assert_int_equal(config_parse_string(good, "t.conf", &c, &e), 0);
	assert_string_equal(c->compat_endpoint, "[::1]:50342");
	assert_int_equal(c->compat_addr.ss_family, AF_INET6);
	assert_int_equal(c->compat_lifetime, 3600);
	config_free(c);
	/* Off by default; 127.0.0.0/8 and port 0 (any free port) allowed. */
	assert_int_equal(config_parse_string(IDENTITY, "t.conf", &c, &e), 0);
	assert_null(c->compat_endpoint);
	assert_int_equal(c->compat_lifetime, 12 * 3600);
	config_free(c);
	assert_int_equal(config_parse_string("[daemon]\ncompat_endpoint = 127.1.2.3:0\n" IDENTITY,
					     "t.conf", &c, &e),
			 0);
	in = (const struct sockaddr_in *)&c->compat_addr;
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(in->sin_port, 0);
	config_free(c);
	assert_int_equal(config_parse_string(bad, "t.conf", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t.conf:2: compat_endpoint: '10.0.0.1' is not a loopback"));
	assert_true(has_error(&e, "t.conf:3: compat_endpoint: '127.0.0.1' is not ADDRESS:PORT"));
	assert_true(has_error(&e, "t.conf:4: compat_endpoint: '[::1:80' is not ADDRESS:PORT"));
	assert_true(has_error(&e, "t.conf:5: compat_endpoint: '65536' is not a number"));
	assert_true(has_error(&e, "t.conf:6: compat_endpoint: 'localhost:80' is not ADDRESS:PORT"));
	assert_true(has_error(&e, "t.conf:7: compat_lifetime: must be at least 1s"));
	config_errors_clear(&e);
}

/* A value that fails stops there: the rest of its list, the rest of its
 * address and the keys of a refused section are not reported as well. */
static void test_client_limits(void **state)
{
	static const char text[] = "[daemon]\nmax_clients_per_uid = 10\nclient_idle_timeout = 2m\n"
				   "idle_timeout = 1h\n" IDENTITY;
	static const char bad[] = "[daemon]\nmax_clients_per_uid = 0\nclient_idle_timeout = 0\n"
				  "client_idle_timeout = soon\n" IDENTITY;
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), 0);
	assert_int_equal(c->max_clients_per_uid, 10);
	assert_int_equal(c->client_idle_timeout, 120);
	/* idle_timeout keeps its meaning: tokens, not connections. */
	assert_int_equal(c->idle_timeout, 3600);
	config_free(c);
	assert_int_equal(config_parse_string(IDENTITY, "t.conf", &c, &e), 0);
	assert_int_equal(c->max_clients_per_uid, 256);
	assert_int_equal(c->client_idle_timeout, 300);
	config_free(c);
	assert_int_equal(config_parse_string(bad, "t.conf", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t.conf:2: max_clients_per_uid: '0' is not a number from 1 to"));
	assert_true(has_error(&e, "t.conf:3: client_idle_timeout: must be at least 1s"));
	assert_true(has_error(&e, "t.conf:4: client_idle_timeout: 'soon' is not a duration"));
	config_errors_clear(&e);
}

/* The guard on the token services: defaults, 0 for no cap, bounds. */
static void test_guard_limits(void **state)
{
	static const char text[] = "[daemon]\nimds_rate = 10\nimds_concurrency = 0\n"
				   "entra_rate = 0\nentra_concurrency = 2\n" IDENTITY;
	static const char bad[] = "[daemon]\nimds_rate = -1\nimds_concurrency = 1001\n"
				  "entra_rate = 10001\nentra_concurrency = many\n" IDENTITY;
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	assert_int_equal(config_parse_string(IDENTITY, "t.conf", &c, &e), 0);
	assert_int_equal(c->imds_rate, 20);
	assert_int_equal(c->imds_concurrency, 5);
	assert_int_equal(c->entra_rate, 20);
	assert_int_equal(c->entra_concurrency, 8);
	config_free(c);
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), 0);
	assert_int_equal(c->imds_rate, 10);
	assert_int_equal(c->imds_concurrency, 0);
	assert_int_equal(c->entra_rate, 0);
	assert_int_equal(c->entra_concurrency, 2);
	config_free(c);
	assert_int_equal(config_parse_string(bad, "t.conf", &c, &e), -EINVAL);
	assert_true(has_error(&e, "t.conf:2: imds_rate: '-1' is not a number from 0 to 10000"));
	assert_true(
	    has_error(&e, "t.conf:3: imds_concurrency: '1001' is not a number from 0 to 1000"));
	assert_true(has_error(&e, "t.conf:4: entra_rate: '10001' is not a number from 0 to 10000"));
	assert_true(has_error(&e, "t.conf:5: entra_concurrency: 'many' is not a number"));
	config_errors_clear(&e);
}

static void test_a_bad_value_is_reported_once(void **state)
{
	static const char text[] = "[daemon]\ncompat_endpoint = 127.0.0.1:x\n" IDENTITY
				   "allow_users = 0, 99999999999, nosuch-user-xyz\n"
				   "allow_groups = 4294967295, nosuch-group-xyz\n"
				   "[identity bad!]\ncredential = telepathy\n";
	struct config_errors e = {0};
	struct config *c = (struct config *)0x1;

	(void)state;
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), -EINVAL);
	assert_ptr_equal(c, (struct config *)0x1);
	assert_true(
	    has_error(&e, "t.conf:2: compat_endpoint: 'x' is not a number from 0 to 65535"));
	assert_true(has_error(&e, "t.conf:8: allow_users: '99999999999' is not a number"));
	assert_true(has_error(&e, "t.conf:9: allow_groups: '4294967295' is not a number"));
	assert_true(has_error(&e, "t.conf:10: [identity bad!]: names use letters"));
	assert_int_equal(e.n, 4);
	config_errors_clear(&e);
}

/* Writes text to path with the given mode. */
static void write_file(const char *path, const char *text, int mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, (mode_t)mode), 0);
}

/* Asserts that the token request the identity builds holds want. */
static void assert_secret_sent(const struct identity *id, const char *want)
{
	struct cred_input in = {.id = id, .resource = id->resources[0], .now = 1000};
	struct http_request req = {0};
	struct token_result err = {0};

	assert_int_equal(credential_for(id)->build_request(&in, &req, &err), 0);
	assert_non_null(strstr(req.body.p, want));
	http_request_clear(&req);
}

/* Loads a config whose one identity reads its secret from path; returns
 * config_load()'s result, with e holding the messages. */
static int load_secret_at(const char *dir, const char *path, struct config_errors *e)
{
	char conf[256], text[512];
	struct config_options o = {.path = conf};
	struct config *c = NULL;
	int r;

	snprintf(conf, sizeof(conf), "%s/batchtokd.conf", dir);
	snprintf(text, sizeof(text),
		 "[identity batch-prod]\ncredential = secret\ntenant = t\nclient_id = c\n"
		 "secret_file = %s\n",
		 path);
	write_file(conf, text, 0644);
	r = config_load(&o, &c, e);
	if (r == 0)
		assert_secret_sent(config_find_identity(c, "batch-prod"), "client_secret=s3cret");
	config_free(c);
	unlink(conf);
	return r;
}

/* Key material is read only through paths nobody else controls: no
 * directory on the way writable by others (unless sticky, like /tmp), none
 * owned by another user, no symbolic link of another user's; and a FIFO put
 * there neither hangs the daemon nor is read. */
static void test_key_files_are_read_only_through_trusted_paths(void **state)
{
	char dir[] = "/tmp/bt-key-XXXXXX", open_dir[64], secret[96], link[96];
	struct config_errors e = {0};

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(open_dir, sizeof(open_dir), "%s/open", dir);
	snprintf(secret, sizeof(secret), "%s/secret", open_dir);
	snprintf(link, sizeof(link), "%s/link", dir);
	assert_int_equal(mkdir(open_dir, 0700), 0);
	write_file(secret, "s3cret\n", 0600);
	assert_int_equal(load_secret_at(dir, secret, &e), 0);

	/* Anyone could swap the file in a directory anyone may write. */
	assert_int_equal(chmod(open_dir, 0777), 0);
	assert_int_equal(load_secret_at(dir, secret, &e), -EINVAL);
	assert_true(has_error(&e, "/open is writable by its group or by others"));
	assert_true(has_error(&e, "chmod go-w"));
	config_errors_clear(&e);
	/* Not when it is sticky: nobody can rename what is ours there. */
	assert_int_equal(chmod(open_dir, 01777), 0);
	assert_int_equal(load_secret_at(dir, secret, &e), 0);
	assert_int_equal(chmod(open_dir, 0700), 0);

	/* A link of ours is followed, to a file that passes the same checks. */
	assert_int_equal(symlink(secret, link), 0);
	assert_int_equal(load_secret_at(dir, link, &e), 0);
	if (geteuid() == 0) {
		/* Another user's link, and another user's directory. */
		assert_int_equal(lchown(link, 65534, 65534), 0);
		assert_int_equal(load_secret_at(dir, link, &e), -EINVAL);
		assert_true(has_error(&e, "/link: it is a symlink owned by uid 65534"));
		config_errors_clear(&e);
		assert_int_equal(chown(open_dir, 65534, 65534), 0);
		assert_int_equal(load_secret_at(dir, secret, &e), -EINVAL);
		assert_true(has_error(&e, "/open is owned by uid 65534"));
		config_errors_clear(&e);
		assert_int_equal(chown(open_dir, 0, 0), 0);
	}
	unlink(link);

	/* A FIFO: refused at once (a blocking open would wait for a writer). */
	unlink(secret);
	assert_int_equal(mkfifo(secret, 0600), 0);
	assert_int_equal(load_secret_at(dir, secret, &e), -EINVAL);
	assert_true(has_error(&e, "it is not a regular file"));
	config_errors_clear(&e);

	unlink(secret);
	rmdir(open_dir);
	rmdir(dir);
}

/* The config says who gets which tokens: only root or the daemon's user may
 * have written it; a FIFO in its place is refused, not waited on. */
static void test_config_file_is_trusted(void **state)
{
	char dir[] = "/tmp/bt-conf-XXXXXX", conf[64];
	struct config_options o = {.path = conf};
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/batchtokd.conf", dir);
	write_file(conf, MANAGED_IDENTITY, 0644);
	assert_int_equal(config_load(&o, &c, &e), 0);
	config_free(c);
	assert_int_equal(chmod(conf, 0664), 0);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "writable by its group (mode 0664): run chmod go-w"));
	config_errors_clear(&e);
	assert_int_equal(chmod(conf, 0646), 0);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "writable by anyone"));
	config_errors_clear(&e);
	assert_int_equal(chmod(conf, 0644), 0);
	if (geteuid() == 0) {
		assert_int_equal(chown(conf, 65534, 65534), 0);
		assert_int_equal(config_load(&o, &c, &e), -EINVAL);
		assert_true(has_error(&e, "owned by uid 65534, not by root or the daemon's user"));
		config_errors_clear(&e);
	}
	unlink(conf);
	assert_int_equal(mkfifo(conf, 0644), 0);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "not a regular file"));
	config_errors_clear(&e);
	unlink(conf);
	rmdir(dir);
}

/* Outside the unit, system mode reads batchtok_FILE from the directory the
 * packaged unit's LoadCredential= passes (credentials_dir); inside it,
 * $CREDENTIALS_DIRECTORY. FILE alone gets a message naming batchtok_FILE. */
static void test_credentials_outside_the_unit(void **state)
{
	char dir[] = "/tmp/bt-cred-XXXXXX", creds[64], conf[64], secret[96], text[512];
	struct config_options o = {0};
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(creds, sizeof(creds), "%s/credentials", dir);
	snprintf(conf, sizeof(conf), "%s/batchtokd.conf", dir);
	snprintf(secret, sizeof(secret), "%s/batch-prod.secret", creds);
	assert_int_equal(mkdir(creds, 0700), 0);
	write_file(secret, "s3cret\n", 0600);
	unsetenv("CREDENTIALS_DIRECTORY");
	o.path = conf;
	o.default_socket = "/run/batchtok/batchtokd.sock";

	snprintf(text, sizeof(text),
		 "[identity batch-prod]\ncredential = secret\ntenant = t\nclient_id = c\n"
		 "secret_credential = batchtok_batch-prod.secret\n");
	write_file(conf, text, 0644);
	/* Without credentials_dir (user mode) the unit is needed. */
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "secret_credential needs LoadCredential="));
	assert_false(has_error(&e, "batch-prod.secret"));
	config_errors_clear(&e);
	o.credentials_dir = creds;
	assert_int_equal(config_load(&o, &c, &e), 0);
	assert_secret_sent(config_find_identity(c, "batch-prod"), "client_secret=s3cret");
	config_free(c);
	/* The file must still be private. */
	assert_int_equal(chmod(secret, 0644), 0);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "is accessible by others"));
	config_errors_clear(&e);
	assert_int_equal(chmod(secret, 0600), 0);

	/* systemd passes no symlinks: neither is one read outside the unit. */
	snprintf(text, sizeof(text), "%s/link.secret", creds);
	assert_int_equal(symlink(secret, text), 0);
	write_file(conf,
		   "[identity batch-prod]\ncredential = secret\ntenant = t\nclient_id = c\n"
		   "secret_credential = batchtok_link.secret\n",
		   0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "link.secret is a symbolic link"));
	config_errors_clear(&e);
	unlink(text);
	/* Nothing after the prefix. */
	write_file(conf,
		   "[identity batch-prod]\ncredential = secret\ntenant = t\nclient_id = c\n"
		   "secret_credential = batchtok_..\n",
		   0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "no file name after batchtok_"));
	config_errors_clear(&e);
	/* A value naming no file is not repeated: it may be a pasted secret. */
	write_file(conf,
		   "[identity batch-prod]\ncredential = secret\ntenant = t\nclient_id = c\n"
		   "secret_credential = Zx8Q~pasted.secret\n",
		   0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "put the file there"));
	assert_false(has_error(&e, "Zx8Q"));
	config_errors_clear(&e);

	/* The file's own name: the message gives the name the unit uses. */
	snprintf(text, sizeof(text),
		 "[identity batch-prod]\ncredential = secret\ntenant = t\nclient_id = c\n"
		 "secret_credential = batch-prod.secret\n");
	write_file(conf, text, 0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "as batchtok_batch-prod.secret: write that name"));
	config_errors_clear(&e);
	/* The same slip inside the unit. */
	snprintf(text, sizeof(text), "%s/batchtok_batch-prod.secret", creds);
	assert_int_equal(rename(secret, text), 0);
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	assert_true(has_error(&e, "no such credential; the unit passes it as "
				  "batchtok_batch-prod.secret"));
	config_errors_clear(&e);
	unsetenv("CREDENTIALS_DIRECTORY");

	unlink(text);
	unlink(conf);
	rmdir(creds);
	rmdir(dir);
}

/* The daemon makes only the socket's own directory: a path whose directory
 * and the one above are both missing is reported at load, with its line; a
 * config in memory is not checked against the file system. */
static void test_socket_directory(void **state)
{
	char dir[] = "/tmp/bt-sock-XXXXXX", conf[64], text[512], want[256];
	struct config_options o = {0};
	struct config_errors e = {0};
	struct config *c = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/batchtokd.conf", dir);
	o.path = conf;
	o.default_socket = "/run/batchtok/batchtokd.sock";

	/* dir exists: the daemon makes dir/new. */
	snprintf(text, sizeof(text), "[daemon]\nsocket = %s/new/s.sock\n" MANAGED_IDENTITY, dir);
	write_file(conf, text, 0644);
	assert_int_equal(config_load(&o, &c, &e), 0);
	config_free(c);
	/* Neither dir/a/b nor dir/a: reported, with the fix. */
	snprintf(text, sizeof(text),
		 "[daemon]\n# the socket\nsocket = %s/a/b/s.sock\n" MANAGED_IDENTITY, dir);
	write_file(conf, text, 0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	snprintf(want, sizeof(want),
		 "%s:3: socket: the directory %s/a/b does not exist, nor %s/a above it, and "
		 "batchtokd creates only the last one: create %s/a (mkdir -p %s/a)",
		 conf, dir, dir, dir, dir);
	assert_true(has_error(&e, want));
	assert_int_equal(e.n, 1);
	config_errors_clear(&e);
	/* The same text in memory is not checked. */
	assert_int_equal(config_parse_string(text, "t", &c, &e), 0);
	config_free(c);
	/* The default socket is checked too, and the fix is socket =. */
	snprintf(text, sizeof(text), "%s/a/b/s.sock", dir);
	o.default_socket = text;
	write_file(conf, MANAGED_IDENTITY, 0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	snprintf(want, sizeof(want), "%s: the default socket %s/a/b/s.sock: the directory", conf,
		 dir);
	assert_true(has_error(&e, want));
	assert_true(has_error(&e, "or set socket = in [daemon] to a socket in an existing"));
	config_errors_clear(&e);
	/* A file where a directory should be. */
	snprintf(text, sizeof(text), "[daemon]\nsocket = %s/s.sock\n" MANAGED_IDENTITY, conf);
	write_file(conf, text, 0644);
	assert_int_equal(config_load(&o, &c, &e), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: socket: %s is not a directory", conf, conf);
	assert_true(has_error(&e, want));
	config_errors_clear(&e);

	unlink(conf);
	rmdir(dir);
}

/* --- drop-ins: the *.conf files in NAME.conf.d beside the main file --- */

/* A main config file and its drop-in directory, in a new directory. */
struct dropins {
	char dir[32];  /* /tmp/bt-dropin-XXXXXX */
	char conf[64]; /* dir/batchtokd.conf */
	char d[80];    /* dir/batchtokd.conf.d */
};

static void dropins_make(struct dropins *t, const char *main_text, bool with_dir)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/bt-dropin-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->conf, sizeof(t->conf), "%s/batchtokd.conf", t->dir);
	snprintf(t->d, sizeof(t->d), "%s.d", t->conf);
	write_file(t->conf, main_text, 0644);
	if (with_dir)
		assert_int_equal(mkdir(t->d, 0755), 0);
}

/* The path of name in the drop-in directory, in buf. */
static const char *dropin_path(const struct dropins *t, const char *name, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", t->d, name);
	return buf;
}

static void dropin_write(const struct dropins *t, const char *name, const char *text, int mode)
{
	char path[160];

	write_file(dropin_path(t, name, path, sizeof(path)), text, mode);
}

static int dropins_load(const struct dropins *t, struct config **ret, struct config_errors *e)
{
	struct config_options o = {.path = t->conf};

	return config_load(&o, ret, e);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void dropins_remove(struct dropins *t)
{
	assert_int_equal(nftw(t->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Whether an error names path:line (or path:) and then says what. */
static int has_error_at(const struct config_errors *e, const char *path, int line, const char *what)
{
	char want[512];

	if (line)
		snprintf(want, sizeof(want), "%s:%d: %s", path, line, what);
	else
		snprintf(want, sizeof(want), "%s: %s", path, what);
	return has_error(e, want);
}

/* Drop-ins are read after the main file in strcmp() order ("9-" after
 * "20-", whatever the locale), each [daemon] key set last winning and each
 * identity kept where it was written; names not ending in .conf, or
 * starting with '.', are not read at all. */
static void test_dropins_are_read_in_order(void **state)
{
	static const char *const ignored[] = {
	    ".hidden.conf", "x.conf~", "x.conf.dpkg-old", "x.conf.disabled", "README",
	    "X.CONF",	    ".conf"};
	struct config_errors e = {0};
	struct config *c = NULL;
	struct dropins t;
	char path[160];

	(void)state;
	dropins_make(&t,
		     "[daemon]\nmin_validity = 1m\nadmin_group = 0\n"
		     "[identity a]\ncredential = managed-identity\n",
		     true);
	dropin_write(&t, "20-b.conf",
		     "[daemon]\nmin_validity = 3m\n[identity b]\ncredential = managed-identity\n",
		     0644);
	dropin_write(&t, "10-a.conf",
		     "# first\n[daemon]\nmin_validity = 2m\nlog_level = debug\nadmin_group =\n"
		     "[identity c]\ncredential = managed-identity\ndefault = yes\n",
		     0644);
	dropin_write(
	    &t, "9-late.conf",
	    "[daemon]\nmin_validity = 4m\n[identity late]\ncredential = managed-identity\n", 0644);
	for (size_t i = 0; i < sizeof(ignored) / sizeof(*ignored); i++)
		dropin_write(&t, ignored[i], "this would not parse\n", 0644);
	assert_int_equal(mkdir(dropin_path(&t, "sub.d", path, sizeof(path)), 0755), 0);

	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_int_equal(e.n, 0);
	assert_int_equal(c->min_validity, 240);
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_int_equal(c->admin_gid, (gid_t)-1); /* emptied by a drop-in */
	assert_int_equal(c->n_files, 4);
	assert_string_equal(c->files[0], t.conf);
	assert_string_equal(c->files[1], dropin_path(&t, "10-a.conf", path, sizeof(path)));
	assert_string_equal(c->files[2], dropin_path(&t, "20-b.conf", path, sizeof(path)));
	assert_string_equal(c->files[3], dropin_path(&t, "9-late.conf", path, sizeof(path)));
	assert_int_equal(c->n_identities, 4);
	assert_string_equal(c->identities[0].name, "a");
	assert_string_equal(c->identities[0].file, t.conf);
	assert_string_equal(c->identities[1].name, "c");
	assert_string_equal(c->identities[1].file, c->files[1]);
	assert_int_equal(c->identities[1].line, 6);
	assert_string_equal(c->identities[2].name, "b");
	assert_string_equal(c->identities[3].name, "late");
	assert_ptr_equal(c->default_identity, &c->identities[1]);
	config_free(c);
	dropins_remove(&t);
}

/* No directory, or an empty one, is no drop-in; the only identity may be in
 * a drop-in. The directory decides what the daemon reads: one that others
 * may add files to (sticky or not) is refused, as is a file in its place. */
static void test_dropin_directory(void **state)
{
	struct config_errors e = {0};
	struct config *c = NULL;
	struct dropins t;

	(void)state;
	dropins_make(&t, MANAGED_IDENTITY, false);
	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_int_equal(c->n_files, 1);
	config_free(c);
	assert_int_equal(mkdir(t.d, 0755), 0);
	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_int_equal(c->n_files, 1);
	config_free(c);

	write_file(t.conf, "[daemon]\nlog_level = debug\n", 0644);
	dropin_write(&t, "node.conf", MANAGED_IDENTITY, 0644);
	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_int_equal(c->n_identities, 1);
	assert_string_equal(c->identities[0].file, c->files[1]);
	config_free(c);

	assert_int_equal(chmod(t.d, 0775), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, t.d, 0,
				 "the drop-in directory is writable by its group (mode 0775), who "
				 "could add an identity to the config: run chmod go-w"));
	/* The identity may be in what was not read: no "add one". */
	assert_false(has_error(&e, "no [identity NAME] section"));
	config_errors_clear(&e);
	assert_int_equal(chmod(t.d, 01777), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, t.d, 0, "the drop-in directory is writable by anyone"));
	config_errors_clear(&e);
	assert_int_equal(chmod(t.d, 0755), 0);
	if (geteuid() == 0) {
		assert_int_equal(chown(t.d, 65534, 65534), 0);
		assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
		assert_true(has_error_at(&e, t.d, 0,
					 "the drop-in directory is owned by uid 65534, not by "
					 "root or the daemon's user"));
		config_errors_clear(&e);
		assert_int_equal(chown(t.d, 0, 0), 0);
	} else {
		/* A directory that cannot be read is named, not skipped. */
		assert_int_equal(chmod(t.d, 0), 0);
		assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
		assert_true(has_error_at(&e, t.d, 0, "cannot read the drop-in directory"));
		config_errors_clear(&e);
		assert_int_equal(chmod(t.d, 0755), 0);
	}

	dropins_remove(&t);
	dropins_make(&t, MANAGED_IDENTITY, false);
	write_file(t.d, "", 0644);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, t.d, 0, "not a directory"));
	config_errors_clear(&e);
	dropins_remove(&t);
}

/* Every problem in a drop-in names the drop-in and its own line: while it
 * is read, when its identities are checked after the last file, and for
 * keys of a kind of credential, checked once the kind is known. A drop-in
 * starts outside any section: its first key does not join the section the
 * main file ended in. */
static void test_dropin_errors_name_their_file_and_line(void **state)
{
	struct config_errors e = {0};
	struct config *c = NULL;
	struct dropins t;
	char bad[160], more[160];

	(void)state;
	dropins_make(&t, MANAGED_IDENTITY, true);
	dropin_write(&t, "50-bad.conf",
		     "tenant = t\n"
		     "[daemon]\n"
		     "min_validity = soon\n"
		     "bogus = 1\n"
		     "[identity x]\n"
		     "credential = managed-identity\n"
		     "secret_file = /s\n"
		     "[identity y]\n"
		     "credential = secret\n"
		     "default = yes\n"
		     "not a key value line\n",
		     0644);
	dropin_write(&t, "60-more.conf",
		     "[identity z]\ncredential = managed-identity\ndefault = yes\n", 0644);
	dropin_path(&t, "50-bad.conf", bad, sizeof(bad));
	dropin_path(&t, "60-more.conf", more, sizeof(more));

	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, bad, 1, "tenant = is outside any section"));
	assert_true(has_error_at(&e, bad, 3, "min_validity: 'soon'"));
	assert_true(has_error_at(&e, bad, 4, "unknown key 'bogus' in [daemon]"));
	assert_true(has_error_at(&e, bad, 7,
				 "[identity x]: secret_file = applies to credential = secret, "
				 "not managed-identity"));
	assert_true(has_error_at(&e, bad, 8, "[identity y]: tenant = is missing"));
	assert_true(has_error_at(&e, bad, 11, "syntax error"));
	assert_true(has_error_at(&e, more, 3, "more than one identity says default = yes"));
	/* Nothing is blamed on the main file, which is fine. */
	for (size_t i = 0; i < e.n; i++)
		assert_true(strncmp(e.msgs[i], t.conf, strlen(t.conf)) != 0 ||
			    e.msgs[i][strlen(t.conf)] == '.');
	config_errors_clear(&e);
	dropins_remove(&t);
}

/* An identity is defined once, in one file: a second definition in a
 * drop-in is an error naming both places, never a merge of two
 * credentials or allow-lists. */
static void test_dropin_duplicate_identity(void **state)
{
	struct config_errors e = {0};
	struct config *c = NULL;
	struct dropins t;
	char dup[160], first[160], again[160], want[512];

	(void)state;
	dropins_make(&t, "[daemon]\n" MANAGED_IDENTITY, true);
	dropin_write(&t, "10-dup.conf",
		     "# the same name\n[identity node]\ncredential = managed-identity\n"
		     "allow_users = 0\n",
		     0644);
	dropin_write(&t, "20-first.conf", "[identity other]\ncredential = managed-identity\n",
		     0644);
	dropin_write(&t, "30-again.conf", "\n\n[identity other]\ncredential = managed-identity\n",
		     0644);
	dropin_path(&t, "10-dup.conf", dup, sizeof(dup));
	dropin_path(&t, "20-first.conf", first, sizeof(first));
	dropin_path(&t, "30-again.conf", again, sizeof(again));

	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	snprintf(want, sizeof(want),
		 "[identity node] is defined twice, first at %s:2: define each "
		 "identity in one section of one file",
		 t.conf);
	assert_true(has_error_at(&e, dup, 2, want));
	snprintf(want, sizeof(want), "[identity other] is defined twice, first at %s:1", first);
	assert_true(has_error_at(&e, again, 3, want));
	assert_int_equal(e.n, 2);
	config_errors_clear(&e);
	dropins_remove(&t);
}

/* A drop-in passes the main file's checks (a regular file of at most
 * 1 MiB, owned by root or the daemon's user, writable by nobody else); a
 * FIFO is refused, not waited on; a symlink is followed only if it is
 * root's or ours and leads through directories nobody else can change. A
 * refused drop-in is named and the others are still read. */
static void test_dropins_are_trusted(void **state)
{
	struct config_errors e = {0};
	struct config *c = NULL;
	struct dropins t;
	char p[160], open_dir[64], target[96];

	(void)state;
	dropins_make(&t, "[daemon]\n", true);
	dropin_write(&t, "10-ok.conf", MANAGED_IDENTITY, 0644);
	dropin_path(&t, "20-x.conf", p, sizeof(p));

	write_file(p, "[identity x]\ncredential = managed-identity\n", 0646);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 0, "the config file is writable by anyone (mode 0646)"));
	assert_false(has_error(&e, "10-ok.conf"));
	assert_false(has_error(&e, "no [identity NAME] section"));
	config_errors_clear(&e);
	assert_int_equal(chmod(p, 0664), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 0, "the config file is writable by its group"));
	config_errors_clear(&e);
	assert_int_equal(chmod(p, 0644), 0);
	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_int_equal(c->n_identities, 2);
	config_free(c);
	if (geteuid() == 0) {
		assert_int_equal(chown(p, 65534, 65534), 0);
		assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
		assert_true(has_error_at(&e, p, 0, "the config file is owned by uid 65534"));
		config_errors_clear(&e);
	}
	unlink(p);

	/* A FIFO: refused at once; a blocking open would wait for a writer. */
	assert_int_equal(mkfifo(p, 0644), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 0, "not a regular file"));
	config_errors_clear(&e);
	unlink(p);
	/* So is a directory with a drop-in's name. */
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 0, "not a regular file"));
	config_errors_clear(&e);
	rmdir(p);

	/* A link of ours to a file that passes the same checks is followed;
	 * the messages name the link, where the administrator looks. */
	snprintf(target, sizeof(target), "%s/elsewhere.conf", t.dir);
	write_file(target, "[identity x]\ncredential = managed-identity\nbogus = 1\n", 0644);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 3, "unknown key 'bogus'"));
	config_errors_clear(&e);
	write_file(target, "[identity x]\ncredential = managed-identity\n", 0644);
	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_string_equal(config_find_identity(c, "x")->file, p);
	config_free(c);
	if (geteuid() == 0) {
		/* Another user's link. */
		assert_int_equal(lchown(p, 65534, 65534), 0);
		assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
		assert_true(has_error_at(&e, p, 0,
					 "cannot use the drop-in: it is a symlink owned by uid "
					 "65534"));
		config_errors_clear(&e);
	}
	unlink(p);
	/* A link into a directory anyone may write: anyone could swap the file. */
	snprintf(open_dir, sizeof(open_dir), "%s/open", t.dir);
	assert_int_equal(mkdir(open_dir, 0755), 0);
	snprintf(target, sizeof(target), "%s/x.conf", open_dir);
	write_file(target, "[identity x]\ncredential = managed-identity\n", 0644);
	assert_int_equal(chmod(open_dir, 0777), 0);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 0, "cannot use the drop-in: the directory"));
	assert_true(has_error(&e, "/open is writable by its group or by others"));
	config_errors_clear(&e);
	unlink(p);
	/* A dangling link. */
	assert_int_equal(symlink("/nonexistent/x.conf", p), 0);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	assert_true(has_error_at(&e, p, 0, "cannot open the drop-in: No such file or directory"));
	config_errors_clear(&e);
	unlink(p);
	dropins_remove(&t);
}

/* At most CONFIG_DROPIN_MAX drop-ins are read; more is refused with a
 * message, not read for ever. */
static void test_too_many_dropins(void **state)
{
	struct config_errors e = {0};
	struct config *c = NULL;
	struct dropins t;
	char name[32], want[128];

	(void)state;
	dropins_make(&t, MANAGED_IDENTITY, true);
	for (int i = 0; i < CONFIG_DROPIN_MAX; i++) {
		snprintf(name, sizeof(name), "%03d.conf", i);
		dropin_write(&t, name, "# nothing\n", 0644);
	}
	assert_int_equal(dropins_load(&t, &c, &e), 0);
	assert_int_equal(c->n_files, CONFIG_DROPIN_MAX + 1);
	config_free(c);
	dropin_write(&t, "one-more.conf", "# nothing\n", 0644);
	assert_int_equal(dropins_load(&t, &c, &e), -EINVAL);
	snprintf(want, sizeof(want), "%d drop-ins (*.conf), more than the %d that batchtokd reads",
		 CONFIG_DROPIN_MAX + 1, CONFIG_DROPIN_MAX);
	assert_true(has_error_at(&e, t.d, 0, want));
	assert_int_equal(e.n, 1);
	config_errors_clear(&e);
	dropins_remove(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_product_example),
	    cmocka_unit_test(test_errors_name_file_and_line),
	    cmocka_unit_test(test_unknown_key_hints),
	    cmocka_unit_test(test_every_listed_key_is_accepted),
	    cmocka_unit_test(test_missing_pieces),
	    cmocka_unit_test(test_repeated_list_keys_add),
	    cmocka_unit_test(test_bad_credential_is_not_also_missing),
	    cmocka_unit_test(test_empty_and_repeated_sections),
	    cmocka_unit_test(test_keys_outside_sections_and_empty_values),
	    cmocka_unit_test(test_comments_after_values),
	    cmocka_unit_test(test_long_line_is_reported_not_split),
	    cmocka_unit_test(test_list_keys_add_up),
	    cmocka_unit_test(test_resource_selection),
	    cmocka_unit_test(test_clouds_and_defaults),
	    cmocka_unit_test(test_credential_kinds),
	    cmocka_unit_test(test_credential_kind_errors),
	    cmocka_unit_test(test_compat_endpoint),
	    cmocka_unit_test(test_client_limits),
	    cmocka_unit_test(test_guard_limits),
	    cmocka_unit_test(test_a_bad_value_is_reported_once),
	    cmocka_unit_test(test_credentials_outside_the_unit),
	    cmocka_unit_test(test_config_file_is_trusted),
	    cmocka_unit_test(test_key_files_are_read_only_through_trusted_paths),
	    cmocka_unit_test(test_socket_directory),
	    cmocka_unit_test(test_dropins_are_read_in_order),
	    cmocka_unit_test(test_dropin_directory),
	    cmocka_unit_test(test_dropin_errors_name_their_file_and_line),
	    cmocka_unit_test(test_dropin_duplicate_identity),
	    cmocka_unit_test(test_dropins_are_trusted),
	    cmocka_unit_test(test_too_many_dropins),
	    cmocka_unit_test(test_program_rules),
	    cmocka_unit_test(test_program_rule_errors),
	    cmocka_unit_test(test_user_units_need_users),
	    cmocka_unit_test(test_program_rule_hints),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
