/* duration.h - the duration syntax shared by the config file and the command
 * line: a whole number with an optional unit, "90", "90s", "5m", "1h", "2d". */
#ifndef BATCHTOK_PROTO_DURATION_H
#define BATCHTOK_PROTO_DURATION_H

#include <stdint.h>

/* Parses s into seconds. Returns 0, or -EINVAL for an empty string, an
 * unknown unit or trailing garbage, -ERANGE beyond max_seconds. */
int bt_parse_duration(const char *s, uint64_t max_seconds, uint64_t *ret);

#endif
