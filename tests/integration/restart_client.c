/* restart_client.c - a long-running program using libbatchtok through its
 * public API: one handle, kept for the whole run, which gets a token each
 * time a line arrives on stdin. test_reconnect.py restarts the daemon under
 * it. SIGPIPE keeps its default action: were the library to raise it, the
 * program would die.
 *
 *   restart_client SOCKET
 * prints "ok TOKEN" or "error R MESSAGE" per line read; exits 0 at EOF. */
#include <stdio.h>
#include <stdlib.h>

#include "../../client/batchtok.h"

int main(int argc, char **argv)
{
	char line[64];
	batchtok *bt;
	int r;

	if (argc != 2 || batchtok_new(&bt) < 0)
		return 2;
	batchtok_set_timeout(bt, 10000);
	if ((r = batchtok_connect(bt, argv[1])) < 0) {
		printf("error %d %s\n", r, batchtok_error(bt));
		return 3;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		struct batchtok_token *t = NULL;

		if ((r = batchtok_get_token(bt, NULL, &t)) < 0) {
			printf("error %d %s\n", r, batchtok_error(bt));
			continue;
		}
		printf("ok %s\n", t->access_token);
		batchtok_token_free(t);
	}
	batchtok_free(bt);
	return 0;
}
