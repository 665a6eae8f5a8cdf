/* dispatch.h - turns each request frame into an answer. The server hands
 * over whole frames and never looks inside; this module never touches a
 * socket. Both take a struct service * as their argument. */
#ifndef BATCHTOK_DAEMON_DISPATCH_H
#define BATCHTOK_DAEMON_DISPATCH_H

#include "server.h"
#include "../core/service.h"

void dispatch_frame(void *service, struct conn *c, struct bt_frame *f);
void dispatch_conn_closed(void *service, struct conn *c);
/* Answers each request of c that waits: the daemon is stopping. */
void dispatch_conn_stopping(void *service, struct conn *c);

#endif
