/* capability.c - issuing and recognising compat endpoint capabilities. */
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
	list_init(&s->caps);
	s->n = 0;
}

void capability_store_clear(struct capability_store *s)
{
	struct capability *c;

	while ((c = list_first(&s->caps, struct capability, node)))
		cap_free(s, c);
}

/* Forgets capabilities that expired more than CAPABILITY_KEEP_AFTER ago. */
static void prune(struct capability_store *s, int64_t now)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &s->caps)
	{
		struct capability *c = list_entry(pos, struct capability, node);
		if (c->expires_on + CAPABILITY_KEEP_AFTER <= now)
			cap_free(s, c);
	}
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
	for (pos = s->caps.next; pos != &s->caps; pos = pos->next) {
		const struct capability *o = list_entry(pos, struct capability, node);
		if (o->uid == uid && o->expires_on > now)
			live++;
	}
	if (live >= CAPABILITY_PER_UID || s->n >= CAPABILITY_MAX)
		return -EBUSY;
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

const struct capability *capability_find(struct capability_store *s, const char *value, size_t len,
					 int64_t now)
{
	unsigned char hash[32];
	const struct capability *found = NULL;
	struct list *pos;

	prune(s, now);
	if (len != CAPABILITY_TEXT_SIZE - 1)
		return NULL;
	SHA256((const unsigned char *)value, len, hash);
	/* Every hash is compared, whatever matched, in constant time each. */
	for (pos = s->caps.next; pos != &s->caps; pos = pos->next) {
		const struct capability *c = list_entry(pos, struct capability, node);
		if (CRYPTO_memcmp(c->hash, hash, sizeof(hash)) == 0)
			found = c;
	}
	return found;
}
