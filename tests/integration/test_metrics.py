"""Metrics: the OpenMetrics text of METRICS, read with a real parser
(python3-prometheus-client's), values that move with what the daemon does,
bounded labels, and who may read them."""

import os
import subprocess

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import PYTHON, as_user
from wire import DENIED, ERROR, REPLY

METRICS = 17


def scrape(d):
    """batchtok metrics, as node_exporter's textfile collector is fed."""
    r = d.run("metrics")
    assert r.rc == 0 and r.out.endswith("# EOF\n"), r
    return r.out


def samples(text):
    """{(name, frozenset(labels)): value} of every sample, parsed strictly."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def test_metrics_parse_and_move(make_daemon, sts):
    d = make_daemon({"batch": {"allow_users": "65534"}, "bad": {"secret": "wrong"}},
                    socket_mode="0666")
    m0 = samples(scrape(d))
    assert value(m0, "batchtok_build_info", version=d.run("ping").out.split()[1]) == 1
    assert value(m0, "batchtok_upstream_requests_total", service="entra") == 0
    assert value(m0, "batchtok_identity_authenticated", identity="batch") == 0
    # Three requests for one token: one miss, two hits, one upstream request.
    for _ in range(3):
        assert d.get("-i", "batch").rc == 0
    assert d.get("-i", "bad").rc == 6
    m = samples(scrape(d))
    assert value(m, "batchtok_upstream_requests_total", service="entra") == 2
    assert value(m, "batchtok_upstream_responses_total", service="entra", status="200") == 1
    assert value(m, "batchtok_upstream_responses_total", service="entra", status="401") == 1
    assert value(m, "batchtok_upstream_aadsts_total", code="AADSTS7000215") == 1
    assert value(m, "batchtok_cache_requests_total", result="hit") == 2
    assert value(m, "batchtok_cache_requests_total", result="miss") == 2
    assert value(m, "batchtok_refresh_duration_seconds_count") == 2
    assert value(m, "batchtok_refresh_duration_seconds_bucket", le="+Inf") == 2
    assert value(m, "batchtok_identity_authenticated", identity="batch") == 1
    assert value(m, "batchtok_identity_authenticated", identity="bad") == 0
    expiry = value(m, "batchtok_token_expiry_seconds", identity="batch",
                   resource="https://batch.core.windows.net/")
    assert 3000 < expiry <= 3600
    assert value(m, "batchtok_connections", listener="socket") >= 1
    assert value(m, "batchtok_connections_accepted_total", listener="socket") >= 5
    # A denial, counted by reason and under the caller's unit.
    assert d.get("-i", "bad", user=65534).rc == 4
    m2 = samples(scrape(d))
    assert value(m2, "batchtok_denials_total", reason="user") == \
        value(m, "batchtok_denials_total", reason="user") + 1
    units = {dict(k[1])["unit"] for k in m2 if k[0] == "batchtok_unit_requests_total"}
    assert units and all(len(u) < 300 for u in units)


def test_a_hostile_aadsts_code_is_counted_as_other(make_daemon, sts):
    """The token service chooses the codes in its answers: only codes
    batchtokd knows become label values."""
    d = make_daemon({"batch": {"client_id": "99999999-9999-9999-9999-999999999999"}})
    assert d.get().rc == 6  # unknown client: AADSTS700016, which batchtokd knows
    m = samples(scrape(d))
    codes = {dict(k[1])["code"] for k in m if k[0] == "batchtok_upstream_aadsts_total"}
    assert codes <= {"other", "AADSTS700016"}, codes


READ_METRICS = r"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wire import Conn, Reader
c = Conn(sys.argv[1])
c.send(17, 1, b"")
t, _, body = c.read()
r = Reader(body)
print(t, r.u32() if t == 0xff else len(r.str()))
"""


def test_metrics_are_for_admins_and_metrics_group(make_daemon, sts, shared, tmp_path):
    d = make_daemon(socket_mode="0666", metrics_group="nogroup")
    shared.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire.py"))
    path = tmp_path / "read_metrics.py"
    path.write_text(READ_METRICS)
    script = shared.copy(str(path), "read_metrics.py")

    def read_as(uid):
        r = subprocess.run([PYTHON, script, d.sock], capture_output=True, text=True,
                           timeout=30, **as_user(uid))
        assert r.returncode == 0, r
        return r.stdout.split()

    # nobody's group is nogroup, the metrics_group.
    t, n = read_as(65534)
    assert int(t) == METRICS | REPLY and int(n) > 1000
    assert read_as(65533) == [str(ERROR), str(DENIED)]
    assert "denied metrics to pid" in d.read_log()
    r = d.run("metrics", user=65533)
    assert r.rc == 4 and "metrics are for administrators and metrics_group" in r.err, r


def http_get(connect, path="/metrics", host="127.0.0.1", method="GET"):
    """(status, headers, body) of one request over the socket connect()
    returns."""
    s = connect()
    s.settimeout(15)
    extra = "Content-Length: 0\r\n" if method == "POST" else ""
    s.sendall(("%s %s HTTP/1.1\r\nHost: %s\r\nAccept: application/openmetrics-text\r\n%s\r\n"
               % (method, path, host, extra)).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return int(lines[0].split()[1]), lines[1:], body.decode()


def unix_connector(path):
    import socket

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s
    return connect


def tcp_connector(port):
    import socket
    return lambda: socket.create_connection(("127.0.0.1", port))


def metrics_url(d):
    import json
    return json.loads(d.run("status", "-o", "json").out)["metrics"]


def test_metrics_listen_on_a_unix_socket(make_daemon, sts, shared):
    from conftest import public_mkdtemp
    top = public_mkdtemp("batchtok-metrics-")
    path = os.path.join(top, "m", "metrics.sock")
    d = make_daemon(metrics_listen=path, metrics_group="nogroup")
    assert metrics_url(d) == "unix:" + path
    assert d.get().rc == 0
    status, headers, body = http_get(unix_connector(path))
    assert status == 200, body
    assert "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8" in headers
    m = samples(body)
    assert value(m, "batchtok_upstream_requests_total", service="entra") == 1
    assert value(m, "batchtok_connections_accepted_total", listener="metrics") == 1
    st = os.stat(path)
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == 65534
    # nogroup's members (nobody, by its primary group) read; others cannot
    # even connect.
    script = READ_UNIX.replace("PATH", repr(path))
    r = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=30,
                       **as_user(65534))
    assert r.stdout.startswith("HTTP/1.1 200 OK"), r
    r = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=30,
                       **as_user(65533))
    assert "PermissionError" in r.stderr, r
    d.stop()
    assert not os.path.exists(path)
    import shutil
    shutil.rmtree(top)


READ_UNIX = r"""
import socket
s = socket.socket(socket.AF_UNIX)
s.connect(PATH)
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
print(s.recv(100).decode().split("\r\n")[0])
"""


def test_metrics_listen_on_loopback(make_daemon, sts):
    d = make_daemon(metrics_listen="127.0.0.1:0")
    url = metrics_url(d)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    port = int(url.split(":")[2].split("/")[0])
    connect = tcp_connector(port)
    status, _, body = http_get(connect)
    assert status == 200
    samples(body)
    # A web page rebound to 127.0.0.1 names its own host: refused.
    assert http_get(connect, host="evil.example:%d" % port)[0] == 400
    assert http_get(connect, host="localhost:%d" % port)[0] == 200
    assert http_get(connect, path="/")[0] == 404
    assert http_get(connect, method="POST")[0] == 405


READ_TCP = r"""
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
print(s.recv(100).decode().split("\r\n")[0])
"""


def test_metrics_listen_on_loopback_knows_who_asks(make_daemon, sts):
    """Over TCP the uid owning the client's socket decides: nobody is no
    listed member of metrics_group (its primary group is not listed), so it
    gets 403; root reads."""
    d = make_daemon(metrics_listen="127.0.0.1:0", metrics_group="nogroup")
    port = int(metrics_url(d).split(":")[2].split("/")[0])
    r = subprocess.run([PYTHON, "-c", READ_TCP, str(port)], capture_output=True, text=True,
                       timeout=30, **as_user(65534))
    assert r.stdout.strip() == "HTTP/1.1 403 Forbidden", r
    assert http_get(tcp_connector(port))[0] == 200


def test_metrics_listen_bounds_connections_per_uid(make_daemon, sts):
    import socket
    d = make_daemon(metrics_listen="127.0.0.1:0")
    port = int(metrics_url(d).split(":")[2].split("/")[0])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    extra = socket.create_connection(("127.0.0.1", port))
    extra.settimeout(10)
    assert extra.recv(10) == b""  # closed at once: uid 0 holds 4
    extra.close()
    for s in held:
        s.close()
    assert "has 4 connections open already" in d.read_log()
    # Once they are gone a scrape works again.
    from conftest import wait_for

    def scraped():
        try:
            return http_get(tcp_connector(port))[0] == 200
        except (IndexError, OSError):  # closed unanswered: the slots are not free yet
            return False
    wait_for(scraped, 10, what="a free slot")


HOLD_TCP = r"""
import socket, sys
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(4)]
print(" ".join(s.recv(100).decode().split("\r\n")[0].split()[1] for s in held), flush=True)
"""


def test_who_may_not_read_holds_no_slot(make_daemon, sts):
    """Non-members are answered 403 as soon as they connect, so they cannot
    take the 32 connections and lock the scraper out (hostile review, issue
    16)."""
    d = make_daemon(metrics_listen="127.0.0.1:0")
    port = int(metrics_url(d).split(":")[2].split("/")[0])
    for uid in range(60001, 60009):  # 8 users x 4: every slot, were they kept
        r = subprocess.run([PYTHON, "-c", HOLD_TCP, str(port)], capture_output=True, text=True,
                           timeout=30, **as_user(uid))
        assert r.stdout.split() == ["403"] * 4, r
    assert http_get(tcp_connector(port))[0] == 200
    assert "metrics_listen: denied metrics to uid 60001" in d.read_log()


def test_without_a_group_the_metrics_socket_is_the_daemons_alone(make_daemon, sts, shared):
    from conftest import public_mkdtemp
    import shutil
    top = public_mkdtemp("batchtok-metrics-")
    path = os.path.join(top, "metrics.sock")
    try:
        make_daemon(metrics_listen=path)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    finally:
        shutil.rmtree(top)
