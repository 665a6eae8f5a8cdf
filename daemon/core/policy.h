/* policy.h - who may use an identity: its uid and group rules
 * (allow_users, allow_groups) and its program rules (allow_units,
 * allow_user_units, allow_exes, allow_cgroups) held against a peer's
 * credentials and attestation (lib/attest.h), and for a denial the one
 * line that says what the caller was and what the identity allows.
 *
 * Root and the daemon's own user may use every identity: they can read
 * the secret anyway. For anyone else: uid/group rules, if the identity has
 * any, must pass; program rules, if it has any, must pass too, and they
 * need to know the program: a peer with no attestation (the compat
 * endpoint's TCP clients), one the kernel could not pin down (no
 * SO_PEERPIDFD) or one that has exited is refused (fail closed). An
 * identity with program rules alone is granted by them to any uid (a
 * DynamicUser= service by its unit); one with no rules at all to nobody. */
#ifndef BATCHTOK_DAEMON_POLICY_H
#define BATCHTOK_DAEMON_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../identity/identity.h"
#include "../lib/log.h"
#include "../lib/peer.h"

/* Room for an explanation: the caller and a few patterns. Longer ones are
 * cut, ending in "...". */
#define POLICY_WHY_MAX 1024
/* Room for policy_unit_name(): a system unit and a user unit. */
#define POLICY_UNIT_NAME_MAX 512

enum policy_verdict {
	POLICY_ALLOW,
	/* Not in allow_users or allow_groups, or no rule names anyone. */
	POLICY_DENY_USER,
	/* Not a program the identity allows, or which program is asking
	 * cannot be known. */
	POLICY_DENY_PROGRAM,
};

/* Whether p's primary or supplementary groups include gid. */
bool policy_in_group(const struct peer *p, gid_t gid);

/* Whether id has any program rule (units, user units, exes, cgroups). */
bool policy_has_program_rules(const struct identity *id);
/* Whether any of the n identities ids has one. */
bool policy_any_program_rules(const struct identity *ids, size_t n);

/* Whether peer p may use id; self is the daemon's own uid. A denial writes
 * why (n bytes; POLICY_WHY_MAX is enough): one line of printable ASCII,
 * other bytes as \xNN, "CALLER: identity NAME allows WHAT", such as "unit
 * backup.service, exe /usr/bin/curl: identity etl allows etl@*.service".
 * It names no secret. POLICY_ALLOW leaves why alone. Reads p->att, and
 * asks the kernel whether its process is still alive. */
enum policy_verdict policy_decide(const struct identity *id, const struct peer *p, uid_t self,
				  char *why, size_t n);

/* What the caller is, as a denial says it: attest_describe() made
 * printable ("unit etl@1.service, exe /usr/bin/python3"), or that the
 * compat endpoint cannot tell. */
void policy_describe_caller(const struct peer *p, char *buf, size_t n);

/* What id's program rules allow, as a denial says it ("etl@*.service or
 * user unit dev.service, with exe /usr/bin/python3"); "" if it has none. */
void policy_describe_rules(const struct identity *id, char *buf, size_t n);

/* The caller's unit, for counting requests per unit: "etl@1.service",
 * "user@1000.service/dev.service" for a user unit, or, in parentheses
 * (which no unit name has), what it is instead: "(no-unit)",
 * "(unattested)", "(compat-endpoint)"; "(other)" for a name that is not a
 * plain unit name or does not fit in n bytes. */
void policy_unit_name(const struct peer *p, char *buf, size_t n);

/* Sets ctx's peer fields: uid, pid, and from p->att (when there is one)
 * the unit, user unit, invocation ID and executable. The strings point
 * into p->att: ctx is valid while it is. */
void policy_log_ctx(const struct peer *p, struct log_ctx *ctx);

#endif
