/* signin.h - signed-in users of device-code identities: the device
 * authorization flow that signs them in (ENTRA.md 6), the refresh token
 * that then stands for them, rotated as Entra rotates it, and its sealed
 * copy in the state directory so that a sign-in survives a restart.
 *
 * One sign-in per device-code identity, found by the identity's name.
 * The refresh token lives in secure memory; on disk it is only ever sealed
 * (sealed.h), written owner-only by a worker thread so the loop never waits
 * on the disk. */
#ifndef BATCHTOK_DAEMON_SIGNIN_H
#define BATCHTOK_DAEMON_SIGNIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "entra.h"
#include "../lib/http.h"
#include "../lib/list.h"

struct signin_store;
struct signin;

/* What a waiting client learns: the prompt once the code is issued, then
 * the outcome. */
struct signin_event {
	uint32_t status;		  /* BT_OK or a BT_E_* code */
	const char *message;		  /* errors */
	const struct device_code *prompt; /* set for the prompt */
	const char *user;		  /* set for a completed sign-in */
};

struct signin_waiter {
	struct list node;
	bool want_prompt; /* answered at the prompt rather than at the end */
	void (*fn)(struct signin_waiter *w, const struct signin_event *ev);
};

/* changed() is called when an identity's user signs in or out: tokens of
 * the previous state must not be served any more. */
int signin_store_new(uv_loop_t *loop, struct http *http,
		     void (*changed)(void *arg, const struct identity *id), void *arg,
		     struct signin_store **ret);
/* Ends every flow (waiters told), waits for nothing: pending disk writes
 * finish on the loop and then free themselves. Accepts NULL. */
void signin_store_free(struct signin_store *s);

/* After a config is loaded: sign-ins follow the config's device-code
 * identities; one whose tenant, client or authority changed is forgotten
 * and loaded again from disk. Reads the state key and the state files with
 * blocking I/O (load time only). Problems are logged; a sign-in that cannot
 * be read means signing in again, never a refused config. */
void signin_configure(struct signin_store *s, const struct config *cfg);

/* NULL unless id is a device-code identity. */
struct signin *signin_find(struct signin_store *s, const struct identity *id);
/* The current refresh token (secure memory) or NULL if signed out. */
const char *signin_refresh_token(const struct signin *si);
/* Bumped at every sign-in, rotation and sign-out. */
uint64_t signin_generation(const struct signin *si);
const char *signin_user(const struct signin *si); /* "" when signed out */
int64_t signin_time(const struct signin *si);	  /* when the user signed in */
bool signin_pending(const struct signin *si);	  /* a device-code flow is running */

/* A token request that used generation gen returned a new refresh token. */
void signin_rotate(struct signin *si, uint64_t gen, const char *refresh_token);
/* ...or was refused (invalid_grant): the sign-in is over if it is still the
 * one that request used. Returns whether it ended it. */
bool signin_expired(struct signin *si, uint64_t gen, const char *why);

/* Starts (or joins the running) device-code flow for id, and queues w. */
int signin_login(struct signin_store *s, const struct identity *id, struct signin_waiter *w);
/* Queues w for the end of the running flow; answers at once when there is
 * none (the outcome of the last one, or the current state). */
void signin_wait(struct signin_store *s, const struct identity *id, struct signin_waiter *w);
void signin_waiter_cancel(struct signin_waiter *w);
/* Forgets the user: refresh token wiped, state file deleted, flow ended. */
void signin_logout(struct signin_store *s, const struct identity *id);

/* The state file's plaintext: a JSON object. Exposed for tests and the
 * fuzzer. On success *rt is secure memory. */
int signin_record_parse(const char *text, char **rt, char *user, size_t user_len,
			int64_t *signed_in_at);

#endif
