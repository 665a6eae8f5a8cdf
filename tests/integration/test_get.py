"""batchtok get, its output formats and exit codes, against a real daemon and
the fake token service."""

import json
import os
import re
import subprocess
import time

import pytest

from conftest import (BATCH, BATCHTOK, BATCHTOKD, CLIENT, OTHER_CLIENT, OTHER_SECRET, SECRET,
                      TENANT, VERSION, jwt_claims)


def test_get_prints_bare_token_for_batch(make_daemon, sts):
    d = make_daemon()
    r = d.get()
    assert r.rc == 0, r
    assert r.err == ""
    token = r.out.rstrip("\n")
    assert r.out == token + "\n" and token.count(".") == 2
    claims = jwt_claims(token)
    # The double-slash v2 scope gives the audience Batch requires.
    assert claims["aud"] == BATCH
    assert claims["appid"] == CLIENT
    st = sts.stats()
    assert st["token_requests"] == 1
    assert st["last_form_keys"] == ["client_id", "client_secret", "grant_type", "scope"]
    assert st["last_user_agent"].startswith("batchtokd/")


def test_output_formats(make_daemon):
    d = make_daemon()
    token = d.get().out.strip()
    j = json.loads(d.get("-o", "json").out)
    assert j["accessToken"] == token
    assert j["tokenType"] == "Bearer"
    assert j["tenant"] == TENANT
    assert j["identity"] == "batch" and j["resource"] == BATCH
    assert abs(j["expires_on"] - (time.time() + 3600)) < 60
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["expires_on"])) in j["expiresOn"]
    assert d.get("-o", "header").out == "Authorization: Bearer %s\n" % token
    env = d.get("-o", "env").out
    out = subprocess.run(["sh", "-c", env + 'printf "%s|%s" "$BATCHTOK_ACCESS_TOKEN" '
                          '"$BATCHTOK_EXPIRES_ON"'], capture_output=True, text=True).stdout
    assert out == "%s|%d" % (token, j["expires_on"])


def test_cached_token_causes_no_upstream_request(make_daemon, sts):
    d = make_daemon()
    tokens = {d.get().out for _ in range(20)}
    assert len(tokens) == 1
    assert sts.stats()["token_requests"] == 1


def test_concurrent_cold_gets_make_exactly_one_upstream_request(make_daemon, sts):
    d = make_daemon()
    # The token service answers slowly so that all clients are waiting at once.
    sts.fault("slow", delay=1.0, count=1)
    procs = [subprocess.Popen([BATCHTOK, "-S", d.sock, "get"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(200)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(out)
    assert len(set(outs)) == 1
    assert sts.stats()["token_requests"] == 1


def test_v1_endpoint_and_scope_option(make_daemon, sts):
    d = make_daemon({"v1": {"token_version": "1"}})
    r = d.get("--scope", "https://batch.core.windows.net//.default")
    assert r.rc == 0, r
    assert jwt_claims(r.out.strip())["aud"] == BATCH
    assert sts.stats()["last_form_keys"] == ["client_id", "client_secret", "grant_type",
                                              "resource"]


def test_resources_and_identities(make_daemon):
    d = make_daemon({
        "batch": {"default": "yes"},
        "arm": {"client_id": OTHER_CLIENT, "secret": OTHER_SECRET,
                "resources": "https://management.azure.com/ https://batch.core.windows.net/"},
    })
    assert jwt_claims(d.get().out)["appid"] == CLIENT
    r = d.get("-i", "arm")
    assert r.rc == 0, r
    assert jwt_claims(r.out)["aud"] == "https://management.azure.com/"
    assert jwt_claims(d.get("-i", "arm", "-r", BATCH).out)["aud"] == BATCH
    r = d.get("-i", "nosuch")
    assert r.rc == 5 and r.err.startswith("batchtok: ") and "nosuch" in r.err, r
    r = d.get("-r", "https://vault.azure.net/")
    assert r.rc == 5 and "does not serve" in r.err, r


def test_exec_passes_the_token(make_daemon):
    d = make_daemon()
    token = d.get().out.strip()
    r = d.run("exec", "--", "sh", "-c", 'printf %s "$BATCHTOK_ACCESS_TOKEN"')
    assert r.rc == 0 and r.out == token, r
    r = d.run("exec", "--env", "TOK", "--", "sh", "-c", 'printf %s "$TOK"')
    assert r.out == token
    r = d.run("exec", "--", "/nonexistent/command")
    assert r.rc == 127 and "cannot run" in r.err  # as env(1) and shells: not found


def test_inspect_shows_claims_not_signature(make_daemon):
    d = make_daemon()
    token = d.get().out.strip()
    r = d.run("inspect")
    assert r.rc == 0, r
    doc = json.loads(r.out)
    assert doc["claims"]["aud"] == BATCH and doc["header"]["alg"] == "RS256"
    assert token.split(".")[2] not in r.out


def test_min_validity_and_force_refresh(make_daemon, sts):
    d = make_daemon()
    first = d.get().out
    calls = sts.stats()["token_requests"]
    r = d.get("--force-refresh")
    assert r.rc == 0 and r.out != first
    assert sts.stats()["token_requests"] == calls + 1
    # A second forced refresh within 30 s is served from the cache.
    assert d.get("--force-refresh").out == r.out
    assert sts.stats()["token_requests"] == calls + 1


def _utc(epoch):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def test_min_validity_no_token_meets_costs_no_token_request(make_daemon, sts):
    """The fake service issues 1 h tokens. Asking for 2 h is exit 1 naming when
    the token ends, not "unavailable" (exit 7), and the token service is not
    asked once per call: 40 calls cost no request."""
    d = make_daemon()
    token = json.loads(d.get("-o", "json").out)
    assert sts.stats()["token_requests"] == 1
    for _ in range(40):
        r = d.get("--min-validity", "2h")
        assert r.rc == 1, r
        assert r.out == ""
        assert r.err.startswith("batchtok: identity batch: no token for %s stays valid for "
                                "the 7200 s asked for" % BATCH), r.err
        assert "ends at %s" % _utc(token["expires_on"]) in r.err, r.err
        assert "--min-validity" in r.err
    assert sts.stats()["token_requests"] == 1
    # Shorter asks are still served from the cache.
    assert d.get("--min-validity", "30m").out.strip() == token["accessToken"]
    assert sts.stats()["token_requests"] == 1


def test_min_validity_no_token_meets_on_a_cold_cache(make_daemon, sts):
    """With nothing cached the first such call costs the one request that
    learns how long tokens last; the rest cost none."""
    d = make_daemon()
    r = d.get("--min-validity", "2h")
    # The token lives 3600 s from its issue; the daemon counts from when
    # the answer came, which may be in the next second.
    assert r.rc == 1 and re.search("has just issued one valid for (3599|3600) s",
                                   r.err), r
    assert "token service unavailable" not in r.err
    for _ in range(39):
        r = d.get("--min-validity", "2h")
        assert r.rc == 1 and re.search("issues tokens valid for (3599|3600) s", r.err), r
    assert sts.stats()["token_requests"] == 1


def test_usage_errors_exit_2_without_a_daemon(tmp_path):
    sock = str(tmp_path / "none.sock")
    for args in (["get", "--bogus"], ["get", "-o", "yaml"], ["frobnicate"], [],
                 ["get", "--min-validity", "soon"], ["get", "-r", "a", "--scope", "b/.default"]):
        p = subprocess.run([BATCHTOK, "-S", sock] + args, capture_output=True, text=True)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("batchtok: ")


def test_unreachable_daemon_exits_3(tmp_path):
    p = subprocess.run([BATCHTOK, "-S", str(tmp_path / "none.sock"), "get"],
                       capture_output=True, text=True)
    assert p.returncode == 3
    assert p.stderr.startswith("batchtok: cannot reach batchtokd")
    env = dict(os.environ, BATCHTOK_SOCKET=str(tmp_path / "env.sock"))
    p = subprocess.run([BATCHTOK, "ping"], capture_output=True, text=True, env=env)
    assert p.returncode == 3 and "env.sock" in p.stderr


def test_ping_status_and_versions(make_daemon):
    d = make_daemon()
    assert d.run("ping").out == "batchtokd %s\n" % VERSION
    d.get()
    st = json.loads(d.run("status", "-o", "json").out)
    assert st["upstream_requests"] == 1
    ident = st["identities"][0]
    assert ident["identity"] == "batch" and ident["credential"] == "secret"
    tok = ident["tokens"][0]
    assert tok["token"] == BATCH and tok["state"] == "valid"
    assert tok["refresh"] < tok["expires"]
    text = d.run("status").out
    assert "identity batch" in text and "state: valid" in text
    for out in (text, json.dumps(st)):
        assert SECRET not in out and d.get().out.strip() not in out
    for prog in (BATCHTOK, BATCHTOKD):
        assert subprocess.run([prog, "--version"], capture_output=True,
                              text=True).stdout.endswith(VERSION + "\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the client as another user")
def test_what_a_plain_user_sees(make_daemon):
    """A user who is no administrator sees the identities they may use and
    their tokens, not the daemon's pid, config, clients or counters; and
    LOGIN tells them it is for administrators before anything about which
    identities exist or what kind they are."""
    d = make_daemon({"batch": {"allow_users": "65534"}, "other": {}}, socket_mode="0666")
    assert d.get("-i", "batch", user=65534).rc == 0
    st = json.loads(d.run("status", "-o", "json", user=65534).out)
    assert st["daemon"] == "batchtokd %s" % VERSION
    for hidden in ("pid", "config", "clients", "upstream_requests", "reloads", "started"):
        assert hidden not in st, hidden
    assert [i["identity"] for i in st["identities"]] == ["batch"]
    tok = st["identities"][0]["tokens"][0]
    assert tok["state"] == "valid" and "served" not in tok and "upstream_requests" not in tok
    # An administrator sees it all.
    st = json.loads(d.run("status", "-o", "json").out)
    assert st["upstream_requests"] == 1 and st["pid"] == d.proc.pid
    assert len(st["identities"]) == 2
    for name in ("other", "batch", "no-such-identity"):
        r = d.run("login", "-i", name, user=65534)
        assert r.rc == 4 and "for administrators" in r.err, r
        assert "credential" not in r.err and "no-such" not in r.err, r
