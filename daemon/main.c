/* main.c - batchtokd's entry point: options, process hardening, library
 * set-up, --check-config, and the exit status. The only place that exits. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/policy.h"
#include "front/metrics_http.h"
#include "identity/config.h"
#include "daemon.h"
#include "lib/log.h"
#include "lib/secmem.h"

/* Secrets are a few hundred bytes each; 1 MiB of locked memory holds
 * thousands and stays under the default RLIMIT_MEMLOCK of 8 MiB. */
#define SECURE_HEAP_SIZE (1024 * 1024)
/* Descriptors besides connections: listeners, token-service transfers,
 * files, the journal. */
#define SPARE_FDS 128

static const char usage_text[] =
    "usage: batchtokd [--system | --user] [-c FILE] [--check-config] [--foreground]\n"
    "                 [--log-level LEVEL] [--version] [--help]\n"
    "  --system             system mode: " CONFIG_SYSTEM_PATH ", /run/batchtok,\n"
    "                       /var/lib/batchtok (the default for root)\n"
    "  --user               per-user mode: XDG config, state and $XDG_RUNTIME_DIR socket\n"
    "                       (the default for any other user)\n"
    "  -c, --config FILE    configuration (default " CONFIG_SYSTEM_PATH ",\n"
    "                       or $XDG_CONFIG_HOME/batchtok/batchtokd.conf in user mode)\n"
    "  --check-config       validate the configuration and exit 0 or 1\n"
    "  --foreground         stay in the foreground (always the case; for scripts)\n"
    "  --log-level LEVEL    error, warning, info or debug (overrides the config)\n";

/* No core dumps and no ptrace by other processes of the same user: the
 * process holds secrets. Fails closed, as ssh-agent does: a daemon that
 * could dump its secrets does not start. Returns 0, or -errno after saying
 * on stderr what failed. */
static int harden(void)
{
	struct rlimit no_core = {0, 0};

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		fprintf(stderr,
			"batchtokd: cannot make the process undumpable (prctl PR_SET_DUMPABLE: "
			"%s): refusing to start, since a core dump or a debugger could read the "
			"secrets it holds; check the seccomp or LSM policy it runs under\n",
			strerror(errno));
		return -errno;
	}
	if (setrlimit(RLIMIT_CORE, &no_core) < 0) {
		fprintf(stderr,
			"batchtokd: cannot disable core dumps (setrlimit RLIMIT_CORE 0: %s): "
			"refusing to start, since a core dump would hold its secrets; check the "
			"seccomp or LSM policy it runs under\n",
			strerror(errno));
		return -errno;
	}
	umask(0077);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int user_path(char *buf, size_t n, const char *env, const char *fallback, const char *suffix)
{
	const char *base = getenv(env), *home = getenv("HOME");
	int k;

	if (base && *base)
		k = snprintf(buf, n, "%s/%s", base, suffix);
	else if (fallback && home && *home)
		k = snprintf(buf, n, "%s/%s/%s", home, fallback, suffix);
	else
		return -ENOENT;
	return k > 0 && (size_t)k < n ? 0 : -ENAMETOOLONG;
}

enum mode {
	MODE_DEFAULT, /* system mode for root, user mode for anyone else */
	MODE_SYSTEM,
	MODE_USER,
};

/* What the command line asked for. */
struct options {
	const char *config; /* -c FILE, or NULL for the mode's default */
	enum mode mode;
	int level;    /* --log-level, or -1 for the config's */
	bool check;   /* --check-config */
	bool version; /* --version: print it and exit */
	bool help;    /* --help: print the usage and exit */
};

/* Reads the options in order, as far as the first --version or --help.
 * Returns 0, or -EINVAL after saying on stderr what is wrong. */
static int parse_options(int argc, char **argv, struct options *ret)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"system", no_argument, NULL, 's'},
	    {"user", no_argument, NULL, 'u'},
	    {"check-config", no_argument, NULL, 'k'},
	    {"foreground", no_argument, NULL, 'f'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct options o = {.level = -1};
	enum mode mode;
	int c;

	while ((c = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.config = optarg;
			break;
		case 's':
		case 'u':
			mode = c == 's' ? MODE_SYSTEM : MODE_USER;
			if (o.mode && o.mode != mode) {
				fputs("batchtokd: --system and --user exclude each other\n",
				      stderr);
				return -EINVAL;
			}
			o.mode = mode;
			break;
		case 'k':
			o.check = true;
			break;
		case 'f':
			break;
		case 'l':
			if (log_parse_level(optarg, &o.level) < 0) {
				fprintf(stderr,
					"batchtokd: --log-level: '%s' is not error, warning, "
					"info or debug\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'V':
			o.version = true;
			*ret = o;
			return 0;
		case 'h':
			o.help = true;
			*ret = o;
			return 0;
		default:
			fputs(usage_text, stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "batchtokd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	*ret = o;
	return 0;
}

/* Every connection is a descriptor, and the usual soft limit of 1024 runs
 * out long before max_clients does: the soft limit is raised to the hard
 * one, which is the administrator's to set (LimitNOFILE= in the unit).
 * Returns the limit in force, or 0 if it cannot be read. */
static rlim_t raise_nofile(void)
{
	struct rlimit rl;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_warning("cannot read the open-file limit: %s", strerror(errno));
		return 0;
	}
	was = rl.rlim_cur;
	if (rl.rlim_cur >= rl.rlim_max) {
		log_info("open-file limit: %llu", (unsigned long long)was);
		return was;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_warning("cannot raise the open-file limit from %llu to %llu: %s; set "
			    "LimitNOFILE= in the unit",
			    (unsigned long long)was, (unsigned long long)rl.rlim_max,
			    strerror(errno));
		return was;
	}
	log_info("open-file limit raised from %llu to %llu", (unsigned long long)was,
		 (unsigned long long)rl.rlim_cur);
	return rl.rlim_cur;
}

/* Says so when the open-file limit cannot hold max_clients connections on
 * each listener: the connections beyond it would be refused by the kernel,
 * not by max_clients. A Unix socket client takes two when program rules
 * need its pidfd kept. */
static void check_nofile(rlim_t limit, const struct config *cfg)
{
	bool pinned = policy_any_program_rules(cfg->identities, cfg->n_identities);
	unsigned long long need;

	need = (unsigned long long)cfg->max_clients *
		   ((pinned ? 2 : 1) + (cfg->compat_endpoint ? 1 : 0)) +
	       (cfg->metrics_listen ? METRICS_HTTP_CONNS : 0) + SPARE_FDS;

	if (limit && limit < need)
		log_warning("the open-file limit (%llu) is below what max_clients = %u needs "
			    "(%llu): raise LimitNOFILE= in the unit, or lower max_clients",
			    (unsigned long long)limit, cfg->max_clients, need);
}

/* Process hardening and the libraries' set-up, before anything holds a
 * secret. Returns 0, or a negative errno (said on stderr or logged) if the
 * process cannot be hardened or libcurl cannot start. */
static int start(const struct options *o, bool user_mode)
{
	int r;

	if ((r = harden()) < 0)
		return r;
	log_init(o->level >= 0 ? o->level : LOG_INFO);
	if (!o->check)
		log_info("batchtokd " BATCHTOK_VERSION_STRING " starting in %s mode%s",
			 user_mode ? "user" : "system",
			 o->mode     ? ""
			 : user_mode ? " (not root; --system to choose)"
				     : " (root)");
	if (secmem_init(SECURE_HEAP_SIZE) < 0 && !o->check)
		log_warning("could not lock the secure heap in memory (RLIMIT_MEMLOCK?); "
			    "secrets are still wiped but may be swapped");
	/* Token-bearing memory inside jansson and libcurl is wiped when freed. */
	json_set_alloc_funcs(secmem_lib_malloc, secmem_lib_free);
	if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, secmem_lib_malloc, secmem_lib_free,
				 secmem_lib_realloc, secmem_lib_strdup,
				 secmem_lib_calloc) != CURLE_OK) {
		log_error("cannot initialise libcurl");
		return -EIO;
	}
	return 0;
}

/* Room for the default paths made from the environment; it must outlive the
 * config_options that point into it. */
struct mode_paths {
	char config[PATH_MAX], socket[PATH_MAX], state[PATH_MAX];
};

/* Fills in what co leaves unset with the mode's defaults (the config file
 * only if co->path is NULL). Returns 0, or a negative errno (logged) when
 * user mode has no config path; a missing socket path is logged and left to
 * the config. */
static int mode_defaults(bool user_mode, struct mode_paths *buf, struct config_options *co)
{
	const char *sd_state;

	if (!co->path) {
		if (user_mode) {
			if (user_path(buf->config, sizeof(buf->config), "XDG_CONFIG_HOME",
				      ".config", "batchtok/batchtokd.conf") < 0) {
				log_error("user mode needs $XDG_CONFIG_HOME or $HOME, or -c FILE");
				return -ENOENT;
			}
			co->path = buf->config;
		} else {
			co->path = CONFIG_SYSTEM_PATH;
		}
	}
	if (user_mode) {
		if (user_path(buf->socket, sizeof(buf->socket), "XDG_RUNTIME_DIR", NULL,
			      "batchtok/batchtokd.sock") < 0) {
			log_error("user mode needs $XDG_RUNTIME_DIR for its socket (or set "
				  "socket = in the config)");
			co->default_socket = NULL;
		} else {
			co->default_socket = buf->socket;
		}
	} else {
		co->default_socket = "/run/batchtok/batchtokd.sock";
		/* Run by hand, read what the packaged unit would pass. */
		const char *creds = getenv("CREDENTIALS_DIRECTORY");
		if (!creds || !*creds)
			co->credentials_dir = CREDENTIALS_SYSTEM_DIR;
	}
	/* Sign-ins are kept in systemd's StateDirectory= when there is one. */
	if ((sd_state = getenv("STATE_DIRECTORY")) && *sd_state == '/') {
		snprintf(buf->state, sizeof(buf->state), "%.*s", (int)strcspn(sd_state, ":"),
			 sd_state);
		co->default_state_dir = buf->state;
	} else if (!user_mode) {
		co->default_state_dir = "/var/lib/batchtok";
	} else if (user_path(buf->state, sizeof(buf->state), "XDG_STATE_HOME", ".local/state",
			     "batchtok") == 0) {
		co->default_state_dir = buf->state;
	}
	return 0;
}

/* Loads and checks the config. Its problems go to stderr for
 * --check-config, to the log otherwise. Returns 0 with *ret set, or a
 * negative errno. */
static int load_config(const struct config_options *co, bool check, struct config **ret)
{
	struct config_errors errs = {0};
	struct config *cfg;
	int r;

	r = config_load(co, &cfg, &errs);
	if (r == 0 && !cfg->socket) {
		config_free(cfg);
		r = -EINVAL;
		fprintf(stderr, "%s: no socket: set socket = in [daemon]\n", co->path);
	}
	if (r < 0) {
		for (size_t i = 0; i < errs.n; i++) {
			if (check)
				fprintf(stderr, "%s\n", errs.msgs[i]);
			else
				log_error("%s", errs.msgs[i]);
		}
		config_errors_clear(&errs);
		return r;
	}
	*ret = cfg;
	return 0;
}

/* What --check-config read: the main file, then each drop-in with the
 * identities it defines, so that a drop-in that was not read (a name not
 * ending in .conf) is noticed. */
static void print_checked(const struct config *cfg, bool user_mode)
{
	printf("%s: OK (%zu identities, %s mode)\n", cfg->path, cfg->n_identities,
	       user_mode ? "user" : "system");
	for (size_t i = 1; i < cfg->n_files; i++) {
		size_t n = 0;
		for (size_t j = 0; j < cfg->n_identities; j++)
			n += strcmp(cfg->identities[j].file, cfg->files[i]) == 0;
		printf("%s: OK (drop-in, %zu identities)\n", cfg->files[i], n);
	}
}

int main(int argc, char **argv)
{
	struct options o;
	struct mode_paths paths;
	struct config_options co = {0};
	struct config *cfg;
	bool user_mode;
	int r;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	if (o.version) {
		printf("batchtokd " BATCHTOK_VERSION_STRING "\n");
		return 0;
	}
	if (o.help) {
		fputs(usage_text, stdout);
		return 0;
	}
	/* The units always say which; by hand, root means the system's daemon. */
	user_mode = o.mode ? o.mode == MODE_USER : geteuid() != 0;
	if (start(&o, user_mode) < 0)
		return 1;
	co.path = o.config;
	if (mode_defaults(user_mode, &paths, &co) < 0 || load_config(&co, o.check, &cfg) < 0)
		return 1;
	if (o.check) {
		print_checked(cfg, user_mode);
		config_free(cfg);
		return 0;
	}
	if (o.level < 0)
		log_set_level(cfg->log_level);
	check_nofile(raise_nofile(), cfg);
	r = daemon_run(&co, cfg);
	curl_global_cleanup();
	return r < 0 ? 1 : 0;
}
