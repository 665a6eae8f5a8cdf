"""The Python thin client (client/python, stdlib only) against a real daemon:
its own API, an azure.core TokenCredential, and azure-batch's
BatchServiceClient from Debian's python3-azure listing jobs from a fake Batch
account that checks the bearer token as Batch does."""

import json
import os
import subprocess
import sys

import pytest

from conftest import (BATCH, CLIENT, PYTHON, TENANT, TOP, VERSION, as_user, jwt_claims,
                      wait_for)

sys.path.insert(0, os.path.join(TOP, "client", "python"))
import batchtok  # noqa: E402


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
    r = subprocess.run([PYTHON, "-I", "-c", "import sys; sys.path.insert(0, %r); import batchtok; "
                        "print(batchtok.__file__, batchtok.BATCH_SCOPE)" % str(target)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path, scope = r.stdout.split()
    assert path.startswith(str(target)) and scope == "https://batch.core.windows.net//.default"
