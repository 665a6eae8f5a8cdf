"""Warm restarts through systemd's file descriptor store, with this test in
systemd's place on the wire: it receives the daemon's FDSTORE=1 datagram
and its memfd at stop, and passes the memfd back at the next start as
systemd does (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), beside the socket
the socket unit would pass. The boot tier does the same with systemd
itself (tests/boot)."""

import fcntl
import os
import signal
import socket
import subprocess

from conftest import BATCHTOKD, CLIENT
from sdmanager import Manager, spawn

F_GET_SEALS = 1034
SEALS = 0x1 | 0x2 | 0x4 | 0x8  # SEAL, SHRINK, GROW, WRITE


def start(d, manager, pass_fds=(), names=()):
    """batchtokd as systemd starts it, waiting for READY=1."""
    d.log = open(d.logpath, "a")
    d.proc = spawn([BATCHTOKD, "-c", d.conf], manager, d.env, pass_fds, names, stdout=d.log,
                   stderr=subprocess.STDOUT)
    manager.wait_for("READY=1")


def stop(d, manager):
    """SIGTERM, and the memfd the daemon handed over on its way out."""
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0, d.read_log()
    d.log.close()
    manager.drain()
    return [m for m in manager.messages if "FDSTORE=1" in m.split("\n")]


def test_a_restart_keeps_tokens_in_a_sealed_memfd(make_daemon, sts):
    d = make_daemon(start=False)
    m = Manager(d.dir)
    try:
        start(d, m)
        token = d.get().out.strip()
        assert sts.stats()["token_requests"] == 1
        assert stop(d, m) == ["FDSTORE=1\nFDNAME=tokens"]
        assert len(m.fds) == 1
        memfd = m.fds[0]
        # Anonymous memory, sealed: no file holds the token.
        assert os.readlink("/proc/self/fd/%d" % memfd).startswith("/memfd:tokens")
        assert fcntl.fcntl(memfd, F_GET_SEALS) & SEALS == SEALS
        assert "handed 1 cached token to systemd's descriptor store" in d.read_log()

        # The next start, as systemd makes it: the socket unit's socket and
        # the stored memfd.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(d.sock)
        listener.listen(16)
        m.messages.clear()
        start(d, m, [listener.fileno(), memfd], ["batchtokd.socket", "tokens"])
        listener.close()
        m.drain()
        assert "FDSTOREREMOVE=1\nFDNAME=tokens" in m.messages
        assert "restored 1 cached token kept across the restart" in d.read_log()
        # The first request after the restart costs no request upstream.
        assert d.get().out.strip() == token
        assert sts.stats()["token_requests"] == 1
        assert "using the socket passed by systemd" in d.read_log()
    finally:
        m.close()
    # make_daemon's teardown stops it by PID; the socket was systemd's.
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(20)
    d.log.close()
    os.unlink(d.sock)


def test_a_token_of_a_changed_identity_is_not_restored(make_daemon, sts):
    d = make_daemon({"batch": {}, "other": {}}, start=False)
    m = Manager(d.dir)
    try:
        start(d, m)
        d.get("-i", "batch")
        d.get("-i", "other")
        assert sts.stats()["token_requests"] == 2
        stop(d, m)
        assert len(m.fds) == 1
        # Another application for "other"; "batch" as it was.
        with open(d.conf) as f:
            conf = f.read()
        i = conf.index("[identity other]")
        conf = conf[:i] + conf[i:].replace("client_id = " + CLIENT,
                                           "client_id = 99999999-9999-9999-9999-999999999999",
                                           1)
        with open(d.conf, "w") as f:
            f.write(conf)
        m.messages.clear()
        start(d, m, [m.fds[0]], ["tokens"])
        log = d.read_log()
        assert "restored 1 cached token kept across the restart" in log
        assert "identity other: the token for https://batch.core.windows.net/ kept across " \
            "the restart is not used: the identity's credential changed" in log
        assert d.get("-i", "batch").rc == 0
        assert sts.stats()["token_requests"] == 2
    finally:
        m.close()


def test_garbage_in_the_store_starts_cold(make_daemon, sts):
    """A descriptor under the name that is not a sealed memfd is refused;
    the daemon starts and fetches."""
    d = make_daemon(start=False)
    m = Manager(d.dir)
    r, w = os.pipe()
    try:
        start(d, m, [r], ["tokens"])
        assert "cannot be read" in d.read_log()
        assert d.get().rc == 0
        assert sts.stats()["token_requests"] == 1
    finally:
        os.close(r)
        os.close(w)
        m.close()


def test_outside_systemd_nothing_is_stored(make_daemon, sts):
    d = make_daemon()
    d.get()
    d.stop()
    assert "descriptor store" not in d.read_log()


def test_a_changed_secret_or_endpoint_is_not_restored(make_daemon, sts, tmp_path):
    """A restart keeps tokens exactly where a reload would: the secret's
    value and a managed identity's metadata endpoint count (hostile review,
    issue 16: the restart kept them)."""
    from conftest import SECRET
    d = make_daemon({"batch": {}, "node": {"credential": "managed-identity", "tenant": None,
                                          "client_id": None, "authority_host": None,
                                          "imds_endpoint": sts.imds_url}}, start=False)
    m = Manager(d.dir)
    try:
        start(d, m)
        assert d.get("-i", "batch").rc == 0 and d.get("-i", "node").rc == 0
        stop(d, m)
        assert len(m.fds) == 1
        d.secret_file("batch.secret", SECRET + "-rotated")
        with open(d.conf) as f:
            conf = f.read()
        with open(d.conf, "w") as f:
            f.write(conf.replace("imds_endpoint = " + sts.imds_url,
                                 "imds_endpoint = http://127.0.0.1:9"))
        m.messages.clear()
        start(d, m, [m.fds[0]], ["tokens"])
        log = d.read_log()
        assert "restored 0 cached tokens kept across the restart" in log, log
        assert log.count("kept across the restart is not used: the identity's credential "
                         "changed") == 2, log
    finally:
        m.close()


def test_a_start_that_fails_keeps_the_tokens_for_the_next(make_daemon, sts):
    """The store gives its tokens up only once the start has succeeded: a
    start that fails after reading them (its metrics port taken) finds them
    again the next time (hostile review, issue 16)."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    d = make_daemon(start=False)
    m = Manager(d.dir)
    try:
        start(d, m)
        token = d.get().out.strip()
        stop(d, m)
        memfd = m.fds[0]
        with open(d.conf, "a") as f:
            f.write("\n[daemon]\nmetrics_listen = 127.0.0.1:%d\n" % port)
        m.messages.clear()
        d.log = open(d.logpath, "a")
        p = spawn([BATCHTOKD, "-c", d.conf], m, d.env, [memfd], ["tokens"], stdout=d.log,
                  stderr=subprocess.STDOUT)
        assert p.wait(20) != 0
        d.log.close()
        m.drain()
        assert not any("FDSTOREREMOVE" in msg for msg in m.messages), m.messages
        busy.close()
        start(d, m, [memfd], ["tokens"])
        m.drain()
        assert "FDSTOREREMOVE=1\nFDNAME=tokens" in m.messages
        assert d.get().out.strip() == token
        assert sts.stats()["token_requests"] == 1
    finally:
        busy.close()
        m.close()
