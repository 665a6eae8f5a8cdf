/* duration.c - parses "90", "90s", "5m", "1h", "2d" into seconds. */
#include "duration.h"

#include <errno.h>
#include <stdlib.h>

int bt_parse_duration(const char *s, uint64_t max_seconds, uint64_t *ret)
{
	unsigned long long v;
	uint64_t unit;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (*end) {
	case 0:
	case 's':
		unit = 1;
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	default:
		return -EINVAL;
	}
	if (*end && end[1])
		return -EINVAL;
	if (v > max_seconds / unit)
		return -ERANGE;
	*ret = v * unit;
	return 0;
}
