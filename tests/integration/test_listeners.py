"""The listeners under pressure from clients: per-uid quotas and idle
timeouts on the socket and the compat endpoint, another user's flood of idle
connections, pipelined requests past the output limit, and clients waiting
when the daemon stops. Every wait is bounded; nothing sleeps for time to
pass."""

import json
import os
import select
import socket
import stat
import struct
import subprocess
import time
import urllib.parse

import pytest

from conftest import PYTHON, SANITIZED, as_user, frame, hello, read_frame, wait_for
from test_compat import _end_compat_programs, compat_env  # noqa: F401

NOBODY = 65534
ERROR, HELLO_REPLY, PING, PING_REPLY = 0xFF, 0x81, 6, 0x86
BT_E_UNAVAILABLE, BT_E_BUSY = 7, 11


def get_token_frame(id_, identity="batch"):
    name = identity.encode()
    body = struct.pack(">I", len(name)) + name + struct.pack(">IIII", 0, 0, 0, 0)
    return frame(2, id_, body)


def error_of(f):
    """(status, message) of an ERROR frame's body."""
    status, n = struct.unpack(">II", f[2][:8])
    return status, f[2][8:8 + n].decode()


def status_of(d):
    r = d.run("status", "-o", "json")
    assert r.rc == 0, r
    return json.loads(r.out)


def compat_url(d):
    """The endpoint and capability of a program kept running under
    `batchtok exec --compat` until the test ends (the capability is given
    back when the program ends)."""
    env = compat_env(d)
    return env["IDENTITY_ENDPOINT"], env["IDENTITY_HEADER"]


def compat_get(endpoint, header):
    """One token request on a fresh connection: (status, JSON body)."""
    import http.client
    u = urllib.parse.urlsplit(endpoint)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", u.path + "?api-version=2019-08-01&resource=https://batch.core.windows.net/",
              headers={"X-IDENTITY-HEADER": header})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    return r.status, body


def wait_closed(s, timeout=15):
    """True once the daemon has closed s (EOF), within timeout seconds."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


# A process of another user that opens N connections to the socket (each
# sends HELLO) and N to the compat endpoint, reports what each got, and holds
# the ones the daemon kept until its stdin closes.
FLOOD = r"""
import json, select, socket, struct, sys, time
sock, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hello = struct.pack(">IBIII", 13, 1, 0, 1, 1)
units, tcps = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    try:
        s.sendall(hello)
    except BrokenPipeError:
        pass  # refused and closed already: its BUSY frame waits to be read
    units.append(s)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.connect((host, port))
    tcps.append(t)
# Each socket connection answers HELLO or says BUSY; a refused compat one
# answers 503 before anything is asked, the others stay silent.
res = {"hello": 0, "busy": 0, "busy_msg": "", "http503": 0, "http_msg": "", "closed": 0}
def ready(socks):
    # poll, not select: the descriptors go past FD_SETSIZE.
    p = select.poll()
    for s in socks.values():
        p.register(s, select.POLLIN)
    return [socks[fd] for fd, _ in p.poll(1000)]
pending = {s.fileno(): s for s in units}
deadline = time.monotonic() + 60
while pending and time.monotonic() < deadline:
    for s in ready(pending):
        del pending[s.fileno()]
        data = b""
        s.settimeout(10)
        while len(data) < 9:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if data[4:5] == b"\x81":
            res["hello"] += 1
        elif data[4:5] == b"\xff":
            res["busy"] += 1
            res["busy_msg"] = data[17:].decode(errors="replace")
            s.close()
want_503 = int(sys.argv[5])
pending = {t.fileno(): t for t in tcps}
while res["http503"] + res["closed"] < want_503 and time.monotonic() < deadline:
    for t in ready(pending):
        del pending[t.fileno()]
        t.settimeout(10)
        data = b""
        while True:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 503"):
            res["http503"] += 1
            res["http_msg"] = data.split(b"\r\n\r\n", 1)[1].decode()
        elif not data:
            res["closed"] += 1  # refused past the lingering refusals' cap
        t.close()
print(json.dumps(res), flush=True)
sys.stdin.read()
"""


def flood(d, shared, n, refused_tcp):
    endpoint, _ = compat_url(d)
    u = urllib.parse.urlsplit(endpoint)
    p = subprocess.Popen([PYTHON, "-c", FLOOD, d.sock, u.hostname, str(u.port), str(n),
                          str(refused_tcp)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, **as_user(NOBODY))
    line = p.stdout.readline()
    assert line, "the flooding process failed"
    return p, json.loads(line)


def low_nofile_wrapper(tmp_path):
    """A program that starts batchtokd with the usual soft limit of 1024
    open files (the hard limit stays), as systemd starts services."""
    from conftest import BATCHTOKD
    path = os.path.join(str(tmp_path), "batchtokd-1024")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nulimit -S -n 1024\nexec %s \"$@\"\n" % BATCHTOKD)
    os.chmod(path, 0o755)
    return path


def test_another_uid_flooding_both_listeners_does_not_lock_others_out(make_daemon, shared,
                                                                      tmp_path):
    import resource
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 8000:
        import pytest
        pytest.skip("the hard open-file limit is too low to hold the flood")
    # 1,500 connections held on each listener by one uid: 3,000 descriptors,
    # far past the soft limit the daemon is started with.
    d = make_daemon({"batch": {"allow_users": "nobody"}}, start=False,
                    compat_endpoint="127.0.0.1:0", max_clients_per_uid="1500",
                    socket_mode="0666")
    d.start(program=low_nofile_wrapper(tmp_path))
    token = d.get().out
    assert "open-file limit raised from 1024 to" in d.read_log()
    p, res = flood(d, shared, 1500, 0)
    try:
        assert res["hello"] == 1500 and res["busy"] == 0, res
        st = status_of(d)
        assert st["compat_clients"] == 1500, st
        # Everyone else is served, on both listeners.
        assert d.get().out == token
        endpoint, header = compat_url(d)
        status, body = compat_get(endpoint, header)
        assert status == 200 and body["access_token"] == token.strip(), body
    finally:
        p.stdin.close()
        p.wait(30)
    assert "Too many open files" not in d.read_log()


def test_max_clients_per_uid_caps_each_listener(make_daemon, shared):
    # The default cap of 256, against 2,000 connections on each listener.
    d = make_daemon({"batch": {"allow_users": "nobody"}}, compat_endpoint="127.0.0.1:0",
                    socket_mode="0666")
    token = d.get().out
    p, res = flood(d, shared, 2000, 2000 - 256)
    try:
        assert res["hello"] == 256 and res["busy"] == 2000 - 256, res
        assert "max_clients_per_uid (256)" in res["busy_msg"], res
        # Refusals linger to deliver their 503, at most 1,024 at once; the
        # rest are closed unanswered.
        assert res["http503"] + res["closed"] == 2000 - 256 and res["http503"] >= 1, res
        body = json.loads(res["http_msg"])
        assert body["error"] == "service_unavailable", body
        assert "max_clients_per_uid (256)" in body["error_description"], body
        st = status_of(d)
        assert st["clients"] == 256 + 1 and st["compat_clients"] == 256, st
        # Another user (root here) is served on both listeners.
        assert d.get().out == token
        endpoint, header = compat_url(d)
        status, body = compat_get(endpoint, header)
        assert status == 200, body
        # The capped user is told why, and the journal is spared the flood.
        r = d.run("ping", user=NOBODY)
        assert r.rc == 1 and "max_clients_per_uid" in r.err, r
        assert d.read_log().count("max_clients_per_uid (256) already") <= 40
    finally:
        p.stdin.close()
        p.wait(30)
    # Once they are closed the user may connect again.
    wait_for(lambda: d.run("ping", user=NOBODY).rc == 0, 10, what="nobody's slots freed")


def test_idle_connections_are_closed_but_waiting_ones_are_not(make_daemon, sts):
    d = make_daemon(compat_endpoint="127.0.0.1:0", client_idle_timeout="1s")
    idle = d.connect_raw()
    idle.sendall(hello())
    assert read_frame(idle)[0] == HELLO_REPLY
    endpoint, _ = compat_url(d)
    u = urllib.parse.urlsplit(endpoint)
    tcp = socket.create_connection((u.hostname, u.port), timeout=10)
    # A request waits 3 s for the token service: longer than the timeout,
    # yet its connection stays and gets the token.
    sts.fault("slow", delay=3, count=1)
    busy = d.connect_raw()
    busy.sendall(hello() + get_token_frame(1))
    assert read_frame(busy)[0] == HELLO_REPLY
    busy.settimeout(20)
    f = read_frame(busy)
    assert f is not None and f[:2] == (0x82, 1), f
    assert wait_closed(idle) and wait_closed(tcp)
    assert wait_closed(busy)
    assert d.run("ping").rc == 0


def unsent(s):
    """Bytes s has sent that the daemon has not read yet."""
    import array
    import fcntl
    import termios
    n = array.array("i", [0])
    fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, n)
    return n[0]


# daemon/front/server.h: no frame is taken while this much output is unsent.
TAKE_MAX = 64 << 10


def test_pipelined_requests_past_the_output_limit_are_all_answered(make_daemon):
    """Bursts of PINGs written before any reply is read, each a little
    longer than the last: the first burst whose replies fill the daemon's
    output (SERVER_TAKE_MAX, 64 KiB unsent) stops its reading in the middle
    of the last frames it read, with nothing more to come from the client.
    Every burst must be answered whole."""
    d = make_daemon()
    s = d.connect_raw()
    # Room for a whole burst in the kernel, so that it is written before
    # anything is read (SO_SNDBUFFORCE, as root; SO_SNDBUF otherwise).
    try:
        s.setsockopt(socket.SOL_SOCKET, 32, 16 << 20)
    except PermissionError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
    s.sendall(hello() + frame(PING, 1))
    assert read_frame(s)[0] == HELLO_REPLY
    f = read_frame(s)
    size = 9 + len(f[2])  # a PING reply: length, type, id, text
    s.settimeout(20)
    k = TAKE_MAX // size
    while True:
        s.sendall(frame(PING, 2) * k)
        # Until the daemon has read the whole burst, or has stopped reading
        # (its output is full): then it must go on once the replies are read.
        try:
            wait_for(lambda: unsent(s) == 0, 3, step=0.005, what="the burst read")
            read_all = True
        except AssertionError:
            read_all = False
        want = k * size
        while want:
            chunk = s.recv(min(want, 1 << 20))
            assert chunk, "connection closed"
            want -= len(chunk)
        if not read_all:
            break
        k += 200
    # The bursts went past the point where the output filled.
    assert k * size > TAKE_MAX, k


def test_clients_waiting_when_the_daemon_stops_are_told(make_daemon, sts):
    d = make_daemon()
    sts.fault("slow", delay=30, count=1)
    s = d.connect_raw()
    s.sendall(hello() + get_token_frame(7))
    assert read_frame(s)[0] == HELLO_REPLY
    wait_for(lambda: sts.stats()["token_requests"] >= 1, 10, what="the token request")
    assert d.stop() == 0
    s.settimeout(10)
    f = read_frame(s)
    assert f is not None and f[:2] == (ERROR, 7), f
    status, msg = error_of(f)
    assert status == BT_E_UNAVAILABLE and "stopping" in msg, (status, msg)


# As another user: N GET_TOKEN requests on one connection; prints how many
# were denied.
DENIED = r"""
import socket, struct, sys
n = int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
name = b"batch"
get = struct.pack(">I", len(name)) + name + struct.pack(">IIII", 0, 0, 0, 0)
req = struct.pack(">IBIII", 13, 1, 0, 1, 1)
for i in range(n):
    req += struct.pack(">IBI", 5 + len(get), 2, i + 1) + get
s.sendall(req)
s.settimeout(20)
buf, frames = b"", 0
while frames < n + 1:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
    while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
        k = struct.unpack(">I", buf[:4])[0]
        if buf[4] == 0xFF and struct.unpack(">I", buf[9:13])[0] == 3:
            frames += 1
        elif buf[4] == 0x81:
            frames += 1
        buf = buf[4 + k:]
print(frames - 1)
"""


def test_a_flood_of_denials_is_logged_once_a_burst(make_daemon):
    d = make_daemon({"batch": {"allow_users": "root"}}, socket_mode="0666")
    p = subprocess.run([PYTHON, "-c", DENIED, d.sock, "100"], capture_output=True, text=True,
                       timeout=60, **as_user(NOBODY))
    assert p.returncode == 0 and p.stdout.strip() == "100", (p.stdout, p.stderr)
    # Every request was refused, and the log names the first 20 (the burst
    # of LOG_LIMIT_BURST); the rest are summed up when the interval ends.
    assert d.read_log().count("denied identity batch") == 20, d.read_log()[-2000:]
    # An allowed user is still served, and still logged normally.
    assert d.get().rc == 0
    # Another user's first denial of the interval is logged all the same:
    # one user's flood hides no one else's.
    r = d.get(user=NOBODY + 1)  # not allowed either; any uid but nobody's
    assert r.rc == 4, r
    assert "uid %d" % (NOBODY + 1) in d.read_log(), d.read_log()[-2000:]
    assert d.read_log().count("denied identity batch") == 21


# Opens N connections to the compat endpoint as another user, reads nothing,
# and holds them (refused ones too) until its stdin closes.
HOLD_TCP = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = [socket.create_connection((host, port)) for _ in range(n)]
print("held", flush=True)
sys.stdin.read()
"""


def test_refused_connections_take_no_slot_of_others(make_daemon):
    """A user over max_clients_per_uid whose refused connections are kept open
    (unread, so they linger to deliver their 503) fills no slot of
    max_clients: another user is still served."""
    d = make_daemon({"batch": {"allow_users": "nobody"}}, compat_endpoint="127.0.0.1:0",
                    max_clients="300", socket_mode="0666")
    endpoint, header = compat_url(d)
    u = urllib.parse.urlsplit(endpoint)
    p = subprocess.Popen([PYTHON, "-c", HOLD_TCP, u.hostname, str(u.port), "600"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         **as_user(NOBODY))
    try:
        assert p.stdout.readline() == "held\n"
        status, body = compat_get(endpoint, header)
        assert status == 200, body
        assert status_of(d)["compat_clients"] <= 256 + 1
    finally:
        p.stdin.close()
        p.wait(30)


def test_a_compat_client_that_does_not_read_is_closed(make_daemon):
    """Requests pipelined by a client that never reads its responses: once
    the daemon's write cannot finish, the connection is given as long as an
    idle one (client_idle_timeout) and closed; it used to stay for good,
    holding its slot and megabytes of socket buffer."""
    d = make_daemon(compat_endpoint="127.0.0.1:0", client_idle_timeout="1s")
    endpoint, _ = compat_url(d)
    u = urllib.parse.urlsplit(endpoint)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((u.hostname, u.port))
    s.setblocking(False)
    # Each is answered 401 (no capability) and the connection kept open.
    req = b"GET /msi/token?api-version=2019-08-01&resource=r HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    burst, sent = req * 20000, 0
    deadline = time.monotonic() + 10
    while sent < len(burst) and time.monotonic() < deadline:
        try:
            sent += s.send(burst[sent:])
        except BlockingIOError:
            select.select([], [s], [], 0.1)
    assert sent > 0
    wait_for(lambda: status_of(d)["compat_clients"] == 0, 15,
             what="the daemon to close the connection that does not read")
    s.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator keeps freed memory in quarantine: "
                    "the daemon's RSS says nothing about its buffers there")
def test_clients_that_do_not_read_hold_little_memory(make_daemon):
    """Connections that pipeline STATUS requests and never read: the daemon
    stops taking frames once 64 KiB of a client's output is unsent, where it
    went on to 2 MiB (about 475 MB for one uid's 256 connections)."""
    d = make_daemon()
    before = rss_kib(d.proc.pid)
    socks = []
    burst = frame(3, 1) * 20000  # STATUS
    for _ in range(32):
        s = d.connect_raw()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(hello())
        s.setblocking(False)
        sent, deadline = 0, time.monotonic() + 2
        while sent < len(burst) and time.monotonic() < deadline:
            try:
                sent += s.send(burst[sent:])
            except BlockingIOError:
                if not select.select([], [s], [], 0.2)[1]:
                    break  # the daemon stopped reading
        socks.append(s)
    # Until the daemon has stopped reading from every one of them: what it
    # has not read stays the same over a few looks.
    looks = []
    def settled():
        looks.append([unsent(s) for s in socks])
        return len(looks) >= 5 and all(x == looks[-1] for x in looks[-5:])
    wait_for(settled, 20, step=0.05, what="the daemon to stop reading")
    grown = rss_kib(d.proc.pid) - before
    for s in socks:
        s.close()
    assert grown < 24 * 1024, "the daemon grew by %d KiB" % grown
