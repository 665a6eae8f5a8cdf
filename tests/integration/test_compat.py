"""The managed-identity compatible endpoint (compat_endpoint =): unmodified
Azure SDK code from Debian's python3-azure gets tokens from batchtokd under
`batchtok exec --compat`, in each request shape it knows (App Service
2019-08-01, the older MSI_ pair, IMDS), and uses them against a fake Batch
account that checks them. Then everything that must be refused: no, wrong
or expired capabilities, another user's connection, identities the caller
may not use, and malformed HTTP."""

import http.client
import json
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import (BATCH, BATCHTOK, CLIENT, OTHER_CLIENT, PYTHON, SECRET, as_user, frame,
                      jwt_claims, read_frame, wait_for)

NOBODY = 65534
COMPAT = {"compat_endpoint": "127.0.0.1:0"}

# Run inside `batchtok exec --compat`: an azure-identity credential, and a
# track-2 azure-core pipeline with its bearer-token policy listing Batch jobs.
SDK_SCRIPT = """
import json, sys
from azure.core import PipelineClient
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest
from azure.identity import %(credential)s
cred = %(credential)s()
tok = cred.get_token("https://batch.core.windows.net//.default")
client = PipelineClient(base_url=%(batch)r, policies=[
    BearerTokenCredentialPolicy(cred, "https://batch.core.windows.net//.default")])
resp = client.send_request(HttpRequest("GET", %(batch)r + "/jobs?api-version=2023-05-01.17.0"))
print(json.dumps({"token": tok.token, "expires_on": tok.expires_on,
                  "status": resp.status_code,
                  "jobs": [j["id"] for j in resp.json().get("value", [])]}))
"""


# Programs under `batchtok exec --compat` still running for the test: their
# capabilities are given back when they end.
HOLDERS = []


@pytest.fixture(autouse=True)
def _end_compat_programs():
    """Ends what compat_env() left running, after each test (modules that
    import compat_env import this too)."""
    yield
    while HOLDERS:
        p = HOLDERS.pop()
        p.stdin.close()
        assert p.wait(30) == 0, p.stderr.read()
        p.stdout.close()
        p.stderr.close()


def compat_env(d, identity="batch", user=None):
    """What `batchtok exec --compat` puts in a program's environment, as that
    program sees it while it runs: the program (a shell waiting for its
    stdin to close) goes on until the test ends, since its capability is
    given back when it does."""
    prog, kw = BATCHTOK, {}
    if user is not None:
        prog, kw = d.shared.batchtok, as_user(user)
    p = subprocess.Popen([prog, "-S", d.sock, "exec", "--compat", "-i", identity, "--", "sh",
                          "-c", "env; echo '-- end'; exec cat >/dev/null"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, **kw)
    lines = []
    for line in p.stdout:
        if line == "-- end\n":
            break
        lines.append(line.rstrip("\n"))
    else:
        p.stdin.close()
        raise AssertionError("exec --compat failed (%s): %s" % (p.wait(30), p.stderr.read()))
    HOLDERS.append(p)
    return dict(line.split("=", 1) for line in lines if "=" in line)


def grant(d, identity="batch"):
    """A capability asked for over the socket (COMPAT), as a program using
    libbatchtok's batchtok_compat_grant() gets one: nobody renews it.
    Returns (capability, endpoint, expires_on)."""
    s = d.connect_raw()
    try:
        s.sendall(frame(1, 0, struct.pack(">II", 1, 1)) +
                  frame(10, 1, struct.pack(">I", len(identity)) + identity.encode()))
        assert read_frame(s)[0] == 0x81
        type_, _, body = read_frame(s)
        assert type_ == 0x8A, body
    finally:
        s.close()
    fields = []
    for _ in range(3):
        (n,) = struct.unpack(">I", body[:4])
        fields.append(body[4:4 + n].decode())
        body = body[4 + n:]
    return fields[0], fields[1], struct.unpack(">Q", body)[0]


def live_capabilities(d):
    return json.loads(d.run("status", "-o", "json").out)["compat_capabilities"]


def run_sdk(d, sts, credential="ManagedIdentityCredential", wrap=(), env=None):
    script = SDK_SCRIPT % {"credential": credential, "batch": sts.batch_url}
    e = dict(os.environ, REQUESTS_CA_BUNDLE=sts.ca, **(env or {}))
    for k in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT",
              "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET"):
        e.pop(k, None)
    p = subprocess.run([BATCHTOK, "-S", d.sock, "exec", "--compat", "-i", "batch", "--"] +
                       list(wrap) + [PYTHON, "-c", script], capture_output=True, text=True,
                       timeout=120, env=e)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def http_get(url, headers=None, user=None):
    """One GET; returns (status, JSON body). With user, it is sent by a
    process running as that uid, so the connection is that user's."""
    if user is not None:
        p = subprocess.run([PYTHON, "-c", GET_SCRIPT, url, json.dumps(headers or {})],
                           capture_output=True, text=True, timeout=60, **as_user(user))
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        return out["status"], out["body"]
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", u.path + ("?" + u.query if u.query else ""), headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, json.loads(body) if body else None


GET_SCRIPT = """
import http.client, json, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
c.request("GET", u.path + "?" + u.query, headers=json.loads(sys.argv[2]))
r = c.getresponse()
print(json.dumps({"status": r.status, "body": json.loads(r.read() or "null")}))
"""


def token_url(env, resource=BATCH, api="2019-08-01", extra=""):
    return "%s?api-version=%s&resource=%s%s" % (env["IDENTITY_ENDPOINT"], api,
                                                 urllib.parse.quote(resource, safe=""), extra)


def test_managed_identity_credential_gets_the_daemons_token(make_daemon, sts):
    d = make_daemon(**COMPAT)
    out = run_sdk(d, sts)
    assert out["status"] == 200 and out["jobs"] == ["job-0", "job-1"]
    assert out["token"] == d.get().out.strip()
    assert out["expires_on"] == json.loads(d.get("-o", "json").out)["expires_on"]
    claims = jwt_claims(out["token"])
    assert claims["aud"] == BATCH and claims["appid"] == CLIENT
    st = sts.stats()
    assert st["token_requests"] == 1, "SDK, CLI and the cache share one token"
    assert st["batch_authorized"] == 1 and st["batch_refused"] == 0


def test_default_azure_credential_picks_the_endpoint(make_daemon, sts):
    d = make_daemon(**COMPAT)
    out = run_sdk(d, sts, credential="DefaultAzureCredential")
    assert out["status"] == 200 and out["token"] == d.get().out.strip()


def test_older_msi_variables_and_imds_shape(make_daemon, sts):
    d = make_daemon(**COMPAT)
    # Without IDENTITY_ENDPOINT azure-identity falls back to MSI_ENDPOINT and
    # MSI_SECRET: api-version 2017-09-01 with a "secret" header.
    legacy = run_sdk(d, sts, wrap=["env", "-u", "IDENTITY_ENDPOINT"])
    assert legacy["status"] == 200
    # IMDS: the capability rides in the base URL's path, as tools that let
    # the IMDS address be changed can carry nothing else.
    imds = run_sdk(d, sts, wrap=[
        "sh", "-c", 'base=${IDENTITY_ENDPOINT%/msi/token}; exec env -u IDENTITY_ENDPOINT '
        '-u MSI_ENDPOINT AZURE_POD_IDENTITY_AUTHORITY_HOST="$base/$IDENTITY_HEADER" "$@"',
        "sh"])
    assert imds["status"] == 200
    assert legacy["token"] == imds["token"] == d.get().out.strip()
    assert sts.stats()["token_requests"] == 1


def test_response_fields_and_formats(make_daemon, sts):
    d = make_daemon({"batch": {"resources": BATCH + ", https://vault.azure.net"}}, **COMPAT)
    env = compat_env(d)
    # MSI_ENDPOINT carries the capability in its path, for the clients
    # that send it without MSI_SECRET (test_azure_cli.py).
    assert env["MSI_ENDPOINT"] == "%s/%s/msi/token" % (env["IDENTITY_ENDPOINT"][:-10],
                                                       env["MSI_SECRET"])
    assert env["IDENTITY_HEADER"] == env["MSI_SECRET"]
    assert env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    status, body = http_get(token_url(env), {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 200
    assert set(body) == {"access_token", "expires_in", "expires_on", "not_before", "resource",
                         "token_type", "client_id"}
    # Strings of integers: what every SDK version parses (ENTRA.md 4.4).
    for k in ("expires_in", "expires_on", "not_before"):
        assert isinstance(body[k], str) and body[k].isdigit(), k
    assert abs(int(body["expires_on"]) - int(body["expires_in"]) - time.time()) < 5
    assert (body["resource"], body["token_type"], body["client_id"]) == (BATCH, "Bearer", CLIENT)
    # The resource is echoed as asked; "R/.default" made into "R" loses the
    # slash and is still served.
    status, body = http_get(token_url(env, "https://batch.core.windows.net"),
                            {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 200 and body["resource"] == "https://batch.core.windows.net"
    assert jwt_claims(body["access_token"])["aud"] == BATCH
    # A matching selector is fine; client_id the daemon's identity has.
    status, _ = http_get(token_url(env, extra="&client_id=" + CLIENT.upper()),
                         {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 200
    r = d.run("status", "-o", "json")
    st = json.loads(r.out)
    assert st["compat_endpoint"] == env["IDENTITY_ENDPOINT"][:-len("/msi/token")]
    assert st["compat_capabilities"] == 1
    assert env["IDENTITY_HEADER"] not in r.out and env["IDENTITY_HEADER"] not in d.read_log()


def test_concurrent_cold_requests_share_one_fetch(make_daemon, sts):
    sts.fault("slow", delay=1.0, count=1)
    d = make_daemon(**COMPAT)
    env = compat_env(d)
    results = []

    def one():
        results.append(http_get(token_url(env),
                                {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}))
    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [s for s, _ in results] == [200] * 20
    assert len({b["access_token"] for _, b in results}) == 1
    assert sts.stats()["token_requests"] == 1


def test_missing_wrong_and_expired_capabilities(make_daemon, sts):
    d = make_daemon(compat_lifetime="2s", **COMPAT)
    env = compat_env(d)
    url = token_url(env)
    status, body = http_get(url)
    assert status == 401 and "X-IDENTITY-HEADER" in body["error_description"]
    wrong = env["IDENTITY_HEADER"][:-1] + ("A" if env["IDENTITY_HEADER"][-1] != "A" else "B")
    status, body = http_get(url, {"X-IDENTITY-HEADER": wrong})
    assert status == 401 and body["error"] == "unauthorized"
    # The 2017 shape wants its own header; the 2019 one is not accepted there.
    status, _ = http_get(token_url(env, api="2017-09-01"),
                         {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 401
    status, _ = http_get(url, {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 200
    # One nobody renews expires: the daemon's wall clock passes expires_on.
    cap, endpoint, _ = grant(d)
    assert endpoint + "/msi/token" == env["IDENTITY_ENDPOINT"]
    header = {"X-IDENTITY-HEADER": cap}
    assert http_get(url, header)[0] == 200
    wait_for(lambda: http_get(url, header)[0] == 401, 10, step=0.2,
             what="the capability to expire")
    status, body = http_get(url, header)
    assert status == 401 and "expired" in body["error_description"]
    assert sts.stats()["token_requests"] == 1
    # A restart forgets every capability.
    d.stop()
    d.start()
    env2 = compat_env(d)
    status, _ = http_get(token_url(env2), {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 401


def test_another_users_connection_is_refused(make_daemon, sts):
    d = make_daemon({"batch": {"allow_users": "nobody"}}, socket_mode="0666", **COMPAT)
    env = compat_env(d)  # issued to root
    header = {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
    status, body = http_get(token_url(env), header, user=NOBODY)
    assert status == 403 and "another user" in body["error_description"]
    assert "uid %d presented a capability of uid 0" % NOBODY in d.read_log()
    # nobody's own capability works for nobody, and not for root.
    mine = {"X-IDENTITY-HEADER": compat_env(d, user=NOBODY)["IDENTITY_HEADER"]}
    status, body = http_get(token_url(env), mine, user=NOBODY)
    assert status == 200 and jwt_claims(body["access_token"])["aud"] == BATCH
    status, _ = http_get(token_url(env), mine)
    assert status == 403
    assert sts.stats()["token_requests"] == 1


def test_identities_the_caller_may_not_use(make_daemon, sts):
    d = make_daemon({"batch": {"allow_users": "nobody"},
                     "private": {"resources": BATCH}}, socket_mode="0666", **COMPAT)
    r = d.run("exec", "--compat", "-i", "private", "--", "true", user=NOBODY)
    assert r.rc == 4 and "may not use identity 'private'" in r.err
    r = d.run("exec", "--compat", "-i", "nosuch", "--", "true")
    assert r.rc == 5
    env = compat_env(d, user=NOBODY)
    header = {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
    # A selector naming another identity's client is refused, not served.
    status, body = http_get(token_url(env, extra="&client_id=" + OTHER_CLIENT), header,
                            user=NOBODY)
    assert status == 400 and "identity 'batch'" in body["error_description"]
    # A resource the identity does not serve.
    status, body = http_get(token_url(env, "https://vault.azure.net"), header, user=NOBODY)
    assert status == 400 and body["error"] == "invalid_resource"
    # Access is checked again at each use: after a reload that drops nobody,
    # the capability nobody holds no longer works.
    d.reload_with("allow_users = nobody", "allow_users = root")
    status, body = http_get(token_url(env), header, user=NOBODY)
    assert status == 403 and "may not use" in body["error_description"]
    assert sts.stats()["token_requests"] == 0


def test_imds_rules_and_bad_http(make_daemon, sts):
    d = make_daemon(**COMPAT)
    env = compat_env(d)
    base = env["IDENTITY_ENDPOINT"][:-len("/msi/token")]
    cap = env["IDENTITY_HEADER"]
    imds = base + "/" + cap + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" \
        + urllib.parse.quote(BATCH, safe="")
    status, body = http_get(imds)
    assert status == 400 and "Metadata" in body["error_description"]
    status, body = http_get(imds, {"Metadata": "true", "X-Forwarded-For": "10.0.0.1"})
    assert status == 400 and "X-Forwarded-For" in body["error_description"]
    status, body = http_get(imds, {"Metadata": "true"})
    assert status == 200 and body["resource"] == BATCH
    status, _ = http_get(base + "/elsewhere", {"X-IDENTITY-HEADER": cap})
    assert status == 404
    status, _ = http_get(base + "/msi/token?resource=x", {"X-IDENTITY-HEADER": cap})
    assert status == 400  # no api-version
    port = urllib.parse.urlsplit(base).port

    def raw(data):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        return out

    assert raw(b"GET /msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello") \
        .startswith(b"HTTP/1.1 413 ")
    # Answered, its body read: the connection may go on, so this one asks
    # to be closed (raw() reads to the end).
    assert raw(b"POST /msi/token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               b"Content-Length: 5\r\n\r\nhello") \
        .startswith(b"HTTP/1.1 415 Unsupported Media Type\r\n")
    assert raw(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414 ")
    assert raw(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 20000 + b"\r\n\r\n") \
        .startswith(b"HTTP/1.1 431 ")
    assert raw(b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # Two requests on one connection (keep-alive), sent at once.
    req = ("GET /msi/token?api-version=2019-08-01&resource=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "X-IDENTITY-HEADER: %s\r\n\r\n" % (urllib.parse.quote(BATCH, safe=""), cap)).encode()
    out = raw(req + req.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
    assert out.count(b"HTTP/1.1 200 OK") == 2
    # The daemon still answers on its socket and over HTTP.
    assert d.get().rc == 0
    status, _ = http_get(token_url(env), {"X-IDENTITY-HEADER": cap})
    assert status == 200
    assert cap not in d.read_log() and SECRET not in d.read_log()


def test_endpoint_off_and_bad_addresses(make_daemon, sts):
    d = make_daemon()
    r = d.run("exec", "--compat", "--", "true")
    assert r.rc == 1 and "compat_endpoint" in r.err
    r = d.run("exec", "--compat", "-r", BATCH, "--", "true")
    assert r.rc == 2
    d2 = make_daemon(start=False, compat_endpoint="10.0.0.1:50342")
    p = subprocess.run([os.path.join(os.path.dirname(BATCHTOK), "batchtokd"), "-c", d2.conf,
                        "--check-config"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "not a loopback address" in p.stderr


def test_rejected_credential_is_a_500_naming_the_cause(make_daemon, sts):
    wrong = "not-the-secret"
    d = make_daemon({"batch": {"secret": wrong}}, **COMPAT)
    env = compat_env(d)
    status, body = http_get(token_url(env), {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 500 and body["error"] == "credential_rejected"
    assert "AADSTS7000215" in body["error_description"]
    assert wrong not in json.dumps(body) and wrong not in d.read_log()


def test_exec_compat_gives_its_capability_back(make_daemon, sts):
    """More programs under exec --compat, one after another, than one user
    may hold live capabilities (1024) within compat_lifetime: each gives
    its capability back when it ends, so none is refused, and none is left
    live that could be used after its program."""
    d = make_daemon(**COMPAT)
    loop = ('i=0; while [ $i -lt 1030 ]; do "$0" -S "$1" exec --compat -- true || exit 1; '
            'i=$((i+1)); done')
    p = subprocess.run(["sh", "-c", loop, BATCHTOK, d.sock], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert live_capabilities(d) == 0
    # What a program had stops working once it has ended.
    r = d.run("exec", "--compat", "--", "sh", "-c", 'echo "$IDENTITY_ENDPOINT $IDENTITY_HEADER"')
    assert r.rc == 0, r.err
    url, cap = r.out.split()
    status, body = http_get("%s?api-version=2019-08-01&resource=%s" % (url, BATCH),
                            {"X-IDENTITY-HEADER": cap})
    assert status == 401 and "given back when its program ended" in body["error_description"]
    assert live_capabilities(d) == 0


CHILD = """
import os, signal, sys, time
def on(sig, frame):
    print(signal.Signals(sig).name, flush=True)
for s in ("SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"):
    signal.signal(getattr(signal, s), on)
print("ready", flush=True)
while True:
    signal.pause()
"""


def test_exec_compat_forwards_signals_and_exit_status(make_daemon, sts):
    d = make_daemon(**COMPAT)
    p = subprocess.Popen([BATCHTOK, "-S", d.sock, "exec", "--compat", "--", PYTHON, "-c", CHILD],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def line():
            ready, _, _ = select.select([p.stdout], [], [], 30)
            assert ready, "no line from the child within 30 s"
            return p.stdout.readline().strip()

        assert line() == "ready"
        assert live_capabilities(d) == 1
        # batchtok stays the parent and passes each signal on, once.
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGWINCH,
                    signal.SIGINT, signal.SIGQUIT):
            p.send_signal(sig)
            assert line() == sig.name
        # Killed by a signal: 128 + the signal, as shells say.
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 128 + signal.SIGTERM, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        p.stdout.close()
        p.stderr.close()
    # Given back when the child ended, however it ended.
    assert live_capabilities(d) == 0
    assert d.run("exec", "--compat", "--", "sh", "-c", "exit 3").rc == 3
    assert d.run("exec", "--compat", "--", "no-such-command-here").rc == 127
    assert live_capabilities(d) == 0


RENEWED = """
import http.client, json, os, sys, time, urllib.parse
u = urllib.parse.urlsplit(os.environ["IDENTITY_ENDPOINT"])
path = u.path + "?api-version=2019-08-01&resource=" + urllib.parse.quote(sys.argv[1], safe="")
end, n = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", path, headers={"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]})
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        print("refused after %d: %s %s" % (n, r.status, body.decode()))
        sys.exit(1)
    n += 1
print("ok", n)
"""


def test_exec_compat_renews_past_compat_lifetime(make_daemon, sts):
    """A command that runs longer than compat_lifetime (2 s here, 12 h by
    default) keeps getting tokens: the parent renews the capability before
    it expires. It is given back at the end all the same."""
    d = make_daemon(compat_lifetime="2s", **COMPAT)
    r = d.run("exec", "--compat", "--", PYTHON, "-c", RENEWED, BATCH, "5", timeout=60)
    assert r.rc == 0, (r.out, r.err)
    assert r.out.startswith("ok ") and r.err == ""
    assert "renewed a compat capability" in d.read_log()
    assert live_capabilities(d) == 0


def test_listen_backlog_holds_a_burst_of_connections(make_daemon, sts):
    """The endpoint listens with the kernel's largest backlog, as the Unix
    socket does: with 128, a burst of connections from one user had the
    kernel drop the rest, whose connect then waited a second to retry."""
    d = make_daemon(**COMPAT)
    port = json.loads(d.run("status", "-o", "json").out)["compat_endpoint"].rsplit(":", 1)[1]
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    out = subprocess.run(["ss", "-Hltn", "sport = :%s" % port], capture_output=True,
                         text=True, timeout=10).stdout.split()
    # State, Recv-Q, Send-Q (the backlog of a listening socket), ...
    assert out and out[0] == "LISTEN", out
    assert int(out[2]) == somaxconn, out
