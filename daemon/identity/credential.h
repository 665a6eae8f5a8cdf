/* credential.h - kinds of credential: how an identity proves itself to the
 * token service. Each kind (client secret, certificate, managed identity,
 * federated token, a signed-in user's refresh token) is one file,
 * cred_KIND.c, holding one struct credential_ops: its config keys and their
 * checks, the key material it loads, what status shows of it, and how it
 * asks for a token. The config parser and the fetcher call only this
 * interface; a new kind is a new file and a line in credential.c's table.
 *
 * Requests are built without I/O: what a kind needs from outside the config
 * (the federated token file's current contents, the user's current refresh
 * token) is read or looked up by the fetcher and handed in as cred_input. */
#ifndef BATCHTOK_DAEMON_CREDENTIAL_H
#define BATCHTOK_DAEMON_CREDENTIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "../../proto/msg.h"
#include "conf_value.h"
#include "entra.h"
#include "identity.h"
#include "../lib/http.h"

/* A federated token is a JWT of a few KiB. */
#define FEDERATED_TOKEN_MAX (64 * 1024)

struct credential_key;

struct cred_input {
	const struct identity *id;
	const char *resource;
	const char *assertion;	   /* federated: the token file, read for this request */
	const char *refresh_token; /* device-code: the user's, or NULL if not signed in */
	const char *claims;	   /* a claims challenge (canonical JSON), or NULL */
	int64_t now;		   /* wall clock */
};

/* The Azure ids a managed-identity request may select an identity by. */
enum azure_selector {
	SELECT_CLIENT_ID,
	SELECT_OBJECT_ID,
	SELECT_RESOURCE_ID,
};

struct credential_ops {
	const char *name;	 /* credential = NAME */
	const char *const *keys; /* its own [identity] keys, NULL-terminated */
	size_t data_size;	 /* of its cred_data, allocated zeroed with credential = */
	bool user_signs_in;	 /* a person signs in with batchtok login */
	bool no_application;	 /* the service knows tenant and client: none needed */

	/* --- configuration --- */
	/* Sets one of keys (at says where it was written). */
	int (*set_key)(struct identity *id, const struct conf_pos *at, const char *key,
		       const char *v);
	/* Once the section is read: fills in defaults, reports what is missing
	 * or contradictory through at. Returns 0 or -ENOMEM. May be NULL. */
	int (*check)(struct identity *id, const struct conf_pos *at);
	/* Loads key material into secure memory and checks that it is usable;
	 * problems go to errs. May be NULL. */
	int (*load)(struct identity *id, const char *credentials_dir, struct config_errors *errs);
	/* Whether a and b (both of this kind) hold the same credential, so
	 * tokens fetched for one serve the other. May be NULL: always. */
	bool (*same)(const struct identity *a, const struct identity *b);
	/* Adds to k what same() compares (a secret's value, a certificate's
	 * thumbprint, an endpoint...), so that a token kept across a restart
	 * comes back only where a reload would have kept it
	 * (identity_token_key()). May be NULL: nothing beyond the common
	 * fields. */
	void (*key)(const struct identity *id, struct credential_key *k);
	/* Frees what the kind's cred_data holds (not cred_data itself). */
	void (*clear)(void *data);

	/* --- what users see --- */
	/* Adds what status shows of this kind's configuration to rec. May be
	 * NULL. */
	int (*describe)(const struct identity *id, struct bt_record *rec);
	/* A problem worth a log line at start, reload and twice a day (an
	 * expiring certificate): writes it to msg and returns its syslog
	 * priority, or returns 0. May be NULL. */
	int (*audit)(const struct identity *id, int64_t now, char *msg, size_t n);
	/* The identity's Azure id of that sort, or NULL. May be NULL. */
	const char *(*selector)(const struct identity *id, enum azure_selector which);

	/* --- getting a token --- */
	/* The service it asks: SERVICE_ENTRA unless set. Each service has its
	 * own caps in the guard on every host (lib/guard.h). */
	enum token_service service;
	/* The base URL of that service (its origin is what the guard caps).
	 * May be NULL: the identity's authority. */
	const char *(*service_url)(const struct identity *id);
	/* A file to read afresh before every request (it rotates), or NULL.
	 * May be NULL. */
	const char *(*input_file)(const struct identity *id);
	/* Fills req with the token request. On failure req is cleared and err
	 * says why (status, message, transient). */
	int (*build_request)(const struct cred_input *in, struct http_request *req,
			     struct token_result *err);
	/* Interprets the reply; sent_at is when the request went out. */
	void (*parse_response)(const struct cred_input *in, const struct http_response *resp,
			       int64_t sent_at, struct token_result *ret);
};

/* The kinds, in the order messages list them. */
extern const struct credential_ops credential_secret, credential_certificate,
    credential_managed_identity, credential_federated, credential_device_code;

/* The kind credential = name selects, or NULL. */
const struct credential_ops *credential_find(const char *name);
/* The first kind with key among its keys, or NULL. */
const struct credential_ops *credential_owning_key(const char *key);
/* "secret, certificate, ... or device-code" into buf. */
const char *credential_names(char *buf, size_t n);
/* The i-th kind, or NULL past the last. */
const struct credential_ops *credential_kind(size_t i);

/* The identity's kind: never NULL for a loaded config. */
static inline const struct credential_ops *credential_for(const struct identity *id)
{
	return id->cred;
}

/* The base URL of the service the identity asks for tokens. */
const char *credential_service_url(const struct identity *id);

/* The Azure id of that sort the identity answers to, or NULL. */
const char *identity_selector(const struct identity *id, enum azure_selector which);

/* --- for the kinds --- */

/* What identity_token_key() digests; kinds add their own with
 * credential_key_add() (a string, or NULL for none, kept apart from the
 * next by its NUL). */
struct credential_key {
	void *ctx; /* EVP_MD_CTX */
	bool ok;
};
void credential_key_add(struct credential_key *k, const char *s);

/* Clears req, sets err's status and message, returns r. */
int credential_fail(struct token_result *err, struct http_request *req, uint32_t status, int r,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* An Entra client-credentials request: the common form with one proof
 * (key=value) or two appended. */
int credential_client_request(const struct cred_input *in, struct http_request *req,
			      struct token_result *err, const char *key, const char *value,
			      const char *key2, const char *value2);
/* Parses an Entra token endpoint reply. */
void credential_entra_parse(const struct cred_input *in, const struct http_response *resp,
			    int64_t sent_at, struct token_result *ret);

#define CLIENT_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

#endif
