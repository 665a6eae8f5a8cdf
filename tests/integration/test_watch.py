"""WATCH, REFRESH, FORGET and CHALLENGE as the daemon answers them, spoken
on the wire (proto/PROTOCOL.md) so that what is tested is the daemon alone:
pushes counted against the requests the fake token service saw, slow
watchers, forced refreshes and claims challenges."""

import json
import os
import struct
import subprocess
import time

from conftest import BATCHTOKD, PYTHON, as_user, jwt_claims, wait_for
from wire import (BAD_REQUEST, BUSY, CHALLENGE, DENIED, ERROR, FORGET, REFRESH, REPLY,
                  RESOURCE, UNAVAILABLE, WATCH, Conn, Reader, query, record, string)

def tokens_of(conn, n):
    """The next n token events on conn (no error events allowed)."""
    out = []
    for _ in range(n):
        ev = conn.event()
        assert ev[0] == "token", ev
        out.append(ev)
    return out


def test_a_watcher_sees_each_rotation_with_one_request_each(make_daemon, sts):
    """4 s tokens are replaced at half life: every replacement reaches the
    watcher before the token it replaces ends, and each costs exactly one
    request to the token service, although nobody asks for a token."""
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=-1)
    c = Conn(d.sock)
    c.send(WATCH, 7, query())
    seen = []
    for i in range(4):
        ev = c.event()
        assert ev[0] == "token" and ev[1] == 7, ev
        _, _, token, expires_on, refresh_at = ev
        now = time.time()
        assert expires_on - now > 1 - 1, "pushed a token within min_validity"
        # expires_in counts from when the daemon sent the request, which may
        # be the second before the service's clock stamped exp.
        assert 0 <= jwt_claims(token)["exp"] - expires_on <= 1
        if seen:
            # The replacement came before the last token ran out.
            assert now < seen[-1][3], (now, seen[-1][3])
        assert refresh_at and refresh_at < expires_on
        seen.append(ev)
        # As many requests as tokens: the next is only due at refresh_at.
        assert sts.stats()["token_requests"] == i + 1
    assert len({ev[2] for ev in seen}) == 4
    c.close()


def test_thousand_watchers_cost_one_request_per_rotation(make_daemon, sts):
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=-1)
    conns = [Conn(d.sock) for _ in range(20)]
    for c in conns:
        for k in range(50):
            c.send(WATCH, k + 1, query())
    rounds = 3
    got = {}
    for i, c in enumerate(conns):
        for _ in range(50 * rounds):
            ev = c.event()
            assert ev[0] == "token", ev
            got.setdefault((i, ev[1]), []).append(ev[2])
    assert len(got) == 1000
    # Every watcher saw the same three tokens in the same order.
    orders = {tuple(v) for v in got.values()}
    assert len(orders) == 1 and len(set(orders.pop())) == rounds
    assert sts.stats()["token_requests"] == rounds
    for c in conns:
        c.close()


def test_a_watcher_that_does_not_read_is_dropped_and_others_go_on(make_daemon, sts):
    """Tokens of ~150 KiB: ten watches on a connection nobody reads pile up
    more than the 256 KiB a watcher may leave unread. Its watches end with
    BUSY and it is closed; a watcher who reads keeps getting tokens."""
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=-1, pad=110000)
    good = Conn(d.sock)
    slow = Conn(d.sock)
    good.send(WATCH, 1, query())
    for k in range(10):
        slow.send(WATCH, 100 + k, query())
    first = tokens_of(good, 1)[0]
    wait_for(lambda: "events unread" in d.read_log(), 20, what="the slow watcher dropped")
    # The good watcher goes on: the next rotation reaches it.
    nxt = tokens_of(good, 1)[0]
    assert nxt[2] != first[2]
    # The slow one finds its tokens, then one BUSY per watch, then the end.
    ends, tokens = set(), 0
    for _ in range(40):
        ev = slow.event()
        if ev[0] == "eof":
            break
        if ev[0] == "token":
            tokens += 1
        else:
            assert ev[0] == "end" and ev[2] == BUSY, ev
            assert "not read" in ev[3]
            ends.add(ev[1])
    assert ev[0] == "eof"
    assert ends == set(range(100, 110))
    assert tokens < 10
    good.close()
    slow.close()


def test_a_failing_refresh_becomes_an_error_event_then_a_token(make_daemon, sts):
    d = make_daemon(min_validity="2s")
    sts.fault("slow", lifetime=6, count=1)
    c = Conn(d.sock)
    c.send(WATCH, 1, query())
    _, _, token, expires_on, _ = c.event()
    sts.fault("503", count=-1)
    # The refresh at half life fails and is retried; once the token is
    # within min_validity (2 s) the watcher is told, and the watch goes on.
    ev = c.event()
    assert ev[0] == "error" and ev[2] == UNAVAILABLE, ev
    assert "503" in ev[3]
    assert time.time() >= expires_on - 2 - 1
    sts.fault("none")
    ev = c.event()
    while ev[0] == "error":  # one more failed retry may be told first
        ev = c.event()
    assert ev[0] == "token" and ev[2] != token, ev
    c.close()


def watch_as(d, shared, uid, identity=""):
    """A process of uid watching identity's token, printing each frame's
    kind as a line; it exits when the watch ends."""
    script = shared.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire.py"))
    return subprocess.Popen([PYTHON, script, d.sock, identity], stdout=subprocess.PIPE,
                            text=True, **as_user(uid))


def test_reload_ends_the_watch_of_a_user_who_lost_access(make_daemon, sts, shared):
    d = make_daemon({"batch": {"allow_users": "65534"}}, socket_mode="0666")
    p = watch_as(d, shared, 65534, "batch")
    try:
        assert p.stdout.readline().split()[0] == "token"
        d.reload_with("allow_users = 65534", "allow_users = 65533")
        line = p.stdout.readline().split(None, 2)
        assert line[:2] == ["end", str(DENIED)], line
        assert "may no longer use identity 'batch'" in line[2]
        assert p.wait(10) == 0
    finally:
        p.kill()
        p.wait()


def test_reload_keeps_watches_and_a_new_credential_is_pushed(make_daemon, sts):
    d = make_daemon({"batch": {}, "other": {}})
    c = Conn(d.sock)
    c.send(WATCH, 1, query("batch"))
    first = tokens_of(c, 1)[0]
    # A reload that leaves the identity alone changes nothing for it.
    d.reload_with("[identity other]", "[identity renamed]")
    # One that changes its credential drops the token: the watcher gets the
    # new credential's, with no request from anyone.
    d.reload_with("tenant = ", "token_version = 1\ntenant = ")
    ev = tokens_of(c, 1)[0]
    assert ev[2] != first[2]
    assert jwt_claims(ev[2])["ver"] == "1.0"
    c.close()


def test_watch_refusals_end_at_once(make_daemon, sts):
    d = make_daemon()
    c = Conn(d.sock)
    c.send(WATCH, 1, query("nobody"))
    assert c.event()[:3] == ("end", 1, 4)
    c.send(WATCH, 2, query(resource="https://vault.azure.net"))
    assert c.event()[:3] == ("end", 2, 5)
    c.send(WATCH, 3, query(flags=1))
    assert c.event()[:3] == ("end", 3, BAD_REQUEST)
    c.close()


def test_refresh_by_100_at_once_is_one_request_pushed_to_watchers(make_daemon, sts):
    d = make_daemon()
    w = Conn(d.sock)
    w.send(WATCH, 1, query())
    first = tokens_of(w, 1)[0]
    assert sts.stats()["token_requests"] == 1
    sts.fault("slow", delay=1.0, count=1)  # the refresh stays in flight
    conns = [Conn(d.sock) for _ in range(2)]
    for i, c in enumerate(conns):
        for k in range(50):
            c.send(REFRESH, k, query())
    replies = []
    for c in conns:
        for _ in range(50):
            t, _, body = c.read()
            assert t == REFRESH | REPLY, (t, body)
            replies.append(record(body))
    assert sts.stats()["token_requests"] == 2
    assert len({r["fingerprint"] for r in replies}) == 1
    assert replies[0]["identity"] == "batch" and replies[0]["resource"] == RESOURCE
    assert replies[0]["watchers"] == 1
    pushed = tokens_of(w, 1)[0]
    assert pushed[2] != first[2]
    # A client's forced refresh right after is within its 30 s limit: the
    # refreshed token, no request.
    r = d.get("--force-refresh")
    assert r.rc == 0 and r.out.strip() == pushed[2]
    assert sts.stats()["token_requests"] == 2
    assert "asks for a new token for %s now" % RESOURCE in d.read_log()
    for c in conns + [w]:
        c.close()


def test_forget_drops_tokens_and_watchers_get_new_ones(make_daemon, sts):
    d = make_daemon({"batch": {}, "other": {}})
    t1 = d.get("-i", "batch").out
    d.get("-i", "other")
    w = Conn(d.sock)
    w.send(WATCH, 1, query("other"))
    watched = tokens_of(w, 1)[0]
    assert sts.stats()["token_requests"] == 2
    c = Conn(d.sock)
    c.send(FORGET, 1, string("batch") + struct.pack(">I", 0))
    t, _, body = c.read()
    assert t == FORGET | REPLY and record(body) == {"forgotten": 1}
    t2 = d.get("-i", "batch").out
    assert t2 != t1 and sts.stats()["token_requests"] == 3
    c.send(FORGET, 2, string("") + struct.pack(">I", 1))
    t, _, body = c.read()
    assert record(body) == {"forgotten": 2}
    # The watched token is fetched anew at once and pushed.
    assert tokens_of(w, 1)[0][2] != watched[2]
    c.send(FORGET, 3, string("batch") + struct.pack(">I", 1))
    t, _, body = c.read()
    assert t == ERROR and Reader(body).u32() == BAD_REQUEST
    assert "dropped 2 cached tokens of every identity (nothing is revoked" in d.read_log()
    c.close()
    w.close()


ADMIN_SCRIPT = r"""
import os, struct, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wire import FORGET, REFRESH, Conn, Reader, query, string
c = Conn(sys.argv[1])
c.send(REFRESH, 1, query())
c.send(FORGET, 2, string("") + struct.pack(">I", 1))
for _ in range(2):
    t, id_, body = c.read()
    r = Reader(body)
    print(t, id_, r.u32(), r.str())
"""


def test_refresh_and_forget_are_for_administrators(make_daemon, sts, shared, tmp_path):
    d = make_daemon({"batch": {"allow_users": "65534"}}, socket_mode="0666")
    path = tmp_path / "admin.py"
    path.write_text(ADMIN_SCRIPT)
    shared.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire.py"))
    script = shared.copy(str(path), "admin.py")
    r = subprocess.run([PYTHON, script, d.sock], capture_output=True, text=True, timeout=30,
                       **as_user(65534))
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r
    for line, (id_, what) in zip(sorted(lines), [(1, "refresh"), (2, "forget")]):
        assert line.startswith("%d %d %d %s is for administrators" % (ERROR, id_, DENIED, what))
    assert sts.stats()["token_requests"] == 0
    assert "denied refresh to pid" in d.read_log()


def challenge(claims, identity="", min_validity=0):
    return query(identity, min_validity=min_validity) + string(claims)


def token_reply(body):
    r = Reader(body)
    return r.str()


def test_claims_challenge_reaches_the_token_service_once(make_daemon, sts):
    d = make_daemon({"cae": {"client_capabilities": "cp1"}, "plain": {}})
    # Every request of a cp1 identity declares the capability...
    t = d.get("-i", "cae").out.strip()
    assert json.loads(sts.stats()["claims"][-1]) == {
        "access_token": {"xms_cc": {"values": ["cp1"]}}}
    assert jwt_claims(t)["xms_cc"] == ["cp1"]
    # ...and only those.
    d.get("-i", "plain")
    assert sts.stats()["claims"][-1] is None
    w = Conn(d.sock)
    w.send(WATCH, 1, query("cae"))
    tokens_of(w, 1)
    # 60 callers bring the same challenge (spaced and ordered differently):
    # one request, with the challenge merged with the capability.
    sts.fault("slow", delay=1.0, count=1)
    claims = ['{"access_token":{"acrs":{"essential":true,"value":"c1"}}}',
              '{ "access_token" : { "acrs" : { "value" : "c1", "essential" : true } } }']
    conns = [Conn(d.sock) for _ in range(2)]
    for i, c in enumerate(conns):
        for k in range(30):
            c.send(CHALLENGE, k, challenge(claims[i], "cae"))
    got = set()
    for c in conns:
        for _ in range(30):
            t, _, body = c.read()
            assert t == CHALLENGE | REPLY, (t, body)
            got.add(token_reply(body))
    st = sts.stats()
    assert st["token_requests"] == 3
    assert json.loads(st["claims"][-1]) == {"access_token": {
        "acrs": {"essential": True, "value": "c1"}, "xms_cc": {"values": ["cp1"]}}}
    assert len(got) == 1
    token = got.pop()
    assert jwt_claims(token)["acrs"] == ["c1"]
    # The new token is pushed to the watcher and served from the cache.
    assert tokens_of(w, 1)[0][2] == token
    assert d.get("-i", "cae").out.strip() == token
    # Other claims within 30 s: BUSY, and no request.
    c = conns[0]
    c.send(CHALLENGE, 99, challenge('{"access_token":{"acrs":{"value":"c2"}}}', "cae"))
    t, _, body = c.read()
    r = Reader(body)
    assert t == ERROR and r.u32() == BUSY and "try again after" in r.str()
    # Not JSON, or not an object: BAD_REQUEST.
    for bad in ("{", "[1]"):
        c.send(CHALLENGE, 100, challenge(bad, "cae"))
        t, _, body = c.read()
        assert t == ERROR and Reader(body).u32() == BAD_REQUEST
    assert sts.stats()["token_requests"] == 3
    for c in conns + [w]:
        c.close()


def test_cp1_is_refused_for_a_managed_identity(make_daemon, sts):
    d = make_daemon(start=False)
    d.write_config({"mi": {"credential": "managed-identity", "tenant": None, "client_id": None,
                           "authority_host": None, "imds_endpoint": sts.imds_url,
                           "client_capabilities": "cp1"}}, {})
    r = subprocess.run([BATCHTOKD, "--check-config", "-c", d.conf], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert "client_capabilities = cp1 does not apply to credential = managed-identity" in \
        r.stderr




def test_program_rules_added_by_a_reload_close_watching_connections(make_daemon, sts, shared):
    """A connection made while no identity had program rules carries no
    pidfd. A reload that adds rules closes such a connection if all it has
    are watches, instead of ending them as refused: the client connects
    again, now pinned, and watches on (as the libraries do)."""
    python = os.path.realpath(PYTHON)
    d = make_daemon({"py": {"allow_users": "nobody"}}, socket_mode="0666")
    p = watch_as(d, shared, 65534, "py")
    try:
        assert p.stdout.readline().split()[0] == "token"
        d.reload_with("allow_users = nobody", "allow_users = nobody\nallow_exes = " + python)
        assert p.stdout.readline().strip() == "end"  # closed, not refused
        assert p.wait(10) == 0
    finally:
        p.kill()
        p.wait()
    p = watch_as(d, shared, 65534, "py")
    try:
        assert p.stdout.readline().split()[0] == "token"
    finally:
        p.kill()
        p.wait()
    # Before, the same reload ended the watch: a refusal, not a reconnect.
    assert "ended the watch of identity py" not in d.read_log()


EXEC_AFTER_WATCH = r"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wire import WATCH, Conn, query
c = Conn(sys.argv[1])
c.send(WATCH, 1, query("py"))
assert c.event()[0] == "token"
print("token", flush=True)
os.set_inheritable(c.s.fileno(), True)
os.execv("/bin/sleep", ["sleep", "60"])
"""


def test_a_watcher_that_became_another_program_gets_no_more_tokens(make_daemon, sts, shared,
                                                                    tmp_path):
    """Program rules are checked before each token pushed: a watcher that
    has executed another program, keeping the connection, is cut off at the
    next token."""
    python = os.path.realpath(PYTHON)
    d = make_daemon({"py": {"allow_users": "nobody", "allow_exes": python}},
                    socket_mode="0666")
    shared.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire.py"))
    path = tmp_path / "exec_after_watch.py"
    path.write_text(EXEC_AFTER_WATCH)
    script = shared.copy(str(path), "exec_after_watch.py")
    p = subprocess.Popen([PYTHON, script, d.sock], stdout=subprocess.PIPE, text=True,
                         **as_user(65534))
    try:
        assert p.stdout.readline().strip() == "token"
        c = Conn(d.sock)
        c.send(REFRESH, 1, query("py"))
        t, _, body = c.read()
        assert t == REFRESH | REPLY and record(body)["watchers"] == 1
        wait_for(lambda: "ended the watch of identity py by pid %d" % p.pid in d.read_log(),
                 10, what="the watch ended")
        assert "executed another program" in d.read_log()
        c.close()
    finally:
        p.kill()
        p.wait()
