"""What batchtokd does when the system refuses it something, made to happen
with an LD_PRELOAD shim built here: it does not start when it cannot keep
its secrets out of core dumps and debuggers (as ssh-agent does), and a
reload that runs out of memory still tells systemd it is ready again."""

import socket
import subprocess

import pytest

from conftest import BATCHTOKD, wait_for

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

/* BT_FAIL_PRCTL=1: PR_SET_DUMPABLE fails. BT_FAIL_RLIMIT=1: setrlimit of
 * RLIMIT_CORE fails. BT_FAIL_STRDUP=S and BT_FAIL_STRDUP_NTH=N: the Nth
 * strdup() of the string S returns NULL. */
int prctl(int option, ...)
{
	static int (*real)(int, ...);
	unsigned long a[4];
	va_list ap;

	va_start(ap, option);
	for (int i = 0; i < 4; i++)
		a[i] = va_arg(ap, unsigned long);
	va_end(ap);
	if (option == PR_SET_DUMPABLE && getenv("BT_FAIL_PRCTL")) {
		errno = EPERM;
		return -1;
	}
	if (!real)
		real = (int (*)(int, ...))dlsym(RTLD_NEXT, "prctl");
	return real(option, a[0], a[1], a[2], a[3]);
}

int setrlimit(__rlimit_resource_t resource, const struct rlimit *rl)
{
	static int (*real)(__rlimit_resource_t, const struct rlimit *);

	if (resource == RLIMIT_CORE && getenv("BT_FAIL_RLIMIT")) {
		errno = EPERM;
		return -1;
	}
	if (!real)
		real = (int (*)(__rlimit_resource_t, const struct rlimit *))dlsym(RTLD_NEXT,
										  "setrlimit");
	return real(resource, rl);
}

char *strdup(const char *s)
{
	static char *(*real)(const char *);
	static int seen;
	const char *fail = getenv("BT_FAIL_STRDUP"), *nth = getenv("BT_FAIL_STRDUP_NTH");

	if (fail && nth && !strcmp(s, fail) && ++seen == atoi(nth)) {
		errno = ENOMEM;
		return NULL;
	}
	if (!real)
		real = (char *(*)(const char *))dlsym(RTLD_NEXT, "strdup");
	return real(s);
}
"""


def with_asan(env, *options):
    """env with options added to ASAN_OPTIONS: harmless without ASan."""
    return dict(env, ASAN_OPTIONS=":".join(
        [o for o in [env.get("ASAN_OPTIONS", "")] if o] + list(options)))


# An ASan build wants its runtime first in the library list; the shim comes
# before it, and only wraps what ASan's interceptors then handle.
SHIM_ASAN = "verify_asan_link_order=0"


@pytest.fixture
def shim(tmp_path):
    src, lib = tmp_path / "shim.c", tmp_path / "shim.so"
    src.write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True)
    return str(lib)


@pytest.mark.parametrize("env, what", [
    ({"BT_FAIL_PRCTL": "1"}, "cannot make the process undumpable"),
    ({"BT_FAIL_RLIMIT": "1"}, "cannot disable core dumps"),
])
def test_refuses_to_start_when_it_cannot_hide_its_secrets(make_daemon, shim, env, what):
    d = make_daemon(start=False)
    r = subprocess.run([BATCHTOKD, "-c", d.conf], capture_output=True, text=True, timeout=30,
                       env=with_asan(dict(d.env, LD_PRELOAD=shim, **env), SHIM_ASAN))
    assert r.returncode == 1, r
    assert what in r.stderr and "refusing to start" in r.stderr, r.stderr


def test_reload_out_of_memory_still_answers_reloading_with_ready(make_daemon, shim, tmp_path):
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(str(tmp_path / "notify.sock"))
    ns.settimeout(10)
    proxy = "http://fail-strdup.invalid:1"
    d = make_daemon(start=False)
    # The reloaded config's proxy is copied twice: by the config parser,
    # then by the HTTP engine; the second copy fails.
    d.env = with_asan(dict(d.env, NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
                           LD_PRELOAD=shim, BT_FAIL_STRDUP=proxy, BT_FAIL_STRDUP_NTH="2"),
                      SHIM_ASAN)
    d.start()
    got = []
    wait_for(lambda: got.append(ns.recv(4096).decode()) or "READY=1" in got[-1], 10,
             what="READY=1")
    with open(d.conf) as f:
        conf = f.read()
    with open(d.conf, "w") as f:
        f.write(conf.replace("[daemon]\n", "[daemon]\nproxy = %s\n" % proxy, 1))
    r = d.run("reload")
    assert r.rc != 0 and "out of memory" in r.err, r
    got = [ns.recv(4096).decode()]
    assert "RELOADING=1" in got[0], got
    got.append(ns.recv(4096).decode())
    assert "READY=1" in got[1], got
    # Still serving, on the old configuration.
    assert d.get().rc == 0
    ns.close()
