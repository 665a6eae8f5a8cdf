/* bench_client.c - load generator. Each thread holds one connection and
 * makes requests back to back for a fixed time, recording each latency.
 *
 *   bench_client lib SOCKET THREADS SECONDS           cached gets via libbatchtok
 *   bench_client raw SOCKET THREADS SECONDS REQ_BYTES  raw frames, same sizes
 *   bench_client hold SOCKET CONNECTIONS SECONDS      connect, HELLO, then idle
 *   bench_client connect SOCKET THREADS SECONDS       a new connection per HELLO
 *
 * Prints one line of JSON: requests, seconds, p50_us, p99_us, rps. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../../client/batchtok.h"

#define MAX_SAMPLES 4000000
#define HELLO_REPLY 0x81 /* the frame type of HELLO's answer */

static const char *mode, *sock_path;
static double seconds;
static size_t req_bytes;
static uint32_t *samples;
static size_t n_samples;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int failed;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void record(uint32_t *local, size_t n)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n && n_samples < MAX_SAMPLES; i++)
		samples[n_samples++] = local[i];
	pthread_mutex_unlock(&lock);
}

static int raw_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		exit(1);
	}
	return fd;
}

static int read_full(int fd, unsigned char *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void *worker(void *arg)
{
	uint32_t *local = malloc(sizeof(uint32_t) * 200000);
	size_t n = 0;
	double end = now() + seconds;

	(void)arg;
	if (!strcmp(mode, "lib")) {
		batchtok *bt;
		struct batchtok_token *t;
		if (batchtok_new(&bt) < 0 || batchtok_connect(bt, sock_path) < 0) {
			failed = 1;
			return NULL;
		}
		while (now() < end) {
			double t0 = now();
			if (batchtok_get_token(bt, NULL, &t) < 0) {
				fprintf(stderr, "get: %s\n", batchtok_error(bt));
				failed = 1;
				break;
			}
			batchtok_token_free(t);
			local[n++] = (uint32_t)((now() - t0) * 1e6);
			if (n == 200000) {
				record(local, n);
				n = 0;
			}
		}
		batchtok_free(bt);
	} else if (!strcmp(mode, "connect")) {
		/* Connection setup: connect, HELLO (answered by the daemon, or
		 * by raw_echo as any frame), close. */
		static const unsigned char hello[] = {0, 0, 0, 13, 1, 0, 0, 0, 0,
						      0, 0, 0, 1,  0, 0, 0, 1};
		unsigned char buf[65536];
		while (now() < end) {
			double t0 = now();
			int fd = raw_connect();
			uint32_t len;
			if (send(fd, hello, sizeof(hello), 0) != sizeof(hello) ||
			    read_full(fd, buf, 4) < 0) {
				failed = 1;
				close(fd);
				break;
			}
			len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
			      (uint32_t)buf[2] << 8 | buf[3];
			if (len > sizeof(buf) || read_full(fd, buf, len) < 0) {
				failed = 1;
				close(fd);
				break;
			}
			close(fd);
			local[n++] = (uint32_t)((now() - t0) * 1e6);
			if (n == 200000) {
				record(local, n);
				n = 0;
			}
		}
	} else {
		int fd = raw_connect();
		unsigned char *req = calloc(1, req_bytes), buf[65536];
		req[3] = (unsigned char)(req_bytes - 4);
		req[2] = (unsigned char)((req_bytes - 4) >> 8);
		while (now() < end) {
			double t0 = now();
			uint32_t len;
			if (send(fd, req, req_bytes, 0) != (ssize_t)req_bytes ||
			    read_full(fd, buf, 4) < 0)
				break;
			len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
			      (uint32_t)buf[2] << 8 | buf[3];
			if (len > sizeof(buf) || read_full(fd, buf, len) < 0)
				break;
			local[n++] = (uint32_t)((now() - t0) * 1e6);
			if (n == 200000) {
				record(local, n);
				n = 0;
			}
		}
		close(fd);
		free(req);
	}
	record(local, n);
	free(local);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int threads;
	pthread_t *tids;
	double t0, elapsed;

	if (argc < 5)
		return 2;
	mode = argv[1];
	sock_path = argv[2];
	threads = (int)strtol(argv[3], NULL, 10);
	seconds = atof(argv[4]);
	req_bytes = argc > 5 ? (size_t)strtoul(argv[5], NULL, 10) : 0;
	if (!strcmp(mode, "hold")) {
		/* Open connections with HELLO done, then wait (for RSS figures). */
		static const unsigned char hello[] = {0, 0, 0, 13, 1, 0, 0, 0, 0,
						      0, 0, 0, 1,  0, 0, 0, 1};
		int *fds = calloc((size_t)threads, sizeof(int));
		unsigned char buf[256];
		for (int i = 0; i < threads; i++) {
			unsigned len;

			fds[i] = raw_connect();
			if (send(fds[i], hello, sizeof(hello), 0) != sizeof(hello) ||
			    read_full(fds[i], buf, 4) < 0 || buf[0] || buf[1] || buf[2] ||
			    read_full(fds[i], buf, len = buf[3]) < 0)
				return 1;
			/* An ERROR frame (BUSY, for one): type, id, status, length, text. */
			if (buf[0] != HELLO_REPLY) {
				fprintf(stderr, "hold: connection %d refused: %.*s\n", i,
					(int)(len > 13 ? len - 13 : 0), buf + 13);
				return 1;
			}
		}
		printf("{\"connections\": %d}\n", threads);
		fflush(stdout);
		sleep((unsigned)seconds);
		return 0;
	}
	samples = malloc(sizeof(uint32_t) * MAX_SAMPLES);
	tids = calloc((size_t)threads, sizeof(pthread_t));
	t0 = now();
	for (int i = 0; i < threads; i++)
		pthread_create(&tids[i], NULL, worker, NULL);
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	elapsed = now() - t0;
	if (failed || n_samples == 0)
		return 1;
	qsort(samples, n_samples, sizeof(uint32_t), cmp);
	printf("{\"requests\": %zu, \"seconds\": %.3f, \"p50_us\": %u, \"p99_us\": %u, \"rps\": "
	       "%.0f}\n",
	       n_samples, elapsed, samples[n_samples / 2], samples[n_samples * 99 / 100],
	       (double)n_samples / elapsed);
	return 0;
}
