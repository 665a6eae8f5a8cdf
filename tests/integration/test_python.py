"""The Python thin client (client/python, stdlib only) against a real daemon:
its own API, an azure.core TokenCredential, and azure-batch's
BatchServiceClient from Debian's python3-azure listing jobs from a fake Batch
account that checks the bearer token as Batch does; then batchtok.aio, the
asyncio client and AsyncTokenCredential, under azure-core's
AsyncPipelineClient on the aiohttp transport."""

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from conftest import (BATCH, CLIENT, OTHER_CLIENT, OTHER_SECRET, PYTHON, TENANT, TOP, VERSION,
                      as_user, frame, jwt_claims, wait_for)

sys.path.insert(0, os.path.join(TOP, "client", "python"))
import batchtok  # noqa: E402
import batchtok.aio  # noqa: E402


def test_thin_client_matches_the_command(make_daemon, sts):
    d = make_daemon()
    with batchtok.Client(d.sock) as c:
        t = c.get_token()
        assert c.ping() == "batchtokd " + VERSION
    assert t.access_token == d.get().out.strip()
    assert (t.identity, t.resource, t.tenant, t.token_type) == ("batch", BATCH, TENANT, "Bearer")
    assert jwt_claims(t.access_token)["appid"] == CLIENT
    assert sts.stats()["token_requests"] == 1


def test_thin_client_refuses_a_token_with_control_characters(monkeypatch):
    # A daemon that passed on a hostile token service's reply: the frame is
    # well formed, the token is not one.
    import struct

    def reply(token, token_type="Bearer"):
        body = b"".join(struct.pack(">I", len(s)) + s for s in (token.encode(),))
        body += struct.pack(">Q", 4000)
        body += b"".join(struct.pack(">I", len(s)) + s
                         for s in (token_type.encode(), b"batch", b"r", b"t"))
        return batchtok._Reader(body)

    c = batchtok.Client("/nonexistent")
    for token, kind in (("abc\r\nX-Injected: 1", "Bearer"), ("a b", "Bearer"),
                        ("abc\x1b[2J", "Bearer"), ("abc", "Bearer\r\nX: 1")):
        monkeypatch.setattr(c, "_request", lambda *a, t=token, k=kind: reply(t, k))
        with pytest.raises(batchtok.BatchtokError) as e:
            c.get_token()
        assert "control characters" in str(e.value) and "Injected" not in str(e.value)
    monkeypatch.setattr(c, "_request", lambda *a: reply("eyJ.a-b_c~d+e/f=="))
    assert c.get_token().access_token == "eyJ.a-b_c~d+e/f=="


def restart(d):
    """Stops the daemon by PID and starts a new one on the same socket."""
    old = d.proc.pid
    d.stop()
    d.start()
    assert d.proc.pid != old


def idle_closes(d):
    """How many connections the daemon closed for client_idle_timeout."""
    return d.read_log().count("idle for client_idle_timeout")


def test_thin_client_survives_a_daemon_restart_and_an_idle_close(make_daemon, sts):
    """The daemon closes the connection when it restarts and when it sits
    idle for client_idle_timeout (5 minutes by default: an SDK credential
    asks about once an hour). The call that finds it gone gets its token on a
    new connection, as libbatchtok's does (test_reconnect.py)."""
    d = make_daemon(client_idle_timeout="1s")
    with batchtok.Client(d.sock) as c:
        c.get_token()
        restart(d)
        second = c.get_token()
        # A new daemon has an empty cache: it asked the token service again.
        assert sts.stats()["token_requests"] == 2
        n = idle_closes(d)
        wait_for(lambda: idle_closes(d) > n, 10, what="the daemon to close the idle connection")
        assert c.get_token() == second
        assert sts.stats()["token_requests"] == 2
        d.stop()
        with pytest.raises(batchtok.BatchtokError) as e:
            c.get_token()
        assert e.value.exit_code == 3 and "cannot reach batchtokd" in str(e.value)
        d.start()
        assert c.get_token().access_token.count(".") == 2


def test_token_credential(make_daemon, sts):
    from azure.core.credentials import AccessToken
    d = make_daemon()
    cred = batchtok.BatchtokCredential(socket_path=d.sock)
    tok = cred.get_token(batchtok.BATCH_SCOPE)
    assert isinstance(tok, AccessToken)
    assert jwt_claims(tok.token)["aud"] == BATCH
    assert tok.expires_on == json.loads(d.get("-o", "json").out)["expires_on"]
    with pytest.raises(ValueError):
        cred.get_token(batchtok.BATCH_SCOPE, "https://management.azure.com//.default")
    with pytest.raises(batchtok.BatchtokError) as e:
        cred.get_token("https://vault.azure.net/.default")
    assert e.value.exit_code == 5 and "does not serve" in str(e.value)
    cred.close()


def test_batch_service_client_lists_jobs(make_daemon, sts):
    d = make_daemon()
    script = """
import sys
sys.path.insert(0, %r)
from azure.batch import BatchServiceClient
import batchtok
client = BatchServiceClient(batchtok.BatchtokBatchCredentials(socket_path=%r),
                            batch_url=%r)
print(" ".join(j.id for j in client.job.list()))
""" % (os.path.join(TOP, "client", "python"), d.sock, sts.batch_url)
    r = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, REQUESTS_CA_BUNDLE=sts.ca))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["job-0", "job-1", "job-2"]
    st = sts.stats()
    # Two pages, each request signed with the daemon's one cached token.
    assert st["batch_authorized"] == 2 and st["batch_refused"] == 0
    assert st["token_requests"] == 1


def test_errors_and_access(make_daemon, sts, shared, tmp_path):
    d = make_daemon({"batch": {"allow_users": "root"}}, socket_mode="0666")
    with pytest.raises(batchtok.BatchtokError) as e:
        batchtok.Client(str(tmp_path / "nowhere.sock")).get_token()
    assert e.value.exit_code == 3 and "cannot reach batchtokd" in str(e.value)
    with pytest.raises(batchtok.BatchtokError) as e:
        batchtok.Client(d.sock).get_token(identity="nope")
    assert e.value.exit_code == 5
    script = ("import sys; sys.path.insert(0, %r); import batchtok\n"
              "try:\n    batchtok.Client(%r).get_token()\n"
              "except batchtok.BatchtokError as e:\n    print(e.exit_code, e)\n"
              % (shared.python_path, d.sock))
    r = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                       **as_user(65534))
    # The daemon names the user: "user nobody (uid 65534) may not use ...".
    assert r.stdout.startswith("4 user ") and \
        "(uid 65534) may not use identity 'batch'" in r.stdout, r.stdout + r.stderr


def test_pip_installs_the_client(tmp_path):
    """`pip install ./client/python` works offline and installs an importable
    package (no dependencies beyond the standard library)."""
    import shutil
    target = tmp_path / "site"
    # pip builds in the source directory: give it a copy, not the tree.
    src = tmp_path / "src"
    shutil.copytree(os.path.join(TOP, "client", "python"), src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run([PYTHON, "-m", "pip", "install", "--no-index", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PIP_NO_CACHE_DIR="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([PYTHON, "-I", "-c", "import sys; sys.path.insert(0, %r); "
                        "import batchtok.aio; print(batchtok.aio.__file__, batchtok.BATCH_SCOPE)"
                        % str(target)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path, scope = r.stdout.split()
    assert path.startswith(str(target)) and scope == "https://batch.core.windows.net//.default"


# batchtok.aio: the asyncio client and AsyncTokenCredential.

def run(coro):
    """Runs coro on a new event loop; a client that hangs fails the test
    instead of hanging the run."""
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_aio_credential_authorises_an_async_pipeline_client(make_daemon, sts):
    """azure-core's AsyncPipelineClient, with AsyncBearerTokenCredentialPolicy
    on the aiohttp transport, lists the fake Batch account's jobs with the
    daemon's token."""
    from azure.core import AsyncPipelineClient
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, SansIOHTTPPolicy
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.core.rest import HttpRequest

    d = make_daemon()
    sent = []

    class Sent(SansIOHTTPPolicy):
        def on_request(self, request):
            sent.append(request.http_request.headers["Authorization"])

    async def main():
        async with batchtok.aio.BatchtokCredential(socket_path=d.sock) as cred:
            assert isinstance(cred, AsyncTokenCredential)
            client = AsyncPipelineClient(
                sts.batch_url, transport=AioHttpTransport(connection_verify=sts.ca),
                policies=[AsyncBearerTokenCredentialPolicy(cred, batchtok.BATCH_SCOPE), Sent()])
            jobs, url = [], sts.batch_url + "/jobs?api-version=2023-05-01.17.0"
            async with client:
                while url:
                    resp = await client.send_request(HttpRequest("GET", url))
                    await resp.read()
                    assert resp.status_code == 200, resp.text()
                    jobs += [j["id"] for j in resp.json()["value"]]
                    url = resp.json().get("odata.nextLink")
            return jobs, await cred.get_token(batchtok.BATCH_SCOPE)

    jobs, tok = run(main())
    assert jobs == ["job-0", "job-1", "job-2"]
    assert isinstance(tok, AccessToken)
    assert tok.expires_on == json.loads(d.get("-o", "json").out)["expires_on"]
    # Two pages, each request signed with the daemon's one cached token.
    assert sent == ["Bearer " + d.get().out.strip()] * 2
    st = sts.stats()
    assert st["batch_authorized"] == 2 and st["batch_refused"] == 0
    assert st["token_requests"] == 1


def test_aio_concurrent_cold_calls_share_one_connection_and_one_fetch(make_daemon, sts):
    """100 calls gathered on one credential with the cache cold: the one
    connection the daemon allows this uid carries them all (more than the 64
    it reads at once), and they cause exactly one token request."""
    d = make_daemon(max_clients_per_uid="1")

    async def main():
        async with batchtok.aio.BatchtokCredential(socket_path=d.sock) as cred:
            toks = await asyncio.gather(*(cred.get_token(batchtok.BATCH_SCOPE)
                                          for _ in range(100)))
            # The credential holds the uid's one connection still.
            return toks, d.run("ping")

    toks, busy = run(main())
    assert len(toks) == 100 and len({t.token for t in toks}) == 1
    assert jwt_claims(toks[0].token)["aud"] == BATCH
    assert sts.stats()["token_requests"] == 1
    assert busy.rc == 1 and "max_clients_per_uid" in busy.err, busy


def test_aio_call_waiting_on_a_fetch_holds_up_no_other(make_daemon, sts):
    """Calls on one connection are answered as they complete: a cached token
    comes back while another call, sent before it on the same connection,
    waits on a token service that does not answer; cancelling that call
    leaves the connection to the others."""
    d = make_daemon({"batch": {}, "other": {"client_id": OTHER_CLIENT, "secret": OTHER_SECRET}},
                    max_clients_per_uid="1")

    async def main():
        loop = asyncio.get_running_loop()
        async with batchtok.aio.Client(d.sock) as c:
            first = await c.get_token("batch")
            sts.fault("hang", hang=30, count=1)
            stuck = asyncio.ensure_future(c.get_token("other"))
            await loop.run_in_executor(None, lambda: wait_for(
                lambda: sts.stats()["token_requests"] == 2, 10,
                what="the daemon to ask for the other identity's token"))
            assert await c.get_token("batch") == first
            assert not stuck.done()
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            assert await c.ping() == "batchtokd " + VERSION

    run(main())
    assert sts.stats()["token_requests"] == 2


def _string(s):
    return struct.pack(">I", len(s.encode())) + s.encode()


async def _read_frame(reader):
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    data = await reader.readexactly(n)
    return data[0], struct.unpack(">I", data[1:5])[0], data[5:]


def test_aio_client_hands_replies_out_by_id(tmp_path):
    """Against a stand-in for batchtokd that answers when the test says so:
    each reply goes to the call of its id, in whatever order; the reply to a
    call cancelled meanwhile is dropped; close() ends the calls still
    waiting; all on one connection."""
    path = str(tmp_path / "stand-in.sock")

    def token(t):
        return (_string(t) + struct.pack(">Q", 4102444800) + _string("Bearer") + _string("batch") +
                _string(BATCH) + _string(TENANT))

    async def main():
        conns = asyncio.Queue()
        server = await asyncio.start_unix_server(lambda r, w: conns.put_nowait((r, w)), path)
        async with server:
            c = batchtok.aio.Client(path)
            a = asyncio.ensure_future(c.get_token("a"))
            b = asyncio.ensure_future(c.get_token("b"))
            r, w = await conns.get()
            assert (await _read_frame(r))[:2] == (1, 0)  # HELLO, id 0
            ids = {}
            for _ in range(2):
                type_, id_, body = await _read_frame(r)
                assert type_ == 2
                ids[body[4:5].decode()] = id_
            w.write(frame(0x81, 0, struct.pack(">I", 1) + _string("stand-in")))
            w.write(frame(0x82, ids["b"], token("b.b.b")))
            assert (await b).access_token == "b.b.b"
            assert not a.done()
            a.cancel()
            with pytest.raises(asyncio.CancelledError):
                await a
            # a's reply comes late, then the reply to a ping.
            w.write(frame(0x82, ids["a"], token("a.a.a")))
            p = asyncio.ensure_future(c.ping())
            type_, id_, _ = await _read_frame(r)
            assert type_ == 6
            w.write(frame(0x86, id_, _string("stand-in")))
            assert await p == "stand-in"
            q = asyncio.ensure_future(c.ping())
            await _read_frame(r)
            await c.close()
            with pytest.raises(batchtok.BatchtokError) as e:
                await q
            assert e.value.exit_code == 1 and "closed" in str(e.value)
            assert conns.empty()
            w.close()

    run(main())


def test_aio_errors_match_the_sync_client(make_daemon, sts, shared, tmp_path):
    """The same BatchtokError, message, status and exit code from both
    clients: daemon not reachable, unknown identity, resource not allowed,
    a daemon that never answers (timeout), access denied."""
    d = make_daemon({"batch": {"allow_users": "root"}}, socket_mode="0666")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(8)  # and never accepts: connecting works, nothing answers

    async def aio_error(path, timeout, kw):
        async with batchtok.aio.Client(path, timeout=timeout) as c:
            try:
                await c.get_token(**kw)
            except batchtok.BatchtokError as e:
                return e
        pytest.fail("no error")

    cases = [(str(tmp_path / "nowhere.sock"), 60, {}, 3, "cannot reach batchtokd"),
             (d.sock, 60, {"identity": "nope"}, 5, "nope"),
             (d.sock, 60, {"resource": "https://vault.azure.net/"}, 5, "does not serve"),
             (str(tmp_path / "silent.sock"), 1, {}, 8, "did not answer within 1 s")]
    try:
        for path, timeout, kw, code, text in cases:
            with batchtok.Client(path, timeout=timeout) as c, \
                    pytest.raises(batchtok.BatchtokError) as want:
                c.get_token(**kw)
            got = run(aio_error(path, timeout, kw))
            assert (type(got), str(got), got.status, got.exit_code) == \
                (batchtok.BatchtokError, str(want.value), want.value.status, want.value.exit_code)
            assert got.exit_code == code and text in str(got), got
    finally:
        silent.close()

    async def credential():
        async with batchtok.aio.BatchtokCredential(socket_path=d.sock) as cred:
            with pytest.raises(ValueError):
                await cred.get_token(batchtok.BATCH_SCOPE,
                                     "https://management.azure.com//.default")
            with pytest.raises(batchtok.BatchtokError) as e:
                await cred.get_token("https://vault.azure.net/.default")
            assert e.value.exit_code == 5 and "does not serve" in str(e.value)

    run(credential())
    script = ("import asyncio, sys; sys.path.insert(0, %r); import batchtok.aio\n"
              "async def main():\n"
              "    async with batchtok.aio.BatchtokCredential(socket_path=%r) as cred:\n"
              "        try:\n            await cred.get_token(%r)\n"
              "        except batchtok.BatchtokError as e:\n            print(e.exit_code, e)\n"
              "asyncio.run(main())\n" % (shared.python_path, d.sock, batchtok.BATCH_SCOPE))
    r = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                       **as_user(65534))
    assert r.stdout.startswith("4 user ") and \
        "(uid 65534) may not use identity 'batch'" in r.stdout, r.stdout + r.stderr


def test_aio_client_survives_a_daemon_restart_and_an_idle_close(make_daemon, sts):
    """As the sync client does (above), whether the connection's end is
    found by the call's request going out (the loop did not run meanwhile)
    or by the task reading replies (it did)."""
    d = make_daemon(client_idle_timeout="1s")

    async def main():
        async with batchtok.aio.Client(d.sock) as c:
            await c.get_token()
            conn = c._conn
            restart(d)
            assert not conn.ended
            second = await c.get_token()
            assert c._conn is not conn
            assert sts.stats()["token_requests"] == 2
            # The reading task ends when the daemon closes the idle connection.
            conn = c._conn
            await asyncio.wait_for(asyncio.shield(conn._task), 10)
            assert conn.ended and idle_closes(d) >= 1
            assert await c.get_token() == second
            assert sts.stats()["token_requests"] == 2
            d.stop()
            with pytest.raises(batchtok.BatchtokError) as e:
                await c.get_token()
            assert e.value.exit_code == 3 and "cannot reach batchtokd" in str(e.value)
            d.start()
            assert (await c.get_token()).access_token.count(".") == 2

    run(main())
