"""systemd integration without a running systemd: notifications captured from
a test NOTIFY_SOCKET, a socket passed the way socket activation passes it, and
the client side's promise to need libc alone."""

import os
import signal
import socket
import subprocess
import time

from conftest import BATCHTOK, BATCHTOKD, BUILD, wait_for


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


def test_make_install_honours_prefix_and_destdir(tmp_path):
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
