/* compat_load.c - load generator for the compat endpoint. Each thread holds
 * one keep-alive connection (or, with "close", opens one per request) and
 * sends the App Service-shaped token request (api-version 2019-08-01, the
 * capability in X-IDENTITY-HEADER) back to back for a fixed time or count,
 * recording each latency. Run under `batchtok exec --compat`, which sets
 * IDENTITY_ENDPOINT and IDENTITY_HEADER; given a PORT, the same request goes
 * to that port on 127.0.0.1 instead (the raw HTTP floor).
 *
 *   compat_load PORT|- CONNECTIONS SECONDS MAX_REQUESTS [close]
 *
 * Prints one line of JSON: requests, seconds, p50_us, p99_us, rps,
 * request_bytes, response_bytes. Any answer but 200 fails the run. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES  4000000
#define LOCAL_BATCH  100000 /* samples a thread keeps before handing them over */
#define RESP_MAX     65536  /* the largest response read */
#define REQ_MAX	     8192
#define RESOURCE_ARG "https%%3A%%2F%%2Fbatch.core.windows.net%%2F" /* a format */

static double seconds;
static long max_requests;
static int per_request; /* a new connection for each request */
static uint16_t port;
static char request[REQ_MAX];
static size_t request_len, response_len;
static uint32_t *samples;
static size_t n_samples;
static long started; /* requests begun, under lock */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int failed;

/* A decimal number, or -1 if s is not one. */
static long num(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	return errno || end == s || *end || v < 0 ? -1 : v;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void record(uint32_t *local, size_t n, size_t last_response_len)
{
	pthread_mutex_lock(&lock);
	if (last_response_len)
		response_len = last_response_len;
	for (size_t i = 0; i < n && n_samples < MAX_SAMPLES; i++)
		samples[n_samples++] = local[i];
	pthread_mutex_unlock(&lock);
}

/* Whether another request may begin: the count is shared by all threads. */
static int may_start(void)
{
	int ok;

	pthread_mutex_lock(&lock);
	ok = started < max_requests;
	started += ok;
	pthread_mutex_unlock(&lock);
	return ok;
}

static int tcp_connect(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("compat_load: connect");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Reads one response into buf; returns its length, or -1. */
static ssize_t read_response(int fd, char *buf, size_t size)
{
	size_t have = 0, total = 0;
	char *end = NULL;

	while (!end || have < total) {
		ssize_t r = recv(fd, buf + have, size - have - 1, 0);
		if (r <= 0)
			return -1;
		have += (size_t)r;
		buf[have] = '\0';
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			const char *cl = strcasestr(buf, "\r\nContent-Length:");
			if (!cl || cl > end)
				return -1;
			total = (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10);
			if (total >= size)
				return -1;
		}
		if (have == size - 1)
			return -1;
	}
	return (ssize_t)have;
}

static void *worker(void *arg)
{
	uint32_t *local = malloc(sizeof(uint32_t) * LOCAL_BATCH);
	char *buf = malloc(RESP_MAX);
	double end = now() + seconds;
	size_t n = 0, got_len = 0;
	int fd = -1;

	(void)arg;
	if (!local || !buf) {
		failed = 1;
		goto out;
	}
	while (!failed && now() < end && may_start()) {
		double t0 = now();
		ssize_t got;

		if (fd < 0 && (fd = tcp_connect()) < 0) {
			failed = 1;
			break;
		}
		if (send(fd, request, request_len, MSG_NOSIGNAL) != (ssize_t)request_len ||
		    (got = read_response(fd, buf, RESP_MAX)) < 0) {
			fprintf(stderr, "compat_load: the connection failed\n");
			failed = 1;
			break;
		}
		if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0) {
			fprintf(stderr, "compat_load: %.*s\n", (int)got, buf);
			failed = 1;
			break;
		}
		if (per_request) {
			close(fd);
			fd = -1;
		}
		local[n++] = (uint32_t)((now() - t0) * 1e6);
		got_len = (size_t)got;
		if (n == LOCAL_BATCH) {
			record(local, n, got_len);
			n = 0;
		}
	}
	record(local, n, got_len);
out:
	if (fd >= 0)
		close(fd);
	free(local);
	free(buf);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* The request, from IDENTITY_ENDPOINT (http://HOST:PORT/PATH) and
 * IDENTITY_HEADER; the port is the endpoint's unless given. */
static int make_request(const char *port_arg)
{
	const char *ep = getenv("IDENTITY_ENDPOINT"), *cap = getenv("IDENTITY_HEADER");
	const char *host, *path;
	int r;

	if (!ep || !cap || strncmp(ep, "http://", 7) != 0) {
		fprintf(stderr, "compat_load: run me under 'batchtok exec --compat'\n");
		return -1;
	}
	host = ep + 7;
	if (!(path = strchr(host, '/')) || !strchr(host, ':'))
		return -1;
	/* The port ends where the path begins. */
	port =
	    (uint16_t)strtoul(strcmp(port_arg, "-") ? port_arg : strchr(host, ':') + 1, NULL, 10);
	r = snprintf(request, sizeof(request),
		     "GET %s?api-version=2019-08-01&resource=" RESOURCE_ARG " HTTP/1.1\r\n"
		     "Host: %.*s\r\n"
		     "X-IDENTITY-HEADER: %s\r\n"
		     "%s\r\n",
		     path, (int)(path - host), host, cap,
		     per_request ? "Connection: close\r\n" : "");
	if (r < 0 || (size_t)r >= sizeof(request) || port == 0)
		return -1;
	request_len = (size_t)r;
	return 0;
}

int main(int argc, char **argv)
{
	int threads;
	pthread_t *tids;
	double t0, elapsed;

	if (argc < 5 || argc > 6)
		return 2;
	threads = num(argv[2]);
	seconds = atof(argv[3]);
	max_requests = atol(argv[4]);
	per_request = argc == 6 && !strcmp(argv[5], "close");
	if (threads <= 0 || seconds <= 0 || max_requests <= 0 || make_request(argv[1]) < 0)
		return 2;
	samples = malloc(sizeof(uint32_t) * MAX_SAMPLES);
	tids = calloc((size_t)threads, sizeof(pthread_t));
	if (!samples || !tids)
		return 1;
	t0 = now();
	for (int i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, worker, NULL) != 0)
			return 1;
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	elapsed = now() - t0;
	if (failed || n_samples == 0)
		return 1;
	qsort(samples, n_samples, sizeof(uint32_t), cmp);
	printf("{\"requests\": %zu, \"seconds\": %.3f, \"p50_us\": %u, \"p99_us\": %u, \"rps\": "
	       "%.0f, \"request_bytes\": %zu, \"response_bytes\": %zu}\n",
	       n_samples, elapsed, samples[n_samples / 2], samples[n_samples * 99 / 100],
	       (double)n_samples / elapsed, request_len, response_len);
	return 0;
}
