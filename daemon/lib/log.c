/* log.c - journal or stderr, chosen once at start. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

static int max_level = LOG_INFO;
static int use_journal;

/* systemd sets JOURNAL_STREAM to "DEV:INO" of the stream it connected to our
 * stderr; if stderr is still that stream, the journal is listening. */
static int stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
		return 0;
	return st.st_dev == dev && st.st_ino == ino;
}

void log_init(int level)
{
	max_level = level;
	use_journal = stderr_is_journal();
}

void log_set_level(int level)
{
	max_level = level;
}

bool log_enabled(int level)
{
	return level <= max_level;
}

int log_parse_level(const char *s, int *ret)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
	    {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"info", LOG_INFO}, {"debug", LOG_DEBUG}};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(s, levels[i].name) == 0) {
			*ret = levels[i].level;
			return 0;
		}
	return -EINVAL;
}

/* Sends msg with only the context fields that are set. */
static void journal(int level, const struct log_ctx *ctx, const char *msg)
{
	char f[13][1200];
	struct iovec iov[13];
	int n = 0;

#define FIELD(...)                                                                                 \
	do {                                                                                       \
		int k_ = snprintf(f[n], sizeof(f[n]), __VA_ARGS__);                                \
		iov[n].iov_base = f[n];                                                            \
		iov[n].iov_len = k_ < (int)sizeof(f[n]) ? (size_t)k_ : sizeof(f[n]) - 1;           \
		n++;                                                                               \
	} while (0)
	FIELD("MESSAGE=%s", msg);
	FIELD("PRIORITY=%d", level);
	FIELD("SYSLOG_IDENTIFIER=batchtokd");
	if (ctx->identity)
		FIELD("BATCHTOK_IDENTITY=%s", ctx->identity);
	if (ctx->resource)
		FIELD("BATCHTOK_RESOURCE=%s", ctx->resource);
	if (ctx->uid >= 0)
		FIELD("BATCHTOK_CLIENT_UID=%ld", ctx->uid);
	if (ctx->pid >= 0)
		FIELD("BATCHTOK_CLIENT_PID=%ld", ctx->pid);
	if (ctx->aadsts)
		FIELD("BATCHTOK_AADSTS=%s", ctx->aadsts);
	if (ctx->fingerprint)
		FIELD("BATCHTOK_TOKEN_FINGERPRINT=%s", ctx->fingerprint);
	if (ctx->unit)
		FIELD("BATCHTOK_UNIT=%s", ctx->unit);
	if (ctx->user_unit)
		FIELD("BATCHTOK_USER_UNIT=%s", ctx->user_unit);
	if (ctx->invocation_id && *ctx->invocation_id)
		FIELD("BATCHTOK_INVOCATION_ID=%s", ctx->invocation_id);
	if (ctx->exe)
		FIELD("BATCHTOK_EXE=%s", ctx->exe);
#undef FIELD
	sd_journal_sendv(iov, n);
}

void log_msg(int level, const struct log_ctx *ctx, const char *fmt, ...)
{
	static const struct log_ctx none = {.uid = -1, .pid = -1};
	char msg[1024];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!ctx)
		ctx = &none;
	if (!use_journal) {
		static const char *const tags[] = {[LOG_ERR] = "error",
						   [LOG_WARNING] = "warning",
						   [LOG_NOTICE] = "notice",
						   [LOG_INFO] = "info",
						   [LOG_DEBUG] = "debug"};
		fprintf(stderr, "batchtokd: %s: %s\n",
			level >= LOG_ERR && level <= LOG_DEBUG && tags[level] ? tags[level] : "log",
			msg);
		return;
	}
	journal(level, ctx, msg);
}
