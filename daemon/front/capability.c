/* capability.c - issuing, recognising, renewing and revoking compat
 * endpoint capabilities. */
#include "capability.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "../lib/jwt.h"

static void cap_free(struct capability_store *s, struct capability *c)
{
	list_del(&c->node);
	s->n--;
	free(c->groups);
	free(c->identity);
	OPENSSL_cleanse(c->hash, sizeof(c->hash));
	free(c);
}

void capability_store_init(struct capability_store *s)
{
	memset(s, 0, sizeof(*s));
	list_init(&s->caps);
}

void capability_store_clear(struct capability_store *s)
{
	struct capability *c;

	while ((c = list_first(&s->caps, struct capability, node)))
		cap_free(s, c);
	OPENSSL_cleanse(s->recent, sizeof(s->recent));
	s->n_recent = s->next_recent = 0;
}

/* Frees the capabilities that have expired, keeping their hashes in the
 * ring of recent ones (which overwrites its oldest when full). */
static void prune(struct capability_store *s, int64_t now)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &s->caps)
	{
		struct capability *c = list_entry(pos, struct capability, node);
		if (c->expires_on > now)
			continue;
		memcpy(s->recent[s->next_recent], c->hash, sizeof(c->hash));
		s->next_recent = (s->next_recent + 1) % CAPABILITY_RECENT;
		if (s->n_recent < CAPABILITY_RECENT)
			s->n_recent++;
		cap_free(s, c);
	}
}

size_t capability_count(struct capability_store *s, int64_t now)
{
	prune(s, now);
	return s->n;
}

int capability_issue(struct capability_store *s, uid_t uid, gid_t gid, const gid_t *groups,
		     int n_groups, const char *identity, int64_t now, uint32_t lifetime,
		     char text[CAPABILITY_TEXT_SIZE], const struct capability **ret)
{
	unsigned char raw[32];
	struct capability *c;
	struct list *pos;
	size_t live = 0;
	char *enc;

	prune(s, now);
	for (pos = s->caps.next; pos != &s->caps; pos = pos->next)
		if (list_entry(pos, struct capability, node)->uid == uid)
			live++;
	/* The user's own quota first: it is what that user can do something
	 * about, and what keeps one user from filling the store. */
	if (live >= CAPABILITY_PER_UID)
		return -EBUSY;
	if (s->n >= CAPABILITY_MAX)
		return -ENOSPC;
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	if (n_groups > 0 && !(c->groups = malloc(sizeof(gid_t) * (size_t)n_groups)))
		goto nomem;
	if (!(c->identity = strdup(identity)))
		goto nomem;
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		free(c->groups);
		free(c->identity);
		free(c);
		return -EIO;
	}
	if (!(enc = jwt_b64url_encode(raw, sizeof(raw)))) {
		OPENSSL_cleanse(raw, sizeof(raw));
		goto nomem;
	}
	OPENSSL_cleanse(raw, sizeof(raw));
	snprintf(text, CAPABILITY_TEXT_SIZE, CAPABILITY_PREFIX "%s", enc);
	OPENSSL_cleanse(enc, strlen(enc));
	free(enc);
	SHA256((const unsigned char *)text, strlen(text), c->hash);
	if (n_groups > 0)
		memcpy(c->groups, groups, sizeof(gid_t) * (size_t)n_groups);
	c->n_groups = n_groups > 0 ? n_groups : 0;
	c->uid = uid;
	c->gid = gid;
	c->issued = now;
	c->expires_on = now + lifetime;
	list_add_tail(&s->caps, &c->node);
	s->n++;
	if (ret)
		*ret = c;
	return 0;
nomem:
	free(c->groups);
	free(c->identity);
	free(c);
	return -ENOMEM;
}

/* The live capability value[0..len), or NULL; *expired says whether it is
 * among the recently expired instead. Every hash is compared, whatever
 * matched, in constant time each. */
static struct capability *lookup(struct capability_store *s, const char *value, size_t len,
				 int64_t now, bool *expired)
{
	unsigned char hash[32];
	struct capability *found = NULL;
	struct list *pos;
	bool old = false;

	prune(s, now);
	*expired = false;
	if (len != CAPABILITY_TEXT_SIZE - 1)
		return NULL;
	SHA256((const unsigned char *)value, len, hash);
	for (pos = s->caps.next; pos != &s->caps; pos = pos->next) {
		struct capability *c = list_entry(pos, struct capability, node);
		if (CRYPTO_memcmp(c->hash, hash, sizeof(hash)) == 0)
			found = c;
	}
	for (size_t i = 0; i < s->n_recent; i++)
		old |= CRYPTO_memcmp(s->recent[i], hash, sizeof(hash)) == 0;
	OPENSSL_cleanse(hash, sizeof(hash));
	*expired = !found && old;
	return found;
}

int capability_find(struct capability_store *s, const char *value, size_t len, int64_t now,
		    const struct capability **ret)
{
	bool expired;
	struct capability *c = lookup(s, value, len, now, &expired);

	if (!c)
		return expired ? -EKEYEXPIRED : -ENOENT;
	*ret = c;
	return 0;
}

int capability_renew(struct capability_store *s, const char *value, size_t len, uid_t uid,
		     int64_t now, uint32_t lifetime, int64_t *expires_on)
{
	bool expired;
	struct capability *c = lookup(s, value, len, now, &expired);

	if (!c)
		return -ENOENT;
	if (c->uid != uid)
		return -EPERM;
	/* Never shortened: a renewal while compat_lifetime was lowered by a
	 * reload keeps what was granted. */
	if (now + (int64_t)lifetime > c->expires_on)
		c->expires_on = now + (int64_t)lifetime;
	*expires_on = c->expires_on;
	return 0;
}

int capability_revoke(struct capability_store *s, const char *value, size_t len, uid_t uid,
		      int64_t now)
{
	bool expired;
	struct capability *c = lookup(s, value, len, now, &expired);

	if (!c)
		return 0;
	if (c->uid != uid)
		return -EPERM;
	cap_free(s, c);
	return 0;
}
