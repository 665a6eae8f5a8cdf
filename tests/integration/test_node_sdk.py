"""The Azure SDK for JavaScript against batchtokd's compat endpoint: the real
@azure/identity (ManagedIdentityCredential, DefaultAzureCredential) under
`batchtok exec --compat` gets the daemon's Batch token, and
@azure/core-rest-pipeline's bearerTokenAuthenticationPolicy uses it against
the fake Batch account (HTTPS, the test CA in NODE_EXTRA_CA_CERTS); a Node
program that runs for many capability lifetimes keeps getting tokens.

The packages come from the npm registry at test time, at the exact versions
of tests/integration/node/package-lock.json, installed with `npm ci` into
$BATCHTOK_BUILD/node once per session and kept there while package.json, the
lockfile and `node --version` are unchanged (installed.sha256 there holds
their hash); node_modules never enters the tree. @azure/logger is named too:
its log says which managed-identity source the SDK chose.

Versions: @azure/identity 4.13.1 is the newest whose engines accept Node 20
(4.13.2 and later want Node >= 22), and the lockfile was resolved with
`npm install --package-lock-only --before=2026-07-01` so that every package
in it accepts Node 20 too (core-auth 1.11, core-util 1.14 and their
neighbours, published later, want 22). The machines that run `make check`
have Node 20. Debian 12's own nodejs is 18, which no 4.13 release accepts:
tests/install-deps.sh does not install it, and `npm ci --engine-strict`
fails, naming the package and the Node it needs, when a Node older than the
lockfile's engines is found. To move on, change package.json and run
`npm install --package-lock-only --omit-lockfile-registry-resolved=false`
again in tests/integration/node, then check `engines` in the new lockfile
against the Node the machines have.

The tests skip only when no node or npm is installed, or when npm cannot
reach its registry (with a cold npm cache); any other failure of npm fails
them. They run once per `make check`, not again under ASan: the daemon's
side of what they do (the App Service request shape, renewals, giving the
capability back) runs under ASan in test_compat.py; what these add is the
Node SDK's side, which the sanitizers do not see."""

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import BATCH, BATCHTOK, BUILD, CLIENT, HERE, SANITIZED, jwt_claims

pytestmark = pytest.mark.skipif(
    SANITIZED, reason="the Node.js SDK tests run once, in the plain pass of make check: "
                      "under ASan the daemon's compat paths run in test_compat.py")

COMPAT = {"compat_endpoint": "127.0.0.1:0"}
SOURCE = os.path.join(HERE, "node")
PROGRAMS = ("get_token.mjs", "long_running.mjs")
NPM_TIMEOUT = 300
# npm's error codes when the registry cannot be reached at all.
UNREACHABLE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET",
               "ENETUNREACH", "EHOSTUNREACH", "ESOCKETTIMEDOUT", "ERR_SOCKET_TIMEOUT")


class NodeSDK:
    def __init__(self, node, directory):
        self.node = node
        self.dir = directory


def npm_failure(out):
    """The codes npm's error report names (`npm error code X`, `errno X`)."""
    return set(re.findall(r"^npm (?:error|ERR!) (?:code|errno) (\S+)", out, re.M))


@pytest.fixture(scope="session")
def node_sdk():
    """The pinned packages installed once per session into BUILD/node, with
    the programs beside them (an ESM import resolves from the program's
    directory); reused while package.json and the lockfile are unchanged."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("no %s installed: the Node.js SDK tests need Node >= 20 and npm"
                    % ("node" if not node else "npm"))
    target = os.path.join(BUILD, "node")
    os.makedirs(target, exist_ok=True)
    # What was installed for which Node: a new Node is checked against the
    # packages' engines again.
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    digest = hashlib.sha256(version.encode())
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(SOURCE, name), "rb") as f:
            digest.update(f.read())
        shutil.copyfile(os.path.join(SOURCE, name), os.path.join(target, name))
    stamp = os.path.join(target, "installed.sha256")
    want = digest.hexdigest()
    have = None
    if os.path.exists(stamp) and os.path.isdir(os.path.join(target, "node_modules")):
        with open(stamp) as f:
            have = f.read().strip()
    if have != want:
        if os.path.exists(stamp):
            os.unlink(stamp)
        # --engine-strict: a Node the lockfile's packages do not accept is an
        # error that names them, not a warning followed by odd failures.
        # Short network timeouts: a registry behind a firewall that drops
        # packets is an ETIMEDOUT skip within a minute, not NPM_TIMEOUT.
        cmd = [npm, "ci", "--no-audit", "--no-fund", "--no-update-notifier",
               "--ignore-scripts", "--engine-strict", "--prefer-offline",
               "--fetch-timeout=20000", "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
               "--fetch-retry-maxtimeout=5000"]
        try:
            p = subprocess.run(cmd, cwd=target, capture_output=True, text=True,
                               timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("npm ci took longer than %d s in %s" % (NPM_TIMEOUT, target))
        if p.returncode != 0:
            out = p.stdout + p.stderr
            unreachable = npm_failure(out) & set(UNREACHABLE)
            if not unreachable:
                # A proxy that answers for every host (E404, E403) is no
                # registry either: ask the registry itself.
                try:
                    ping = subprocess.run([npm, "ping", "--no-update-notifier",
                                           "--fetch-timeout=20000", "--fetch-retries=0"],
                                          cwd=target, capture_output=True, text=True,
                                          timeout=60)
                    codes = npm_failure(ping.stdout + ping.stderr) or {"failed"}
                    if ping.returncode != 0:
                        unreachable = {"npm ping: " + c for c in codes}
                except subprocess.TimeoutExpired:
                    unreachable = {"npm ping: timed out"}
            if unreachable:
                pytest.skip("npm cannot reach its registry (%s): the Node.js SDK tests "
                            "install @azure/identity from it" % ", ".join(sorted(unreachable)))
            pytest.fail("npm ci failed (exit %d) in %s:\n%s" % (p.returncode, target,
                                                               out[-3000:]))
        with open(stamp, "w") as f:
            f.write(want + "\n")
    for name in PROGRAMS:
        shutil.copyfile(os.path.join(SOURCE, name), os.path.join(target, name))
    return NodeSDK(node, target)


def node_env(sts):
    """The test's environment without what would choose another credential
    or route the SDK elsewhere (AZURE_*, IDENTITY_*, MSI_*, IMDS_ENDPOINT,
    proxies) or change Node's behaviour (NODE_*), with the fake Batch
    account's CA."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "NODE_"))
           and k != "IMDS_ENDPOINT" and not k.lower().endswith("_proxy")}
    env["NODE_EXTRA_CA_CERTS"] = sts.ca
    return env


def run_node(d, sdk, sts, program, *args, timeout=120):
    """PROGRAM ARGS under `batchtok exec --compat -i batch`."""
    return subprocess.run([BATCHTOK, "-S", d.sock, "exec", "--compat", "-i", "batch", "--",
                           sdk.node, os.path.join(sdk.dir, program)] + list(args),
                          capture_output=True, text=True, timeout=timeout, cwd=sdk.dir,
                          env=node_env(sts))


def live_capabilities(d):
    return json.loads(d.run("status", "-o", "json").out)["compat_capabilities"]


def check_token_and_batch(d, sts, out):
    daemon = json.loads(d.get("-o", "json").out)
    assert out["token"] == daemon["accessToken"]
    claims = jwt_claims(out["token"])
    assert claims["aud"] == BATCH and claims["appid"] == CLIENT
    # MSAL makes expiresOn from the endpoint's expires_in and its own clock.
    assert abs(out["expiresOnTimestamp"] / 1000 - daemon["expires_on"]) <= 2
    assert out["tokenType"] == "Bearer"
    # The App Service shape (IDENTITY_ENDPOINT, IDENTITY_HEADER), whatever
    # MSI_ENDPOINT says.
    assert out["source"] == "AppService", out
    # Two pages of jobs, each request signed with the daemon's token.
    assert out["statuses"] == [200, 200] and out["jobs"] == ["job-0", "job-1", "job-2"]
    st = sts.stats()
    assert st["token_requests"] == 1, "the SDK, the command and the cache share one token"
    assert st["batch_authorized"] == 2 and st["batch_refused"] == 0


def test_node_managed_identity_credential_gets_the_daemons_token(make_daemon, sts, node_sdk):
    d = make_daemon(**COMPAT)
    p = run_node(d, node_sdk, sts, "get_token.mjs", "ManagedIdentityCredential", sts.batch_url)
    assert p.returncode == 0, p.stderr[-3000:]
    check_token_and_batch(d, sts, json.loads(p.stdout))
    assert live_capabilities(d) == 0


def test_node_default_azure_credential_picks_the_endpoint(make_daemon, sts, node_sdk):
    d = make_daemon(**COMPAT)
    p = run_node(d, node_sdk, sts, "get_token.mjs", "DefaultAzureCredential", sts.batch_url)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    check_token_and_batch(d, sts, out)
    # The chain's environment credentials found nothing; managed identity
    # answered.
    assert any("Result for ManagedIdentityCredential: SUCCESS" in line
               for line in out["logs"]), out["logs"]
    assert live_capabilities(d) == 0


def test_node_program_outlives_its_capability_lifetime(make_daemon, sts, node_sdk):
    """A Node service that runs for hours: its capability (compat_lifetime,
    2 s here, 12 h by default) is renewed by `batchtok exec` while it runs,
    and the SDK keeps getting tokens through it long past the first one's
    expiry. One credential for the whole run, as such a program has: MSAL
    keeps the token in a process-wide cache and goes back to the endpoint
    only when it is within 5 minutes of expiry, which is every request here
    (4-minute tokens from the token service, which min_validity = 1m lets
    the daemon hand out): each getToken reaches the endpoint, as such a
    program's one refresh an hour does. Counted by the program and by the
    daemon's log."""
    lifetime = 2
    sts.fault("slow", lifetime=240, count=-1)
    d = make_daemon(compat_lifetime="%ds" % lifetime, min_validity="1m", **COMPAT)
    p = run_node(d, node_sdk, sts, "long_running.mjs", sts.batch_url, str(4 * lifetime), "0.25")
    assert p.stdout, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["error"] is None, (out, p.stderr[-3000:])
    assert p.stderr == ""
    requests = out["requests"]
    # Each getToken reached the endpoint, and the pipeline's at the end did.
    assert out["iterations"] >= 4 * lifetime, out
    assert len(requests) == out["iterations"] + 1, out
    assert all(r["status"] == 200 for r in requests), out
    # Served well past the first capability's lifetime.
    assert requests[-1]["at"] - requests[0]["at"] >= 3 * lifetime * 1000, out
    assert out["tokens"] == 1 and out["batch"] == 200
    log = d.read_log()
    lines = log.splitlines()
    handed = [i for i, line in enumerate(lines)
              if "handed token" in line and "over the compat endpoint" in line]
    assert len(handed) == len(requests), log[-3000:]
    # (line, expiry) of each renewal, and the first renewal that moved the
    # expiry two lifetimes past the first one's: the endpoint served the
    # program after it, long after the first expiry.
    renewed = [(i, int(m.group(1))) for i, line in enumerate(lines)
               if (m := re.search(r"renewed a compat capability .* until (\d+)$", line))]
    assert len(renewed) >= 3, log[-3000:]
    late = [i for i, until in renewed if until >= renewed[0][1] + 2 * lifetime]
    assert late and any(i > late[0] for i in handed), log[-3000:]
    st = sts.stats()
    assert st["token_requests"] == 1 and st["batch_authorized"] == 1
    assert live_capabilities(d) == 0
