/* signin.c - device-code sign-in, refresh-token rotation and sealed state
 * files. */
#include "signin.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../proto/msg.h"
#include "credential.h"
#include "../lib/clock.h"
#include "../lib/fileio.h"
#include "../lib/log.h"
#include "../lib/sealed.h"
#include "../lib/secmem.h"

/* A state file holds one refresh token (a few KiB) and a name. */
#define STATE_FILE_MAX (64 * 1024)
/* Key material from a credential or the generated key file. */
#define KEY_MATERIAL_MAX 4096
#define KEY_FILE	 "state.key"
/* RFC 8628: slow_down adds 5 seconds to the polling interval. */
#define SLOW_DOWN_STEP 5

enum io_op { IO_NONE, IO_SAVE, IO_DELETE };

struct io_job {
	uv_work_t req;
	struct signin *owner; /* NULL once the sign-in is gone */
	enum io_op op;
	char *path;
	unsigned char *data; /* sealed: not secret */
	size_t len;
	int err;
};

struct signin {
	struct list node;
	struct signin_store *s;
	char *name, *tenant, *client_id, *authority;
	char *rt; /* secure memory; NULL: signed out */
	char user[256];
	int64_t signed_in_at;
	uint64_t gen;
	/* The device-code flow, while flow is set. */
	bool flow;
	struct http_transfer *t;
	struct device_code dc;
	int64_t deadline;
	uint32_t interval;
	uv_timer_t timer;
	struct list waiters;
	uint32_t last_status; /* outcome of the last flow */
	char last_message[600];
	/* Disk: one write at a time; the next one waits here. */
	struct io_job *job;
	enum io_op io_next;
};

struct signin_store {
	uv_loop_t *loop;
	struct http *http;
	void (*changed)(void *arg, const struct identity *id);
	void *arg;
	const struct config *cfg;
	unsigned char *key; /* SEALED_KEY_LEN, secure memory; NULL: cannot persist */
	char *dir;
	struct list signins;
};

/* Through the one wall clock (tests replace it), as the cache judges
 * expiry. */
static int64_t now(void)
{
	return clock_wall_now();
}

static struct log_ctx ctx_of(const struct signin *si)
{
	return (struct log_ctx){.identity = si->name, .uid = -1, .pid = -1};
}

#define si_log(si, level, ...)                                                                     \
	do {                                                                                       \
		struct log_ctx c_ = ctx_of(si);                                                    \
		log_msg(level, &c_, __VA_ARGS__);                                                  \
	} while (0)

/* --- the state file --- */

static char *state_path(const struct signin_store *s, const char *name)
{
	char *p;

	return asprintf(&p, "%s/%s.signin", s->dir, name) < 0 ? NULL : p;
}

static char *aad_of(const struct signin *si)
{
	char *p;

	return asprintf(&p, "%s\n%s\n%s\n%s", si->name, si->tenant, si->client_id, si->authority) <
		       0
		   ? NULL
		   : p;
}

int signin_record_parse(const char *text, char **rt, char *user, size_t user_len,
			int64_t *signed_in_at)
{
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	json_t *t = json_object_get(root, "refresh_token");
	json_t *u = json_object_get(root, "user");
	json_t *at = json_object_get(root, "signed_in_at");
	int r = -EBADMSG;

	if (json_is_object(root) && json_is_string(t) && json_string_length(t) > 0 &&
	    json_string_length(t) <= BT_TOKEN_MAX && json_is_string(u) && json_is_integer(at)) {
		*rt = secmem_strndup(json_string_value(t), json_string_length(t));
		snprintf(user, user_len, "%s", json_string_value(u));
		for (char *c = user; *c; c++)
			if ((unsigned char)*c < 0x20)
				*c = ' ';
		*signed_in_at = json_integer_value(at);
		r = *rt ? 0 : -ENOMEM;
	}
	json_decref(root);
	return r;
}

/* The record, as JSON in secure memory. */
static char *record_text(const struct signin *si)
{
	json_t *root = json_pack("{s:i, s:s, s:s, s:I}", "version", 1, "refresh_token", si->rt,
				 "user", si->user, "signed_in_at", (json_int_t)si->signed_in_at);
	size_t n = root ? json_dumpb(root, NULL, 0, JSON_COMPACT) : 0;
	char *text = n ? secmem_alloc(n + 1) : NULL;

	if (text && json_dumpb(root, text, n, JSON_COMPACT) != n) {
		secmem_free(text, n + 1);
		text = NULL;
	}
	json_decref(root);
	return text;
}

static void io_work(uv_work_t *req)
{
	struct io_job *j = req->data;
	char tmp[4200];
	int fd, r;

	j->err = 0;
	if (j->op == IO_DELETE) {
		/* Durable too: a sign-out must not come back after a crash. */
		if (unlink(j->path) < 0)
			j->err = errno == ENOENT ? 0 : errno;
		else if ((r = fileio_sync_dir(j->path)) < 0)
			j->err = -r;
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", j->path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		j->err = errno;
		return;
	}
	r = fileio_write_all(fd, j->data, j->len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, j->path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		j->err = -r;
		return;
	}
	/* The rename is durable only once the directory is: without this a
	 * crash can bring back the old file, whose refresh token the service
	 * has already rotated away. */
	if ((r = fileio_sync_dir(j->path)) < 0)
		j->err = -r;
}

static void io_start(struct signin *si);

static void io_done(uv_work_t *req, int status)
{
	struct io_job *j = req->data;
	struct signin *si = j->owner;

	if (si) {
		si->job = NULL;
		if (j->err || status < 0)
			si_log(si, LOG_ERR, "identity %s: cannot %s %s: %s", si->name,
			       j->op == IO_SAVE ? "save the sign-in to" : "delete", j->path,
			       strerror(j->err ? j->err : -status));
		if (si->io_next != IO_NONE)
			io_start(si);
	}
	free(j->path);
	free(j->data);
	free(j);
}

/* Writes (or deletes) the state file as the sign-in is now. */
static void io_start(struct signin *si)
{
	struct signin_store *s = si->s;
	struct io_job *j;
	char *text = NULL, *aad = NULL;
	int r = -ENOMEM;

	if (si->job || si->io_next == IO_NONE)
		return;
	if (!s->key || !s->dir) {
		si->io_next = IO_NONE;
		return;
	}
	if (!(j = calloc(1, sizeof(*j))))
		goto fail;
	j->req.data = j;
	j->owner = si;
	j->op = si->rt ? si->io_next : IO_DELETE;
	if (!(j->path = state_path(s, si->name)))
		goto fail;
	if (j->op == IO_SAVE) {
		if (!(text = record_text(si)) || !(aad = aad_of(si)) ||
		    (r = sealed_seal(s->key, aad, text, strlen(text), &j->data, &j->len)) < 0)
			goto fail;
	}
	if ((r = uv_queue_work(s->loop, &j->req, io_work, io_done)) < 0)
		goto fail;
	si->io_next = IO_NONE;
	si->job = j;
	secmem_free_str(text);
	free(aad);
	return;
fail:
	si_log(si, LOG_ERR, "identity %s: cannot save the sign-in: %s", si->name,
	       r == -ENOMEM ? "out of memory" : "encryption failed");
	si->io_next = IO_NONE;
	secmem_free_str(text);
	free(aad);
	if (j) {
		free(j->path);
		free(j->data);
		free(j);
	}
}

static void persist(struct signin *si, enum io_op op)
{
	si->io_next = op;
	io_start(si);
}

static void load_state(struct signin *si)
{
	struct signin_store *s = si->s;
	char *path = state_path(s, si->name), *data = NULL, *text = NULL, *aad = aad_of(si);
	size_t len = 0;
	int fd, r;

	if (!path || !aad || !s->key)
		goto out;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno != ENOENT)
			si_log(si, LOG_WARNING, "identity %s: cannot read %s: %s", si->name, path,
			       strerror(errno));
		goto out;
	}
	r = fileio_read_secret(fd, STATE_FILE_MAX, &data, &len);
	close(fd);
	if (r == 0)
		r = sealed_open(s->key, aad, (unsigned char *)data, len, &text);
	if (r == 0)
		r = signin_record_parse(text, &si->rt, si->user, sizeof(si->user),
					&si->signed_in_at);
	if (r < 0) {
		si_log(si, LOG_WARNING,
		       "identity %s: the saved sign-in in %s cannot be used (%s): run 'batchtok "
		       "login -i %s' again",
		       si->name, path,
		       r == -EBADMSG ? "it was sealed with another key or for another tenant or "
				       "client, or it is damaged"
				     : strerror(-r),
		       si->name);
		goto out;
	}
	si->gen++;
	si_log(si, LOG_INFO, "identity %s: signed in as %s (from %s)", si->name, si->user, path);
out:
	secmem_free(data, len + 1);
	secmem_free_str(text);
	free(path);
	free(aad);
}

/* --- the state key --- */

static int mkdir_p(const char *dir)
{
	char *p = strdup(dir);
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (char *c = p + 1; r == 0; c++) {
		if (*c != '/' && *c)
			continue;
		char save = *c;
		*c = 0;
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			r = -errno;
		*c = save;
		if (!save)
			break;
	}
	free(p);
	return r;
}

/* Opens the key file, creating it with fresh random bytes the first time. */
static int open_key_file(const char *path, char *why, size_t n)
{
	unsigned char fresh[SEALED_KEY_LEN];
	struct stat st;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd >= 0) {
		int r = RAND_bytes(fresh, sizeof(fresh)) == 1 ? 0 : -EIO;
		r = r ?: fileio_write_all(fd, fresh, sizeof(fresh));
		if (r == 0 && fsync(fd) < 0)
			r = -errno;
		OPENSSL_cleanse(fresh, sizeof(fresh));
		if (close(fd) < 0 && r == 0)
			r = -errno;
		/* Without the key every sealed sign-in is lost: make its
		 * creation durable before anything is sealed with it. */
		r = r ?: fileio_sync_dir(path);
		if (r < 0) {
			unlink(path);
			snprintf(why, n, "cannot write %s: %s", path, strerror(-r));
			return r;
		}
		log_info("created the state key %s", path);
	} else if (errno != EEXIST) {
		snprintf(why, n, "cannot create %s: %s", path, strerror(errno));
		return -errno;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(why, n, "cannot open %s: %s", path, strerror(errno));
		return -EACCES;
	}
	if (fstat(fd, &st) < 0 || (st.st_mode & 0077) || (st.st_uid != geteuid() && st.st_uid)) {
		close(fd);
		snprintf(why, n, "%s must be owned by the daemon's user and mode 0600", path);
		return -EACCES;
	}
	return fd;
}

static void load_key(struct signin_store *s)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	const char *name = s->cfg->state_key_credential;
	char path[4200], why[4400] = "", *material = NULL;
	size_t len = 0;
	int fd, r;

	secmem_free(s->key, SEALED_KEY_LEN);
	s->key = NULL;
	free(s->dir);
	if (!s->cfg->state_dir) {
		s->dir = NULL;
		log_warning("no state_dir: sign-ins will not survive a restart");
		return;
	}
	if (!(s->dir = strdup(s->cfg->state_dir))) {
		log_error("out of memory: sign-ins will not survive a restart");
		return;
	}
	if ((r = mkdir_p(s->dir)) < 0) {
		log_error("cannot create the state directory %s: %s; sign-ins will not survive a "
			  "restart",
			  s->dir, strerror(-r));
		return;
	}
	if (name) {
		snprintf(path, sizeof(path), "%s/%s", creds ? creds : "", name);
		fd = creds ? open(path, O_RDONLY | O_CLOEXEC) : -1;
		if (fd < 0)
			snprintf(why, sizeof(why),
				 "state_key_credential = %s needs LoadCredential= or "
				 "LoadCredentialEncrypted=%s:PATH in the unit",
				 name, name);
	} else {
		snprintf(path, sizeof(path), "%s/" KEY_FILE, s->dir);
		fd = open_key_file(path, why, sizeof(why));
	}
	r = fd < 0 ? fd : fileio_read_secret(fd, KEY_MATERIAL_MAX, &material, &len);
	if (fd >= 0)
		close(fd);
	if (r == 0 && len < 16)
		snprintf(why, sizeof(why), "the state key %s holds fewer than 16 bytes", path);
	else if (r == 0 && (s->key = secmem_alloc(SEALED_KEY_LEN)) &&
		 sealed_derive_key(material, len, s->key) < 0) {
		secmem_free(s->key, SEALED_KEY_LEN);
		s->key = NULL;
	}
	secmem_free(material, len + 1);
	if (!s->key)
		log_error("cannot load the state key: %s; sign-ins will not survive a restart",
			  *why ? why : "out of memory");
}

/* --- sign-ins and flows --- */

/* The first waiter to tell, or NULL. */
static struct signin_waiter *next_waiter(struct signin *si, bool prompt_only)
{
	for (struct list *n = si->waiters.next; n != &si->waiters; n = n->next) {
		struct signin_waiter *w = list_entry(n, struct signin_waiter, node);
		if (!prompt_only || w->want_prompt)
			return w;
	}
	return NULL;
}

static void answer(struct signin *si, bool prompt_only, const struct signin_event *ev)
{
	struct signin_waiter *w;

	/* Looked up afresh each time: a callback may close its client's
	 * connection, which cancels (and frees) other waiters of this list. */
	while ((w = next_waiter(si, prompt_only))) {
		list_del(&w->node);
		w->fn(w, ev);
	}
}

static void flow_end(struct signin *si, uint32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void flow_end(struct signin *si, uint32_t status, const char *fmt, ...)
{
	struct signin_event ev = {.status = status};
	va_list ap;

	if (si->t)
		http_cancel(si->t);
	si->t = NULL;
	uv_timer_stop(&si->timer);
	device_code_clear(&si->dc);
	si->flow = false;
	si->last_status = status;
	va_start(ap, fmt);
	vsnprintf(si->last_message, sizeof(si->last_message), fmt, ap);
	va_end(ap);
	if (status == BT_OK)
		ev.user = si->user;
	else
		ev.message = si->last_message;
	answer(si, false, &ev);
}

static const struct identity *identity_of(const struct signin *si)
{
	return config_find_identity(si->s->cfg, si->name);
}

static void on_poll_reply(void *arg, const struct http_response *resp);

static void on_poll_timer(uv_timer_t *t)
{
	struct signin *si = t->data;
	struct http_request req = {0};
	int r;

	if (now() >= si->deadline) {
		flow_end(si, BT_E_TIMEOUT,
			 "the sign-in code for identity '%s' expired before the sign-in was "
			 "completed: run 'batchtok login -i %s' again",
			 si->name, si->name);
		return;
	}
	r = entra_device_poll_request(identity_of(si), si->dc.device_code, &req);
	if (r == 0)
		r = http_submit(si->s->http, &req, on_poll_reply, si, &si->t);
	if (r < 0)
		flow_end(si, BT_E_INTERNAL, "cannot poll the token service: %s", strerror(-r));
}

static void poll_later(struct signin *si)
{
	uv_timer_start(&si->timer, on_poll_timer, (uint64_t)si->interval * 1000, 0);
}

static void signed_in(struct signin *si, struct token_result *res)
{
	secmem_free_str(si->rt);
	si->rt = res->refresh_token;
	res->refresh_token = NULL;
	snprintf(si->user, sizeof(si->user), "%s", *res->user ? res->user : "(unknown user)");
	si->signed_in_at = now();
	si->gen++;
	si_log(si, LOG_INFO, "identity %s: signed in as %s", si->name, si->user);
	persist(si, IO_SAVE);
	si->s->changed(si->s->arg, identity_of(si));
	flow_end(si, BT_OK, "signed in as %s", si->user);
}

static void on_poll_reply(void *arg, const struct http_response *resp)
{
	struct signin *si = arg;
	struct token_result res;

	si->t = NULL;
	entra_parse_response(resp, now(), SERVICE_ENTRA, &res);
	if (res.status == BT_OK && !res.refresh_token)
		flow_end(si, BT_E_CREDENTIAL_REJECTED,
			 "the token service returned no refresh token: the application must allow "
			 "the offline_access scope");
	else if (res.status == BT_OK)
		signed_in(si, &res);
	else if (res.error_kind == ENTRA_E_PENDING || res.transient)
		poll_later(si);
	else if (res.error_kind == ENTRA_E_SLOW_DOWN) {
		si->interval += SLOW_DOWN_STEP;
		poll_later(si);
	} else if (res.error_kind == ENTRA_E_EXPIRED)
		flow_end(si, BT_E_TIMEOUT,
			 "the sign-in code for identity '%s' expired before the sign-in was "
			 "completed: run 'batchtok login -i %s' again",
			 si->name, si->name);
	else
		flow_end(si, res.status, "sign-in to identity '%s' failed: %s", si->name,
			 res.message);
	token_result_clear(&res);
}

static void on_device_code(void *arg, const struct http_response *resp)
{
	struct signin *si = arg;
	struct token_result err;
	struct signin_event ev = {.status = BT_OK};

	si->t = NULL;
	entra_parse_device_code(resp, &si->dc, &err);
	if (!si->dc.device_code) {
		flow_end(si, err.status, "cannot start the sign-in to identity '%s': %s", si->name,
			 err.message);
		token_result_clear(&err);
		return;
	}
	si->deadline = now() + si->dc.expires_in;
	si->interval = si->dc.interval;
	/* Not the user code: whoever reads the log could use it to sign in
	 * with their own account in the user's place. */
	si_log(si, LOG_INFO, "identity %s: waiting for the user to sign in at %s (code valid %u s)",
	       si->name, si->dc.verification_uri, si->dc.expires_in);
	ev.prompt = &si->dc;
	answer(si, true, &ev);
	poll_later(si);
}

int signin_login(struct signin_store *s, const struct identity *id, struct signin_waiter *w)
{
	struct signin *si = signin_find(s, id);
	struct http_request req = {0};
	int r;

	if (!si)
		return -ENOENT;
	if (si->flow) {
		/* Join it: a second terminal sees the same code. */
		list_add_tail(&si->waiters, &w->node);
		if (w->want_prompt && si->dc.device_code) {
			struct signin_event ev = {.status = BT_OK, .prompt = &si->dc};
			list_del(&w->node);
			w->fn(w, &ev);
		}
		return 0;
	}
	r = entra_device_code_request(id, &req);
	if (r == 0)
		r = http_submit(s->http, &req, on_device_code, si, &si->t);
	if (r < 0)
		return r;
	si->flow = true;
	list_add_tail(&si->waiters, &w->node);
	return 0;
}

void signin_wait(struct signin_store *s, const struct identity *id, struct signin_waiter *w)
{
	struct signin *si = signin_find(s, id);
	struct signin_event ev = {0};

	if (si && si->flow) {
		list_add_tail(&si->waiters, &w->node);
		return;
	}
	if (!si || (!si->rt && !si->last_status)) {
		ev.status = BT_E_BAD_REQUEST;
		ev.message = "no sign-in is in progress: run 'batchtok login -i NAME'";
	} else if (si->rt) {
		ev.status = BT_OK;
		ev.user = si->user;
	} else {
		ev.status = si->last_status;
		ev.message = si->last_message;
	}
	list_init(&w->node);
	w->fn(w, &ev);
}

void signin_waiter_cancel(struct signin_waiter *w)
{
	list_del(&w->node);
}

void signin_logout(struct signin_store *s, const struct identity *id)
{
	struct signin *si = signin_find(s, id);

	if (!si)
		return;
	if (si->flow)
		flow_end(si, BT_E_CREDENTIAL_REJECTED, "signed out while signing in");
	si->last_status = 0;
	if (si->rt)
		si_log(si, LOG_INFO, "identity %s: %s signed out", si->name, si->user);
	secmem_free_str(si->rt);
	si->rt = NULL;
	si->user[0] = 0;
	si->signed_in_at = 0;
	si->gen++;
	persist(si, IO_DELETE);
	s->changed(s->arg, id);
}

void signin_rotate(struct signin *si, uint64_t gen, const char *refresh_token)
{
	char *rt;

	/* A reply to a request made before a new sign-in belongs to the old
	 * one; keep the new. */
	if (gen != si->gen || !si->rt || !strcmp(si->rt, refresh_token))
		return;
	if (!(rt = secmem_strndup(refresh_token, strlen(refresh_token))))
		return; /* the old token stays usable: Entra does not revoke it */
	secmem_free_str(si->rt);
	si->rt = rt;
	si->gen++;
	persist(si, IO_SAVE);
}

bool signin_expired(struct signin *si, uint64_t gen, const char *why)
{
	if (gen != si->gen || !si->rt)
		return false;
	si_log(si, LOG_WARNING, "identity %s: the sign-in of %s has ended (%s)", si->name, si->user,
	       why);
	secmem_free_str(si->rt);
	si->rt = NULL;
	si->gen++;
	persist(si, IO_DELETE);
	return true;
}

struct signin *signin_find(struct signin_store *s, const struct identity *id)
{
	struct list *n;

	if (!id || !id->cred->user_signs_in)
		return NULL;
	for (n = s->signins.next; n != &s->signins; n = n->next) {
		struct signin *si = list_entry(n, struct signin, node);
		if (!strcmp(si->name, id->name))
			return si;
	}
	return NULL;
}

const char *signin_refresh_token(const struct signin *si)
{
	return si->rt;
}

uint64_t signin_generation(const struct signin *si)
{
	return si->gen;
}

const char *signin_user(const struct signin *si)
{
	return si->rt ? si->user : "";
}

int64_t signin_time(const struct signin *si)
{
	return si->rt ? si->signed_in_at : 0;
}

bool signin_pending(const struct signin *si)
{
	return si->flow;
}

static void on_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void signin_free(struct signin *si, const char *why)
{
	if (si->flow)
		flow_end(si, BT_E_UNAVAILABLE, "%s", why);
	if (si->job)
		si->job->owner = NULL;
	list_del(&si->node);
	secmem_free_str(si->rt);
	free(si->name);
	free(si->tenant);
	free(si->client_id);
	free(si->authority);
	uv_close((uv_handle_t *)&si->timer, on_timer_closed);
}

static struct signin *signin_new(struct signin_store *s, const struct identity *id)
{
	struct signin *si = calloc(1, sizeof(*si));

	if (!si)
		return NULL;
	si->s = s;
	list_init(&si->waiters);
	if (!(si->name = strdup(id->name)) || !(si->tenant = strdup(id->tenant)) ||
	    !(si->client_id = strdup(id->client_id)) || !(si->authority = strdup(id->authority))) {
		free(si->name);
		free(si->tenant);
		free(si->client_id);
		free(si);
		return NULL;
	}
	uv_timer_init(s->loop, &si->timer);
	si->timer.data = si;
	list_add_tail(&s->signins, &si->node);
	return si;
}

static bool same_account(const struct signin *si, const struct identity *id)
{
	return !strcmp(si->tenant, id->tenant) && !strcmp(si->client_id, id->client_id) &&
	       !strcmp(si->authority, id->authority);
}

void signin_configure(struct signin_store *s, const struct config *cfg)
{
	struct list *n, *tmp;
	bool any = false;
	bool dir_changed;

	dir_changed = !s->cfg || !s->dir != !cfg->state_dir ||
		      (s->dir && strcmp(s->dir, cfg->state_dir)) ||
		      !s->cfg->state_key_credential != !cfg->state_key_credential ||
		      (cfg->state_key_credential &&
		       strcmp(s->cfg->state_key_credential, cfg->state_key_credential));
	s->cfg = cfg;
	list_for_each_safe(n, tmp, &s->signins)
	{
		struct signin *si = list_entry(n, struct signin, node);
		const struct identity *id = config_find_identity(cfg, si->name);
		if (!id || !id->cred->user_signs_in || !same_account(si, id) || dir_changed)
			signin_free(si, "the identity's configuration changed");
	}
	for (size_t i = 0; i < cfg->n_identities; i++)
		any |= cfg->identities[i].cred->user_signs_in;
	if (any && (dir_changed || !s->key))
		load_key(s);
	for (size_t i = 0; i < cfg->n_identities; i++) {
		const struct identity *id = &cfg->identities[i];
		struct signin *si;
		if (!id->cred->user_signs_in || signin_find(s, id))
			continue;
		if (!(si = signin_new(s, id))) {
			log_error("identity %s: out of memory", id->name);
			continue;
		}
		load_state(si);
	}
}

int signin_store_new(uv_loop_t *loop, struct http *http,
		     void (*changed)(void *arg, const struct identity *id), void *arg,
		     struct signin_store **ret)
{
	struct signin_store *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->http = http;
	s->changed = changed;
	s->arg = arg;
	list_init(&s->signins);
	*ret = s;
	return 0;
}

void signin_store_free(struct signin_store *s)
{
	if (!s)
		return;
	while (!list_empty(&s->signins))
		signin_free(list_entry(s->signins.next, struct signin, node),
			    "batchtokd is shutting down");
	secmem_free(s->key, SEALED_KEY_LEN);
	free(s->dir);
	free(s);
}
