"""libbatchtok across daemon restarts: a long-running program keeps one
handle, the daemon is stopped and a new one started on the same socket, and
the same handle gets a token again, without SIGPIPE and without "not
connected"."""

import errno
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import BUILD, TOP, jwt_claims, wait_for


@pytest.fixture(scope="module")
def restart_client():
    """tests/integration/restart_client.c linked with this build's
    libbatchtok.a, through the public header only."""
    work = tempfile.mkdtemp(prefix="batchtok-restart-")
    try:
        prog = os.path.join(work, "restart_client")
        lib = os.path.join(BUILD, "libbatchtok.a")
        # The ASan+UBSan build's library needs their runtimes at link time.
        with open(lib, "rb") as f:
            san = ["-fsanitize=address,undefined"] if b"__asan_init" in f.read() else []
        cc = subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-Wall", "-Werror"] + san +
                            ["-o", prog,
                             os.path.join(TOP, "tests/integration/restart_client.c"), lib],
                            capture_output=True, text=True, timeout=120)
        assert cc.returncode == 0, cc.stderr
        yield prog
    finally:
        shutil.rmtree(work)


class Client:
    def __init__(self, prog, sock):
        self.proc = subprocess.Popen([prog, sock], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def get(self):
        """One batchtok_get_token() on the program's one handle: ("ok", token)
        or ("error", "R MESSAGE")."""
        self.proc.stdin.write("get\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "restart_client died: %s" % self.proc.wait(10)
        return tuple(line.rstrip("\n").split(" ", 1))

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0


def restart(d):
    """Stops the daemon by PID, starts a new one on the same socket and waits
    until it answers."""
    old = d.proc.pid
    d.stop()
    d.start()
    assert d.proc.pid != old
    wait_for(lambda: d.run("ping", timeout=10).rc == 0, 10, what="the new daemon to answer")


def test_handle_survives_a_daemon_restart(make_daemon, sts, restart_client):
    d = make_daemon()
    c = Client(restart_client, d.sock)
    try:
        status, first = c.get()
        assert status == "ok", first
        restart(d)
        # The old connection is gone (EPIPE on the send): the request goes
        # again on a new connection, transparently.
        status, second = c.get()
        assert status == "ok", second
        assert jwt_claims(second)["aud"] == jwt_claims(first)["aud"]
        # A new daemon has an empty cache: it asked the token service again.
        assert sts.stats()["token_requests"] == 2
        status, third = c.get()
        assert (status, third) == ("ok", second)
        # Restarted twice in a row, between two calls: the same again.
        restart(d)
        restart(d)
        assert c.get()[0] == "ok"
    finally:
        c.close()


def test_call_while_the_daemon_is_down_then_back(make_daemon, sts, restart_client):
    d = make_daemon()
    c = Client(restart_client, d.sock)
    try:
        assert c.get()[0] == "ok"
        d.stop()
        status, err = c.get()
        assert status == "error", err
        assert err.startswith("%d " % -errno.ECONNREFUSED), err
        assert "cannot reach batchtokd" in err
        d.start()
        wait_for(lambda: d.run("ping", timeout=10).rc == 0, 10, what="the daemon to answer")
        # The next call connects anew: no "not connected" for ever after.
        status, tok = c.get()
        assert status == "ok", tok
    finally:
        c.close()


def test_handle_survives_an_idle_close(make_daemon, sts, restart_client):
    """The daemon closes connections idle for client_idle_timeout: a program
    that asks again later finds the connection gone and gets its token on a
    new one."""
    d = make_daemon(client_idle_timeout="1s")
    c = Client(restart_client, d.sock)
    try:
        status, first = c.get()
        assert status == "ok", first
        wait_for(lambda: "idle for client_idle_timeout" in d.read_log(), 10,
                 what="the daemon to close the idle connection")
        assert c.get() == ("ok", first)
        assert sts.stats()["token_requests"] == 1
    finally:
        c.close()
