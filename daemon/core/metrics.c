/* metrics.c - OpenMetrics text from the cache, the config and the counters. */
#include "metrics.h"

#include <errno.h>
#include <stdlib.h>

#include "../lib/counters.h"

static const char *const service_names[COUNT_SERVICES] = {"entra", "imds"};
static const char *const denial_names[COUNT_DENIALS] = {"user", "program", "admin_only"};
static const char *const listener_names[COUNT_LISTENERS] = {"socket", "compat", "metrics"};

void metrics_label(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}

static void tokens(FILE *f, const struct metrics_input *in)
{
	family(f, "batchtok_token_expiry_seconds", "gauge",
	       "Seconds until the cached token of an identity for a resource expires.");
	for (struct token_entry *e = cache_first(in->cache); e; e = cache_next(e)) {
		if (!e->token)
			continue;
		fputs("batchtok_token_expiry_seconds{identity=", f);
		metrics_label(f, e->id->name);
		fputs(",resource=", f);
		metrics_label(f, e->resource);
		fprintf(f, "} %lld\n", (long long)(e->expires_on - in->now));
	}
}

/* Authenticated: the identity holds a valid token and its last request for
 * none of its resources failed for its credential. */
static void identities(FILE *f, const struct metrics_input *in)
{
	family(f, "batchtok_identity_authenticated", "gauge",
	       "1 if the identity holds a valid token and no request of it was refused, else "
	       "0.");
	for (size_t i = 0; i < in->cfg->n_identities; i++) {
		const struct identity *id = &in->cfg->identities[i];
		bool valid = false, refused = false;
		for (struct token_entry *e = cache_first(in->cache); e; e = cache_next(e)) {
			if (e->id != id)
				continue;
			valid |= e->token && e->expires_on > in->now;
			refused |= e->error_status == BT_E_CREDENTIAL_REJECTED;
		}
		fputs("batchtok_identity_authenticated{identity=", f);
		metrics_label(f, id->name);
		fprintf(f, "} %d\n", valid && !refused);
	}
}

static void upstream(FILE *f)
{
	char code[32];

	family(f, "batchtok_upstream_requests", "counter",
	       "Token requests sent to the token service (Entra ID) or the instance metadata "
	       "service.");
	for (int s = 0; s < COUNT_SERVICES; s++)
		fprintf(f, "batchtok_upstream_requests_total{service=\"%s\"} %llu\n",
			service_names[s], (unsigned long long)counters.upstream_requests[s]);
	family(f, "batchtok_upstream_responses", "counter",
	       "Answers from the token services by HTTP status (none: no answer came).");
	for (int s = 0; s < COUNT_SERVICES; s++)
		for (int k = 0; k < COUNT_STATUSES; k++) {
			if (k < COUNT_STATUS_OTHER)
				snprintf(code, sizeof(code), "%d", counter_statuses[k]);
			else
				snprintf(code, sizeof(code), "%s",
					 k == COUNT_STATUS_OTHER ? "other" : "none");
			fprintf(f,
				"batchtok_upstream_responses_total{service=\"%s\",status=\"%s\"} "
				"%llu\n",
				service_names[s], code,
				(unsigned long long)counters.upstream_responses[s][k]);
		}
	family(f, "batchtok_upstream_aadsts", "counter",
	       "Entra ID error answers by AADSTS code (codes batchtokd does not know: other).");
	for (int i = 0; i < COUNT_AADSTS_MAX && counters.aadsts[i].code; i++)
		fprintf(f, "batchtok_upstream_aadsts_total{code=\"AADSTS%ld\"} %llu\n",
			counters.aadsts[i].code, (unsigned long long)counters.aadsts[i].n);
	fprintf(f, "batchtok_upstream_aadsts_total{code=\"other\"} %llu\n",
		(unsigned long long)counters.aadsts_other);
	family(f, "batchtok_refresh_duration_seconds", "histogram",
	       "Time from sending a token request to its answer.");
	{
		uint64_t cum = 0;
		for (int b = 0; b < COUNT_BUCKETS; b++) {
			cum += counters.refresh_buckets[b];
			fprintf(f, "batchtok_refresh_duration_seconds_bucket{le=\"%g\"} %llu\n",
				counter_buckets[b], (unsigned long long)cum);
		}
		fprintf(f, "batchtok_refresh_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
			(unsigned long long)counters.refresh_count);
		fprintf(f, "batchtok_refresh_duration_seconds_count %llu\n",
			(unsigned long long)counters.refresh_count);
		fprintf(f, "batchtok_refresh_duration_seconds_sum %.6f\n", counters.refresh_sum);
	}
}

static void clients(FILE *f, const struct metrics_input *in)
{
	uint64_t waiters = 0, watchers = 0;

	for (struct token_entry *e = cache_first(in->cache); e; e = cache_next(e)) {
		waiters += e->n_waiters;
		watchers += e->n_watchers;
	}
	family(f, "batchtok_single_flight_waiters", "gauge",
	       "Client requests waiting for a token being fetched.");
	fprintf(f, "batchtok_single_flight_waiters %llu\n", (unsigned long long)waiters);
	family(f, "batchtok_watchers", "gauge", "Watches of tokens (batchtok watch, WATCH).");
	fprintf(f, "batchtok_watchers %llu\n", (unsigned long long)watchers);
	family(f, "batchtok_cache_requests", "counter",
	       "Token requests answered from the cache (hit) or after a fetch (miss).");
	fprintf(f, "batchtok_cache_requests_total{result=\"hit\"} %llu\n",
		(unsigned long long)counters.cache_hits);
	fprintf(f, "batchtok_cache_requests_total{result=\"miss\"} %llu\n",
		(unsigned long long)counters.cache_misses);
	family(f, "batchtok_denials", "counter",
	       "Requests refused: the user may not use the identity, the program may not, or "
	       "the request is for administrators.");
	for (int d = 0; d < COUNT_DENIALS; d++)
		fprintf(f, "batchtok_denials_total{reason=\"%s\"} %llu\n", denial_names[d],
			(unsigned long long)counters.denials[d]);
	family(f, "batchtok_connections", "gauge", "Open client connections by listener.");
	for (int l = 0; l < COUNT_LISTENERS; l++)
		fprintf(f, "batchtok_connections{listener=\"%s\"} %llu\n", listener_names[l],
			(unsigned long long)counters.connections[l]);
	family(f, "batchtok_connections_accepted", "counter",
	       "Client connections accepted by listener.");
	for (int l = 0; l < COUNT_LISTENERS; l++)
		fprintf(f, "batchtok_connections_accepted_total{listener=\"%s\"} %llu\n",
			listener_names[l], (unsigned long long)counters.accepted[l]);
}

static void unit(FILE *f, const char *family, const char *name, uint64_t n)
{
	fprintf(f, "%s_total{unit=", family);
	metrics_label(f, name);
	fprintf(f, "} %llu\n", (unsigned long long)n);
}

static void units(FILE *f, const struct metrics_input *in)
{
	const struct unitcount *t = in->units;

	fprintf(f,
		"# TYPE batchtok_unit_requests counter\n# HELP batchtok_unit_requests Token "
		"requests by caller unit (user units per user manager; at most %d names, then "
		"(other)).\n",
		UNITCOUNT_MAX);
	for (size_t i = 0; i < t->n; i++)
		unit(f, "batchtok_unit_requests", t->v[i].name, t->v[i].requests);
	if (t->other.requests)
		unit(f, "batchtok_unit_requests", UNITCOUNT_OTHER, t->other.requests);
	family(f, "batchtok_unit_denials", "counter", "Token requests refused, by caller unit.");
	for (size_t i = 0; i < t->n; i++)
		unit(f, "batchtok_unit_denials", t->v[i].name, t->v[i].denied);
	if (t->other.requests)
		unit(f, "batchtok_unit_denials", UNITCOUNT_OTHER, t->other.denied);
}

int metrics_render(const struct metrics_input *in, char **ret, size_t *len)
{
	FILE *f = open_memstream(ret, len);

	if (!f)
		return -ENOMEM;
	family(f, "batchtok_build", "info", "The version of batchtokd.");
	fputs("batchtok_build_info{version=\"" BATCHTOK_VERSION_STRING "\"} 1\n", f);
	tokens(f, in);
	identities(f, in);
	upstream(f);
	clients(f, in);
	units(f, in);
	if (in->extra)
		in->extra(in->extra_arg, f);
	fputs("# EOF\n", f);
	if (ferror(f) | fclose(f)) {
		free(*ret);
		*ret = NULL;
		return -ENOMEM;
	}
	return 0;
}
