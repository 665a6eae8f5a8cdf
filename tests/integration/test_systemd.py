"""systemd integration without a running systemd: notifications captured from
a test NOTIFY_SOCKET, a socket passed the way socket activation passes it, and
the client side's promise to need libc alone."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import BATCHTOK, BATCHTOKD, BUILD, SANITIZED, accepts, wait_for


def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    return s, path


def messages_until(sock, needle, limit=20):
    got = []
    for _ in range(limit):
        msg = sock.recv(4096).decode()
        got.append(msg)
        if needle in msg:
            return got
    raise AssertionError("no %r in %r" % (needle, got))


def test_notify_ready_reloading_stopping_watchdog(make_daemon, tmp_path):
    ns, path = notify_socket(tmp_path)
    d = make_daemon(start=False, env={"WATCHDOG_USEC": "200000"})
    d.env["NOTIFY_SOCKET"] = path
    d.start()
    got = messages_until(ns, "READY=1")
    ready = [m for m in got if "READY=1" in m][0]
    assert "STATUS=1 identities" in ready
    # WatchdogSec=0.2s: pinged every 100 ms.
    messages_until(ns, "WATCHDOG=1")
    messages_until(ns, "WATCHDOG=1")
    d.hup()
    got = messages_until(ns, "RELOADING=1")
    assert "MONOTONIC_USEC=" in got[-1]
    messages_until(ns, "READY=1")
    d.proc.send_signal(signal.SIGTERM)
    messages_until(ns, "STOPPING=1")
    assert d.proc.wait(10) == 0
    ns.close()


def test_socket_activation_uses_the_passed_socket(make_daemon, tmp_path):
    d = make_daemon(start=False)
    sock = str(tmp_path / "activated.sock")
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, BATCHTOKD, "-c", d.conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(sock), 10, what="the activation socket")
        # The first connection starts the daemon, which answers on the
        # inherited socket and creates none of its own.
        r = subprocess.run([BATCHTOK, "-S", sock, "get"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(d.sock)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            out = p.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[1]
    assert "using the socket passed by systemd" in out


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return sorted(l.split("[")[1].split("]")[0] for l in out.splitlines() if "(NEEDED)" in l)


def test_client_side_needs_libc_only():
    assert needed(BATCHTOK) == ["libc.so.6"] or set(needed(BATCHTOK)) <= {
        "libc.so.6", "libasan.so.8", "libubsan.so.1"}
    lib = needed(os.path.join(BUILD, "libbatchtok.so"))
    assert set(lib) <= {"libc.so.6", "libasan.so.8", "libubsan.so.1"}, lib
    exported = subprocess.run(["nm", "-D", "--defined-only",
                               os.path.join(BUILD, "libbatchtok.so")],
                              capture_output=True, text=True).stdout
    names = [l.split()[-1] for l in exported.splitlines() if " T " in l]
    assert names and all(n.startswith("batchtok_") for n in names), names


def make_install(tmp_path):
    """make install PREFIX=/opt/bt DESTDIR=tmp_path/root; returns DESTDIR."""
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dest = str(tmp_path / "root")
    subprocess.run(["make", "-s", "-C", top, "O=" + BUILD, "install", "PREFIX=/opt/bt",
                    "DESTDIR=" + dest], check=True, capture_output=True)
    for f in ("opt/bt/bin/batchtok", "opt/bt/sbin/batchtokd", "opt/bt/lib/libbatchtok.so.0",
              "opt/bt/lib/libbatchtok.a", "opt/bt/include/batchtok.h",
              "opt/bt/lib/pkgconfig/batchtok.pc", "opt/bt/lib/systemd/system/batchtokd.socket",
              "etc/batchtok/batchtokd.conf.example", "opt/bt/lib/sysusers.d/batchtok.conf",
              "opt/bt/lib/tmpfiles.d/batchtok.conf", "opt/bt/share/man/man1/batchtok.1",
              "opt/bt/share/man/man5/batchtokd.conf.5", "opt/bt/share/man/man7/batchtok-protocol.7",
              "opt/bt/share/man/man8/batchtokd.8"):
        assert os.path.exists(os.path.join(dest, f)), f
    with open(os.path.join(dest, "opt/bt/lib/pkgconfig/batchtok.pc")) as f:
        assert "libdir=/opt/bt/lib" in f.read()
    # The drop-in directory, empty.
    assert os.listdir(os.path.join(dest, "etc/batchtok/batchtokd.conf.d")) == []
    return dest


def test_make_install_honours_prefix_and_destdir(tmp_path):
    make_install(tmp_path)


# A program written from batchtok.h alone, built with pkg-config batchtok.
PKGCONFIG_PROGRAM = r'''
#include <batchtok.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	struct batchtok_request req = {.resource = "https://batch.core.windows.net/"};
	struct batchtok_token *t = NULL;
	batchtok *bt = NULL;
	int r;

	(void)argc;
	if ((r = batchtok_new(&bt)) < 0 || (r = batchtok_connect(bt, argv[1])) < 0 ||
	    (r = batchtok_get_token(bt, &req, &t)) < 0) {
		fprintf(stderr, "%d %s\n", r, bt ? batchtok_error(bt) : "");
		return 1;
	}
	printf("%s\n", t->access_token);
	batchtok_token_free(t);
	batchtok_free(bt);
	return 0;
}
'''


@pytest.mark.skipif(SANITIZED, reason="the ASan build's library needs the ASan runtime in "
                    "the program: the plain pass builds it as users do")
def test_program_built_with_pkg_config_alone(make_daemon, sts, tmp_path):
    """The installed header and batchtok.pc are all a C program needs."""
    dest = make_install(tmp_path)
    src = tmp_path / "prog.c"
    src.write_text(PKGCONFIG_PROGRAM)
    env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=dest,
               PKG_CONFIG_LIBDIR=os.path.join(dest, "opt/bt/lib/pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "batchtok"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert any(f.startswith("-I" + dest) for f in flags), flags
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-o", str(tmp_path / "prog"),
                    str(src)] + flags, check=True, capture_output=True)
    d = make_daemon()
    r = subprocess.run([str(tmp_path / "prog"), d.sock], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ,
                                            LD_LIBRARY_PATH=os.path.join(dest, "opt/bt/lib")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == d.get().out.strip()


def parse_journal(datagram):
    """Fields of one native-protocol journal message: KEY=VALUE lines, or
    KEY, a 64-bit little-endian length and the value for binary data."""
    import struct
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            k, v = line, datagram[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode()
    return fields


def test_journal_structured_fields(make_daemon, sts, tmp_path):
    """Under systemd ($JOURNAL_STREAM names stderr) the daemon logs to the
    journal with structured fields; here the journal is a socket of ours,
    bound where the daemon looks for it in a private mount namespace."""
    import pytest
    from conftest import SECRET
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("needs a private mount namespace (root with CAP_SYS_ADMIN)")
    fake_run = tmp_path / "run"
    (fake_run / "systemd" / "journal").mkdir(parents=True)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(fake_run / "systemd" / "journal" / "socket"))
    journal.settimeout(10)
    d = make_daemon({"batch": {"default": "yes"}, "bad": {"secret": "Wr0ng-S3cret-value"}}, start=False,
                    socket_mode="0666")
    log = open(d.logpath, "a")
    st = os.fstat(log.fileno())
    env = dict(d.env, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    d.log = log
    d.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               'mount --bind "$0" /run && exec "$@"', str(fake_run),
                               BATCHTOKD, "-c", d.conf], stdout=log, stderr=log, env=env)
    wait_for(lambda: accepts(d.sock) or d.proc.poll() is not None, 10,
             what="the daemon to accept connections")
    r = d.get()
    assert r.rc == 0, r
    token = r.out.strip()
    assert d.get("-i", "bad").rc == 6
    assert d.get(user=65534).rc == 4
    msgs = []

    def have(pred):
        while not any(pred(m) for m in msgs):
            msgs.append(parse_journal(journal.recv(65536)))
        return next(m for m in msgs if pred(m))

    audit = have(lambda m: m.get("BATCHTOK_TOKEN_FINGERPRINT") and
                 m["MESSAGE"].startswith("handed token"))
    assert audit["PRIORITY"] == "7" and audit["SYSLOG_IDENTIFIER"] == "batchtokd"
    assert audit["BATCHTOK_IDENTITY"] == "batch"
    assert audit["BATCHTOK_RESOURCE"] == "https://batch.core.windows.net/"
    assert audit["BATCHTOK_CLIENT_UID"] == "0" and int(audit["BATCHTOK_CLIENT_PID"]) > 0
    # The program, where the daemon could attest it (SO_PEERPIDFD): the
    # client's executable, and its unit and invocation when it has them.
    if "BATCHTOK_EXE" in audit:
        assert audit["BATCHTOK_EXE"] == os.path.realpath(BATCHTOK), audit
        assert audit["BATCHTOK_EXE"] in audit["MESSAGE"], audit
    if "BATCHTOK_INVOCATION_ID" in audit:
        assert re.fullmatch("[0-9a-f]{32}", audit["BATCHTOK_INVOCATION_ID"]), audit
    denial = have(lambda m: m["MESSAGE"].startswith("denied identity"))
    assert denial["PRIORITY"] == "4" and denial["BATCHTOK_CLIENT_UID"] == "65534"
    rejected = have(lambda m: m.get("BATCHTOK_AADSTS") == "AADSTS7000215")
    assert rejected["PRIORITY"] == "3" and rejected["BATCHTOK_IDENTITY"] == "bad"
    d.stop()
    journal.settimeout(0.5)
    try:
        while True:
            msgs.append(parse_journal(journal.recv(65536)))
    except socket.timeout:
        pass
    text = repr(msgs)
    assert token not in text
    assert SECRET not in text and "Wr0ng-S3cret-value" not in text
    # Nothing went to stderr: the journal had it all.
    assert d.read_log() == ""
    journal.close()
