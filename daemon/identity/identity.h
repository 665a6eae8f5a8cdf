/* identity.h - one configured identity: what every kind of credential
 * shares (its name, the application, the resources it serves, the cloud, who
 * may use it). The kind's own settings and key material hang off it as
 * cred_data, which only the kind's file reads (credential.h). */
#ifndef BATCHTOK_DAEMON_IDENTITY_H
#define BATCHTOK_DAEMON_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct credential_ops;

enum cloud {
	CLOUD_PUBLIC,
	CLOUD_USGOV,
	CLOUD_CHINA,
};

/* Shell-style patterns naming programs (lib/pattern.h), as written. */
struct pattern_list {
	char **v;
	size_t n;
};

struct identity {
	char *name;
	char *file; /* where it was defined, for messages */
	int line;
	const struct credential_ops *cred; /* credential =; NULL only while parsing */
	void *cred_data;		   /* the kind's settings and key material */
	int credential_line;		   /* of credential =, even with a bad value; 0: none */
	char *tenant;
	char *client_id;
	char **resources; /* first is the default */
	size_t n_resources;
	enum cloud cloud;
	char *authority; /* https://HOST[:PORT], from cloud or authority_host */
	int token_version;
	uid_t *allow_uids;
	size_t n_allow_uids;
	gid_t *allow_gids;
	size_t n_allow_gids;
	/* Which programs may use it (core/policy.h): units of the system
	 * manager and of users' managers (one allow-list), executables, and
	 * cgroups with what is below them. With uid or group rules beside
	 * them, a caller must pass both. */
	struct pattern_list allow_units;
	struct pattern_list allow_user_units;
	struct pattern_list allow_exes;
	struct pattern_list allow_cgroups;
	bool cp1; /* client_capabilities = cp1: its callers answer claims challenges */
	bool prefetch;
	bool is_default;
};

#endif
