"""The Python client's watch, on_rotate, refresh, forget and claims
challenges against a real daemon and the fake token service: rotations
counted at the token service, a watch that outlives a daemon restart, a
long-lived connection to a fake Redis-like server kept authenticated by
on_rotate, a claims challenge from azure-core's ARM policy, and the same
client against batchtokd 0.1.0, which has none of it."""

import asyncio
import base64
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import BATCH, PYTHON, TOP, as_user, jwt_claims, wait_for
from test_protocol_versions import old_build  # noqa: F401 (a fixture)

sys.path.insert(0, os.path.join(TOP, "client", "python"))
import batchtok  # noqa: E402
import batchtok.aio  # noqa: E402


def restart(d):
    """Stops the daemon by PID and starts a new one on the same socket."""
    old = d.proc.pid
    d.stop()
    d.start()
    assert d.proc.pid != old


class Events:
    """A watch iterated in a thread of its own, its events in a queue, so
    that the test waits for each with a bound. An exception that ends the
    iteration is queued too."""

    def __init__(self, watch):
        self.watch = watch
        self.q = queue.Queue()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            for ev in self.watch:
                self.q.put(ev)
            self.q.put(StopIteration())
        except Exception as e:
            self.q.put(e)

    def next(self, timeout=30):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no watch event within %d s" % timeout) from None

    def token(self, timeout=30):
        ev = self.next(timeout)
        assert isinstance(ev, batchtok.Token), repr(ev)
        return ev

    def close(self):
        self.watch.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_watch_sees_each_rotation_with_one_request_each(make_daemon, sts):
    """N rotations of a 4 s token, watched three times over (two threads'
    on_rotate and a plain iterator): every watcher sees the same N + 1
    tokens, and the token service got N + 1 requests. The last token lives
    an hour, so nothing more comes."""
    n = 3
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=n)
    seen = [queue.Queue(), queue.Queue()]
    rotations = [batchtok.Client(d.sock).on_rotate(
        lambda t, q=q: q.put((time.time(), t)), min_validity=1) for q in seen]
    events = Events(batchtok.Client(d.sock).watch(min_validity=1))
    try:
        tokens = [events.token() for _ in range(n + 1)]
        got = [[q.get(timeout=30) for _ in range(n + 1)] for q in seen]
    finally:
        for r in rotations:
            assert r.stop()
        events.close()
    assert len({t.access_token for t in tokens}) == n + 1
    for g in got:
        assert [t for _, t in g] == tokens
        # Each replacement came while the token it replaces was still valid
        # (refreshed at half life, 2 s before it ends: wide enough a margin).
        for (_, old), (at, new) in zip(g, g[1:]):
            assert at < old.expires_on, (at, old.expires_on)
    for t in tokens:
        assert t.identity == "batch" and t.resource == BATCH
        # expires_in counts from when the daemon sent the request, which may
        # be the second before the service's clock stamped exp.
        assert 0 <= jwt_claims(t.access_token)["exp"] - t.expires_on <= 1
        assert t.refresh_at is not None and t.refresh_at < t.expires_on
    assert tokens[-1].expires_on - tokens[0].expires_on > 3000
    assert sts.stats()["token_requests"] == n + 1


def test_watch_resubscribes_after_a_daemon_restart_and_waits_out_an_outage(make_daemon, sts):
    d = make_daemon()
    events = Events(batchtok.Client(d.sock).watch())
    short = batchtok.Client(d.sock, timeout=1).watch()
    first = events.token()
    assert next(short) == first
    restart(d)
    # The new daemon's cache is empty: it fetched, and the watch, subscribed
    # again by itself, has that token; no error came in between.
    second = events.token()
    assert second != first and sts.stats()["token_requests"] == 2
    assert d.get().out.strip() == second.access_token
    assert events.q.empty()
    assert next(short) == second

    # No daemon: after its client's timeout the watch says so, as an event,
    # and goes on trying; once the daemon is back the token comes.
    d.stop()
    start = time.monotonic()
    err = next(short)
    assert isinstance(err, batchtok.WatchError), err
    assert time.monotonic() - start < 10
    assert str(err).startswith("daemon not reachable") and err.exit_code == 3
    assert "goes on trying" in str(err)
    d.start()
    ev = next(short)
    while isinstance(ev, batchtok.WatchError):  # one more timeout may pass first
        ev = next(short)
    assert isinstance(ev, batchtok.Token)
    events.close()
    short.close()


class FakeRedis:
    """A stand-in for a server whose connections authenticate with an Entra
    token, as Azure Cache for Redis does: a loopback TCP line protocol,
    `AUTH USER TOKEN` (+OK, the token's exp kept for the connection) and
    `PING` (+PONG while the token that authenticated the connection is
    valid by the clock given, -NOAUTH once it has expired). It keeps, per
    connection, every token it accepted."""

    def __init__(self, audience, clock=time.time):
        self.audience = audience
        self.clock = clock
        self.lock = threading.Lock()
        self.conns = []  # per connection: [(exp, token), ...]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append([])
                auths = self.conns[-1]
            threading.Thread(target=self.handle, args=(conn, auths), daemon=True).start()

    def handle(self, conn, auths):
        with conn, conn.makefile("rwb") as f:
            for line in f:
                words = line.decode().split()
                if words[:1] == ["AUTH"] and len(words) == 3:
                    try:
                        claims = jwt_claims(words[2])
                        ok = claims["aud"] == self.audience and claims["exp"] > self.clock()
                    except (ValueError, KeyError, IndexError):
                        ok = False
                    if ok:
                        with self.lock:
                            auths.append((claims["exp"], words[2]))
                    f.write(b"+OK\r\n" if ok else b"-WRONGPASS invalid token\r\n")
                elif words == ["PING"]:
                    with self.lock:
                        exp = auths[-1][0] if auths else None
                    if exp is None:
                        f.write(b"-NOAUTH authentication required\r\n")
                    elif self.clock() >= exp:
                        f.write(b"-NOAUTH the token of this connection expired\r\n")
                    else:
                        f.write(b"+PONG\r\n")
                else:
                    f.write(b"-ERR unknown command\r\n")
                f.flush()

    def close(self):
        self.sock.close()


class RedisConnection:
    """The client side: one connection, used from the program's thread and
    from on_rotate's (re-authentication), so behind a lock."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rwb")
        self.lock = threading.Lock()

    def command(self, *words):
        with self.lock:
            self.f.write((" ".join(words) + "\r\n").encode())
            self.f.flush()
            return self.f.readline().decode().strip()

    def close(self):
        self.f.close()
        self.sock.close()


def test_on_rotate_keeps_a_long_lived_connection_authenticated(make_daemon, sts):
    """A program holds one connection to a Redis-like server open and
    re-authenticates it in on_rotate: it keeps working across rotations of
    a 4 s token, while a connection authenticated once with the first token
    is refused once that token expires."""
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=-1)
    server = FakeRedis(BATCH)
    app, control = RedisConnection(server.port), RedisConnection(server.port)
    reauths = []

    def reauth(token):
        assert app.command("AUTH", "app", token.access_token) == "+OK"
        reauths.append(token)

    rotation = batchtok.Client(d.sock).on_rotate(reauth, resource=BATCH, min_validity=1)
    try:
        first = rotation.wait(30)
        assert control.command("AUTH", "control", first.access_token) == "+OK"
        control_refused, pings = None, 0
        deadline = time.monotonic() + 60
        # Until the control connection is refused and the program has
        # re-authenticated twice, with a command after both.
        while time.monotonic() < deadline:
            assert app.command("PING") == "+PONG", reauths
            pings += 1
            if control_refused is None:
                r = control.command("PING")
                if r != "+PONG":
                    control_refused = (time.time(), r, pings)
            if control_refused and len(reauths) >= 3 and pings > control_refused[2]:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("timed out: %d re-authentications, control %r"
                        % (len(reauths), control_refused))
        assert rotation.error is None and rotation.running
        # One token request per token the program was given, and perhaps
        # one whose token is on its way.
        assert sts.stats()["token_requests"] - len(reauths) in (0, 1)
    finally:
        assert rotation.stop()
        app.close()
        control.close()
        server.close()
    at, reply, _ = control_refused
    assert reply == "-NOAUTH the token of this connection expired"
    assert at >= first.expires_on
    # Two connections: the program's, authenticated with each token in
    # turn, and the control's, with the first only.
    app_auths, control_auths = server.conns
    assert [tok for _, tok in app_auths] == [t.access_token for t in reauths]
    assert len(set(tok for _, tok in app_auths)) == len(app_auths) >= 3
    assert control_auths == [(first.expires_on, first.access_token)]


def test_credential_on_rotate(make_daemon, sts):
    """BatchtokCredential(on_rotate=...): with resource= it starts at once;
    without, with the first get_token's scope; close() stops it."""
    d = make_daemon()
    got = []
    cred = batchtok.BatchtokCredential(socket_path=d.sock, resource=BATCH, on_rotate=got.append)
    first = cred.rotation.wait(30)
    assert got == [first] and first.resource == BATCH
    assert cred.get_token(batchtok.BATCH_SCOPE).token == first.access_token
    # A refresh by an administrator reaches the callback.
    batchtok.Client(d.sock).refresh()
    wait_for(lambda: len(got) == 2, 30, what="the refreshed token")
    assert got[1] != first
    cred.close()
    assert not cred.rotation.running

    got2 = []
    with batchtok.BatchtokCredential(socket_path=d.sock, on_rotate=got2.append) as cred:
        assert cred.rotation is None
        tok = cred.get_token(batchtok.BATCH_SCOPE)
        assert cred.rotation.wait(30).access_token == tok.token
        assert got2[0].resource == BATCH
        rotation = cred.rotation
    assert not rotation.running
    assert sts.stats()["token_requests"] == 2


CLAIMS = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'


def test_claims_challenge_reaches_the_token_service(make_daemon, sts):
    """get_token(claims=...) is a CHALLENGE: one fresh request carrying the
    claims (and cp1 for an identity that declares it), whose token replaces
    the cached one for watchers too; the same claims again within 30 s get
    that token, other claims are BUSY."""
    d = make_daemon({"batch": {"default": "yes"}, "cae": {"client_capabilities": "cp1"}})
    cred = batchtok.BatchtokCredential(socket_path=d.sock)
    events = Events(batchtok.Client(d.sock).watch("batch"))
    plain = cred.get_token(batchtok.BATCH_SCOPE)
    assert events.token().access_token == plain.token
    fresh = cred.get_token(batchtok.BATCH_SCOPE, claims=CLAIMS)
    assert fresh.token != plain.token and jwt_claims(fresh.token)["acrs"] == ["c1"]
    assert events.token().access_token == fresh.token
    st = sts.stats()
    assert st["token_requests"] == 2 and st["claims"][0] is None
    assert json.loads(st["claims"][1]) == json.loads(CLAIMS)
    # Within 30 s: the same claims (as parsed JSON, a dict here) get that
    # token; other claims are refused BUSY; neither asks the token service.
    c = batchtok.Client(d.sock)
    assert c.get_token(claims=json.loads(CLAIMS)).access_token == fresh.token
    with pytest.raises(batchtok.BatchtokError) as e:
        c.get_token(claims='{"access_token":{"acrs":{"essential":true,"value":"c2"}}}')
    assert e.value.status == 11
    with pytest.raises(batchtok.BatchtokError) as e:
        c.get_token(claims="[1]")
    assert e.value.status == 2
    assert sts.stats()["token_requests"] == 2
    events.close()

    # An identity with client_capabilities = cp1: merged into the claims.
    t = c.get_token("cae", claims=CLAIMS)
    claims = jwt_claims(t.access_token)
    assert claims["acrs"] == ["c1"] and claims["xms_cc"] == ["cp1"]
    assert json.loads(sts.stats()["claims"][-1]) == {"access_token": {
        "acrs": {"essential": True, "value": "c1"}, "xms_cc": {"values": ["cp1"]}}}
    c.close()
    cred.close()


def test_arm_policy_answers_a_claims_challenge_through_the_credential(make_daemon, sts):
    """azure-mgmt-core's ARMChallengeAuthenticationPolicy, given a 401 with
    a claims challenge by a resource, calls get_token(scope, claims=...):
    the token that comes back satisfies the resource."""
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

    d = make_daemon()
    seen = []

    class Resource(BaseHTTPRequestHandler):
        def do_GET(self):
            token = self.headers.get("Authorization", "").split(" ")[-1]
            ok = jwt_claims(token).get("acrs") == ["c1"]
            seen.append(ok)
            self.send_response(200 if ok else 401)
            if not ok:
                self.send_header("WWW-Authenticate", 'Bearer authorization_uri="https://login.'
                                 'microsoftonline.com/common/oauth2/authorize", error="insuff'
                                 'icient_claims", claims="%s"'
                                 % base64.b64encode(CLAIMS.encode()).decode())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Resource)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cred = batchtok.BatchtokCredential(socket_path=d.sock)
        url = "http://127.0.0.1:%d" % httpd.server_port
        client = PipelineClient(url, policies=[
            ARMChallengeAuthenticationPolicy(cred, batchtok.BATCH_SCOPE)])
        resp = client.send_request(HttpRequest("GET", url + "/thing"), enforce_https=False)
        assert resp.status_code == 200
        cred.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen == [False, True]
    st = sts.stats()
    assert st["token_requests"] == 2 and json.loads(st["claims"][1]) == json.loads(CLAIMS)


def test_refresh_and_forget_for_administrators(make_daemon, sts, shared):
    d = make_daemon({"batch": {"allow_users": "root 65534", "default": "yes"}, "other": {}},
                    socket_mode="0666")
    c = batchtok.Client(d.sock)
    events = Events(c.watch())
    first = events.token()
    rec = c.refresh()
    second = events.token()
    assert second != first
    assert {k: rec[k] for k in ("identity", "resource", "expires", "watchers")} == \
        {"identity": "batch", "resource": BATCH, "expires": second.expires_on, "watchers": 1}
    assert rec["fingerprint"] and second.access_token not in json.dumps(rec)
    assert sts.stats()["token_requests"] == 2
    # FORGET: the watched token is fetched anew and pushed.
    c.get_token("other")
    assert c.forget("batch") == {"forgotten": 1}
    third = events.token()
    assert third not in (first, second)
    assert sts.stats()["token_requests"] == 4
    assert c.forget(all=True)["forgotten"] == 2
    assert events.token() not in (first, second, third)
    events.close()
    # Not for a user who may only get tokens.
    script = ("import sys; sys.path.insert(0, %r); import batchtok\n"
              "c = batchtok.Client(%r)\n"
              "print(c.get_token().identity)\n"
              "for call in (c.refresh, lambda: c.forget(all=True)):\n"
              "    try:\n        call()\n"
              "    except batchtok.BatchtokError as e:\n        print(e.status, e.exit_code)\n"
              % (shared.python_path, d.sock))
    r = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                       **as_user(65534))
    assert r.stdout.split("\n") == ["batch", "3 4", "3 4", ""], r.stdout + r.stderr
    c.close()


def test_aio_watch_on_rotate_and_credential(make_daemon, sts):
    d = make_daemon()

    async def main():
        async with batchtok.aio.Client(d.sock) as c:
            w = c.watch()
            first = await w.__anext__()
            assert isinstance(first, batchtok.Token) and first.refresh_at
            rotated = asyncio.Queue()

            async def callback(t):
                await rotated.put(t)

            r = await c.on_rotate(callback)
            assert (await asyncio.wait_for(rotated.get(), 30)) == first
            rec = await c.refresh()
            second = await asyncio.wait_for(w.__anext__(), 30)
            assert second.expires_on == rec["expires"] and second != first
            assert (await asyncio.wait_for(rotated.get(), 30)) == second
            assert await r.stop() is True
            await w.aclose()
            assert [ev async for ev in w] == []
            got = []
            async with batchtok.aio.BatchtokCredential(socket_path=d.sock, resource=BATCH,
                                                       on_rotate=got.append) as cred:
                assert (await cred.rotation.wait(30)) == second
                fresh = await cred.get_token(batchtok.BATCH_SCOPE, claims=CLAIMS)
                assert jwt_claims(fresh.token)["acrs"] == ["c1"]
                await asyncio.wait_for(_until(lambda: len(got) == 2), 30)
                assert got[1].access_token == fresh.token
                rotation = cred.rotation
            assert not rotation.running
            assert (await c.forget(all=True)) == {"forgotten": 1}

    asyncio.run(asyncio.wait_for(main(), 120))
    assert sts.stats()["token_requests"] == 3


async def _until(pred):
    while not pred():
        await asyncio.sleep(0.02)


def test_version_1_daemon(make_daemon, sts, old_build):  # noqa: F811
    """Against batchtokd 0.1.0 the client works as before; what 0.1.0 does
    not answer is refused with its version, and a credential's claims are a
    forced refresh, as before."""
    d = make_daemon(start=False)
    d.start(old_build["batchtokd"])
    with batchtok.Client(d.sock) as c:
        t = c.get_token()
        assert t.identity == "batch" and c.ping() == "batchtokd 0.1.0"
        for call in (c.watch, c.refresh, lambda: c.forget(all=True),
                     lambda: c.on_rotate(print), lambda: c.get_token(claims=CLAIMS)):
            with pytest.raises(batchtok.BatchtokError) as e:
                call()
            assert e.value.exit_code == 1
            assert "is not supported by this batchtokd (0.1.0): upgrade batchtokd" \
                in str(e.value)
        assert str(e.value).startswith("CHALLENGE is not")
        cred = batchtok.BatchtokCredential(socket_path=d.sock)
        assert cred.get_token(batchtok.BATCH_SCOPE).token == t.access_token
        # A forced refresh: a new token, fetched without the claims.
        forced = cred.get_token(batchtok.BATCH_SCOPE, claims=CLAIMS).token
        assert forced != t.access_token and "acrs" not in jwt_claims(forced)
        assert sts.stats()["claims"] == [None, None]
        cred.close()

    async def aio():
        async with batchtok.aio.Client(d.sock) as c:
            assert (await c.get_token()).access_token == forced
            with pytest.raises(batchtok.BatchtokError) as e:
                await c.refresh()
            assert str(e.value) == \
                "REFRESH is not supported by this batchtokd (0.1.0): upgrade batchtokd"
            with pytest.raises(batchtok.BatchtokError) as e:
                async for _ in c.watch():
                    pass
            assert str(e.value).startswith("WATCH is not supported")

    asyncio.run(asyncio.wait_for(aio(), 60))
    assert sts.stats()["token_requests"] == 2
