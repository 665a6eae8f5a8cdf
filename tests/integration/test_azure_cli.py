"""Clients nobody here wrote, as Debian ships them, under `batchtok exec
--compat`: az CLI (azure-cli 2.45) and msrestazure's MSIAuthentication.

Both send the Cloud Shell / VM-extension request when MSI_ENDPOINT is set
outside App Service: POST {MSI_ENDPOINT} with the form body resource=... and
only Metadata: true. exec --compat puts the capability in MSI_ENDPOINT's
path for them. az also lists subscriptions at Azure Resource Manager while
it logs in: the fake token service plays ARM, reached through its
loopback-only CONNECT proxy (HTTPS_PROXY), which refuses every other host.

These run once: not again in the ASan+UBSan pass, whose daemon is the same
code serving the same requests, at many times the cost of az's start-up."""

import http.client
import json
import os
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import BATCH, BATCHTOK, CLIENT, PYTHON, SANITIZED, TENANT, jwt_claims
from test_compat import _end_compat_programs, compat_env, grant  # noqa: F401

ARM = "https://management.core.windows.net/"
COMPAT = {"compat_endpoint": "127.0.0.1:0"}
IDENTITY = {"batch": {"resources": BATCH + " " + ARM}}
AZ_HOUSEKEEPING = {"azure.microsoft.com:443", "raw.githubusercontent.com:443"}

pytestmark = pytest.mark.skipif(SANITIZED, reason="real clients run once, not under ASan")


def client_env(sts, home):
    """The environment of a user's shell: no Azure variables of the test's
    own, az's state in home, ARM through the proxy, the test CA trusted."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "APPSETTING_"))
         and k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")}
    e.update(HOME=home, AZURE_CONFIG_DIR=os.path.join(home, ".azure"),
             AZURE_CORE_COLLECT_TELEMETRY="false", AZURE_CORE_NO_COLOR="true",
             AZURE_CORE_ONLY_SHOW_ERRORS="true", AZURE_CORE_SURVEY_MESSAGE="false",
             HTTPS_PROXY=sts.proxy_url, NO_PROXY="127.0.0.1,localhost",
             REQUESTS_CA_BUNDLE=sts.ca)
    return e


def under_compat(d, env, *argv, timeout=180):
    p = subprocess.run([BATCHTOK, "-S", d.sock, "exec", "--compat", "-i", "batch", "--"] +
                       list(argv), capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, (argv, p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    return p.stdout


@pytest.fixture
def az():
    path = shutil.which("az")
    if not path:
        pytest.fail("az is not installed: tests/install-deps.sh installs Debian's azure-cli")
    return path


def test_az_login_identity_and_get_access_token(make_daemon, sts, az, tmp_path):
    d = make_daemon(IDENTITY, **COMPAT)
    env = client_env(sts, str(tmp_path))
    login = json.loads(under_compat(d, env, az, "login", "--identity",
                                    "--allow-no-subscriptions", "-o", "json"))
    # No subscription: a tenant-level account, the tenant read from the
    # token the daemon handed out for ARM.
    assert [a["tenantId"] for a in login] == [TENANT], login
    assert login[0]["user"]["type"] == "servicePrincipal"
    stats = sts.stats()
    assert stats["arm_requests"] and stats["arm_refused"] == 0, stats
    # Nothing else went out but az's own daily version check (a HEAD to
    # azure.microsoft.com, then GitHub), which the proxy refuses and az
    # shrugs off: no token came from anywhere but the daemon.
    assert set(stats["proxy_refused"]) <= AZ_HOUSEKEEPING, stats["proxy_refused"]
    # A later command, in a new exec --compat with a new capability: az
    # keeps only the account, and asks the endpoint again.
    out = json.loads(under_compat(d, env, az, "account", "get-access-token", "--resource",
                                  BATCH, "-o", "json"))
    assert out["tenant"] == TENANT and out["tokenType"] == "Bearer"
    assert jwt_claims(out["accessToken"])["aud"] == BATCH
    assert out["accessToken"] == d.get().out.strip()
    # ARM's token came from the same cache: one request per resource.
    assert sts.stats()["token_requests"] == 2
    # The capabilities were given back when each az ended.
    assert json.loads(d.run("status", "-o", "json").out)["compat_capabilities"] == 0


MSRESTAZURE = """
import json, sys
from msrestazure.azure_active_directory import MSIAuthentication
creds = MSIAuthentication(resource=sys.argv[1])
print(json.dumps(creds.token))
"""


def test_msrestazure_msi_authentication(make_daemon, sts, tmp_path):
    d = make_daemon(IDENTITY, **COMPAT)
    env = client_env(sts, str(tmp_path))
    tok = json.loads(under_compat(d, env, PYTHON, "-c", MSRESTAZURE, BATCH))
    assert tok["token_type"] == "Bearer" and tok["resource"] == BATCH
    assert jwt_claims(tok["access_token"])["aud"] == BATCH
    assert tok["access_token"] == d.get().out.strip()
    # With a selector naming the identity, as MSIAuthentication(client_id=)
    # sends it in the form.
    script = MSRESTAZURE.replace("resource=sys.argv[1]", "resource=sys.argv[1], "
                                 "client_id=sys.argv[2]")
    tok2 = json.loads(under_compat(d, env, PYTHON, "-c", script, ARM, CLIENT))
    assert jwt_claims(tok2["access_token"])["aud"] == ARM


def post(url, body, headers):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("POST", u.path + ("?" + u.query if u.query else ""), body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data) if data else None


def test_form_shape_still_needs_a_live_capability(make_daemon, sts):
    """The POST shape is held to the same rules as the others: no, a wrong
    or a given-back capability is refused, and so are requests a browser
    could be tricked into sending (no Metadata header), a form sent as
    another type, and a query beside the form."""
    d = make_daemon(IDENTITY, **COMPAT)
    env = compat_env(d)
    url = env["MSI_ENDPOINT"]
    cap = env["MSI_SECRET"]
    base = env["IDENTITY_ENDPOINT"][:-len("/msi/token")]
    assert url == base + "/" + cap + "/msi/token"
    form = "resource=" + urllib.parse.quote(BATCH, safe="")
    ok = {"Metadata": "true", "Content-Type": "application/x-www-form-urlencoded"}
    status, body = post(url, form, ok)
    assert status == 200 and body["resource"] == BATCH, body
    status, body = post(base + "/msi/token", form, ok)
    assert status == 401 and "no capability in the path" in body["error_description"]
    wrong = "bt1_" + "A" * 43
    status, _ = post(base + "/" + wrong + "/msi/token", form, ok)
    assert status == 401
    status, body = post(url, form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "Metadata" in body["error_description"]
    status, body = post(url, form, {"Metadata": "true", "Content-Type": "text/plain"})
    assert status == 415
    status, body = post(url + "?resource=x", form, ok)
    assert status == 400 and "query" in body["error_description"]
    status, body = post(url, "", ok)
    assert status == 400 and "resource is required" in body["error_description"]
    status, body = post(url, form + "&client_id=someone-else", ok)
    assert status == 400 and "does not name identity" in body["error_description"]
    status, _ = post(url, "x" * 5000, ok)
    assert status == 413
    # A POST to IMDS's path is not a shape anyone sends.
    status, _ = post(base + "/" + cap + "/metadata/identity/oauth2/token", form, ok)
    assert status == 405
    # The App Service shapes accept the capability in the path too, and
    # refuse two different ones.
    q = "?api-version=2017-09-01&resource=" + urllib.parse.quote(BATCH, safe="")
    c = http.client.HTTPConnection(urllib.parse.urlsplit(base).hostname,
                                   urllib.parse.urlsplit(base).port, timeout=30)
    c.request("GET", "/" + cap + "/msi/token/" + q, headers={"secret": cap})
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["resource"] == BATCH
    other, _, _ = grant(d)
    c.request("GET", "/" + cap + "/msi/token" + q, headers={"secret": other})
    r = c.getresponse()
    assert r.status == 400 and b"different capabilities" in r.read()
    # A bare URL is not enough for the App Service shapes, which are not
    # held to Metadata: true: their header is required (else a program that
    # fetches URLs for others would hand out tokens to whoever knows one).
    for api in ("2017-09-01", "2019-08-01"):
        c.request("GET", "/" + cap + "/msi/token?api-version=%s&resource=%s" % (
            api, urllib.parse.quote(BATCH, safe="")))
        r = c.getresponse()
        assert r.status == 401 and b"header" in r.read(), api
    # Every copy of the capability must be the same, whichever header.
    c.request("GET", "/" + cap + "/msi/token" + q, headers={"secret": cap,
                                                         "X-IDENTITY-HEADER": other})
    r = c.getresponse()
    assert r.status == 400 and b"different capabilities" in r.read()
    c.close()
    status, body = post(url, form, dict(ok, **{"X-IDENTITY-HEADER": other}))
    assert status == 400 and "different capabilities" in body["error_description"]
    # The Host must name loopback and the endpoint's port: a web page that
    # rebinds its own name to 127.0.0.1 sends its name.
    port = urllib.parse.urlsplit(base).port
    for host, want in (("attacker.example:%d" % port, 400), ("127.0.0.1:1", 400),
                       ("localhost:%d" % port, 200), ("127.0.0.1", 200)):
        status, body = post(url, form, dict(ok, Host=host))
        assert status == want, (host, body)
    assert "DNS rebinding" in d.read_log()
    assert cap not in d.read_log() and other not in d.read_log()


# msrestazure in a long-running program: set_token() asks MSI_ENDPOINT again
# (the POST shape, the capability in the path) as the program does when its
# token nears expiry; for seconds past compat_lifetime.
MSRESTAZURE_LOOP = """
import sys, time
from msrestazure.azure_active_directory import MSIAuthentication
creds = MSIAuthentication(resource=sys.argv[1])
end, n = time.monotonic() + float(sys.argv[2]), 1
while time.monotonic() < end:
    creds.set_token()
    n += 1
print("ok", n)
"""


def test_long_running_clients_outlive_compat_lifetime(make_daemon, sts, az, tmp_path):
    """The capability lifecycle holds for these clients: with compat_lifetime
    = 2 s (12 h by default), az commands one after another and an
    msrestazure program keep getting tokens for three lifetimes, since exec
    --compat renews the capability, whose text (in MSI_ENDPOINT's path) does
    not change."""
    d = make_daemon(IDENTITY, compat_lifetime="2s", **COMPAT)
    env = client_env(sts, str(tmp_path))
    under_compat(d, env, az, "login", "--identity", "--allow-no-subscriptions", "-o", "none")
    out = under_compat(d, env, PYTHON, "-c", MSRESTAZURE_LOOP, BATCH, "6")
    assert out.startswith("ok "), out
    renewed = d.read_log().count("renewed a compat capability")
    assert renewed >= 2, renewed
    out = under_compat(d, env, "sh", "-c", 'end=$(($(date +%s) + 6)); n=0; '
                       'while [ "$(date +%s)" -lt "$end" ]; do '
                       'az account get-access-token --resource "$1" --query accessToken '
                       '-o tsv || exit 1; n=$((n + 1)); done; echo "ok $n"', "sh", BATCH)
    assert out.splitlines()[-1].startswith("ok "), out
    assert set(out.splitlines()[:-1]) == {d.get().out.strip()}
    assert d.read_log().count("renewed a compat capability") >= renewed + 2


def test_readme_curl_imds_request(make_daemon, sts):
    """The README's curl command (the IMDS request of Microsoft's
    managed-identity article, its base URL moved to the endpoint) works as
    written there."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
        readme = f.read()
    start = readme.index("    batchtok exec --compat -i batch-prod -- sh -c '\n      curl")
    block = readme[start:readme.index("\n\n", start)]
    argv = block.replace("\\\n", "").split("-- sh -c ", 1)[1].strip()
    assert argv[0] == "'" and argv[-1] == "'"
    d = make_daemon(IDENTITY, **COMPAT)
    out = under_compat(d, dict(os.environ), "sh", "-c", argv[1:-1])
    body = json.loads(out)
    assert body["resource"] == BATCH and body["access_token"] == d.get().out.strip()
