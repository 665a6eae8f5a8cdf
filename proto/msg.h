/* msg.h - the batchtok wire protocol: framing and one typed encode/decode
 * pair per message. proto/PROTOCOL.md is the specification; this is its only
 * implementation, compiled into both the daemon and libbatchtok.
 *
 * Encoders append one whole frame to an output buffer or, on failure, leave
 * the buffer as it was. Decoders read one message body from a view of the
 * frame; they fail with -EBADMSG on truncation, trailing bytes or an
 * over-long field, and on failure leave *ret untouched. Every decoded struct
 * is released with its _clear() function, which wipes strings that may hold a
 * secret and accepts a zeroed or half-built struct.
 */
#ifndef BATCHTOK_PROTO_MSG_H
#define BATCHTOK_PROTO_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

/* The protocol versions this codec speaks. Version 2 is version 1 with one
 * more field in the HELLO reply: the request types the daemon answers, so
 * that a client can tell an older daemon's gaps before asking. */
#define BT_PROTO_VERSION_MIN 1
#define BT_PROTO_VERSION_MAX 2

/* u32 length (of what follows), u8 type, u32 request id. */
#define BT_FRAME_HEADER 9
/* A request is a few names and flags; 16 KiB is generous and bounds what one
 * client can make the daemon buffer. */
#define BT_REQUEST_MAX (16 * 1024)
/* A reply carries a token (Entra tokens with many group claims reach tens of
 * KiB) or the status of every identity. */
#define BT_REPLY_MAX (1024 * 1024)

/* Field limits, checked by every decoder. */
#define BT_NAME_MAX	256	     /* identity names, token types, tenants */
#define BT_RESOURCE_MAX 2048	     /* resource URIs and scopes */
#define BT_TOKEN_MAX	(256 * 1024) /* access tokens and claim documents */
#define BT_CLAIMS_MAX	8192	     /* a claims challenge (JSON) */
#define BT_MESSAGE_MAX	4096	     /* error and status text */

enum bt_type {
	BT_HELLO = 1,
	BT_GET_TOKEN = 2,
	BT_STATUS = 3,
	BT_INSPECT = 4,
	BT_RELOAD = 5,
	BT_PING = 6,
	BT_LOGIN = 7,	   /* start (or join) a device-code sign-in: the prompt */
	BT_LOGIN_WAIT = 8, /* wait for the sign-in to end: who signed in */
	BT_LOGOUT = 9,
	BT_COMPAT = 10,	       /* a capability for the managed-identity compatible endpoint */
	BT_COMPAT_RENEW = 11,  /* a capability lives compat_lifetime from now on */
	BT_COMPAT_REVOKE = 12, /* a capability stops working now */
	BT_WATCH = 13,	       /* the current token, then each replacement, as events */
	BT_REFRESH = 14,       /* fetch anew now and push to watchers (admin) */
	BT_FORGET = 15,	       /* drop cached tokens (admin) */
	BT_CHALLENGE = 16,     /* a token fetched anew with a claims challenge */
	BT_METRICS = 17,       /* OpenMetrics text (admin or metrics_group) */
	BT_REPLY = 0x80,       /* a reply's type is the request's type | BT_REPLY */
	BT_ERROR = 0xff,
};

/* Request types are numbered below 64, so that one u64 in the HELLO reply
 * names every type a daemon answers: bit t for type t. */
#define BT_REQUEST_TYPES  64
#define BT_REQUEST_BIT(t) (UINT64_C(1) << (t))
/* What every daemon from before version 2 answers (batchtokd 0.1.0, say):
 * HELLO through COMPAT. Types added since are never known to such a daemon,
 * whose HELLO reply has no list. */
#define BT_V1_REQUESTS                                                                             \
	(BT_REQUEST_BIT(BT_HELLO) | BT_REQUEST_BIT(BT_GET_TOKEN) | BT_REQUEST_BIT(BT_STATUS) |     \
	 BT_REQUEST_BIT(BT_INSPECT) | BT_REQUEST_BIT(BT_RELOAD) | BT_REQUEST_BIT(BT_PING) |        \
	 BT_REQUEST_BIT(BT_LOGIN) | BT_REQUEST_BIT(BT_LOGIN_WAIT) | BT_REQUEST_BIT(BT_LOGOUT) |    \
	 BT_REQUEST_BIT(BT_COMPAT))

/* Whether the set of request types (a bitmap as above) holds type. */
static inline bool bt_requests_has(uint64_t set, uint8_t type)
{
	return type < BT_REQUEST_TYPES && (set >> type & 1);
}

/* Stable status codes carried in BT_ERROR replies; errno never crosses the
 * socket. */
enum bt_status {
	BT_OK = 0,
	BT_E_INTERNAL = 1,
	BT_E_BAD_REQUEST = 2,
	BT_E_DENIED = 3,
	BT_E_UNKNOWN_IDENTITY = 4,
	BT_E_RESOURCE_NOT_ALLOWED = 5,
	BT_E_CREDENTIAL_REJECTED = 6,
	BT_E_UNAVAILABLE = 7,
	BT_E_TIMEOUT = 8,
	BT_E_UNSUPPORTED = 9,
	BT_E_VERSION = 10,
	BT_E_BUSY = 11,
};

/* One frame found at the front of an input buffer. body is a view into that
 * buffer: valid until the frame is consumed. */
struct bt_frame {
	uint8_t type;
	uint32_t id;
	struct bt_buf body;
	size_t size; /* whole frame, header included: what to consume */
};

/* Looks for one whole frame at the front of in.
 * Returns 0 with *ret filled, -EAGAIN if more bytes are needed, -EMSGSIZE if
 * the header announces a frame larger than max (known before the body is
 * buffered), -EBADMSG if the length cannot hold a header. */
int bt_frame_peek(const struct bt_buf *in, size_t max, struct bt_frame *ret);

/* Starts a frame; write the body with bt_buf_put_*(), then bt_frame_end().
 * On any error in between call bt_frame_abort() to drop the partial frame. */
int bt_frame_begin(struct bt_buf *out, uint8_t type, uint32_t id, size_t *mark);
int bt_frame_end(struct bt_buf *out, size_t mark);
void bt_frame_abort(struct bt_buf *out, size_t mark);

struct bt_hello {
	uint32_t min_version;
	uint32_t max_version;
};

/* The body's shape depends on version: requests is on the wire from
 * version 2 on and ignored by the encoder of a version 1 reply. */
struct bt_hello_reply {
	uint32_t version;  /* BT_PROTO_VERSION_MIN..BT_PROTO_VERSION_MAX */
	char *server;	   /* "batchtokd VERSION" */
	uint64_t requests; /* version >= 2: the request types the daemon answers */
};

#define BT_GET_FORCE_REFRESH 0x1u /* skip the cache; rate-limited by the daemon */

/* GET_TOKEN and INSPECT. Empty strings mean "the default". */
struct bt_token_query {
	char *identity;
	char *resource;
	char *scope;	       /* alternative to resource: RESOURCE/.default */
	uint32_t min_validity; /* seconds; 0 = the daemon's min_validity */
	uint32_t flags;
};

struct bt_token_reply {
	char *access_token;  /* secret */
	uint64_t expires_on; /* epoch seconds */
	char *token_type;
	char *identity;
	char *resource;
	char *tenant;
};

/* CHALLENGE: a token query and the claims a resource's 401 asked for. */
struct bt_challenge {
	struct bt_token_query query;
	char *claims; /* the decoded JSON claims request */
};

/* One event of a WATCH: a token (status BT_OK), or the news that the token
 * service keeps failing while the last token nears its end (status a
 * BT_E_* code, message why, no token). The watch goes on either way; it
 * ends with an ERROR frame carrying its id. */
struct bt_watch_event {
	uint32_t status;
	char *message;		 /* "" for a token */
	struct bt_token_reply t; /* empty strings and 0 for an error */
	uint64_t refresh_at;	 /* when the daemon plans the next token; 0: not planned */
};

/* FORGET: one identity's tokens, or every identity's. */
#define BT_FORGET_ALL 0x1u
struct bt_forget {
	char *identity; /* "" with BT_FORGET_ALL */
	uint32_t flags;
};

/* COMPAT's reply: what a program needs to reach the compatible endpoint as
 * the asking user with one identity. */
struct bt_compat_reply {
	char *capability;    /* secret: the IDENTITY_HEADER value */
	char *endpoint;	     /* base URL, "http://127.0.0.1:PORT" */
	char *identity;	     /* the identity it is bound to */
	uint64_t expires_on; /* epoch seconds */
};

struct bt_error {
	uint32_t status; /* enum bt_status */
	char *message;
};

/* A status record: typed key/value fields and child records. The daemon
 * describes itself, its identities and their tokens this way so that new
 * fields need no protocol change. */
enum bt_field_kind {
	BT_FIELD_STR = 1,
	BT_FIELD_INT = 2,
	BT_FIELD_TIME = 3, /* epoch seconds */
	BT_FIELD_BOOL = 4,
};

struct bt_field {
	char *key;
	uint8_t kind;
	char *str; /* BT_FIELD_STR */
	int64_t num;
};

struct bt_record {
	uint32_t n_fields;
	struct bt_field *fields;
	uint32_t n_children;
	struct bt_record *children;
};

#define BT_RECORD_DEPTH_MAX  4
#define BT_RECORD_FIELDS_MAX 64

int bt_record_add_str(struct bt_record *r, const char *key, const char *val);
int bt_record_add_int(struct bt_record *r, const char *key, uint8_t kind, int64_t val);
/* Appends an empty child and returns it in *ret; valid until the next add. */
int bt_record_add_child(struct bt_record *r, struct bt_record **ret);
const struct bt_field *bt_record_get(const struct bt_record *r, const char *key);
void bt_record_clear(struct bt_record *r);

/* Encoders: one whole frame each. */
int bt_encode_hello(struct bt_buf *out, uint32_t id, const struct bt_hello *m);
/* -EINVAL for a version this codec does not speak. */
int bt_encode_hello_reply(struct bt_buf *out, uint32_t id, const struct bt_hello_reply *m);
/* type is BT_GET_TOKEN or BT_INSPECT. */
int bt_encode_token_query(struct bt_buf *out, uint8_t type, uint32_t id,
			  const struct bt_token_query *m);
int bt_encode_token_reply(struct bt_buf *out, uint32_t id, const struct bt_token_reply *m);
/* The same body in a reply of another type: CHALLENGE's. */
int bt_encode_token_reply_as(struct bt_buf *out, uint8_t type, uint32_t id,
			     const struct bt_token_reply *m);
int bt_encode_challenge(struct bt_buf *out, uint32_t id, const struct bt_challenge *m);
int bt_encode_watch_event(struct bt_buf *out, uint32_t id, const struct bt_watch_event *m);
int bt_encode_forget(struct bt_buf *out, uint32_t id, const struct bt_forget *m);
/* A reply that carries one string: INSPECT (claims JSON), PING (version). */
int bt_encode_compat_reply(struct bt_buf *out, uint32_t id, const struct bt_compat_reply *m);
int bt_encode_text_reply(struct bt_buf *out, uint8_t type, uint32_t id, const char *text);
int bt_encode_record_reply(struct bt_buf *out, uint8_t type, uint32_t id,
			   const struct bt_record *m);
/* A request naming one identity: LOGIN, LOGIN_WAIT, LOGOUT, COMPAT. */
int bt_encode_name_request(struct bt_buf *out, uint8_t type, uint32_t id, const char *name);
/* A request naming a capability: COMPAT_RENEW, COMPAT_REVOKE. */
int bt_encode_capability_request(struct bt_buf *out, uint8_t type, uint32_t id,
				 const char *capability);
/* COMPAT_RENEW's reply: when the capability now expires. */
int bt_encode_expiry_reply(struct bt_buf *out, uint8_t type, uint32_t id, uint64_t expires_on);
/* A request or reply with no body: STATUS, RELOAD, their replies. */
int bt_encode_empty(struct bt_buf *out, uint8_t type, uint32_t id);
int bt_encode_error(struct bt_buf *out, uint32_t id, uint32_t status, const char *message);

/* Decoders: body is the frame's body view and must be read to its end. */
int bt_decode_hello(struct bt_buf *body, struct bt_hello *ret);
/* A version this codec does not speak has a body it cannot read: -EBADMSG. */
int bt_decode_hello_reply(struct bt_buf *body, struct bt_hello_reply *ret);
int bt_decode_token_query(struct bt_buf *body, struct bt_token_query *ret);
int bt_decode_token_reply(struct bt_buf *body, struct bt_token_reply *ret);
int bt_decode_challenge(struct bt_buf *body, struct bt_challenge *ret);
int bt_decode_watch_event(struct bt_buf *body, struct bt_watch_event *ret);
int bt_decode_forget(struct bt_buf *body, struct bt_forget *ret);
int bt_decode_compat_reply(struct bt_buf *body, struct bt_compat_reply *ret);
int bt_decode_text_reply(struct bt_buf *body, char **ret);
int bt_decode_name_request(struct bt_buf *body, char **ret);
/* *ret is a secret: bt_free_secret() it. */
int bt_decode_capability_request(struct bt_buf *body, char **ret);
int bt_decode_expiry_reply(struct bt_buf *body, uint64_t *ret);
int bt_decode_record_reply(struct bt_buf *body, struct bt_record *ret);
int bt_decode_empty(struct bt_buf *body);
int bt_decode_error(struct bt_buf *body, struct bt_error *ret);

void bt_hello_reply_clear(struct bt_hello_reply *m);
void bt_token_query_clear(struct bt_token_query *m);
void bt_token_reply_clear(struct bt_token_reply *m);
void bt_challenge_clear(struct bt_challenge *m);
void bt_watch_event_clear(struct bt_watch_event *m);
void bt_forget_clear(struct bt_forget *m);
void bt_compat_reply_clear(struct bt_compat_reply *m);
void bt_error_clear(struct bt_error *m);

/* The request types answered by the daemon that sent m: the ones it listed
 * (version 2 on), or BT_V1_REQUESTS (version 1 lists none). */
uint64_t bt_hello_requests(const struct bt_hello_reply *m);

/* Names for logs and messages. */
const char *bt_type_name(uint8_t type);
const char *bt_status_name(uint32_t status);

#endif
