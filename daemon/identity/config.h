/* config.h - the daemon's configuration: the INI file of PRODUCT.md and its
 * drop-ins parsed, validated and resolved (users, groups, secrets) into one
 * immutable value.
 *
 * A config is loaded whole or not at all: on SIGHUP a new one is built beside
 * the running one and swapped in only if it is valid. The config module does
 * not log; it collects every problem as "FILE:LINE: what is wrong and how to
 * fix it" for the caller to print. */
#ifndef BATCHTOK_DAEMON_CONFIG_H
#define BATCHTOK_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "conf_value.h"
#include "identity.h"
#include "keyfile.h"

#define CONFIG_SYSTEM_PATH "/etc/batchtok/batchtokd.conf"
/* The drop-in directory is the main file's path with this appended. */
#define CONFIG_DROPIN_SUFFIX ".d"
/* Drop-ins read at most: a directory holding more is a mistake (a
 * generator run wild), refused with a message rather than read for ever. */
#define CONFIG_DROPIN_MAX 256

struct config {
	char *path;
	/* Every file read, in order: path first, then its drop-ins. */
	char **files;
	size_t n_files;
	char *socket;
	mode_t socket_mode;
	gid_t socket_gid;  /* (gid_t)-1: leave as created */
	gid_t admin_gid;   /* (gid_t)-1: only root and the daemon's own user */
	gid_t metrics_gid; /* may read metrics; (gid_t)-1: none beside admins */
	int log_level;
	uint32_t min_validity; /* seconds */
	uint32_t max_clients;
	/* Connections one uid may hold on each listener, and seconds a
	 * connection with nothing pending may stay open. */
	uint32_t max_clients_per_uid;
	uint32_t client_idle_timeout;
	uint32_t fetch_concurrency;
	uint32_t request_timeout; /* seconds for one token-service request */
	uint32_t idle_timeout;	  /* stop refreshing tokens unused this long */
	/* The guard on each token-service host (lib/guard.h): requests in any
	 * one second and at once, per IMDS endpoint and per Entra authority
	 * host; 0: no cap. */
	uint32_t imds_rate, imds_concurrency;
	uint32_t entra_rate, entra_concurrency;
	char *ca_file;
	char *proxy;
	char *compat_endpoint; /* as written; NULL: the endpoint is off */
	struct sockaddr_storage compat_addr;
	uint32_t compat_lifetime; /* seconds a capability is valid */
	/* metrics_listen as written (NULL: off): a Unix socket (metrics_path)
	 * or a loopback address (metrics_addr). */
	char *metrics_listen;
	char *metrics_path;
	struct sockaddr_storage metrics_addr;
	/* For a TCP metrics_listen: the users listed in the group database as
	 * members of metrics_group or admin_group. */
	uid_t *metrics_uids;
	size_t n_metrics_uids;
	char *state_dir;	    /* device-code sign-ins are kept here */
	char *state_key_credential; /* systemd credential with the state key */
	struct identity *identities;
	size_t n_identities;
	struct identity *default_identity; /* NULL if none */
};

struct config_options {
	const char *path;
	const char *default_socket;    /* used when [daemon] socket is unset */
	const char *default_state_dir; /* used when [daemon] state_dir is unset */
	/* Outside a unit ($CREDENTIALS_DIRECTORY unset), *_credential =
	 * batchtok_FILE is read from here as the unit would pass it; NULL: such
	 * keys need the unit. */
	const char *credentials_dir;
};

/* Loads and validates opts->path, then its drop-ins: the regular files
 * named *.conf, not starting with '.', in the directory opts->path
 * CONFIG_DROPIN_SUFFIX, read in strcmp() order as if they followed the main
 * file, each starting outside any section. A missing directory means none.
 * Each file must be one only root or the daemon's user could have written;
 * so must the directory. A drop-in may set [daemon] keys (the last file to
 * set a key wins, as within one file) and add identities; an identity
 * defined in two places is an error naming both. On success *ret is a new
 * config; on failure returns -EINVAL (or -ENOENT/-EACCES for the main file
 * itself, or -ENOMEM) and errs holds at least one message, each naming the
 * file (and line) it is about. */
int config_load(const struct config_options *opts, struct config **ret, struct config_errors *errs);
/* Parses a config held in memory; for tests and the fuzzer. Secret files
 * are not read. */
int config_parse_string(const char *text, const char *name, struct config **ret,
			struct config_errors *errs);

void config_free(struct config *c);

struct identity *config_find_identity(const struct config *c, const char *name);

/* The keys the [daemon] section (identity false) or every [identity NAME]
 * section accepts: the parser's own table, *ret_n names long. Each kind of
 * credential adds its own (credential.h). */
const char *const *config_keys(bool identity, size_t *ret_n);

/* Whether two identities would fetch the same tokens: same kind of
 * credential, authority, tenant, client, token version and client
 * capabilities, and what their
 * kind says is the same credential. Used on reload to keep cached tokens. */
bool identity_same_credential(const struct identity *a, const struct identity *b);

/* What the tokens of id are for, as a digest that a later configuration's
 * identity matches only if it asks the same token service for tokens of
 * the same application: kind, token version, client capabilities,
 * authority, tenant, client and managed-identity selectors, and what the
 * kind compares for a reload (credential_ops.key: a digest of the secret,
 * the certificate's thumbprint, the metadata endpoint, the federated token
 * file), so that a restart keeps tokens exactly where a reload would
 * (SHA-256, hex; never the secret itself). A token kept across a
 * restart (tokensnap.h) is restored only to an identity with the same key. Returns 0 or
 * -ENOMEM/-EIO. */
#define IDENTITY_KEY_LEN 64
int identity_token_key(const struct identity *id, char out[IDENTITY_KEY_LEN + 1]);

/* The identity's own resource string for what a client asked: a resource,
 * or a scope ending in "/.default" (also "//.default", as SDKs write it for a
 * resource ending in '/'); either may differ from the configured one by a
 * trailing slash, as SDKs turn "R/.default" into R. Neither: the default.
 * NULL if the identity serves none. Every front end asks through this one
 * function. */
const char *identity_resource(const struct identity *id, const char *resource, const char *scope);

/* The cloud's Entra authority host and Batch resource. */
const char *cloud_authority(enum cloud c);
const char *cloud_batch_resource(enum cloud c);

#endif
