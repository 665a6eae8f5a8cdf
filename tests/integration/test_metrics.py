"""Metrics: the OpenMetrics text of METRICS, read with a real parser
(python3-prometheus-client's), values that move with what the daemon does,
bounded labels, and who may read them."""

import os
import subprocess

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import PYTHON, as_user
from wire import DENIED, ERROR, REPLY, Conn, Reader

METRICS = 17


def scrape(d):
    c = Conn(d.sock)
    c.send(METRICS, 1, b"")
    t, _, body = c.read()
    c.close()
    assert t == METRICS | REPLY, (t, body)
    return Reader(body).str()


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
