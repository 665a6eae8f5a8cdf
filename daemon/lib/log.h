/* log.h - the daemon's one way to say something: to the journal with
 * structured fields when run under systemd, to stderr otherwise.
 *
 * Only the daemon logs; proto/ and libbatchtok never do. Callers log a
 * failure once, where it is handled, never again up the stack. Secrets never
 * reach these functions; tokens appear only as fingerprints (jwt.h). */
#ifndef BATCHTOK_DAEMON_LOG_H
#define BATCHTOK_DAEMON_LOG_H

#include <stdbool.h>

#include <syslog.h>

/* Optional structured context; NULL or zero fields are left out. */
struct log_ctx {
	const char *identity;
	const char *resource;
	long uid; /* client uid, -1: none */
	long pid;
	const char *aadsts;	 /* "AADSTS7000215" */
	const char *fingerprint; /* token fingerprint */
	/* The client program (attest.h): its system unit, its unit of a
	 * user's manager, the invocation ID, its executable. */
	const char *unit;
	const char *user_unit;
	const char *invocation_id;
	const char *exe;
};

#define LOG_CTX_NONE ((const struct log_ctx *)0)

/* Chooses the journal if stderr is connected to it ($JOURNAL_STREAM). */
void log_init(int level);
void log_set_level(int level);
/* Whether a message of level would be written: for what costs to say. */
bool log_enabled(int level);
/* "error", "warning", "info" or "debug" into *ret; -EINVAL otherwise. */
int log_parse_level(const char *s, int *ret);

void log_msg(int level, const struct log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(...)	 log_msg(LOG_ERR, LOG_CTX_NONE, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, LOG_CTX_NONE, __VA_ARGS__)
#define log_info(...)	 log_msg(LOG_INFO, LOG_CTX_NONE, __VA_ARGS__)
#define log_debug(...)	 log_msg(LOG_DEBUG, LOG_CTX_NONE, __VA_ARGS__)

#endif
