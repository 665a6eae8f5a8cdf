/* future_request.c - starts a request of a given type through libbatchtok's
 * own request path, begin(), the check every call of its API makes before
 * anything is sent, then PINGs on the same connection. Request types newer
 * than the daemon have no API call yet; test_protocol_versions.py builds
 * this to see what such a call would do against a real daemon.
 *
 *   future_request SOCKET TYPE
 * prints "begin R ERROR" and "ping R VERSION"; exits 0. */
#include "../../client/libbatchtok.c"

int main(int argc, char **argv)
{
	batchtok *bt;
	uint32_t id = 0;
	char *version = NULL;
	int r;

	char *end;
	unsigned long type;

	if (argc != 3 || batchtok_new(&bt) < 0)
		return 2;
	type = strtoul(argv[2], &end, 10);
	if (*end || type > 255)
		return 2;
	if ((r = batchtok_connect(bt, argv[1])) < 0) {
		fprintf(stderr, "%s\n", batchtok_error(bt));
		return 3;
	}
	r = begin(bt, (uint8_t)type, &id);
	printf("begin %d %s\n", r, batchtok_error(bt));
	r = batchtok_ping(bt, &version);
	printf("ping %d %s\n", r, r == 0 ? version : batchtok_error(bt));
	free(version);
	batchtok_free(bt);
	return 0;
}
