/* tokensnap.c - the cache's tokens across a restart (tokensnap.h). */
#include "tokensnap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/buf.h"
#include "../../proto/msg.h"
#include "../identity/credential.h"
#include "../lib/log.h"
#include "../lib/secmem.h"

#define MAGIC "BTS1"

/* Whether e's token belongs in a snapshot. */
static bool keep(const struct token_entry *e, int64_t now, uint32_t min_validity)
{
	return e->token && e->expires_on - now > (int64_t)min_validity &&
	       !credential_for(e->id)->user_signs_in;
}

int tokensnap_save(struct cache *c, int64_t now, uint32_t min_validity, char **ret, size_t *n,
		   unsigned *count)
{
	struct bt_buf b;
	char key[IDENTITY_KEY_LEN + 1];
	uint32_t k = 0;
	int r;

	for (struct token_entry *e = cache_first(c); e; e = cache_next(e))
		k += keep(e, now, min_validity);
	bt_buf_init(&b, TOKENSNAP_MAX);
	r = bt_buf_put(&b, MAGIC, 4) ?: bt_buf_put_u32(&b, k);
	for (struct token_entry *e = cache_first(c); r == 0 && e; e = cache_next(e)) {
		if (!keep(e, now, min_validity))
			continue;
		r = identity_token_key(e->id, key)
			?: bt_buf_put_cstring(&b, e->id->name) ?: bt_buf_put_cstring(&b, key)
			?: bt_buf_put_cstring(&b, e->resource) ?: bt_buf_put_cstring(&b, e->token)
			?: bt_buf_put_cstring(&b, e->token_type)
			?: bt_buf_put_u64(&b, (uint64_t)e->expires_on)
			?: bt_buf_put_u64(&b, (uint64_t)e->obtained)
			?: bt_buf_put_u64(&b, (uint64_t)e->lifetime);
	}
	if (r == 0 && !(*ret = secmem_alloc(bt_buf_len(&b) ?: 1)))
		r = -ENOMEM;
	if (r == 0) {
		memcpy(*ret, bt_buf_ptr(&b), bt_buf_len(&b));
		*n = bt_buf_len(&b);
		*count = k;
	}
	bt_buf_free(&b); /* wipes */
	return r < 0 ? -ENOMEM : 0;
}

/* One token of the snapshot, as read. */
struct item {
	char *identity, *key, *resource, *token, *type;
	uint64_t expires_on, obtained, lifetime;
};

static void item_clear(struct item *it)
{
	free(it->identity);
	free(it->key);
	free(it->resource);
	bt_free_secret(it->token);
	free(it->type);
	memset(it, 0, sizeof(*it));
}

/* Puts one token back, or says why not. */
static int restore(struct cache *c, const struct config *cfg, struct item *it, int64_t now)
{
	const struct identity *id = config_find_identity(cfg, it->identity);
	char key[IDENTITY_KEY_LEN + 1];
	const char *res;
	char *token;
	int r;

	if (!id || credential_for(id)->user_signs_in)
		return -ENOENT;
	if ((r = identity_token_key(id, key)) < 0)
		return r;
	if (strcmp(key, it->key) != 0)
		return -ESTALE; /* the identity fetches other tokens now */
	if (!(res = identity_resource(id, it->resource, NULL)) || strcmp(res, it->resource))
		return -ENOENT;
	if ((int64_t)it->expires_on - now <= (int64_t)cfg->min_validity ||
	    it->expires_on > INT64_MAX)
		return -ETIME;
	if (!(token = secmem_strndup(it->token, strlen(it->token))))
		return -ENOMEM;
	r = cache_restore(c, id, res, token, it->type, (int64_t)it->expires_on,
			  (int64_t)it->obtained, (int64_t)it->lifetime);
	if (r < 0)
		secmem_free_str(token);
	return r;
}

int tokensnap_load(struct cache *c, const struct config *cfg, const char *data, size_t n,
		   int64_t now, unsigned *restored, unsigned *skipped)
{
	struct bt_buf b;
	uint32_t count;
	int r;

	*restored = *skipped = 0;
	bt_buf_view(&b, data, n);
	if (n < 8 || memcmp(data, MAGIC, 4) != 0 || bt_buf_consume(&b, 4) < 0 ||
	    bt_buf_get_u32(&b, &count) < 0)
		return -EBADMSG;
	for (uint32_t i = 0; i < count; i++) {
		struct item it = {0};
		r = bt_buf_get_cstring(&b, BT_NAME_MAX, &it.identity)
			?: bt_buf_get_cstring(&b, IDENTITY_KEY_LEN, &it.key)
			?: bt_buf_get_cstring(&b, BT_RESOURCE_MAX, &it.resource)
			?: bt_buf_get_cstring(&b, BT_TOKEN_MAX, &it.token)
			?: bt_buf_get_cstring(&b, 15, &it.type)
			?: bt_buf_get_u64(&b, &it.expires_on) ?: bt_buf_get_u64(&b, &it.obtained)
			?: bt_buf_get_u64(&b, &it.lifetime);
		if (r < 0) {
			item_clear(&it);
			return -EBADMSG;
		}
		r = restore(c, cfg, &it, now);
		if (r == 0) {
			(*restored)++;
		} else {
			(*skipped)++;
			log_msg(
			    LOG_INFO,
			    &(struct log_ctx){.identity = it.identity,
					      .resource = it.resource,
					      .uid = -1,
					      .pid = -1},
			    "identity %s: the token for %s kept across the restart is not used: "
			    "%s",
			    it.identity, it.resource,
			    r == -ESTALE   ? "the identity's credential changed"
			    : r == -ETIME  ? "it expires too soon"
			    : r == -ENOENT ? "the identity or resource is no longer configured"
					   : strerror(-r));
		}
		item_clear(&it);
		if (r == -ENOMEM)
			return r;
	}
	return bt_buf_len(&b) == 0 ? 0 : -EBADMSG;
}
