/* status_format.h - renders the daemon's STATUS record as text or JSON. */
#ifndef BATCHTOK_CLIENT_STATUS_FORMAT_H
#define BATCHTOK_CLIENT_STATUS_FORMAT_H

#include <time.h>

#include "../proto/msg.h"

/* Each returns 0 with a new NUL-terminated string in *ret (free() it), or
 * -ENOMEM. now is the wall clock used for "in 5m" and "3s ago". */
int status_format_text(const struct bt_record *daemon, time_t now, char **ret);
int status_format_json(const struct bt_record *daemon, char **ret);

#endif
