/* entra.h - the Microsoft Entra ID token endpoint: request URLs and forms,
 * response and error parsing, and what each AADSTS code means.
 *
 * Knows nothing of sockets or transfers. OAuth errors, AADSTS codes and HTTP
 * statuses of the token service are translated into the wire protocol's
 * status codes and enum entra_error_kind here and nowhere else. */
#ifndef BATCHTOK_DAEMON_ENTRA_H
#define BATCHTOK_DAEMON_ENTRA_H

#include <stdbool.h>
#include <stdint.h>

#include "identity.h"
#include "../lib/http.h"
#include "../lib/secmem.h"

/* Lifetimes outside this range are refused as nonsense from the service. */
#define ENTRA_LIFETIME_MAX (7 * 86400)

/* What an OAuth error reply (RFC 6749 5.2, RFC 8628 3.5) asks of the caller.
 * The error strings are read here and nowhere else: the rest of the daemon
 * acts on these. */
enum entra_error_kind {
	ENTRA_E_NONE = 0,      /* the reply named no OAuth error (a token, a 5xx...) */
	ENTRA_E_OTHER,	       /* an error no caller acts on; status says what to do */
	ENTRA_E_GRANT_INVALID, /* invalid_grant: the refresh token no longer holds */
	ENTRA_E_PENDING,       /* authorization_pending: the user has not signed in yet */
	ENTRA_E_SLOW_DOWN,     /* slow_down: poll less often */
	ENTRA_E_EXPIRED,       /* expired_token: the device code expired unused */
	ENTRA_E_DECLINED,      /* authorization_declined: the user refused */
};

struct token_result {
	uint32_t status;    /* BT_OK or a BT_E_* code */
	bool transient;	    /* worth retrying later */
	char *access_token; /* secure memory */
	char token_type[16];
	int64_t expires_on;   /* wall clock, epoch seconds */
	int64_t refresh_on;   /* server's refresh hint, 0 if none */
	uint32_t retry_after; /* seconds, 0 if none */
	char aadsts[32];      /* "AADSTS7000215", or "" */
	char error[48];	      /* the OAuth error string, for display only, or "" */
	char message[600];    /* one line for clients and logs; never a secret */
	/* What the OAuth error asks of the caller, which acts on this and never
	 * on the string: */
	enum entra_error_kind error_kind;
	/* User sign-ins (device code, refresh token): */
	char *refresh_token; /* the rotated refresh token, secure memory; or NULL */
	char user[256];	     /* who signed in, from the id_token; or "" */
};

void token_result_clear(struct token_result *r);

/* Which service answered: they differ in how errors are retried and in
 * which expiry field to trust. */
enum token_service {
	SERVICE_ENTRA, /* the Entra ID token endpoint */
	SERVICE_IMDS,  /* the instance metadata service (ENTRA.md 3.1) */
};

/* A device authorization (ENTRA.md 6.1). */
struct device_code {
	char *device_code; /* secure memory: it is a credential until used */
	char user_code[64];
	char verification_uri[512];
	char message[1024];
	uint32_t expires_in, interval;
};

void device_code_clear(struct device_code *dc);

/* AUTHORITY/TENANT/oauth2/token (v1) or .../oauth2/v2.0/token (v2). */
int entra_token_url(const struct identity *id, char **ret);

/* The v2 scope for a resource: RESOURCE + "/.default" (so the Batch
 * resource, with its trailing slash, becomes ".../batch.core.windows.net//.default"). */
int entra_scope(const char *resource, char **ret);

/* grant_type=client_credentials, client_id and the resource or scope. The
 * credential source appends its own proof to the same form. */
int entra_client_credentials_form(const struct identity *id, const char *resource,
				  struct secstr *form);

/* Interprets a token reply (or transport failure). sent_at is the
 * wall-clock time the request was sent, which expires_in counts from. */
void entra_parse_response(const struct http_response *resp, int64_t sent_at, enum token_service svc,
			  struct token_result *ret);

/* POST .../oauth2/v2.0/devicecode for id's default resource. */
int entra_device_code_request(const struct identity *id, struct http_request *req);
/* Parses the device authorization reply; on failure ret->device_code is
 * NULL and err says why. */
void entra_parse_device_code(const struct http_response *resp, struct device_code *ret,
			     struct token_result *err);
/* The device-code poll and the refresh-token grant (ENTRA.md 6.2, 6.4). */
int entra_device_poll_request(const struct identity *id, const char *device_code,
			      struct http_request *req);
int entra_refresh_request(const struct identity *id, const char *resource,
			  const char *refresh_token, struct http_request *req);

/* A claims challenge as a client passed it (the decoded JSON of a 401's
 * claims=): canonical JSON (compact, keys sorted) in *ret, so challenges
 * that differ only in spacing or key order are one. -EINVAL with why (n
 * bytes) if it is not a JSON object. */
int entra_canonical_claims(const char *json, char **ret, char *why, size_t n);

/* Adds the claims parameter a token request carries, if any: the challenge
 * (canonical JSON, or NULL) merged with the client capability cp1 when the
 * identity declares it (ENTRA.md 8: access_token.xms_cc.values = ["cp1"]). */
int entra_add_claims(const struct identity *id, const char *challenge, struct secstr *form);

/* What an AADSTS code means and what to do, or NULL if unknown. */
const char *entra_aadsts_hint(long code);

#endif
