"""Protocol version negotiation, both ways: HELLO as the daemon answers each
range; a client from before version 2 (0.1.0, built from git) against this
daemon; this client against a daemon from before version 2; and requests the
daemon does not list, refused by the client before they are sent."""

import errno
import os
import shutil
import struct
import subprocess
import tempfile

import pytest

from conftest import SECRET, TOP, VERSION, frame, jwt_claims, read_frame

# The last commit whose daemon and client speak protocol version 1 only
# (0.1.0, with COMPAT): the oldest peer a current build must work with.
OLD = "d46386e"
OLD_VERSION = "0.1.0"

HELLO, GET_TOKEN, STATUS, PING, COMPAT, ERROR = 1, 2, 3, 6, 10, 0xFF
COMPAT_RENEW, COMPAT_REVOKE = 11, 12
CHALLENGE, METRICS = 16, 17
UNSUPPORTED, VERSION_STATUS = 9, 10
# What this daemon answers: HELLO through METRICS.
HANDLED = set(range(HELLO, METRICS + 1))
# A request type no daemon had when this was written.
FUTURE = METRICS + 1


def hello(lo, hi, id_=0):
    return frame(HELLO, id_, struct.pack(">II", lo, hi))


def string(b):
    return struct.pack(">I", len(b)) + b


def hello_reply(sock, lo, hi):
    """HELLO lo..hi on sock; the reply frame."""
    sock.sendall(hello(lo, hi))
    return read_frame(sock)


def _make_env():
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "O", "SAN"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def old_build():
    """batchtok and batchtokd as of OLD, built in a temporary directory."""
    git = ["git", "-c", "safe.directory=*", "-C", TOP]
    if not shutil.which("git"):
        pytest.skip("no git: no 0.1.0 client or daemon to test against")
    have = subprocess.run(git + ["cat-file", "-e", OLD + "^{commit}"], capture_output=True)
    if have.returncode != 0:
        pytest.skip("commit %s is not in this checkout (a shallow clone?): no 0.1.0 "
                    "client or daemon to test against" % OLD)
    work = tempfile.mkdtemp(prefix="batchtok-old-")
    try:
        archive = subprocess.run(git + ["archive", OLD, "Makefile", "client", "proto",
                                        "daemon"], capture_output=True, check=True, timeout=60)
        subprocess.run(["tar", "-x", "-C", work], input=archive.stdout, check=True, timeout=60)
        make = subprocess.run(["make", "-s", "-C", work, "O=build", "build/batchtok",
                               "build/batchtokd"], capture_output=True, text=True,
                              env=_make_env(), timeout=600)
        assert make.returncode == 0, make.stderr[-3000:]
        yield {"batchtok": os.path.join(work, "build", "batchtok"),
               "batchtokd": os.path.join(work, "build", "batchtokd")}
    finally:
        shutil.rmtree(work)


@pytest.fixture(scope="module")
def future_request():
    """tests/integration/future_request.c built against this checkout's
    library sources: a request of any type through libbatchtok's own path."""
    work = tempfile.mkdtemp(prefix="batchtok-future-")
    try:
        prog = os.path.join(work, "future_request")
        src = [os.path.join(TOP, p) for p in
               ("tests/integration/future_request.c", "client/status_format.c",
                "client/daemon_conn.c", "proto/buf.c", "proto/msg.c", "proto/duration.c")]
        cc = subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-D_GNU_SOURCE",
                             "-Wall", "-Werror", "-o", prog] + src,
                            capture_output=True, text=True, timeout=120)
        assert cc.returncode == 0, cc.stderr
        yield prog
    finally:
        shutil.rmtree(work)


def ask_future(prog, sock, type_):
    """(begin's result and message, ping's result and text) from future_request."""
    p = subprocess.run([prog, sock, str(type_)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p
    begin, ping = p.stdout.splitlines()
    b = begin.split(" ", 2)
    g = ping.split(" ", 2)
    return (int(b[1]), b[2]), (int(g[1]), g[2])


def test_hello_answers_each_range(make_daemon):
    d = make_daemon()
    server = ("batchtokd " + VERSION).encode()

    # A client from before version 2 asks for 1..1 and gets version 1's
    # reply exactly: version and server, nothing behind them.
    s = d.connect_raw()
    assert hello_reply(s, 1, 1) == (HELLO | 0x80, 0, struct.pack(">I", 1) + string(server))
    s.close()

    # 1..2, 2..2 and ranges reaching past 2 get version 2, with the list of
    # request types the daemon answers.
    for lo, hi in ((1, 2), (2, 2), (1, 9), (2, 0xFFFFFFFF)):
        s = d.connect_raw()
        t, i, body = hello_reply(s, lo, hi)
        assert (t, i) == (HELLO | 0x80, 0)
        assert body[:4] == struct.pack(">I", 2)
        assert body[4:-8] == string(server)
        (requests,) = struct.unpack(">Q", body[-8:])
        assert {b for b in range(64) if requests >> b & 1} == HANDLED
        s.close()

    # No common version, or an empty range: ERROR VERSION, and the
    # connection is closed.
    for lo, hi in ((3, 4), (0, 0), (2, 1)):
        s = d.connect_raw()
        t, i, body = hello_reply(s, lo, hi)
        assert t == ERROR and struct.unpack(">I", body[:4])[0] == VERSION_STATUS
        assert b"protocol versions 1 to 2" in body
        assert read_frame(s) is None
        s.close()


def test_the_list_is_what_the_daemon_answers(make_daemon):
    """Every request type 2..63 after HELLO 1..2: the daemon answers "unknown
    request type" exactly for those its HELLO reply does not list. Each body
    is one byte, malformed for every request, so that none has an effect."""
    d = make_daemon()
    s = d.connect_raw()
    t, _, body = hello_reply(s, 1, 2)
    (requests,) = struct.unpack(">Q", body[-8:])
    for type_ in range(2, 64):
        s.sendall(frame(type_, type_, b"\x00"))
        t, i, body = read_frame(s)
        assert i == type_
        unknown = t == ERROR and body[:4] == struct.pack(">I", UNSUPPORTED) \
            and b"unknown request type" in body
        assert unknown == (not requests >> type_ & 1), (type_, body)
        if unknown:
            assert body[8:].decode() == ("unknown request type %d: not supported by this "
                                         "batchtokd (%s): upgrade batchtokd" % (type_, VERSION))
    s.close()


def test_client_refuses_a_request_the_daemon_does_not_list(make_daemon, future_request):
    d = make_daemon()
    # Not listed: refused by the library, and the connection goes on.
    begin, ping = ask_future(future_request, d.sock, FUTURE)
    assert begin == (-errno.EOPNOTSUPP, "request type %d is not supported by this batchtokd "
                     "(%s): upgrade batchtokd" % (FUTURE, VERSION))
    assert ping == (0, "batchtokd " + VERSION)
    # Listed: begin() lets it go.
    begin, ping = ask_future(future_request, d.sock, STATUS)
    assert begin == (0, "")
    assert ping == (0, "batchtokd " + VERSION)


def test_old_client_with_this_daemon(make_daemon, old_build):
    """batchtok 0.1.0 asks for version 1 only and works unchanged."""
    d = make_daemon()
    old = old_build["batchtok"]

    def run(*args):
        return subprocess.run([old, "-S", d.sock] + list(args), capture_output=True,
                              text=True, timeout=60)

    r = run("get")
    assert r.returncode == 0, r
    assert jwt_claims(r.stdout.strip())["aud"] == "https://batch.core.windows.net/"
    r = run("status")
    assert r.returncode == 0, r
    assert "batch" in r.stdout
    r = run("ping")
    assert (r.returncode, r.stdout) == (0, "batchtokd %s\n" % VERSION), r


def test_this_client_with_an_old_daemon(make_daemon, old_build, future_request):
    """batchtokd 0.1.0 accepts HELLO 1..2 and answers version 1 with no list:
    get, status and ping work, and a request newer than version 1 is refused
    by the client with "not supported by this batchtokd", never sent."""
    d = make_daemon(start=False)
    d.start(old_build["batchtokd"])

    s = d.connect_raw()
    server = ("batchtokd " + OLD_VERSION).encode()
    assert hello_reply(s, 1, 2) == (HELLO | 0x80, 0, struct.pack(">I", 1) + string(server))
    s.close()

    r = d.get()
    assert r.rc == 0, r
    assert jwt_claims(r.out.strip())["aud"] == "https://batch.core.windows.net/"
    r = d.run("status")
    assert r.rc == 0, r
    assert "batch" in r.out
    r = d.run("ping")
    assert (r.rc, r.out) == (0, "batchtokd %s\n" % OLD_VERSION), r

    begin, ping = ask_future(future_request, d.sock, FUTURE)
    assert begin == (-errno.EOPNOTSUPP, "request type %d is not supported by this batchtokd "
                     "(%s): upgrade batchtokd" % (FUTURE, OLD_VERSION))
    assert ping == (0, "batchtokd " + OLD_VERSION)
    # Had it been sent, the old daemon would have answered UNSUPPORTED (and
    # the library would have said the same): what it says to a raw client.
    s = d.connect_raw()
    hello_reply(s, 1, 2)
    s.sendall(frame(FUTURE, 5))
    t, i, body = read_frame(s)
    assert (t, i) == (ERROR, 5) and body[:4] == struct.pack(">I", UNSUPPORTED)
    assert b"unknown request type %d" % FUTURE in body
    s.close()
    assert SECRET not in d.read_log()


def test_exec_compat_with_an_old_daemon(make_daemon, old_build):
    """batchtokd 0.1.0 has no COMPAT_RENEW or COMPAT_REVOKE: exec --compat
    still runs the command and exits with its status; the capability
    cannot be given back there and expires on its own, quietly."""
    d = make_daemon(start=False, compat_endpoint="127.0.0.1:0")
    d.start(old_build["batchtokd"])
    r = d.run("exec", "--compat", "--", "sh", "-c", 'test -n "$IDENTITY_HEADER" && exit 4')
    assert (r.rc, r.err) == (4, ""), r
