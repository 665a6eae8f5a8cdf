/* batchtok.c - the batchtok command: a thin shell over libbatchtok that
 * prints tokens and status and turns failures into PRODUCT.md's exit codes. */
#include "batchtok.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	bool compat;
	bool help; /* --help was given and answered: exit with what parse_query returned */
};

enum { OPT_SCOPE = 256, OPT_MIN_VALIDITY, OPT_FORCE, OPT_ENV, OPT_COMPAT };

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
		/* The fields and names of `az account get-access-token`. */
		char when[64] = "";
		time_t e = (time_t)t->expires_on;
		struct tm tm;

		if (localtime_r(&e, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S.000000", &tm);
		fputs("{\n  \"accessToken\": ", stdout);
		print_json_string(t->access_token);
		printf(",\n  \"expiresOn\": \"%s\",\n  \"expires_on\": %" PRId64
		       ",\n  \"tenant\": ",
		       when, t->expires_on);
		print_json_string(t->tenant);
		fputs(",\n  \"tokenType\": ", stdout);
		print_json_string(t->token_type);
		fputs(",\n  \"identity\": ", stdout);
		print_json_string(t->identity);
		fputs(",\n  \"resource\": ", stdout);
		print_json_string(t->resource);
		fputs("\n}\n", stdout);
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

static int cmd_get(struct ctx *ctx, int argc, char **argv)
{
	static const char *const formats[] = {"token", "json", "header", "env", NULL};
	struct query q = {0};
	struct batchtok_token *t;
	int r;

	if ((r = parse_query(argc, argv, "iroABC", &q)) || q.help ||
	    (r = check_output(q.output, formats)))
		return r;
	if (optind != argc)
		return usage("unexpected argument '%s'", argv[optind]);
	if ((r = connect_daemon(ctx)))
		return r;
	if ((r = batchtok_get_token(ctx->bt, &q.req, &t)) < 0)
		return report(ctx->bt, r);
	r = print_token(t, q.output);
	batchtok_token_free(t);
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

static int cmd_exec(struct ctx *ctx, int argc, char **argv)
{
	struct query q = {.env_name = NULL};
	struct batchtok_token *t;
	int r;

	if ((r = parse_query(argc, argv, "irDE", &q)) || q.help)
		return r;
	if (optind >= argc)
		return usage("%s", "exec needs a command to run: batchtok exec -- COMMAND");
	if (q.compat && (q.req.resource || q.env_name))
		return usage("%s", "--compat passes no token: the program asks for its own "
				   "resource; drop -r and --env");
	if (!q.env_name)
		q.env_name = "BATCHTOK_ACCESS_TOKEN";
	if (!*q.env_name || strchr(q.env_name, '='))
		return usage("--env: '%s' is not a variable name", q.env_name);
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
	} else {
		if ((r = batchtok_reload(ctx->bt)) < 0)
			return report(ctx->bt, r);
		printf("reloaded\n");
	}
	return EXIT_OK;
}

static const struct command commands[] = {
    {"get", cmd_get,
     "[-i IDENTITY] [-r RESOURCE | --scope SCOPE] [--min-validity DUR]\n"
     " [--force-refresh] [-o token|json|header|env]\n",
     "Prints an access token of an identity for a resource.\n" HELP_IDENTITY HELP_RESOURCE
     "      --scope SCOPE        the resource the v2 way: RESOURCE/.default\n"
     "      --min-validity DUR   a token valid at least this long (90, 90s, 5m, 1h)\n"
     "      --force-refresh      fetch a new token, not the cached one (at most once\n"
     "                           per 30 s per token)\n"
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
