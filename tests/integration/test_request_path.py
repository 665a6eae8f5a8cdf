"""The one request path: what front ends share (resource spelling, access
rules) and what a reload may not break for requests that are waiting."""

import socket
import struct
import subprocess

from conftest import BATCH, BATCHTOK, frame, hello, read_frame, wait_for
from test_compat import _end_compat_programs, compat_env, http_get, token_url  # noqa: F401
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


def cstr(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def get_frame(i, identity):
    return frame(2, i, cstr(identity) + cstr("") + cstr("") + struct.pack(">II", 0, 0))


def test_a_held_back_reload_does_not_run_inside_a_reload(make_daemon, sts):
    # 64 requests wait for a slow fetch, a RELOAD is held back behind them
    # (the pending limit), then a reload drops their identity: answering
    # them must not run the held-back RELOAD inside that reload.
    d = make_daemon({"batch": {}, "other": {}})
    sts.fault("slow", delay=2.0, count=1)
    s = d.connect_raw()
    s.sendall(hello())
    assert read_frame(s)[0] == 0x81
    s.sendall(b"".join(get_frame(i + 1, "other") for i in range(64)) + frame(5, 999))
    in_flight(sts)
    d.write_config({"batch": {}}, {})
    assert d.run("reload").rc == 0
    replies = {}
    while len(replies) < 65:
        t, i, body = read_frame(s)
        replies[i] = t
    assert replies[999] == 0x85, replies[999]
    assert all(replies[i] == 0xff for i in range(1, 65))
    assert d.proc.poll() is None
    assert d.get().rc == 0


def test_a_client_that_stops_reading_while_a_sign_in_ends(make_daemon, sts, tmp_path):
    # Two LOGIN_WAITs on a connection whose replies cannot be sent: the
    # first answer closes it, which must not free the second under the
    # loop answering them.
    d = make_daemon({"me": me_identity()}, state_dir=str(tmp_path / "state"))
    login = Login(d)
    assert "enter the code" in login.prompt, login.prompt
    s = d.connect_raw()
    s.sendall(hello())
    assert read_frame(s)[0] == 0x81
    s.sendall(frame(8, 1, cstr("me")) + frame(8, 2, cstr("me")) + frame(6, 3))
    assert read_frame(s)[:2] == (0x86, 3)  # PING answered: both waits are queued
    s.shutdown(socket.SHUT_RD)
    sts.device(login.code(), "approve", "alice@contoso.com")
    rc, out, err = login.finish()
    assert rc == 0, err
    assert d.run("ping").rc == 0
    s.close()
