/* batchtok.c - the batchtok command: a thin shell over libbatchtok that
 * prints tokens and status and turns failures into PRODUCT.md's exit codes. */
#include "batchtok.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../proto/buf.h"
#include "../proto/duration.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_OTHER = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
	EXIT_DENIED = 4,
	EXIT_UNKNOWN = 5,
	EXIT_REJECTED = 6,
	EXIT_UNAVAILABLE = 7,
	EXIT_TIMEOUT = 8,
	/* exec: as shells and env(1) report a command they cannot run. */
	EXIT_CANNOT_RUN = 126, /* found, but not executable */
	EXIT_NOT_FOUND = 127,
};

/* exec --compat renews its capability at most this often (ms). */
#define RENEW_MIN_MS 100

/* Longest --min-validity accepted: a token never lives longer than a day. */
#define MIN_VALIDITY_MAX (24 * 3600)

/* -i and -r as the commands that name a token explain them. */
#define HELP_IDENTITY                                                                              \
	"  -i, --identity IDENTITY  one of the daemon's identities (default: its default\n"        \
	"                           identity; 'batchtok status' lists those you may use)\n"
#define HELP_RESOURCE                                                                              \
	"  -r, --resource RESOURCE  what the token is for (default: the identity's first\n"        \
	"                           resource, normally https://batch.core.windows.net/)\n"

struct ctx;

/* A command, its synopsis and its help. The synopsis has a line per form of
 * the command; a line starting with a space continues the form above. */
struct command {
	const char *name;
	int (*run)(struct ctx *ctx, int argc, char **argv);
	const char *synopsis;
	const char *help; /* what it does and its options: COMMAND --help */
};

static const struct command *find_command(const char *name);

/* Prints c's synopsis: after "  NAME" in the list of all commands, or as
 * its own usage line (alone). */
static void print_synopsis(FILE *f, const struct command *c, bool alone)
{
	const char *lead = alone ? "usage: batchtok " : "  ";
	int name_end = (int)(strlen(lead) + strlen(c->name)), width;
	char head[64];

	width = snprintf(head, sizeof(head), alone ? "%s%s " : "%s%-8s ", lead, c->name);
	for (const char *line = c->synopsis, *nl; *line; line = nl + 1) {
		int n;

		nl = strchr(line, '\n');
		n = (int)(nl - line);
		if (*line == ' ')
			fprintf(f, "%*s%.*s\n", width, "", n - 1, line + 1);
		else if (n == 0) /* no options: no blanks after the name */
			fprintf(f, "%.*s\n", name_end, head);
		else
			fprintf(f, "%s%.*s\n", head, n, line);
		/* Later forms line up under the first: "usage:" becomes blanks. */
		if (alone)
			memset(head, ' ', 6);
	}
}

/* COMMAND --help or -h: the command's usage and help, on stdout. */
static int command_help(const char *name)
{
	const struct command *c = find_command(name);

	print_synopsis(stdout, c, true);
	fputs(c->help, stdout);
	fputs("-S SOCKET and -t TIMEOUT go before the command: see 'batchtok --help'.\n", stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int usage(const char *fmt, const char *arg)
{
	fputs("batchtok: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'batchtok --help'.\n", stderr);
	return EXIT_USAGE;
}

static int exit_for(int r)
{
	switch (r) {
	case -ECONNREFUSED:
		return EXIT_UNREACHABLE;
	case -EACCES:
		return EXIT_DENIED;
	case -ENOENT:
		return EXIT_UNKNOWN;
	case -EKEYREJECTED:
		return EXIT_REJECTED;
	case -EHOSTUNREACH:
		return EXIT_UNAVAILABLE;
	case -ETIMEDOUT:
		return EXIT_TIMEOUT;
	}
	return EXIT_OTHER;
}

static int report(batchtok *bt, int r)
{
	const char *msg = batchtok_error(bt);

	fprintf(stderr, "batchtok: %s\n", *msg ? msg : strerror(-r));
	return exit_for(r);
}

/* Where and how to reach the daemon; connected only after a command's
 * arguments have been checked, so usage errors never depend on the daemon. */
struct ctx {
	const char *socket_path;
	int timeout_ms;
	batchtok *bt;
};

static int connect_daemon(struct ctx *ctx)
{
	int r;

	if ((r = batchtok_new(&ctx->bt)) < 0) {
		fprintf(stderr, "batchtok: %s\n", strerror(-r));
		return EXIT_OTHER;
	}
	batchtok_set_timeout(ctx->bt, ctx->timeout_ms);
	if ((r = batchtok_connect(ctx->bt, ctx->socket_path)) < 0)
		return report(ctx->bt, r);
	return 0;
}

/* Options shared by the commands that name a token. */
struct query {
	struct batchtok_request req;
	const char *output;
	const char *env_name;
	const char *claims;    /* get --claims: as given */
	const char *on_rotate; /* exec --on-rotate: as given */
	bool compat;
	bool all;  /* forget --all */
	bool help; /* --help was given and answered: exit with what parse_query returned */
};

/* Long options without a letter; in parse_query's `allowed` each stands for
 * the letter 'A' + (value - OPT_SCOPE): --scope is A, --claims F. */
enum {
	OPT_SCOPE = 256,
	OPT_MIN_VALIDITY,
	OPT_FORCE,
	OPT_ENV,
	OPT_COMPAT,
	OPT_CLAIMS,
	OPT_ON_ROTATE,
	OPT_ALL,
};

/* Parses a command's options (argv[0] is the command); returns 0, or the
 * exit status when it has printed a usage error, or help (q->help). */
static int parse_query(int argc, char **argv, const char *allowed, struct query *q)
{
	static const struct option opts[] = {
	    {"identity", required_argument, NULL, 'i'},
	    {"resource", required_argument, NULL, 'r'},
	    {"output", required_argument, NULL, 'o'},
	    {"scope", required_argument, NULL, OPT_SCOPE},
	    {"min-validity", required_argument, NULL, OPT_MIN_VALIDITY},
	    {"force-refresh", no_argument, NULL, OPT_FORCE},
	    {"env", required_argument, NULL, OPT_ENV},
	    {"compat", no_argument, NULL, OPT_COMPAT},
	    {"claims", required_argument, NULL, OPT_CLAIMS},
	    {"on-rotate", required_argument, NULL, OPT_ON_ROTATE},
	    {"all", no_argument, NULL, OPT_ALL},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	uint64_t secs;
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+i:r:o:h", opts, NULL)) != -1) {
		if (c == 'h') {
			q->help = true;
			return command_help(argv[0]);
		}
		if (c != '?' && c != ':' && !strchr(allowed, c < 256 ? c : 'A' + (c - 256)))
			/* "-i x": optarg is the word after the option's own. */
			return usage("option '%s' does not apply to this command",
				     optarg && optarg == argv[optind - 1] ? argv[optind - 2]
									  : argv[optind - 1]);
		switch (c) {
		case 'i':
			q->req.identity = optarg;
			break;
		case 'r':
			q->req.resource = optarg;
			break;
		case 'o':
			q->output = optarg;
			break;
		case OPT_SCOPE:
			q->req.scope = optarg;
			break;
		case OPT_MIN_VALIDITY:
			if (bt_parse_duration(optarg, MIN_VALIDITY_MAX, &secs) < 0)
				return usage("--min-validity: '%s' is not a duration up to 24h "
					     "(like 90, 90s, 5m, 1h)",
					     optarg);
			q->req.min_validity = (unsigned)secs;
			break;
		case OPT_FORCE:
			q->req.flags |= BATCHTOK_FORCE_REFRESH;
			break;
		case OPT_ENV:
			q->env_name = optarg;
			break;
		case OPT_COMPAT:
			q->compat = true;
			break;
		case OPT_CLAIMS:
			q->claims = optarg;
			break;
		case OPT_ON_ROTATE:
			q->on_rotate = optarg;
			break;
		case OPT_ALL:
			q->all = true;
			break;
		default:
			return usage("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (q->req.resource && q->req.scope)
		return usage("%s", "give either --resource or --scope, not both");
	return 0;
}

/* Prints s in single quotes, as a POSIX shell reads it back. */
static void shell_quote(const char *s)
{
	putchar('\'');
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*s);
	}
	putchar('\'');
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* The fields and names of `az account get-access-token`, and ours: as a
 * document (get -o json), or on one line with refresh_at (watch -o json). */
static void print_json(const struct batchtok_token *t, bool one_line, int64_t refresh_at)
{
	const char *sep = one_line ? ", " : ",\n  ";
	char when[64] = "";
	time_t e = (time_t)t->expires_on;
	struct tm tm;

	if (localtime_r(&e, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S.000000", &tm);
	fputs(one_line ? "{\"accessToken\": " : "{\n  \"accessToken\": ", stdout);
	print_json_string(t->access_token);
	printf("%s\"expiresOn\": \"%s\"%s\"expires_on\": %" PRId64 "%s\"tenant\": ", sep, when, sep,
	       t->expires_on, sep);
	print_json_string(t->tenant);
	printf("%s\"tokenType\": ", sep);
	print_json_string(t->token_type);
	printf("%s\"identity\": ", sep);
	print_json_string(t->identity);
	printf("%s\"resource\": ", sep);
	print_json_string(t->resource);
	if (one_line) {
		/* When the daemon plans the next token: null when it plans none. */
		if (refresh_at > 0)
			printf("%s\"refresh_at\": %" PRId64 "}\n", sep, refresh_at);
		else
			printf("%s\"refresh_at\": null}\n", sep);
	} else {
		fputs("\n}\n", stdout);
	}
}

static int print_token(const struct batchtok_token *t, const char *output)
{
	if (!output || strcmp(output, "token") == 0) {
		printf("%s\n", t->access_token);
	} else if (strcmp(output, "header") == 0) {
		printf("Authorization: %s %s\n", t->token_type, t->access_token);
	} else if (strcmp(output, "env") == 0) {
		fputs("BATCHTOK_ACCESS_TOKEN=", stdout);
		shell_quote(t->access_token);
		printf("\nBATCHTOK_EXPIRES_ON='%" PRId64 "'\n", t->expires_on);
	} else {
		print_json(t, false, 0);
	}
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

static int check_output(const char *output, const char *const *allowed)
{
	if (!output)
		return 0;
	for (; *allowed; allowed++)
		if (strcmp(output, *allowed) == 0)
			return 0;
	return usage("unknown output format '%s'", output);
}

/* A JSON value's syntax (RFC 8259), nesting at most JSON_DEPTH_MAX deep:
 * enough to tell a claims challenge from a typo before the daemon is asked.
 * Advances *p past the value; false if it is not one. */
#define JSON_DEPTH_MAX 32

static void json_space(const char **p)
{
	while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r')
		(*p)++;
}

static bool json_string(const char **p)
{
	if (*(*p)++ != '"')
		return false;
	for (;;) {
		unsigned char c = (unsigned char)*(*p)++;

		if (c == '"')
			return true;
		if (c < 0x20)
			return false; /* the end of the text among them */
		if (c != '\\')
			continue;
		c = (unsigned char)*(*p)++;
		if (c == 'u') {
			for (int i = 0; i < 4; i++, (*p)++)
				if (!strchr("0123456789abcdefABCDEF", **p) || !**p)
					return false;
		} else if (!c || !strchr("\"\\/bfnrt", c)) {
			return false;
		}
	}
}

static bool json_digits(const char **p)
{
	const char *start = *p;

	while (**p >= '0' && **p <= '9')
		(*p)++;
	return *p > start;
}

static bool json_value(const char **p, int depth)
{
	char close;

	json_space(p);
	switch (**p) {
	case '"':
		return json_string(p);
	case '{':
	case '[':
		if (depth >= JSON_DEPTH_MAX)
			return false;
		close = **p == '{' ? '}' : ']';
		(*p)++;
		json_space(p);
		if (**p == close) {
			(*p)++;
			return true;
		}
		for (;;) {
			if (close == '}') {
				json_space(p);
				if (!json_string(p))
					return false;
				json_space(p);
				if (*(*p)++ != ':')
					return false;
			}
			if (!json_value(p, depth + 1))
				return false;
			json_space(p);
			if (**p == close) {
				(*p)++;
				return true;
			}
			if (*(*p)++ != ',')
				return false;
		}
	case 't':
	case 'f':
	case 'n': {
		const char *word = **p == 't' ? "true" : **p == 'f' ? "false" : "null";
		if (strncmp(*p, word, strlen(word)))
			return false;
		*p += strlen(word);
		return true;
	}
	}
	if (**p == '-')
		(*p)++;
	if (**p == '0')
		(*p)++;
	else if (!json_digits(p))
		return false;
	if (**p == '.' && ((*p)++, !json_digits(p)))
		return false;
	if (**p == 'e' || **p == 'E') {
		(*p)++;
		if (**p == '+' || **p == '-')
			(*p)++;
		if (!json_digits(p))
			return false;
	}
	return true;
}

/* Whether s is one JSON object and nothing else. */
static bool json_object(const char *s)
{
	json_space(&s);
	if (*s != '{' || !json_value(&s, 0))
		return false;
	json_space(&s);
	return *s == 0;
}

/* Decodes base64 or base64url, padded or not, into a new string in *ret;
 * -EINVAL for anything else, and for what decodes to a NUL byte. */
static int base64_decode(const char *s, char **ret)
{
	size_t n = strlen(s), k = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *out;

	while (n && s[n - 1] == '=')
		n--;
	if (n % 4 == 1 || strlen(s) - n > 2)
		return -EINVAL;
	if (!(out = malloc(n / 4 * 3 + 3)))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *alphabet =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
		const char *c = s[i] ? strchr(alphabet, s[i]) : NULL;
		int v = c			     ? (int)(c - alphabet)
			: s[i] == '+' || s[i] == '-' ? 62
			: s[i] == '/' || s[i] == '_' ? 63
						     : -1;

		if (v < 0) {
			free(out);
			return -EINVAL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[k] = (char)(acc >> bits & 0xff);
			if (!out[k++]) {
				free(out);
				return -EINVAL;
			}
		}
	}
	out[k] = 0;
	*ret = out;
	return 0;
}

/* get --claims: the JSON object of a claims challenge, or the base64 of it
 * as the WWW-Authenticate header's claims= parameter carries it. The JSON in
 * a new string in *ret, or the exit status of a usage error. */
static int claims_arg(const char *arg, char **ret)
{
	const char *p = arg;
	char *json = NULL;
	bool raw;
	int r;

	json_space(&p);
	raw = *p == '{';
	r = raw ? ((json = strdup(arg)) ? 0 : -ENOMEM) : base64_decode(arg, &json);
	if (r == -ENOMEM) {
		fprintf(stderr, "batchtok: out of memory\n");
		return EXIT_OTHER;
	}
	if (r < 0 || !json_object(json)) {
		free(json);
		return usage(
		    raw ? "--claims: '%.60s' is not valid JSON: pass the claims challenge "
			  "as the resource sent it (a JSON object, or its base64)"
			: "--claims: '%.60s' is neither a JSON object nor the base64 of one: "
			  "pass the claims=\"...\" value of the resource's WWW-Authenticate "
			  "header, or its decoded JSON",
		    arg);
	}
	if (strlen(json) > 8192) {
		free(json);
		return usage("--claims: '%.60s...' is longer than the 8 KiB a claims challenge may "
			     "be",
			     arg);
	}
	*ret = json;
	return 0;
}

static int cmd_get(struct ctx *ctx, int argc, char **argv)
{
	static const char *const formats[] = {"token", "json", "header", "env", NULL};
	struct query q = {0};
	struct batchtok_token *t;
	char *claims = NULL;
	int r;

	if ((r = parse_query(argc, argv, "iroABCF", &q)) || q.help ||
	    (r = check_output(q.output, formats)))
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if (q.claims && (q.req.flags & BATCHTOK_FORCE_REFRESH))
		return usage("%s", "--claims fetches a new token already: drop --force-refresh");
	if (q.claims && (r = claims_arg(q.claims, &claims)))
		return r;
	if ((r = connect_daemon(ctx)) == 0) {
		r = claims ? batchtok_get_token_claims(ctx->bt, &q.req, claims, &t)
			   : batchtok_get_token(ctx->bt, &q.req, &t);
		if (r < 0) {
			r = report(ctx->bt, r);
		} else {
			r = print_token(t, q.output);
			batchtok_token_free(t);
		}
	}
	free(claims);
	return r;
}

static int cmd_inspect(struct ctx *ctx, int argc, char **argv)
{
	struct query q = {0};
	char *json;
	int r;

	if ((r = parse_query(argc, argv, "ir", &q)) || q.help)
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if ((r = connect_daemon(ctx)))
		return r;
	if ((r = batchtok_inspect(ctx->bt, &q.req, &json)) < 0)
		return report(ctx->bt, r);
	fputs(json, stdout);
	if (*json && json[strlen(json) - 1] != '\n')
		putchar('\n');
	free(json);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* exec --compat: the environment that points Azure SDKs' managed-identity
 * credentials at the daemon's compatible endpoint (ENTRA.md 4.1): App
 * Service's variables, and the older MSI_ pair that some SDKs still read.
 * MSI_ENDPOINT carries the capability in its path as well, since
 * msrestazure (and so az CLI) sends it without MSI_SECRET: a POST with a
 * form body and only Metadata: true, the shape of Cloud Shell and the old VM
 * extension. Variables that would make an SDK pick another kind of managed
 * identity (Service Fabric, Azure Arc) are removed. */
static int set_compat_env(const struct batchtok_compat *c)
{
	char *url = NULL, *msi_url = NULL;
	int r;

	if (asprintf(&url, "%s/msi/token", c->endpoint) < 0)
		url = NULL;
	if (asprintf(&msi_url, "%s/%s/msi/token", c->endpoint, c->capability) < 0)
		msi_url = NULL;
	r = !url || !msi_url || setenv("IDENTITY_ENDPOINT", url, 1) < 0 ||
		    setenv("IDENTITY_HEADER", c->capability, 1) < 0 ||
		    setenv("MSI_ENDPOINT", msi_url, 1) < 0 ||
		    setenv("MSI_SECRET", c->capability, 1) < 0 ||
		    unsetenv("IDENTITY_SERVER_THUMBPRINT") < 0 || unsetenv("IMDS_ENDPOINT") < 0
		? -1
		: 0;
	free(url);
	free(msi_url);
	if (r < 0) {
		fprintf(stderr, "batchtok: cannot set the environment: %s\n", strerror(errno));
		return EXIT_OTHER;
	}
	return 0;
}

/* execvp() failed with err: say why, and exit as env(1) does. */
static int exec_failed(const char *command, int err)
{
	if (err == ENOENT && !strchr(command, '/'))
		fprintf(stderr, "batchtok: cannot run %s: command not found in PATH\n", command);
	else
		fprintf(stderr, "batchtok: cannot run %s: %s\n", command, strerror(err));
	return err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}

/* Signals exec --compat passes on to COMMAND: what a service manager, a
 * batch scheduler or a user's kill(1) sends to ask it to stop, reload or
 * report, and terminal resizes. */
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

/* One call on a connection of its own, made for it and closed after it:
 * a command may run for days, and a connection held all that time would
 * count against the user's connections and be closed as idle anyway. */
static int compat_call(struct ctx *ctx, struct batchtok_compat *c, bool renew, char *err, size_t n)
{
	batchtok *bt = NULL;
	int r = batchtok_new(&bt);

	if (r == 0) {
		batchtok_set_timeout(bt, ctx->timeout_ms);
		r = batchtok_connect(bt, ctx->socket_path);
		if (r == 0)
			r = renew ? batchtok_compat_renew(bt, c) : batchtok_compat_revoke(bt, c);
		snprintf(err, n, "%s", *batchtok_error(bt) ? batchtok_error(bt) : strerror(-r));
	} else {
		snprintf(err, n, "%s", strerror(-r));
	}
	batchtok_free(bt);
	return r;
}

/* Gives c back. An older daemon cannot take it back: it expires on its own
 * there. */
static void give_back(struct ctx *ctx, struct batchtok_compat *c)
{
	char err[512];

	compat_call(ctx, c, false, err, sizeof(err));
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* When to renew next, in mono_ms() time: half way to the expiry, so that a
 * failed renewal has the other half to be retried in. The daemon counts
 * whole seconds, so a second less than expires_on says is sure to be left;
 * with compat_lifetime at its least, 1 s, that may be nothing at all. */
static int64_t renew_due(const struct batchtok_compat *c)
{
	int64_t left_ms = ((int64_t)c->expires_on - (int64_t)time(NULL) - 1) * 1000;

	return mono_ms() + (left_ms / 2 > RENEW_MIN_MS ? left_ms / 2 : RENEW_MIN_MS);
}

/* Renews c, saying once on stderr when it cannot (and when what COMMAND
 * asks the endpoint will start to fail). Returns when to try next. */
static int64_t renew(struct ctx *ctx, struct batchtok_compat *c, const char *command, bool *warned)
{
	char err[512], when[64] = "?";
	time_t e = (time_t)c->expires_on;
	struct tm tm;
	int r = compat_call(ctx, c, true, err, sizeof(err));

	if (r == 0) {
		*warned = false;
		return renew_due(c);
	}
	if (!*warned) {
		if (localtime_r(&e, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm);
		fprintf(stderr,
			"batchtok: cannot renew the capability of %s (%s): its managed-identity "
			"requests fail after %s%s\n",
			command, err, when, r == -EOPNOTSUPP || r == -EINVAL ? "" : "; retrying");
		*warned = true;
	}
	/* The daemon cannot renew it (too old), or it is gone for good (a
	 * restart forgot it): asking again changes nothing. */
	if (r == -EOPNOTSUPP || r == -EINVAL)
		return -1;
	return renew_due(c);
}

/* exec --compat runs COMMAND as a child and stays its parent, because the
 * capability must go back when COMMAND ends, and COMMAND may outlive the
 * capability's compat_lifetime. Of the two ways to keep a long COMMAND
 * working, renewing and tying the capability to this process's connection,
 * this renews: half way to each expiry the parent, which is alive anyway,
 * asks for compat_lifetime more on a short connection of its own. Nothing
 * is held open for days, and a parent killed with SIGKILL leaves a
 * capability that still expires on its own within compat_lifetime.
 * Signals that ask COMMAND to stop or reload go on to it; tty-generated
 * ones reach it from the kernel already and are not sent twice. The exit
 * status is COMMAND's, or 128 + the signal that killed it, as shells say. */
static int run_compat(struct ctx *ctx, struct batchtok_compat *c, char **argv)
{
	sigset_t set, old;
	int64_t due;
	bool warned = false;
	int status = 0, r;
	pid_t pid;

	if ((r = set_compat_env(c)))
		return r;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&set, forwarded[i]);
	/* Blocked before the fork, so that no signal and no child's end can
	 * come between it and sigtimedwait(). */
	sigprocmask(SIG_BLOCK, &set, &old);
	fflush(NULL);
	if ((pid = fork()) < 0) {
		fprintf(stderr, "batchtok: cannot start %s: %s\n", argv[0], strerror(errno));
		sigprocmask(SIG_SETMASK, &old, NULL);
		give_back(ctx, c);
		return EXIT_OTHER;
	}
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		execvp(argv[0], argv);
		_exit(exec_failed(argv[0], errno));
	}
	due = renew_due(c);
	for (;;) {
		int64_t ms = due < 0 ? -1 : due - mono_ms();
		struct timespec ts = {ms > 0 ? ms / 1000 : 0, ms > 0 ? (ms % 1000) * 1000000 : 0};
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, due < 0 ? NULL : &ts);

		if (sig == SIGCHLD) {
			if (waitpid(pid, &status, WNOHANG) == pid)
				break;
		} else if (sig > 0) {
			/* From the terminal (SI_KERNEL) COMMAND has it too: it is
			 * in the same process group. */
			if (si.si_code != SI_KERNEL && si.si_pid != pid)
				kill(pid, sig);
		} else if (errno == EAGAIN) {
			due = renew(ctx, c, argv[0], &warned);
		} else if (errno != EINTR) {
			/* Cannot wait for signals: wait for the child alone. */
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
	}
	/* It must not outlive its program. */
	give_back(ctx, c);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_OTHER;
}

/* Watching, for watch and exec --on-rotate alike. */
struct watching {
	batchtok_watch *w;
	bool reached; /* the daemon answered: an event came */
	bool outage;  /* a failure to connect was said, and no event came since */
};

/* Says on stderr what batchtok_watch_next()'s error r is: an error event,
 * after which the watch goes on (0), or its end, or a daemon never reached
 * (the exit status). Failures to connect after the daemon answered once (a
 * restart) are said once until it answers again. */
static int watch_error(struct watching *wg, int r)
{
	const char *msg = batchtok_watch_error(wg->w);
	bool ended = batchtok_watch_ended(wg->w) != 0;
	bool unreachable = !ended && (r == -ECONNREFUSED || r == -EACCES);

	if (!*msg)
		msg = strerror(-r);
	if (ended || (unreachable && !wg->reached)) {
		fprintf(stderr, "batchtok: %s\n", msg);
		return exit_for(r);
	}
	if (unreachable) {
		if (!wg->outage)
			fprintf(stderr, "batchtok: %s (trying again until it answers)\n", msg);
		wg->outage = true;
	} else {
		wg->reached = true;
		wg->outage = false;
		fprintf(stderr, "batchtok: %s\n", msg);
	}
	fflush(stderr);
	return 0;
}

/* A token arrived. */
static void watch_token(struct watching *wg)
{
	if (wg->outage)
		fprintf(stderr, "batchtok: batchtokd answers again\n");
	wg->reached = true;
	wg->outage = false;
}

/* The -t limit on the daemon's first answer, as poll() milliseconds from
 * when the watch started (-1: none, or answered already). */
static int first_answer_ms(const struct ctx *ctx, const struct watching *wg, int64_t started)
{
	int64_t left;

	if (wg->reached || ctx->timeout_ms <= 0)
		return -1;
	left = started + ctx->timeout_ms - mono_ms();
	return left > 0 ? (int)left : 0;
}

static int no_first_answer(const struct ctx *ctx)
{
	fprintf(stderr,
		"batchtok: batchtokd did not answer within %d s: check 'journalctl -u batchtokd', "
		"or raise the timeout (-t)\n",
		ctx->timeout_ms / 1000);
	return EXIT_TIMEOUT;
}

/* Blocks sigs and returns a signalfd that reads them, or -1 having said
 * why. The mask before is in *old. */
static int signal_fd(const int *sigs, size_t n, sigset_t *old)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	for (size_t i = 0; i < n; i++)
		sigaddset(&set, sigs[i]);
	/* Blocked first: none can come between here and the first read. */
	sigprocmask(SIG_BLOCK, &set, old);
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "batchtok: cannot wait for signals: %s\n", strerror(errno));
		sigprocmask(SIG_SETMASK, old, NULL);
	}
	return fd;
}

static int start_watch(struct ctx *ctx, const struct batchtok_request *req, struct watching *wg)
{
	int r = batchtok_watch_start(ctx->socket_path, req, &wg->w);

	if (r < 0) {
		fprintf(stderr, "batchtok: cannot start watching: %s\n",
			r == -EINVAL ? "the socket path is too long" : strerror(-r));
		return r == -EINVAL ? EXIT_USAGE : EXIT_OTHER;
	}
	return 0;
}

/* Prints a watched token as one line and flushes it for the pipeline.
 * 0; 1 when the reader has gone away (EPIPE); else the exit status. */
static int print_watched(const struct batchtok_token *t, int64_t refresh_at, bool json)
{
	if (json)
		print_json(t, true, refresh_at);
	else
		printf("%s\n", t->access_token);
	if (fflush(stdout) == 0)
		return 0;
	if (errno == EPIPE)
		return 1;
	fprintf(stderr, "batchtok: cannot write the token: %s\n", strerror(errno));
	return EXIT_OTHER;
}

/* watch: each token on a line of its own as it comes, until the watch
 * ends (its exit status), SIGINT or SIGTERM, or the reader of the output
 * goes away (exit 0 for those). */
static int watch_loop(struct ctx *ctx, struct watching *wg, int sfd, bool json)
{
	int64_t started = mono_ms();

	for (;;) {
		/* Events 0 on standard output: POLLERR when a pipe's reader has
		 * gone, POLLHUP when a terminal or socket has; nothing else. */
		struct pollfd pfd[3] = {
		    {batchtok_watch_fd(wg->w), POLLIN, 0}, {sfd, POLLIN, 0}, {STDOUT_FILENO, 0, 0}};
		int n = poll(pfd, 3, first_answer_ms(ctx, wg, started));

		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "batchtok: poll: %s\n", strerror(errno));
			return EXIT_OTHER;
		}
		if (n == 0)
			return no_first_answer(ctx);
		if (n < 0)
			continue;
		if (pfd[1].revents & POLLIN || pfd[2].revents & (POLLERR | POLLHUP))
			return EXIT_OK;
		if (!(pfd[0].revents & POLLIN))
			continue;
		for (;;) {
			struct batchtok_token *t;
			int64_t when = 0;
			int r = batchtok_watch_next(wg->w, 0, &t, &when);

			if (r == -EAGAIN)
				break;
			if (r < 0) {
				if ((r = watch_error(wg, r)))
					return r;
				continue;
			}
			watch_token(wg);
			r = print_watched(t, when, json);
			batchtok_token_free(t);
			if (r)
				return r == 1 ? EXIT_OK : r;
		}
	}
}

static int cmd_watch(struct ctx *ctx, int argc, char **argv)
{
	static const char *const formats[] = {"token", "json", NULL};
	static const int ending[] = {SIGINT, SIGTERM};
	struct watching wg = {0};
	struct query q = {0};
	sigset_t old;
	int sfd, r;

	if ((r = parse_query(argc, argv, "iroAB", &q)) || q.help ||
	    (r = check_output(q.output, formats)))
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	/* A reader that went away is EPIPE on the next write, not the end of
	 * this process by SIGPIPE: the pipeline ran its course. */
	signal(SIGPIPE, SIG_IGN);
	if ((sfd = signal_fd(ending, 2, &old)) < 0)
		return EXIT_OTHER;
	if ((r = start_watch(ctx, &q.req, &wg)) == 0)
		r = watch_loop(ctx, &wg, sfd, q.output && strcmp(q.output, "json") == 0);
	batchtok_watch_free(wg.w);
	close(sfd);
	/* SIGINT and SIGTERM stay blocked: one that came is pending still (poll
	 * saw it, nothing read it), and the process ends now with its status. */
	return r;
}

/* --on-rotate's signal: a name (HUP, SIGHUP, usr1) or a number; -1 if it
 * is neither. */
static int parse_signal(const char *s)
{
	static const struct {
		const char *name;
		int sig;
	} names[] = {
	    {"HUP", SIGHUP},   {"INT", SIGINT},	  {"QUIT", SIGQUIT}, {"USR1", SIGUSR1},
	    {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"ALRM", SIGALRM}, {"WINCH", SIGWINCH},
	    {"CONT", SIGCONT}, {"PWR", SIGPWR},	  {"URG", SIGURG},
	};
	char *end;
	long n;

	if (*s >= '0' && *s <= '9') {
		n = strtol(s, &end, 10);
		return *end || n < 1 || n > SIGRTMAX ? -1 : (int)n;
	}
	if (strncasecmp(s, "SIG", 3) == 0)
		s += 3;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(s, names[i].name) == 0)
			return names[i].sig;
	return -1;
}

/* The file exec --on-rotate keeps the token in, and its directory. */
struct token_file {
	char dir[4096];
	char path[4096 + 16];
	char tmp[4096 + 16];
};

/* Whether nobody else can rename or replace what this process makes in dir:
 * a directory of ours (or, unless ours, root's) that only its owner may
 * write to, or a sticky one such as /tmp. Elsewhere another user could swap
 * the private directory for one of theirs between two writes. */
static bool safe_parent(const char *dir, bool ours)
{
	struct stat st;

	return dir && *dir == '/' && stat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
	       (st.st_uid == geteuid() || (!ours && st.st_uid == 0)) &&
	       (!(st.st_mode & (S_IWGRP | S_IWOTH)) || (st.st_mode & S_ISVTX));
}

/* A new private directory (0700, from mkdtemp) for the token file: in the
 * user's runtime directory when it is theirs (a tmpfs that only they can
 * enter, emptied at logout), else in $TMPDIR or /tmp. *where names the
 * directory it is (to be) in. On failure tf->dir is "". */
static int token_dir(struct token_file *tf, const char **where)
{
	const char *base = getenv("XDG_RUNTIME_DIR");
	int k;

	tf->dir[0] = 0;
	if (!safe_parent(base, true))
		base = getenv("TMPDIR");
	if (!safe_parent(base, false))
		base = "/tmp";
	*where = base;
	if (!safe_parent(base, false))
		return -EPERM;
	k = snprintf(tf->dir, sizeof(tf->dir), "%s/batchtok-exec.XXXXXX", base);
	if (k < 0 || (size_t)k >= sizeof(tf->dir) || !mkdtemp(tf->dir)) {
		k = k < 0 || (size_t)k >= sizeof(tf->dir) ? ENAMETOOLONG : errno;
		tf->dir[0] = 0;
		return -k;
	}
	snprintf(tf->path, sizeof(tf->path), "%s/token", tf->dir);
	snprintf(tf->tmp, sizeof(tf->tmp), "%s/.token.new", tf->dir);
	return 0;
}

/* Replaces the token file atomically: the token alone (no newline) in a new
 * 0600 file, renamed over the old one, so a reader sees the old token or
 * the new one, never part of one. */
static int write_token_file(const struct token_file *tf, const char *token)
{
	size_t n = strlen(token), done = 0;
	int fd, r = 0;

	fd = open(tf->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST && unlink(tf->tmp) == 0)
		fd = open(tf->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* 0600 whatever the umask. */
	if (fchmod(fd, 0600) < 0)
		r = -errno;
	while (r == 0 && done < n) {
		ssize_t k = write(fd, token + done, n - done);
		if (k > 0)
			done += (size_t)k;
		else if (k < 0 && errno != EINTR)
			r = -errno;
	}
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tf->tmp, tf->path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tf->tmp);
	return r;
}

static void remove_token_file(const struct token_file *tf)
{
	if (!tf->dir[0])
		return;
	unlink(tf->path);
	unlink(tf->tmp);
	rmdir(tf->dir);
}

/* The signals exec --on-rotate waits for: the child's end, and those it
 * passes on to COMMAND (forwarded[]). */
static const int on_rotate_signals[] = {SIGCHLD, SIGINT,  SIGTERM, SIGHUP,
					SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

/* The first token, which COMMAND cannot start without: an error event or
 * the end of the watch is the exit status, as `batchtok get` would have
 * it; a signal that would stop COMMAND stops the wait (128 + it). */
static int first_token(struct ctx *ctx, struct watching *wg, int sfd, struct batchtok_token **ret)
{
	int64_t started = mono_ms();

	for (;;) {
		struct pollfd pfd[2] = {{batchtok_watch_fd(wg->w), POLLIN, 0}, {sfd, POLLIN, 0}};
		struct signalfd_siginfo si;
		int n = poll(pfd, 2, first_answer_ms(ctx, wg, started)), r;

		if (n == 0)
			return no_first_answer(ctx);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "batchtok: poll: %s\n", strerror(errno));
			return EXIT_OTHER;
		}
		if ((pfd[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) == sizeof(si) &&
		    si.ssi_signo != SIGCHLD && si.ssi_signo != SIGWINCH)
			return 128 + (int)si.ssi_signo;
		if (!(pfd[0].revents & POLLIN))
			continue;
		while ((r = batchtok_watch_next(wg->w, 0, ret, NULL)) != -EAGAIN) {
			if (r == 0) {
				watch_token(wg);
				return 0;
			}
			/* No token to start COMMAND with: what get would say. */
			fprintf(stderr, "batchtok: %s\n",
				*batchtok_watch_error(wg->w) ? batchtok_watch_error(wg->w)
							     : strerror(-r));
			return exit_for(r);
		}
	}
}

/* exec --on-rotate: COMMAND runs as a child with the token in the file
 * named by BATCHTOK_TOKEN_FILE (and, at its start, in the environment as
 * plain exec has it); the parent stays, watches the token, replaces the
 * file with each new one and then sends COMMAND the signal. It passes the
 * signals run_compat() passes, and exits with COMMAND's status once it has
 * removed the file and its directory. */
static int run_on_rotate(struct ctx *ctx, const struct query *q, int rotate, char **argv)
{
	struct batchtok_token *cur = NULL, *t;
	struct token_file tf = {.dir = ""};
	struct watching wg = {0};
	const char *where = "";
	int sfd, r, status = 0;
	bool watching = true;
	sigset_t old;
	pid_t pid;

	if ((sfd = signal_fd(on_rotate_signals,
			     sizeof(on_rotate_signals) / sizeof(on_rotate_signals[0]), &old)) < 0)
		return EXIT_OTHER;
	if ((r = start_watch(ctx, &q->req, &wg)) || (r = first_token(ctx, &wg, sfd, &cur)))
		goto out;
	if ((r = token_dir(&tf, &where)) < 0 ||
	    (r = write_token_file(&tf, cur->access_token)) < 0) {
		fprintf(stderr,
			"batchtok: cannot keep the token in a private directory in %s: %s (set "
			"TMPDIR to a directory of yours that only you may write to)\n",
			where, strerror(-r));
		r = EXIT_OTHER;
		goto out;
	}
	fflush(NULL);
	if ((pid = fork()) < 0) {
		fprintf(stderr, "batchtok: cannot start %s: %s\n", argv[0], strerror(errno));
		r = EXIT_OTHER;
		goto out;
	}
	if (pid == 0) {
		/* The watch's descriptors are close-on-exec: COMMAND gets none. */
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (setenv("BATCHTOK_TOKEN_FILE", tf.path, 1) < 0 ||
		    setenv(q->env_name, cur->access_token, 1) < 0) {
			fprintf(stderr, "batchtok: cannot set the environment: %s\n",
				strerror(errno));
			_exit(EXIT_OTHER);
		}
		execvp(argv[0], argv);
		_exit(exec_failed(argv[0], errno));
	}
	for (;;) {
		struct pollfd pfd[2] = {{sfd, POLLIN, 0},
					{watching ? batchtok_watch_fd(wg.w) : -1, POLLIN, 0}};
		struct signalfd_siginfo si;
		int64_t when;

		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			/* Cannot wait for signals: wait for the child alone. */
			break;
		while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGCHLD) {
				if (waitpid(pid, &status, WNOHANG) == pid)
					goto ended;
			} else if (si.ssi_code != SI_KERNEL && (pid_t)si.ssi_pid != pid) {
				/* From the terminal (SI_KERNEL) COMMAND has it too. */
				kill(pid, (int)si.ssi_signo);
			}
		}
		if (!watching || !(pfd[1].revents & POLLIN))
			continue;
		while ((r = batchtok_watch_next(wg.w, 0, &t, &when)) != -EAGAIN) {
			if (r < 0) {
				if (watch_error(&wg, r)) {
					fprintf(stderr,
						"batchtok: %s keeps the token it has: it is not "
						"replaced any more\n",
						argv[0]);
					watching = false;
					break;
				}
				continue;
			}
			watch_token(&wg);
			if (strcmp(t->access_token, cur->access_token) == 0) {
				batchtok_token_free(t);
				continue;
			}
			if ((r = write_token_file(&tf, t->access_token)) < 0) {
				fprintf(
				    stderr,
				    "batchtok: cannot replace %s: %s; %s keeps the token it has\n",
				    tf.path, strerror(-r), argv[0]);
				batchtok_token_free(t);
				continue;
			}
			batchtok_token_free(cur);
			cur = t;
			kill(pid, rotate);
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
ended:
	if (WIFSIGNALED(status))
		r = 128 + WTERMSIG(status);
	else
		r = WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_OTHER;
out:
	remove_token_file(&tf);
	batchtok_token_free(cur);
	batchtok_watch_free(wg.w);
	close(sfd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return r;
}

static int cmd_exec(struct ctx *ctx, int argc, char **argv)
{
	struct query q = {.env_name = NULL};
	struct batchtok_token *t;
	int r, rotate = 0;

	if ((r = parse_query(argc, argv, "irDEG", &q)) || q.help)
		return r;
	if (optind >= argc)
		return usage("%s", "exec needs a command to run: batchtok exec -- COMMAND");
	if (q.compat && q.on_rotate)
		return usage("%s", "--compat passes no token, so there is none to rotate: the "
				   "SDK asks the endpoint for fresh ones itself; drop --on-rotate");
	if (q.compat && (q.req.resource || q.env_name))
		return usage("%s", "--compat passes no token: the program asks for its own "
				   "resource; drop -r and --env");
	if (q.on_rotate && (rotate = parse_signal(q.on_rotate)) < 0)
		return usage("--on-rotate: '%s' is not a signal: name one (HUP, SIGUSR1...) or "
			     "give its number",
			     q.on_rotate);
	if (!q.env_name)
		q.env_name = "BATCHTOK_ACCESS_TOKEN";
	if (!*q.env_name || strchr(q.env_name, '='))
		return usage("--env: '%s' is not a variable name", q.env_name);
	if (q.on_rotate)
		return run_on_rotate(ctx, &q, rotate, argv + optind);
	if ((r = connect_daemon(ctx)))
		return r;
	if (q.compat) {
		struct batchtok_compat *c;
		if ((r = batchtok_compat_grant(ctx->bt, q.req.identity, &c)) < 0)
			return report(ctx->bt, r);
		batchtok_free(ctx->bt);
		ctx->bt = NULL;
		r = run_compat(ctx, c, argv + optind);
		batchtok_compat_free(c);
		return r;
	}
	/* A token in the environment needs nothing back: COMMAND replaces
	 * this process. */
	if ((r = batchtok_get_token(ctx->bt, &q.req, &t)) < 0)
		return report(ctx->bt, r);
	r = setenv(q.env_name, t->access_token, 1);
	batchtok_token_free(t);
	if (r < 0) {
		fprintf(stderr, "batchtok: cannot set %s: %s\n", q.env_name, strerror(errno));
		return EXIT_OTHER;
	}
	batchtok_free(ctx->bt);
	ctx->bt = NULL;
	execvp(argv[optind], argv + optind);
	return exec_failed(argv[optind], errno);
}

static int cmd_status(struct ctx *ctx, int argc, char **argv)
{
	static const char *const formats[] = {"text", "json", NULL};
	struct query q = {0};
	char *s;
	int r;

	if ((r = parse_query(argc, argv, "o", &q)) || q.help ||
	    (r = check_output(q.output, formats)))
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if ((r = connect_daemon(ctx)))
		return r;
	if ((r = batchtok_status(ctx->bt, q.output && strcmp(q.output, "json") == 0, &s)) < 0)
		return report(ctx->bt, r);
	fputs(s, stdout);
	free(s);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* login and logout: the identity's user signs in or out, in the daemon. */
static int cmd_signin(struct ctx *ctx, int argc, char **argv)
{
	const char *cmd = argv[0];
	struct batchtok_login *l;
	struct query q = {0};
	char *user = NULL;
	int r;

	if ((r = parse_query(argc, argv, "i", &q)) || q.help)
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if ((r = connect_daemon(ctx)))
		return r;
	if (strcmp(cmd, "logout") == 0) {
		if ((r = batchtok_logout(ctx->bt, q.req.identity)) < 0)
			return report(ctx->bt, r);
		printf("signed out\n");
		return EXIT_OK;
	}
	if ((r = batchtok_login_start(ctx->bt, q.req.identity, &l)) < 0)
		return report(ctx->bt, r);
	/* The prompt is for the person at the terminal; stdout says who
	 * signed in. */
	fprintf(stderr, "%s\n", l->message);
	fflush(stderr);
	if ((int)l->expires_in * 1000 + 30000 > ctx->timeout_ms)
		batchtok_set_timeout(ctx->bt, (int)l->expires_in * 1000 + 30000);
	batchtok_login_free(l);
	if ((r = batchtok_login_wait(ctx->bt, q.req.identity, &user)) < 0)
		return report(ctx->bt, r);
	printf("signed in as %s\n", user);
	free(user);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

static int cmd_simple(struct ctx *ctx, int argc, char **argv)
{
	const char *cmd = argv[0];
	char *version = NULL;
	int r;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return command_help(cmd);
	if (argc > 1)
		return usage("%s takes no arguments", cmd);
	if ((r = connect_daemon(ctx)))
		return r;
	if (strcmp(cmd, "ping") == 0) {
		if ((r = batchtok_ping(ctx->bt, &version)) < 0)
			return report(ctx->bt, r);
		printf("%s\n", version);
		free(version);
	} else if (strcmp(cmd, "metrics") == 0) {
		if ((r = batchtok_metrics(ctx->bt, &version)) < 0)
			return report(ctx->bt, r);
		fputs(version, stdout);
		free(version);
	} else {
		if ((r = batchtok_reload(ctx->bt)) < 0)
			return report(ctx->bt, r);
		printf("reloaded\n");
	}
	return EXIT_OK;
}

/* A point in time for people: local time and how far from now. */
static void print_when(int64_t when)
{
	char buf[64] = "?";
	time_t e = (time_t)when;
	int64_t left = when - (int64_t)time(NULL);
	struct tm tm;

	if (localtime_r(&e, &tm))
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", &tm);
	if (left >= 0)
		printf("%s (in %" PRId64 "m%02" PRId64 "s)", buf, left / 60, left % 60);
	else
		printf("%s (%" PRId64 "m%02" PRId64 "s ago)", buf, -left / 60, -left % 60);
}

static int cmd_refresh(struct ctx *ctx, int argc, char **argv)
{
	struct batchtok_refresh *f;
	struct query q = {0};
	int r;

	if ((r = parse_query(argc, argv, "irA", &q)) || q.help)
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if ((r = connect_daemon(ctx)))
		return r;
	if ((r = batchtok_refresh(ctx->bt, &q.req, &f)) < 0)
		return report(ctx->bt, r);
	printf("refreshed %s %s: new token %s expires ", f->identity, f->resource, f->fingerprint);
	print_when(f->expires_on);
	printf(", pushed to %u watcher%s\n", f->watchers, f->watchers == 1 ? "" : "s");
	batchtok_refresh_free(f);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

static int cmd_forget(struct ctx *ctx, int argc, char **argv)
{
	struct query q = {0};
	unsigned n = 0;
	int r;

	if ((r = parse_query(argc, argv, "iH", &q)) || q.help)
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if (!q.req.identity == !q.all)
		return usage("%s", "forget needs either -i IDENTITY or --all");
	if ((r = connect_daemon(ctx)))
		return r;
	if ((r = batchtok_forget(ctx->bt, q.all ? NULL : q.req.identity,
				 q.all ? BATCHTOK_FORGET_ALL : 0, &n)) < 0)
		return report(ctx->bt, r);
	if (q.all)
		printf("forgot %u cached token%s of every identity", n, n == 1 ? "" : "s");
	else
		printf("forgot %u cached token%s of identity %s", n, n == 1 ? "" : "s",
		       q.req.identity);
	printf("; nothing was revoked at Entra ID: tokens already handed out stay valid until "
	       "they expire\n");
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

static const struct command commands[] = {
    {"get", cmd_get,
     "[-i IDENTITY] [-r RESOURCE | --scope SCOPE] [--min-validity DUR]\n"
     " [--force-refresh | --claims JSON] [-o token|json|header|env]\n",
     "Prints an access token of an identity for a resource.\n" HELP_IDENTITY HELP_RESOURCE
     "      --scope SCOPE        the resource the v2 way: RESOURCE/.default\n"
     "      --min-validity DUR   a token valid at least this long (90, 90s, 5m, 1h)\n"
     "      --force-refresh      fetch a new token, not the cached one (at most once\n"
     "                           per 30 s per token)\n"
     "      --claims JSON        fetch a new token that answers a resource's claims\n"
     "                           challenge (a 401 with WWW-Authenticate: ... claims=):\n"
     "                           its base64 value as the header has it, or the decoded\n"
     "                           JSON; one fetch for all who ask with the same claims\n"
     "  -o, --output FORMAT      token: the bare token (the default); json: the fields of\n"
     "                           'az account get-access-token'; header: 'Authorization:\n"
     "                           Bearer TOKEN'; env: shell-quoted BATCHTOK_ACCESS_TOKEN=\n"
     "                           and BATCHTOK_EXPIRES_ON=\n"},
    {"status", cmd_status, "[-o text|json]\n",
     "Prints the daemon's state: its identities you may use and their cached tokens.\n"
     "  -o, --output FORMAT      text (the default) or json\n"},
    {"inspect", cmd_inspect, "[-i IDENTITY] [-r RESOURCE]\n",
     "Prints the current token's decoded header and claims as JSON, never its\n"
     "signature.\n" HELP_IDENTITY HELP_RESOURCE},
    {"exec", cmd_exec,
     "[-i IDENTITY] [-r RESOURCE] [--env NAME] -- COMMAND [ARGS...]\n"
     "--on-rotate=SIGNAL [-i IDENTITY] [-r RESOURCE] [--env NAME]\n"
     " -- COMMAND [ARGS...]\n"
     "--compat [-i IDENTITY] -- COMMAND [ARGS...]\n",
     "Runs COMMAND with a token in its environment, or with --compat, pointed at the\n"
     "daemon's managed-identity compatible endpoint for Azure SDKs.\n" HELP_IDENTITY HELP_RESOURCE
     "      --env NAME           the variable that holds the token (default\n"
     "                           BATCHTOK_ACCESS_TOKEN)\n"
     "      --compat             set IDENTITY_ENDPOINT, IDENTITY_HEADER, MSI_ENDPOINT and\n"
     "                           MSI_SECRET instead; SDKs ask for their own resource.\n"
     "                           batchtok stays COMMAND's parent: it passes signals on,\n"
     "                           renews the capability while COMMAND runs and gives it\n"
     "                           back when COMMAND ends\n"
     "      --on-rotate=SIGNAL   keep the current token in a 0600 file named by\n"
     "                           BATCHTOK_TOKEN_FILE, replace it (atomically) with each\n"
     "                           new token and then send COMMAND SIGNAL (HUP, USR1, a\n"
     "                           number...); COMMAND should read the file again on it.\n"
     "                           batchtok stays COMMAND's parent, passes signals on and\n"
     "                           removes the file when COMMAND ends\n"
     "Exits with COMMAND's status (128 + the signal if it was killed); 127 if COMMAND\n"
     "is not found, 126 if it cannot be run.\n"},
    {"login", cmd_signin, "-i IDENTITY\n",
     "Signs a user in to a device-code identity: prints the web page and the code to\n"
     "enter there, then waits and prints who signed in. For administrators.\n" HELP_IDENTITY},
    {"logout", cmd_signin, "-i IDENTITY\n",
     "Forgets the signed-in user of a device-code identity. For administrators.\n" HELP_IDENTITY},
    {"reload", cmd_simple, "\n",
     "Asks the daemon to reload its configuration. For administrators.\n"},
    {"ping", cmd_simple, "\n", "Prints the daemon's version.\n"},
    {"metrics", cmd_simple, "\n",
     "Prints the daemon's metrics as OpenMetrics text (what metrics_listen serves), for\n"
     "node_exporter's textfile collector or a look by hand. For administrators and\n"
     "members of metrics_group.\n"},
    {"watch", cmd_watch,
     "[-i IDENTITY] [-r RESOURCE | --scope SCOPE] [--min-validity DUR]\n"
     " [-o token|json]\n",
     "Prints the token, then each new one as soon as the daemon has it (at least\n"
     "--min-validity, or the daemon's min_validity, before the last one expires), one\n"
     "line each, flushed, for pipelines. Reconnects when the daemon restarts. Errors\n"
     "that the watch outlives go to standard error; one that ends it is the exit\n"
     "status. Exits 0 on SIGINT or SIGTERM and when the reader of its output is gone.\n"
     "-t TIMEOUT limits the wait for the first answer.\n" HELP_IDENTITY HELP_RESOURCE
     "      --scope SCOPE        the resource the v2 way: RESOURCE/.default\n"
     "      --min-validity DUR   each token valid at least this long when it comes\n"
     "  -o, --output FORMAT      token: the bare token (the default); json: a line with\n"
     "                           the fields of 'get -o json' and refresh_at, when the\n"
     "                           daemon plans the next token (Unix time; null: none)\n"},
    {"refresh", cmd_refresh, "[-i IDENTITY] [-r RESOURCE]\n",
     "Makes the daemon fetch the token anew now, whatever it has cached, and push it to\n"
     "watchers; prints its fingerprint (never the token) and expiry. Not held back by\n"
     "the 30 s limit on --force-refresh. For administrators.\n" HELP_IDENTITY HELP_RESOURCE},
    {"forget", cmd_forget, "(-i IDENTITY | --all)\n",
     "Makes the daemon drop the cached tokens of an identity, or of all of them (watched\n"
     "ones are fetched anew at once). Revokes nothing at Entra ID: tokens already\n"
     "handed out stay valid until they expire. For administrators.\n" HELP_IDENTITY
     "      --all                every identity's tokens\n"},
    {0},
};

static const struct command *find_command(const char *name)
{
	for (const struct command *c = commands; c->name; c++)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

static void print_usage(FILE *f)
{
	fputs("usage: batchtok [-S SOCKET] [-t TIMEOUT] COMMAND [OPTIONS]\n", f);
	for (const struct command *c = commands; c->name; c++)
		print_synopsis(f, c, false);
	fputs("'batchtok COMMAND --help' says what a command does and what its options mean.\n"
	      "Socket: -S, else $BATCHTOK_SOCKET, else the user socket if it exists, "
	      "else " BATCHTOK_SYSTEM_SOCKET ".\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 'S'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0},
	};
	struct ctx ctx = {.timeout_ms = 60000};
	uint64_t timeout;
	const struct command *cmd;
	int c, r;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+S:t:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'S':
			ctx.socket_path = optarg;
			break;
		case 't':
			if (bt_parse_duration(optarg, 3600, &timeout) < 0)
				return usage("--timeout: '%s' is not a duration up to 1h", optarg);
			ctx.timeout_ms = (int)timeout * 1000;
			break;
		case 'h':
			print_usage(stdout);
			return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
		case 'V':
			printf("batchtok %s\n", BATCHTOK_VERSION);
			return EXIT_OK;
		default:
			return usage("unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return usage("%s", "no command given");
	if (!(cmd = find_command(argv[optind])))
		return usage("unknown command '%s'", argv[optind]);
	r = cmd->run(&ctx, argc - optind, argv + optind);
	batchtok_free(ctx.bt);
	return r;
}
