/* counters.c - the daemon's metrics counters. */
#include <stdbool.h>

#include "counters.h"

struct counters counters;

const int counter_statuses[COUNT_STATUSES - 2] = {200, 400, 401, 403, 404, 408,
						  410, 429, 500, 502, 503};
const double counter_buckets[COUNT_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

static int status_slot(long status)
{
	if (status == 0)
		return COUNT_STATUS_NONE;
	for (int i = 0; i < COUNT_STATUSES - 2; i++)
		if (counter_statuses[i] == status)
			return i;
	return COUNT_STATUS_OTHER;
}

static void count_aadsts(long code, bool known)
{
	int i;

	if (!code)
		return;
	for (i = 0; known && i < COUNT_AADSTS_MAX; i++) {
		if (counters.aadsts[i].code == code || !counters.aadsts[i].code) {
			counters.aadsts[i].code = code;
			counters.aadsts[i].n++;
			return;
		}
	}
	counters.aadsts_other++;
}

void counters_upstream_answer(enum counter_service svc, long status, long aadsts, bool known,
			      double seconds)
{
	int b;

	counters.upstream_responses[svc][status_slot(status)]++;
	count_aadsts(aadsts, known);
	for (b = 0; b < COUNT_BUCKETS && seconds > counter_buckets[b]; b++)
		;
	if (b < COUNT_BUCKETS)
		counters.refresh_buckets[b]++;
	counters.refresh_count++;
	counters.refresh_sum += seconds;
}
