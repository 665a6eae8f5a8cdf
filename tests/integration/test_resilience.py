"""Refresh ahead of expiry, outages, throttling and hard credential errors:
what the token service does, what clients see."""

import json
import time

from conftest import SECRET, jwt_claims, wait_for


def test_short_lived_token_is_refreshed_before_clients_see_it_expire(make_daemon, sts):
    # 12-second tokens, 3 s of validity promised to every client.
    d = make_daemon(min_validity="3s")
    sts.fault("slow", lifetime=12, count=-1)
    seen = set()
    deadline = time.time() + 15
    while time.time() < deadline:
        r = d.get()
        assert r.rc == 0, r
        exp = jwt_claims(r.out)["exp"]
        # Never a token that expires within min_validity.
        assert exp - time.time() >= 3 - 1, (exp, time.time())
        seen.add(r.out)
        time.sleep(0.25)
    # The token was replaced in the background (at half life), so no client
    # ever waited for an expired one: at least two tokens, no failures.
    assert len(seen) >= 2
    st = sts.stats()
    assert st["errors"] == 0 and st["token_requests"] >= 2
    status = json.loads(d.run("status", "-o", "json").out)
    assert status["identities"][0]["tokens"][0]["state"] in ("valid", "fetching")


def test_outage_while_cached_is_invisible_then_reported(make_daemon, sts):
    d = make_daemon(min_validity="2s")
    sts.fault("slow", lifetime=8, count=1)
    token = d.get().out
    sts.fault("503", count=-1)
    # The refresh at half life (4 s) fails; clients still get the cached token.
    t_end = time.time() + 5
    while time.time() < t_end:
        r = d.get()
        assert r.rc == 0 and r.out == token, r
        time.sleep(0.2)
    assert sts.stats()["faulted"] >= 1
    # Once the cached token is within min_validity it is no longer handed out.
    wait_for(lambda: jwt_claims(token)["exp"] - time.time() < 1, 10, what="token to age")
    r = d.get(timeout=60)
    assert r.rc == 7, r
    assert "unavailable" in r.err or "HTTP 503" in r.err
    # Service back: the next request gets a fresh token.
    sts.fault("none")
    r = wait_for(lambda: (lambda x: x if x.rc == 0 else None)(d.get()), 30,
                 step=0.5, what="recovery")
    assert r.out != token


def test_bad_secret_exit_6_and_secret_appears_nowhere(make_daemon, sts):
    wrong = "wrong-secret-value-%d" % time.time()
    d = make_daemon({"batch": {"secret": wrong}})
    r = d.get()
    assert r.rc == 6, r
    assert r.err.startswith("batchtok: ") and r.err.count("\n") == 1
    assert "AADSTS7000215" in r.err and "secret" in r.err
    assert sts.stats()["token_requests"] == 1
    # Remembered for a while: no second request to the token service.
    r2 = d.get()
    assert r2.rc == 6
    assert sts.stats()["token_requests"] == 1
    status = d.run("status").out + d.run("status", "-o", "json").out
    for text in (r.err, r2.err, status, d.read_log()):
        assert wrong not in text and SECRET not in text
    assert "AADSTS7000215" in d.read_log()


def test_unknown_client_and_tenant_exit_6(make_daemon):
    d = make_daemon({"batch": {"client_id": "99999999-3333-3333-3333-333333333333"},
                     "t": {"tenant": "contoso.onmicrosoft.com"}})
    r = d.get("-i", "batch")
    assert r.rc == 6 and "AADSTS700016" in r.err and "client_id" in r.err, r
    r = d.get("-i", "t")
    assert r.rc == 6 and "AADSTS90002" in r.err, r


def test_throttling_honours_retry_after(make_daemon, sts):
    d = make_daemon()
    sts.fault("429", retry_after=120, count=1)
    r = d.get()
    assert r.rc == 7, r
    assert "HTTP 429" in r.err and "AADSTS90055" in r.err, r
    # Within Retry-After nobody asks the token service again.
    r = d.get()
    assert r.rc == 7 and "next attempt in" in r.err, r
    assert sts.stats()["token_requests"] == 1
    st = json.loads(d.run("status", "-o", "json").out)["identities"][0]["tokens"][0]
    assert st["next_retry"] - time.time() > 100


def test_transient_failures_are_retried_for_a_waiting_client(make_daemon, sts):
    d = make_daemon()
    sts.fault("500", count=2)
    r = d.get()
    assert r.rc == 0, r
    assert sts.stats()["token_requests"] == 3


def test_malformed_replies_and_resets(make_daemon, sts):
    d = make_daemon()
    for mode in ("badjson", "huge", "reset", "empty"):
        sts.fault(mode, count=-1)
        r = d.get("--force-refresh")
        assert r.rc == 7, (mode, r)
        assert r.err.startswith("batchtok: ")
        sts.fault("none")
        # The daemon is unharmed and recovers once the service does.
        ok = wait_for(lambda: (lambda x: x if x.rc == 0 else None)(d.get()), 40, step=0.5,
                      what="recovery after " + mode)
        assert ok.out.count(".") == 2
        d.stop()
        d.start()


def test_hanging_token_service_times_out_with_exit_8(make_daemon, sts):
    d = make_daemon(request_timeout="2s")
    sts.fault("hang", hang=30, count=-1)
    # The service hangs for 30 s; the daemon's 2-s request_timeout ends it.
    r = d.get()
    assert r.rc == 8, r
    assert "timed out" in r.err
    sts.fault("none")


def test_prefetch_fetches_before_anyone_asks(make_daemon, sts):
    make_daemon({"batch": {"prefetch": "yes"}})
    wait_for(lambda: sts.stats()["issued"] == 1, 10, what="the prefetch")


def test_a_reply_whose_token_is_not_a_bearer_token_is_refused(make_daemon, sts):
    # The token service and IMDS answer 200 with an access_token holding
    # CR/LF, a header line and an escape sequence: served as is, `get -o
    # header` would inject a header into the caller's request.
    d = make_daemon({"batch": {"default": "yes"},
                     "node": {"credential": "managed-identity", "tenant": None,
                              "client_id": None, "authority_host": None,
                              "imds_endpoint": sts.imds_url}})
    sts.fault("badtoken", count=-1)
    sts.fault("badtoken", count=-1, target="imds")
    for name, who in (("batch", "token service"), ("node", "managed identity endpoint")):
        r = d.get("-i", name, "-o", "header")
        assert r.rc == 7, r
        assert r.out == "", r
        assert who + ": the access_token in the reply is not a bearer token" in r.err, r
        assert "X-Injected" not in r.err and "\x1b" not in r.err
    assert sts.stats()["faulted"] >= 2
    assert "X-Injected" not in d.read_log()
