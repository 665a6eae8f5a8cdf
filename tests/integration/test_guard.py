"""The guard on the token services (imds_rate, imds_concurrency, entra_*):
per host, at most so many token requests in any one second and at once,
however many processes ask for however many resources, and a Retry-After
honoured for every identity that uses the host.

What the fake service counts: the most requests it handled at once (from a
request's arrival until its answer is written) and the most that arrived in
any one second (a sliding window); the tests compare counts, not timings."""

import calendar
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import BATCHTOK, BUILD, MI_CLIENT, OTHER_CLIENT, OTHER_SECRET, TOP, wait_for

# Fifty resources of one managed identity, four to a line: a config line
# holds 200 characters, and each resources = line adds to the list.
RESOURCES = ["https://r%02d.example.com/" % i for i in range(50)]
PROCESSES = 1000


def resources_value(resources):
    return "\nresources = ".join(", ".join(resources[i:i + 4])
                                 for i in range(0, len(resources), 4))


def mi(sts, **kw):
    o = {"credential": "managed-identity", "tenant": None, "client_id": None,
         "authority_host": None, "imds_endpoint": sts.imds_url,
         "resources": resources_value(RESOURCES)}
    o.update(kw)
    return o


@pytest.fixture(scope="module")
def burst():
    """tests/bench/burst.c linked with this build's libbatchtok.a: N
    processes that connect, wait for one another, then each ask once."""
    work = tempfile.mkdtemp(prefix="batchtok-burst-")
    try:
        prog = os.path.join(work, "burst")
        lib = os.path.join(BUILD, "libbatchtok.a")
        # The ASan+UBSan build's library needs their runtimes at link time.
        with open(lib, "rb") as f:
            san = ["-fsanitize=address,undefined"] if b"__asan_init" in f.read() else []
        cc = subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-D_GNU_SOURCE", "-Wall",
                             "-Werror"] + san +
                            ["-o", prog, os.path.join(TOP, "tests/bench/burst.c"), lib],
                            capture_output=True, text=True, timeout=120)
        assert cc.returncode == 0, cc.stderr
        yield prog
    finally:
        shutil.rmtree(work)


def run_burst(prog, d, n, identity, resources):
    r = subprocess.run([prog, d.sock, str(n), identity] + resources, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("delay, reached, cap", [(0, "imds_peak_1s", 20),
                                                 (0.2, "imds_max_concurrent", 5)],
                         ids=["fast-imds", "slow-imds"])
def test_a_thousand_processes_fifty_resources_stay_within_imds_limits(make_daemon, sts, burst,
                                                                      delay, reached, cap):
    """1,000 processes at once ask for 50 resources of one managed identity.
    IMDS sees exactly 50 requests, never more than 5 at once nor 20 in a
    second, and every process gets its token. A fast IMDS (answers at once)
    meets the rate cap; a slow one (0.2 s an answer) the concurrency cap
    too."""
    sts.fault("slow", target="imds", delay=delay)
    d = make_daemon({"node": mi(sts)}, max_clients_per_uid=PROCESSES + 100,
                    fetch_concurrency=64)
    rep = run_burst(burst, d, PROCESSES, "node", RESOURCES)
    st = sts.stats()
    print("burst:", rep, "imds:", {k: v for k, v in st.items() if k.startswith("imds_")})
    assert rep["ready"] == PROCESSES, rep
    assert rep["ok"] == PROCESSES and rep["failed"] == 0, rep
    assert st["imds_requests"] == len(RESOURCES), st["imds_requests"]
    assert st["imds_max_concurrent"] <= 5, st["imds_max_concurrent"]
    assert st["imds_peak_1s"] <= 20, st["imds_peak_1s"]
    # The cap was reached, or the counts above would prove nothing.
    assert st[reached] == cap, st[reached]


def test_without_the_guard_the_same_burst_exceeds_the_limits(make_daemon, sts, burst):
    """The control: with both caps off (0) and a fetcher pool wider than
    IMDS allows, the fake service does see more than 5 at once and more than
    20 in a second, so the test above measures what it claims to."""
    sts.fault("slow", target="imds", delay=0.2)
    d = make_daemon({"node": mi(sts)}, max_clients_per_uid=300, fetch_concurrency=64,
                    imds_rate=0, imds_concurrency=0)
    rep = run_burst(burst, d, 200, "node", RESOURCES)
    assert rep["ok"] == 200, rep
    st = sts.stats()
    assert st["imds_requests"] == len(RESOURCES)
    assert st["imds_max_concurrent"] > 5 and st["imds_peak_1s"] > 20, st


def _until(err):
    """The epoch second the message says the pause ends at."""
    m = re.search(r"is throttling requests \(Retry-After\) until "
                  r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC: batchtokd asks again then", err)
    assert m, err
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))


def test_retry_after_from_imds_throttles_every_identity_of_the_host(make_daemon, sts):
    """IMDS answers one resource's request 429 with Retry-After: 600. That
    request, another resource's and another managed identity's on the same
    endpoint are told at once (exit 7) until when the host is throttling,
    with no further request; a token cached before is still served."""
    d = make_daemon({"node": mi(sts), "user": mi(sts, client_id=MI_CLIENT)})
    assert d.get("-i", "node", "-r", RESOURCES[0]).rc == 0
    sts.fault("429", target="imds", retry_after=600, count=1, resource=RESOURCES[1])
    before = int(time.time())
    first = d.get("-i", "node", "-r", RESOURCES[1])
    other = d.get("-i", "node", "-r", RESOURCES[2])
    user = d.get("-i", "user", "-r", RESOURCES[3])
    after = int(time.time())
    for r in (first, other, user):
        assert r.rc == 7, r
        assert before + 600 - 1 <= _until(r.err) <= after + 600 + 1, (r.err, before, after)
        assert "the managed identity endpoint at %s is throttling" % sts.imds_url in r.err, r.err
    assert "HTTP 429" in first.err
    assert sts.stats()["imds_requests"] == 2
    # Cached before: served, with no request.
    r = d.get("-i", "node", "-r", RESOURCES[0])
    assert r.rc == 0, r
    assert sts.stats()["imds_requests"] == 2
    # The metrics show it, per host.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for fam in text_string_to_metric_families(d.run("metrics").out) for s in fam.samples}
    host = (("upstream", sts.imds_url),)
    assert m[("batchtok_guard_started_total", host)] == 2
    assert m[("batchtok_guard_throttled_total", host)] == 1
    assert m[("batchtok_guard_refused_total", host)] == 2
    assert 590 <= m[("batchtok_guard_paused_seconds", host)] <= 600
    assert m[("batchtok_upstream_responses_total", (("service", "imds"), ("status", "429")))] == 1


def test_a_short_retry_after_is_waited_out(make_daemon, sts):
    """A pause of 10 s or less is waited for: the throttled request and one
    for another resource asked during the pause both get their tokens."""
    d = make_daemon({"node": mi(sts)})
    sts.fault("429", target="imds", retry_after=2, count=1, resource=RESOURCES[0])
    first = subprocess.Popen([BATCHTOK, "-S", d.sock, "get", "-r", RESOURCES[0]],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sts.stats()["faulted"] == 1, 30, what="the 429")
        r = d.get("-r", RESOURCES[1])
        assert r.rc == 0, r
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert sts.stats()["imds_requests"] == 3


def test_retry_after_from_entra_throttles_every_identity_of_the_authority(make_daemon, sts):
    """The same for Entra: a 429 with Retry-After: 600 to one identity, and
    another application's identity on the same authority host is told too,
    without a request."""
    d = make_daemon({"a": {}, "b": {"client_id": OTHER_CLIENT, "secret": OTHER_SECRET}})
    sts.fault("429", retry_after=600, count=1)
    a = d.get("-i", "a")
    b = d.get("-i", "b")
    for r in (a, b):
        assert r.rc == 7, r
        assert "the token service at %s is throttling requests" % sts.url in r.err, r.err
    assert sts.stats()["token_requests"] == 1
