/* entra.h - the Microsoft Entra ID token endpoint: request URLs and forms,
 * response and error parsing, and what each AADSTS code means.
 *
 * Knows nothing of sockets or transfers. OAuth errors, AADSTS codes and HTTP
 * statuses of the token service are translated into the wire protocol's
 * status codes here and nowhere else. */
#ifndef BATCHTOK_DAEMON_ENTRA_H
#define BATCHTOK_DAEMON_ENTRA_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "secmem.h"

/* Lifetimes outside this range are refused as nonsense from the service. */
#define ENTRA_LIFETIME_MAX (7 * 86400)

struct token_result {
	uint32_t status;    /* BT_OK or a BT_E_* code */
	bool transient;	    /* worth retrying later */
	char *access_token; /* secure memory */
	char token_type[16];
	int64_t expires_on;   /* wall clock, epoch seconds */
	int64_t refresh_on;   /* server's refresh hint, 0 if none */
	uint32_t retry_after; /* seconds, 0 if none */
	char aadsts[32];      /* "AADSTS7000215", or "" */
	char message[600];    /* one line for clients and logs; never a secret */
};

void token_result_clear(struct token_result *r);

/* AUTHORITY/TENANT/oauth2/token (v1) or .../oauth2/v2.0/token (v2). */
int entra_token_url(const struct identity *id, char **ret);

/* The v2 scope for a resource: RESOURCE + "/.default" (so the Batch
 * resource, with its trailing slash, becomes ".../batch.core.windows.net//.default"). */
int entra_scope(const char *resource, char **ret);

/* grant_type=client_credentials, client_id and the resource or scope. The
 * credential source appends its own proof to the same form. */
int entra_client_credentials_form(const struct identity *id, const char *resource,
				  struct secstr *form);

/* Interprets a token-endpoint reply (or transport failure). sent_at is the
 * wall-clock time the request was sent, which expires_in counts from. */
void entra_parse_response(const struct http_response *resp, int64_t sent_at,
			  struct token_result *ret);

/* What an AADSTS code means and what to do, or NULL if unknown. */
const char *entra_aadsts_hint(long code);

#endif
