"""The one request path: what front ends share (resource spelling, access
rules) and what a reload may not break for requests that are waiting."""

import subprocess

from conftest import BATCH, BATCHTOK, wait_for
from test_compat import compat_env, http_get, token_url
from test_credentials import Login, me_identity


def get_in_background(d, *args):
    return subprocess.Popen([BATCHTOK, "-S", d.sock, "get"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def in_flight(sts):
    wait_for(lambda: sts.stats()["token_requests"] >= 1, 10,
             what="the daemon's token request")


def test_reload_while_a_fetch_is_in_flight_keeps_the_waiting_client(make_daemon, sts):
    d = make_daemon()
    sts.fault("slow", delay=2.0, count=1)
    p = get_in_background(d)
    in_flight(sts)
    # The same config again: the waiting request is answered from the fetch.
    assert d.run("reload").rc == 0
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.count(".") == 2
    assert d.get().out == out
    assert sts.stats()["token_requests"] == 1


def test_reload_that_removes_the_identity_tells_the_waiting_client(make_daemon, sts):
    d = make_daemon({"batch": {}, "other": {}})
    sts.fault("slow", delay=2.0, count=1)
    p = get_in_background(d, "-i", "other")
    in_flight(sts)
    d.write_config({"batch": {}}, {})
    assert d.run("reload").rc == 0
    out, err = p.communicate(timeout=30)
    assert p.returncode == 5, err
    assert "identity 'other' was removed by a configuration reload" in err, err
    assert d.get().rc == 0


def test_reload_while_a_login_waits(make_daemon, sts, tmp_path):
    d = make_daemon({"me": me_identity()}, state_dir=str(tmp_path / "state"))
    login = Login(d)
    assert "enter the code" in login.prompt, login.prompt
    assert d.run("reload").rc == 0
    sts.device(login.code(), "approve", "alice@contoso.com")
    rc, out, err = login.finish()
    assert rc == 0, err
    assert out == "signed in as alice@contoso.com\n"
    assert d.get().rc == 0


def test_resource_spellings_are_the_same_on_every_front_end(make_daemon, sts):
    # Batch's resource ends in a slash; SDKs drop it, or write the scope
    # with a double slash. The socket and the compat endpoint agree.
    d = make_daemon(compat_endpoint="127.0.0.1:0")
    env = compat_env(d)
    header = {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
    token = d.get().out.strip()
    for resource in (BATCH, BATCH.rstrip("/")):
        r = d.get("-r", resource)
        assert r.rc == 0 and r.out.strip() == token, (resource, r)
        status, body = http_get(token_url(env, resource=resource), header)
        assert status == 200 and body["access_token"] == token, (resource, body)
    for scope in (BATCH + ".default", BATCH + "/.default"):
        r = d.get("--scope", scope)
        assert r.rc == 0 and r.out.strip() == token, (scope, r)
    for resource in ("https://management.azure.com/", BATCH + "x"):
        r = d.get("-r", resource)
        assert r.rc == 5, (resource, r)
        status, body = http_get(token_url(env, resource=resource), header)
        assert status == 400 and body["error"] == "invalid_resource", (resource, body)
    assert sts.stats()["token_requests"] == 1
