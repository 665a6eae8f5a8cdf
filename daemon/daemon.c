/* daemon.c - wires the modules together on one libuv loop: the fetcher that
 * connects the cache to credential sources and HTTP through the guard on
 * each token-service host, signals, reload, and the access rules for
 * peers. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/counters.h"
#include "lib/fdstore.h"
#include "lib/fileio.h"
#include "lib/guard.h"
#include "identity/credential.h"
#include "core/policy.h"
#include "front/dispatch.h"
#include "front/metrics_http.h"
#include "core/metrics.h"
#include "core/tokensnap.h"
#include "lib/log.h"
#include "lib/ratelimit.h"
#include "lib/schedule.h"

/* libuv timers run on the monotonic clock, which stands still while a laptop
 * sleeps; waking at least this often re-reads the wall clock, so tokens that
 * expired during a suspend are noticed within a minute of resume. */
#define WALL_CLOCK_RECHECK_MS 60000
/* Fixed connect timeout for the token service. */
#define CONNECT_TIMEOUT 10
/* How often credentials are audited (an expiring certificate warned of). */
#define AUDIT_INTERVAL_MS (12 * 3600 * 1000)
/* How often the summaries of rate-limited messages are looked for: a flood
 * that stops is summed up within this long of its interval's end. */
#define LOG_FLUSH_MS 10000
/* A 429 without Retry-After pauses its host this long: the second the
 * service's rate limit counts in. */
#define THROTTLE_PAUSE_MS 1000

/* One fetch in flight: the entry it is for, then the file read (federated
 * tokens), its turn at the guard on its host, and the transfer. */
struct fetch {
	struct daemon *d;
	struct token_entry *e;
	struct http_transfer *t;
	uv_work_t read;	  /* reading the credential's input file off the loop */
	bool reading;	  /* read queued or running */
	bool cancelled;	  /* cancelled while reading: the read's end frees it */
	char *path;	  /* the input file */
	char *input;	  /* its contents, secure memory */
	size_t input_len; /* bytes read; the buffer holds one more */
	int read_err;	  /* errno of the read */
	char why[400];	  /* what is wrong with the file, or "" */
	uint64_t gen;	  /* device-code: the sign-in generation used */
	int64_t sent_at;
	uint64_t sent_ns; /* uv_hrtime() when sent: the refresh latency */

	/* Its turn at the guard on the host it asks (lib/guard.h). */
	struct guard_waiter gw;
	enum token_service kind;
	char origin[GUARD_ORIGIN_MAX];
};

/* How the metrics count the service id's token requests go to. */
static enum counter_service service_of(const struct identity *id)
{
	return credential_for(id)->no_application ? COUNT_IMDS : COUNT_ENTRA;
}

/* Counts an answer of the token service (or its absence). */
static void count_answer(const struct fetch *f, const struct http_response *resp,
			 const struct token_result *r)
{
	long code = 0;

	if (!strncmp(r->aadsts, "AADSTS", 6))
		code = strtol(r->aadsts + 6, NULL, 10);
	counters_upstream_answer(service_of(f->e->id), resp->failure == HTTP_OK ? resp->status : 0,
				 code, code > 0 && entra_aadsts_hint(code),
				 (double)(uv_hrtime() - f->sent_ns) / 1e9);
}

static int64_t wall_now(void *arg)
{
	(void)arg;
	return clock_wall_now();
}

static uint32_t random_u32(void *arg)
{
	uint32_t r;

	(void)arg;
	if (getentropy(&r, sizeof(r)) < 0)
		r = (uint32_t)time(NULL) * 2654435761u;
	return r;
}

/* Monotonic milliseconds for the guard: read now, not the loop's cached
 * time, so an answer's time is never earlier than its arrival. */
static int64_t mono_ms(void *arg)
{
	(void)arg;
	return (int64_t)(uv_hrtime() / 1000000);
}

static void fetch_free(struct fetch *f)
{
	secmem_free(f->input, f->input ? f->input_len + 1 : 0);
	free(f->path);
	free(f);
}

static void on_signin_changed(void *arg, const struct identity *id);
static void on_guard_timer(uv_timer_t *t);

/* Arms the guard's timer for the next queued fetch whose turn may come. */
static void guard_arm(struct daemon *d)
{
	int64_t due, now;

	if (!d->guard)
		return;
	due = guard_next_due(d->guard);
	if (due == INT64_MAX) {
		uv_timer_stop(&d->guard_timer);
		return;
	}
	now = mono_ms(NULL);
	uv_timer_start(&d->guard_timer, on_guard_timer, due > now ? (uint64_t)(due - now) : 0, 0);
}

/* t as "2026-11-30 12:00:00 UTC": the daemon's and the client's time zones
 * may differ. */
static void format_utc(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, n, "%lld (Unix time)", (long long)t);
}

/* Seconds left of a pause until `until` (monotonic ms), at least 1. */
static uint32_t pause_left(int64_t until)
{
	int64_t left = (until - mono_ms(NULL) + 999) / 1000;

	return left < 1 ? 1 : left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}

/* "the token service at HOST is throttling requests (WHY) until T:
 * batchtokd asks again then", for a pause `left` seconds from now. */
static void throttle_text(const struct fetch *f, const char *why, uint32_t left, char *buf,
			  size_t n)
{
	char when[64];

	format_utc(wall_now(NULL) + left, when, sizeof(when));
	snprintf(buf, n,
		 "the %s at %s is throttling requests (%s) until %s: batchtokd asks again then",
		 f->kind == SERVICE_IMDS ? "managed identity endpoint" : "token service", f->origin,
		 why, when);
}

/* Fills err with the refusal of a fetch whose host is paused until `until`
 * (monotonic ms), longer than a client waits: unavailable, transient, and
 * retried when the pause ends. Returns -EAGAIN. */
static int fetch_throttled(const struct fetch *f, int64_t until, struct token_result *err)
{
	err->status = BT_E_UNAVAILABLE;
	err->transient = true;
	err->retry_after = pause_left(until);
	/* Only Retry-After pauses a host for longer than a client waits. */
	throttle_text(f, "Retry-After", err->retry_after, err->message, sizeof(err->message));
	return -EAGAIN;
}

/* How long an answer asks every request to its host to wait, in ms: an
 * error answer's Retry-After, within the bounds the cache honours it in
 * (ENTRA.md 1.5), or THROTTLE_PAUSE_MS for a 429 without one. A token
 * carrying Retry-After is a token: nothing waits. */
static int64_t pause_of(const struct http_response *resp)
{
	uint32_t s = resp->retry_after;

	if (resp->failure != HTTP_OK || resp->status < 400)
		return 0;
	if (!s)
		return resp->status == 429 ? THROTTLE_PAUSE_MS : 0;
	s = s < SCHEDULE_RETRY_AFTER_MIN   ? SCHEDULE_RETRY_AFTER_MIN
	    : s > SCHEDULE_RETRY_AFTER_MAX ? SCHEDULE_RETRY_AFTER_MAX
					   : s;
	return (int64_t)s * 1000;
}

static void on_fetched(void *arg, const struct http_response *resp)
{
	struct fetch *f = arg;
	struct daemon *d = f->d;
	struct token_entry *e = f->e;
	const struct identity *id = e->id;
	struct cred_input in = {.id = id, .resource = e->resource, .now = f->sent_at};
	struct signin *si = signin_find(d->signins, id);
	struct token_result r;
	int64_t pause = pause_of(resp);
	bool ended = false;

	guard_release(d->guard, &f->gw, pause);
	credential_for(id)->parse_response(&in, resp, f->sent_at, &r);
	count_answer(f, resp, &r);
	/* Whoever sees this failure learns when the host is asked again. */
	if (pause > 0 && r.status != BT_OK) {
		size_t len = strlen(r.message);
		if (len + 2 < sizeof(r.message)) {
			memcpy(r.message + len, "; ", 2);
			throttle_text(f, resp->retry_after ? "Retry-After" : "HTTP 429",
				      (uint32_t)(pause / 1000), r.message + len + 2,
				      sizeof(r.message) - len - 2);
		}
	}
	if (si && r.status == BT_OK && r.refresh_token)
		signin_rotate(si, f->gen, r.refresh_token);
	/* A refusal of a request that carried a caller's claims challenge
	 * (step-up, say) says nothing of the refresh token, and any user of
	 * the identity may bring one: the sign-in stays. */
	else if (si && r.error_kind == ENTRA_E_GRANT_INVALID && !e->fetching_claims)
		ended = signin_expired(si, f->gen, r.message);
	e->fetch = NULL;
	cache_fetch_done(d->cache, e, &r);
	token_result_clear(&r);
	fetch_free(f);
	/* The user must sign in again: nothing of theirs is kept or retried. */
	if (ended)
		on_signin_changed(d, id);
	guard_arm(d);
}

/* Builds the request from what the credential needs and sends it. */
static int fetch_send(struct fetch *f, struct token_result *err)
{
	struct daemon *d = f->d;
	struct token_entry *e = f->e;
	struct signin *si = signin_find(d->signins, e->id);
	struct cred_input in = {.id = e->id,
				.resource = e->resource,
				.assertion = f->input,
				.refresh_token = si ? signin_refresh_token(si) : NULL,
				.claims = e->fetching_claims ? e->claims : NULL,
				.now = wall_now(NULL)};
	struct http_request req = {0};
	int r;

	f->gen = si ? signin_generation(si) : 0;
	r = credential_for(e->id)->build_request(&in, &req, err);
	/* The assertion is in the request body now; wipe our copy. */
	secmem_free(f->input, f->input ? f->input_len + 1 : 0);
	f->input = NULL;
	if (r < 0)
		return r;
	f->sent_at = in.now;
	f->sent_ns = uv_hrtime();
	r = http_submit(d->http, &req, on_fetched, f, &f->t);
	if (r < 0)
		return r;
	counters.upstream_requests[service_of(e->id)]++;
	log_msg(LOG_DEBUG,
		&(struct log_ctx){
		    .identity = e->id->name, .resource = e->resource, .uid = -1, .pid = -1},
		"identity %s: requesting a token for %s", e->id->name, e->resource);
	return 0;
}

/* Sends f's request when the guard on its host lets it: now, or later from
 * the guard's timer (on_guard_timer()). Returns 0 (sent or queued), or a
 * negative errno with err saying why when err->status is set (-EAGAIN: the
 * host is paused for longer than a client waits). */
static int fetch_go(struct fetch *f, struct token_result *err)
{
	struct daemon *d = f->d;
	int64_t until;
	int r;

	r = guard_acquire(d->guard, f->kind, f->origin, &f->gw, &until);
	if (r == -EAGAIN)
		return fetch_throttled(f, until, err);
	if (r <= 0) {
		guard_arm(d);
		return r;
	}
	if ((r = fetch_send(f, err)) < 0) {
		guard_release(d->guard, &f->gw, 0);
		guard_arm(d);
	}
	return r;
}

/* The guard's turn has come for queued fetches: each is sent, or refused
 * when a pause that began while it waited lasts longer than a client
 * waits. */
static void on_guard_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	struct guard_waiter *w;
	int64_t until;
	int r;

	while (d->guard && (r = guard_next(d->guard, &w, &until)) != 0) {
		struct fetch *f = container_of(w, struct fetch, gw);
		struct token_entry *e = f->e;
		struct token_result err = {0};

		if (r == -EAGAIN) {
			fetch_throttled(f, until, &err);
		} else if ((r = fetch_send(f, &err)) == 0) {
			continue;
		} else {
			guard_release(d->guard, &f->gw, 0);
			if (!err.status) {
				err.status = BT_E_INTERNAL;
				err.transient = true;
				snprintf(err.message, sizeof(err.message),
					 "cannot start a token request: %s", strerror(-r));
			}
		}
		e->fetch = NULL;
		fetch_free(f);
		cache_fetch_done(d->cache, e, &err);
		token_result_clear(&err);
	}
	guard_arm(d);
}

/* In a worker thread: reads the input file into secure memory. Touches
 * nothing but the fetch's own fields. The file is sent to the token service
 * as the client assertion, so it must be one nobody but root or us could
 * have chosen (fileio_open_trusted(): a symlink to /etc/shadow in a
 * directory another user can write is refused), and it must not block the
 * pool (a FIFO is refused without waiting for a writer). Symlinks are
 * followed, because Kubernetes projects the token as
 * tokens/azure-identity-token -> ..data/azure-identity-token with ..data a
 * link to the current timestamped directory (ENTRA.md 5), all root's. */
static void read_work(uv_work_t *req)
{
	struct fetch *f = req->data;
	size_t n;
	int fd, r;

	f->read_err = 0;
	f->why[0] = 0;
	fd = fileio_open_trusted(f->path, f->why, sizeof(f->why));
	if (fd < 0) {
		f->read_err = -fd;
		return;
	}
	r = fileio_read_secret(fd, FEDERATED_TOKEN_MAX, &f->input, &f->input_len);
	close(fd);
	if (r < 0) {
		f->read_err = -r;
		if (r == -EINVAL)
			snprintf(f->why, sizeof(f->why), "it holds more than %d bytes",
				 FEDERATED_TOKEN_MAX);
		return;
	}
	n = f->input_len;
	while (n > 0 && strchr("\r\n ", f->input[n - 1]))
		f->input[--n] = 0;
	if (n == 0) {
		f->read_err = ENODATA;
		snprintf(f->why, sizeof(f->why), "the file is empty");
	}
}

static void read_done(uv_work_t *req, int status)
{
	struct fetch *f = req->data;
	struct token_result err = {0};
	int r;

	f->reading = false;
	if (f->cancelled) {
		fetch_free(f);
		return;
	}
	if (status < 0 || f->read_err) {
		int e = status < 0 ? -status : f->read_err;
		/* A file refused for what it is or who could have written it
		 * says what to change; a missing or unreadable one is most
		 * likely a token that is not mounted. */
		bool refused = e == EPERM || e == EINVAL;
		err.status = BT_E_CREDENTIAL_REJECTED;
		snprintf(err.message, sizeof(err.message),
			 "identity '%s': cannot read federated_token_file %s: %s%s", f->e->id->name,
			 f->path, f->why[0] ? f->why : strerror(e),
			 refused ? ""
				 : " (check that the projected service-account token is mounted "
				   "and rotated)");
		r = -e;
	} else {
		r = fetch_go(f, &err);
	}
	if (r < 0) {
		struct token_entry *e = f->e;
		if (!err.status) {
			err.status = BT_E_INTERNAL;
			snprintf(err.message, sizeof(err.message),
				 "cannot start a token request: %s", strerror(-r));
		}
		e->fetch = NULL;
		fetch_free(f);
		cache_fetch_done(e->cache, e, &err);
	}
	token_result_clear(&err);
}

static int fetch_start(void *arg, struct token_entry *e, struct token_result *err)
{
	struct daemon *d = arg;
	const struct credential_ops *ops = credential_for(e->id);
	const char *path = ops->input_file ? ops->input_file(e->id) : NULL;
	struct fetch *f;
	int r;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->d = d;
	f->e = e;
	f->kind = ops->service;
	r = guard_origin(credential_service_url(e->id), f->origin, sizeof(f->origin));
	if (r < 0) {
		fetch_free(f);
		return r;
	}
	if (path) {
		/* Federated tokens rotate: read the file afresh, in the thread
		 * pool, so a slow disk never stalls the loop. */
		f->read.data = f;
		if (!(f->path = strdup(path)) ||
		    (r = uv_queue_work(&d->loop, &f->read, read_work, read_done)) < 0) {
			fetch_free(f);
			return -ENOMEM;
		}
		f->reading = true;
		e->fetch = f;
		return 0;
	}
	r = fetch_go(f, err);
	if (r < 0) {
		fetch_free(f);
		return r;
	}
	e->fetch = f;
	return 0;
}

static void fetch_cancel(void *arg, struct token_entry *e)
{
	struct daemon *d = arg;
	struct fetch *f = e->fetch;

	if (!f)
		return;
	e->fetch = NULL;
	if (f->reading) {
		/* A running read cannot be stopped; its end frees the fetch. */
		f->cancelled = true;
		return;
	}
	/* Queued: it leaves the queue; sent: its slot comes back. */
	guard_release(d->guard, &f->gw, 0);
	if (f->t)
		http_cancel(f->t);
	fetch_free(f);
	guard_arm(d);
}

static void on_cache_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;

	cache_tick(d->cache);
	/* The cache re-arms only when its next due time changes; after a capped
	 * wait the same due time still needs a timer. */
	if (!uv_is_active((uv_handle_t *)&d->cache_timer)) {
		int64_t left = d->cache_due - wall_now(NULL);
		uint64_t ms = left <= 0 ? 1000 : (uint64_t)left * 1000;
		if (d->cache_due != INT64_MAX)
			uv_timer_start(&d->cache_timer, on_cache_timer,
				       ms < WALL_CLOCK_RECHECK_MS ? ms : WALL_CLOCK_RECHECK_MS, 0);
	}
}

static void cache_arm(void *arg, int64_t due)
{
	struct daemon *d = arg;
	int64_t left = due - wall_now(NULL);
	uint64_t ms;

	d->cache_due = due;
	if (due == INT64_MAX) {
		uv_timer_stop(&d->cache_timer);
		return;
	}
	ms = left <= 0 ? 0 : (uint64_t)left * 1000;
	uv_timer_start(&d->cache_timer, on_cache_timer,
		       ms < WALL_CLOCK_RECHECK_MS ? ms : WALL_CLOCK_RECHECK_MS, 0);
}

static void settings_from(const struct config *c, struct http_options *h, struct cache_settings *s)
{
	*h = (struct http_options){.concurrency = c->fetch_concurrency,
				   .timeout = c->request_timeout,
				   .connect_timeout = CONNECT_TIMEOUT < c->request_timeout
							  ? CONNECT_TIMEOUT
							  : c->request_timeout,
				   .ca_file = c->ca_file,
				   .proxy = c->proxy};
	*s = (struct cache_settings){.min_validity = c->min_validity,
				     .idle_timeout = c->idle_timeout};
}

/* The guard's caps from the config, at start and on reload: they apply to
 * what is queued at once. */
static void guard_limits_from(struct daemon *d, const struct config *c)
{
	/* The config's bounds are the guard's: neither call can fail. */
	guard_configure(d->guard, SERVICE_IMDS,
			&(struct guard_limits){c->imds_rate, c->imds_concurrency});
	guard_configure(d->guard, SERVICE_ENTRA,
			&(struct guard_limits){c->entra_rate, c->entra_concurrency});
	guard_arm(d);
}

static void prefetch(struct daemon *d, const struct identity *id)
{
	const struct signin *si = signin_find(d->signins, id);

	/* Without a signed-in user there is nothing to fetch. */
	if (!id->prefetch || (si && !signin_refresh_token(si)))
		return;
	for (size_t k = 0; k < id->n_resources; k++)
		if (cache_prefetch(d->cache, id, id->resources[k]) < 0)
			log_error("identity %s: cannot prefetch %s: out of memory", id->name,
				  id->resources[k]);
}

static void prefetch_all(struct daemon *d)
{
	for (size_t i = 0; i < d->cfg->n_identities; i++)
		prefetch(d, &d->cfg->identities[i]);
}

/* A user signed in or out: the old user's tokens must not be served. */
static void on_signin_changed(void *arg, const struct identity *id)
{
	struct daemon *d = arg;

	cache_forget_identity(d->cache, id, "the signed-in user changed; ask again");
	prefetch(d, id);
}

/* Logs what each identity's kind of credential finds wrong with it (a
 * certificate that expired or soon will), at start, on reload and twice a
 * day. */
static void audit_credentials(struct daemon *d)
{
	int64_t now = wall_now(NULL);
	char msg[1024];

	for (size_t i = 0; i < d->cfg->n_identities; i++) {
		const struct identity *id = &d->cfg->identities[i];
		const struct credential_ops *ops = credential_for(id);
		struct log_ctx ctx = {.identity = id->name, .uid = -1, .pid = -1};
		int prio = ops->audit ? ops->audit(id, now, msg, sizeof(msg)) : 0;
		if (prio)
			log_msg(prio, &ctx, "%s", msg);
	}
}

static void on_audit_timer(uv_timer_t *t)
{
	audit_credentials(t->data);
}

static void on_log_timer(uv_timer_t *t)
{
	(void)t;
	ratelimit_log_flush();
}

static void status_line(struct daemon *d, char *buf, size_t n)
{
	snprintf(buf, n, "%zu identities, %u clients, %llu upstream requests", d->cfg->n_identities,
		 server_client_count(d->server), (unsigned long long)cache_fetch_count(d->cache));
}

/* The identity of the same name in the new config, if it fetches the same
 * tokens as the old one. */
static const struct identity *resolve_same(void *arg, const struct identity *old)
{
	struct config *c = arg;
	const struct identity *n = config_find_identity(c, old->name);

	return n && identity_same_credential(old, n) ? n : NULL;
}

/* " and N drop-ins in DIR" for the log, or "" when the config has none. */
static const char *dropins(const struct config *c, char *buf, size_t n)
{
	if (c->n_files < 2)
		return "";
	snprintf(buf, n, " and %zu drop-in%s in %s" CONFIG_DROPIN_SUFFIX, c->n_files - 1,
		 c->n_files == 2 ? "" : "s", c->path);
	return buf;
}

int daemon_reload(struct daemon *d, char **ret_error)
{
	struct config_errors errs = {0};
	struct config *c;
	struct http_options ho;
	struct cache_settings cs;
	char status[200], dropin_buf[PATH_MAX + 64];
	int r;

	notify_reloading();
	r = config_load(&d->cfg_opts, &c, &errs);
	if (r < 0) {
		size_t len = 0;
		char *msg = NULL;
		FILE *f = open_memstream(&msg, &len);
		for (size_t i = 0; i < errs.n; i++) {
			log_error("reload rejected: %s", errs.msgs[i]);
			if (f)
				fprintf(f, "%s%s", i ? "; " : "", errs.msgs[i]);
		}
		if (f)
			fclose(f);
		log_error("configuration reload failed; still running the previous configuration");
		config_errors_clear(&errs);
		*ret_error = msg;
		status_line(d, status, sizeof(status));
		notify_ready(status);
		return -EINVAL;
	}
	if (c->socket && d->cfg->socket && strcmp(c->socket, d->cfg->socket) != 0)
		log_warning("socket = changed to %s; it takes effect at the next restart",
			    c->socket);
	if (strcmp(c->compat_endpoint ? c->compat_endpoint : "",
		   d->cfg->compat_endpoint ? d->cfg->compat_endpoint : "") != 0)
		log_warning(
		    "compat_endpoint = changed to '%s'; it takes effect at the next restart",
		    c->compat_endpoint ? c->compat_endpoint : "");
	if (strcmp(c->metrics_listen ? c->metrics_listen : "",
		   d->cfg->metrics_listen ? d->cfg->metrics_listen : "") != 0)
		log_warning("metrics_listen = changed to '%s'; it takes effect at the next restart",
			    c->metrics_listen ? c->metrics_listen : "");
	settings_from(c, &ho, &cs);
	if (http_configure(d->http, &ho) < 0) {
		config_free(c);
		log_error("configuration reload failed: out of memory; still running the previous "
			  "configuration");
		*ret_error = strdup("out of memory; still running the previous configuration");
		/* RELOADING=1 is always answered with READY=1, or systemd waits
		 * for the reload until its timeout. */
		status_line(d, status, sizeof(status));
		notify_ready(status);
		return -ENOMEM;
	}
	/* Requests answered while the cache rebinds already see the new
	 * config: the old one is freed below. */
	service_set_config(d->service, c);
	cache_rebind(d->cache, resolve_same, c);
	signin_configure(d->signins, c);
	config_free(d->cfg);
	d->cfg = c;
	audit_credentials(d);
	cache_configure(d->cache, &cs);
	guard_limits_from(d, c);
	server_set_limits(
	    d->server, &(struct server_options){
			   .max_clients = c->max_clients,
			   .max_clients_per_uid = c->max_clients_per_uid,
			   .idle_timeout = c->client_idle_timeout,
			   .pin_peers = policy_any_program_rules(c->identities, c->n_identities)});
	/* Watchers who lost access are told; those whose tokens the rebind
	 * dropped watch the new identity's. After the server's limits: the
	 * connections it closes to have them come back pinned are not told
	 * that their program cannot be known. */
	service_recheck_watches(d->service);
	log_set_level(c->log_level);
	prefetch_all(d);
	d->reloads++;
	log_info("configuration reloaded from %s%s: %zu identities", c->path,
		 dropins(c, dropin_buf, sizeof(dropin_buf)), c->n_identities);
	status_line(d, status, sizeof(status));
	notify_ready(status);
	return 0;
}

/* The tokens a restart should not fetch again, to systemd's descriptor
 * store; nothing outside systemd. */
static void keep_tokens(struct daemon *d)
{
	char *data;
	size_t n;
	unsigned count;
	int r;

	if (!getenv("NOTIFY_SOCKET"))
		return;
	if ((r = tokensnap_save(d->cache, wall_now(NULL), d->cfg->min_validity, &data, &n,
				&count)) < 0) {
		log_warning("cannot keep the cached tokens for the next start: %s", strerror(-r));
		return;
	}
	if (count && (r = fdstore_put(FDSTORE_TOKENS, data, n)) < 0)
		log_warning("cannot hand the cached tokens to systemd for the next start (%s): "
			    "the next start fetches them anew; FileDescriptorStoreMax= in the unit "
			    "allows it",
			    strerror(-r));
	else if (count)
		log_info("handed %u cached token%s to systemd's descriptor store for the next "
			 "start",
			 count, count == 1 ? "" : "s");
	secmem_free(data, n);
}

/* The tokens kept by the last stop, if systemd passed them back. */
static void restore_tokens(struct daemon *d)
{
	unsigned restored, skipped;
	char *data;
	size_t n;
	int r = fdstore_take(FDSTORE_TOKENS, TOKENSNAP_MAX, &data, &n);

	if (r == -ENOENT)
		return;
	if (r < 0) {
		log_warning("the cached tokens systemd kept for this start cannot be read (%s): "
			    "they are fetched anew",
			    strerror(-r));
		return;
	}
	r = tokensnap_load(d->cache, d->cfg, data, n, wall_now(NULL), &restored, &skipped);
	secmem_free(data, n + 1);
	if (r < 0)
		log_warning("the cached tokens systemd kept for this start are damaged (%s): %u "
			    "restored, the rest are fetched anew",
			    strerror(-r), restored);
	else
		log_info("restored %u cached token%s kept across the restart%s", restored,
			 restored == 1 ? "" : "s",
			 skipped ? " (others were not used: see above)" : "");
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	char *err = NULL;

	if (signum == SIGHUP) {
		daemon_reload(d, &err);
		free(err);
		return;
	}
	if (d->stopping)
		return;
	d->stopping = true;
	log_info("received %s, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	notify_stopping();
	keep_tokens(d);
	server_close(d->server);
	compat_close(d->compat);
	d->compat = NULL;
	metrics_http_close(d->metrics);
	d->metrics = NULL;
	service_free(d->service);
	d->service = NULL;
	usernames_free(d->usernames);
	d->usernames = NULL;
	cache_free(d->cache);
	d->cache = NULL;
	guard_free(d->guard);
	d->guard = NULL;
	signin_store_free(d->signins);
	d->signins = NULL;
	http_close(d->http);
	uv_close((uv_handle_t *)&d->cache_timer, NULL);
	uv_close((uv_handle_t *)&d->guard_timer, NULL);
	uv_close((uv_handle_t *)&d->audit_timer, NULL);
	uv_close((uv_handle_t *)&d->log_timer, NULL);
	ratelimit_log_flush();
	uv_close((uv_handle_t *)&d->sighup, NULL);
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	notify_close(&d->notify);
}

static int hook_reload(void *arg, char **ret_error)
{
	return daemon_reload(arg, ret_error);
}

/* The daemon's own lines of STATUS. */
/* What status shows of the daemon. A plain user sees its version and the
 * compat endpoint; its pid, config, clients and counters are for
 * administrators. */
/* The guard's families for the metrics (core/metrics.h): one series per
 * token-service host, a name the configuration chose. */
static void guard_family(FILE *f, struct guard *g, const char *name, const char *type,
			 const char *help, int which)
{
	struct guard_stats st;

	fprintf(f, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
	for (size_t i = 0; guard_stats(g, i, &st) == 0; i++) {
		uint64_t v = which == 0	  ? st.started
			     : which == 1 ? st.throttled
			     : which == 2 ? st.refused
			     : which == 3 ? st.in_flight
			     : which == 4 ? st.queued
					  : (uint64_t)((st.paused_ms + 999) / 1000);
		fprintf(f, "%s%s{upstream=", name, type[0] == 'c' ? "_total" : "");
		metrics_label(f, st.origin);
		fprintf(f, "} %llu\n", (unsigned long long)v);
	}
}

static void hook_metrics(void *arg, FILE *f)
{
	struct daemon *d = arg;

	guard_family(f, d->guard, "batchtok_guard_started", "counter",
		     "Token requests the guard let through, per token-service host.", 0);
	guard_family(f, d->guard, "batchtok_guard_throttled", "counter",
		     "Answers that paused a host (Retry-After, HTTP 429).", 1);
	guard_family(f, d->guard, "batchtok_guard_refused", "counter",
		     "Token requests refused while their host was paused (exit 7, 'throttled "
		     "until').",
		     2);
	guard_family(f, d->guard, "batchtok_guard_in_flight", "gauge",
		     "Token requests in flight per host.", 3);
	guard_family(f, d->guard, "batchtok_guard_queued", "gauge",
		     "Token requests waiting for the host's rate or concurrency cap.", 4);
	guard_family(f, d->guard, "batchtok_guard_paused_seconds", "gauge",
		     "Seconds until a paused host is asked again (0: not paused).", 5);
}

static int hook_describe(void *arg, struct bt_record *rec, bool admin)
{
	struct daemon *d = arg;
	int r;

	r = bt_record_add_str(rec, "daemon", "batchtokd " BATCHTOK_VERSION_STRING);
	if (r == 0 && admin)
		r = bt_record_add_int(rec, "pid", BT_FIELD_INT, getpid())
			?: bt_record_add_int(rec, "started", BT_FIELD_TIME, d->started)
			?: bt_record_add_str(rec, "config", d->cfg->path)
			?: bt_record_add_int(rec, "clients", BT_FIELD_INT,
					     server_client_count(d->server))
			?: bt_record_add_int(rec, "upstream_requests", BT_FIELD_INT,
					     (int64_t)cache_fetch_count(d->cache))
			?: bt_record_add_int(rec, "reloads", BT_FIELD_INT, (int64_t)d->reloads);
	if (r == 0 && d->compat)
		r = bt_record_add_str(rec, "compat_endpoint", compat_url(d->compat));
	if (r == 0 && d->metrics && admin)
		r = bt_record_add_str(rec, "metrics", metrics_http_url(d->metrics));
	if (r == 0 && d->compat && admin)
		r = bt_record_add_int(rec, "compat_clients", BT_FIELD_INT,
				      compat_client_count(d->compat))
			?: bt_record_add_int(rec, "compat_capabilities", BT_FIELD_INT,
					     (int64_t)compat_capability_count(d->compat));
	return r;
}

static int hook_grant(void *arg, const struct peer *p, const char *identity, char *text, size_t n,
		      int64_t *expires_on, const char **url)
{
	struct daemon *d = arg;

	if (!d->compat)
		return -EOPNOTSUPP;
	if (n < CAPABILITY_TEXT_SIZE)
		return -ENOBUFS;
	*url = compat_url(d->compat);
	return compat_grant(d->compat, p, identity, text, expires_on);
}

static int hook_renew(void *arg, const struct peer *p, const char *text, int64_t *expires_on)
{
	struct daemon *d = arg;

	return d->compat ? compat_renew(d->compat, p, text, expires_on) : -EOPNOTSUPP;
}

static int hook_revoke(void *arg, const struct peer *p, const char *text)
{
	struct daemon *d = arg;

	return d->compat ? compat_revoke(d->compat, p, text) : -EOPNOTSUPP;
}

/* The modules on the loop, behind the front ends: HTTP, cache, sign-ins,
 * user names and the service layer. */
static int start_core(struct daemon *d)
{
	static const struct cache_ops ops = {
	    .fetch = fetch_start,
	    .cancel = fetch_cancel,
	    .arm = cache_arm,
	    .now = wall_now,
	    .random = random_u32,
	};
	struct service_hooks hooks = {.arg = d,
				      .reload = hook_reload,
				      .describe = hook_describe,
				      .grant = hook_grant,
				      .renew = hook_renew,
				      .revoke = hook_revoke,
				      .metrics = hook_metrics};
	struct http_options ho;
	struct cache_settings cs;
	int r;

	settings_from(d->cfg, &ho, &cs);
	/* A fetch waits behind a pause as long as a client waits for a retry;
	 * a longer one is refused at once. */
	if ((r = guard_new(mono_ms, NULL, CACHE_WAIT_FOR_RETRY * 1000, &d->guard)) < 0)
		return r;
	guard_limits_from(d, d->cfg);
	if ((r = http_new(&d->loop, &ho, &d->http)) < 0 ||
	    (r = cache_new(&ops, d, &cs, &d->cache)) < 0 ||
	    (r = signin_store_new(&d->loop, d->http, on_signin_changed, d, &d->signins)) < 0 ||
	    (r = usernames_new(&d->loop, &d->usernames)) < 0)
		return r;
	signin_configure(d->signins, d->cfg);
	return service_new(d->cache, d->signins, d->usernames, d->cfg, &hooks, &d->service);
}

/* The Unix socket and, when configured, the compat endpoint. */
static int start_fronts(struct daemon *d)
{
	const struct config *cfg = d->cfg;
	struct server_options so = {
	    .path = cfg->socket,
	    .mode = cfg->socket_mode,
	    .gid = cfg->socket_gid,
	    .max_clients = cfg->max_clients,
	    .max_clients_per_uid = cfg->max_clients_per_uid,
	    .idle_timeout = cfg->client_idle_timeout,
	    .pin_peers = policy_any_program_rules(cfg->identities, cfg->n_identities)};
	struct server_handlers sh = {.frame = dispatch_frame,
				     .closed = dispatch_conn_closed,
				     .stopping = dispatch_conn_stopping,
				     .arg = d->service};
	int r;

	/* server_new() has said why. */
	if ((r = server_new(&d->loop, &so, &sh, &d->server)) < 0)
		return r;
	if (cfg->compat_endpoint && (r = compat_new(&d->loop, d->service, &d->compat)) < 0) {
		server_close(d->server);
		return r;
	}
	if (cfg->metrics_listen && (r = metrics_http_new(&d->loop, d->service, &d->metrics)) < 0) {
		server_close(d->server);
		compat_close(d->compat);
		return r;
	}
	return 0;
}

/* SIGHUP reloads, SIGTERM and SIGINT stop. Returns 0, or a negative errno
 * with every signal handle it initialised closed again. */
static int start_signals(struct daemon *d)
{
	uv_signal_t *handles[] = {&d->sighup, &d->sigterm, &d->sigint};
	const int signums[] = {SIGHUP, SIGTERM, SIGINT};
	size_t i, inited = 0;
	int r = 0;

	for (i = 0; i < 3 && r == 0; i++) {
		if ((r = uv_signal_init(&d->loop, handles[i])) < 0)
			break;
		inited++;
		handles[i]->data = d;
		r = uv_signal_start(handles[i], on_signal, signums[i]);
	}
	if (r < 0)
		for (i = 0; i < inited; i++)
			uv_close((uv_handle_t *)handles[i], NULL);
	return r;
}

int daemon_run(const struct config_options *opts, struct config *cfg)
{
	struct daemon *d = calloc(1, sizeof(*d));
	char status[200], dropin_buf[PATH_MAX + 64];
	int r;

	if (!d) {
		config_free(cfg);
		return -ENOMEM;
	}
	d->cfg_opts = *opts;
	d->cfg = cfg;
	d->started = wall_now(NULL);
	d->cache_due = INT64_MAX;
	if ((r = uv_loop_init(&d->loop)) < 0)
		goto fail;
	uv_timer_init(&d->loop, &d->cache_timer);
	d->cache_timer.data = d;
	uv_timer_init(&d->loop, &d->guard_timer);
	d->guard_timer.data = d;
	uv_timer_init(&d->loop, &d->audit_timer);
	d->audit_timer.data = d;
	uv_timer_init(&d->loop, &d->log_timer);
	if ((r = start_core(d)) < 0)
		goto fail_loop;
	/* Before the server takes what systemd passed. */
	restore_tokens(d);
	if ((r = start_fronts(d)) < 0)
		goto fail_loop;
	/* Started: what the last stop kept has served (or never will). */
	fdstore_remove(FDSTORE_TOKENS);
	if ((r = start_signals(d)) < 0) {
		log_error("cannot handle signals: %s", uv_strerror(r));
		server_close(d->server);
		compat_close(d->compat);
		metrics_http_close(d->metrics);
		goto fail_loop;
	}
	notify_init(&d->notify, &d->loop);
	audit_credentials(d);
	uv_timer_start(&d->audit_timer, on_audit_timer, AUDIT_INTERVAL_MS, AUDIT_INTERVAL_MS);
	uv_timer_start(&d->log_timer, on_log_timer, LOG_FLUSH_MS, LOG_FLUSH_MS);
	prefetch_all(d);
	if (d->cfg->n_files > 1)
		log_info("configuration read from %s%s", d->cfg->path,
			 dropins(d->cfg, dropin_buf, sizeof(dropin_buf)));
	status_line(d, status, sizeof(status));
	log_info("batchtokd " BATCHTOK_VERSION_STRING " ready: %s", status);
	notify_ready(status);

	uv_run(&d->loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&d->loop);
	if (r < 0)
		log_error("handles left open at exit: %s", uv_strerror(r));
	config_free(d->cfg);
	free(d);
	return r;

fail_loop:
	service_free(d->service);
	usernames_free(d->usernames);
	cache_free(d->cache);
	guard_free(d->guard);
	d->guard = NULL;
	signin_store_free(d->signins);
	http_close(d->http);
	uv_close((uv_handle_t *)&d->cache_timer, NULL);
	uv_close((uv_handle_t *)&d->guard_timer, NULL);
	uv_close((uv_handle_t *)&d->audit_timer, NULL);
	uv_close((uv_handle_t *)&d->log_timer, NULL);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	uv_loop_close(&d->loop);
fail:
	config_free(d->cfg);
	free(d);
	return r;
}
