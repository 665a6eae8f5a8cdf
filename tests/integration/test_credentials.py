"""Every credential source against the fake token service and metadata
service: certificates, managed identity, federated tokens and device-code
sign-in, with their failure modes."""

import json
import os
import pwd
import shutil
import signal
import subprocess
import time

from conftest import (BATCH, BATCHTOK, BATCHTOKD as BATCHTOKD_PATH, CERT_CLIENT, FED_CLIENT,
                      FED_SUBJECT, MI_CLIENT, MI_OBJECT, MI_RESOURCE_ID, PUBLIC_CLIENT, TENANT,
                      jwt_claims, make_cert, wait_for)

ARM = "https://management.azure.com/"


def cert_identity(sts, cert="good", **kw):
    o = {"credential": "certificate", "client_id": CERT_CLIENT,
         "certificate_file": sts.certs[cert] if cert in sts.certs else cert}
    o.update(kw)
    return o


# --- certificates -------------------------------------------------------------

def test_certificate_gets_token_with_fresh_signed_assertion(make_daemon, sts):
    d = make_daemon({"cert": cert_identity(sts)})
    r = d.get()
    assert r.rc == 0, r
    claims = jwt_claims(r.out.strip())
    assert claims["aud"] == BATCH and claims["appid"] == CERT_CLIENT
    assert d.get("--force-refresh").rc == 0
    st = sts.stats()
    # The fake verified the signature against the registered certificate.
    assert st["issued"] == 2 and len(st["assertions"]) == 2
    a1, a2 = st["assertions"]
    assert a1["header"]["alg"] == "PS256" and "x5t#S256" in a1["header"]
    assert "x5c" not in a1["header"]
    assert a1["claims"]["iss"] == a1["claims"]["sub"] == CERT_CLIENT
    assert a1["claims"]["aud"] == "%s/%s/oauth2/v2.0/token" % (sts.url, TENANT)
    assert a1["claims"]["exp"] - a1["claims"]["nbf"] <= 600
    assert a1["claims"]["jti"] != a2["claims"]["jti"]
    assert "client_secret" not in st["last_form_keys"]
    assert "client_assertion" in st["last_form_keys"]


def test_certificate_rs256_x5c_and_v1(make_daemon, sts):
    d = make_daemon({"cert": cert_identity(sts, assertion_algorithm="RS256", send_x5c="yes",
                                           token_version=1)})
    r = d.get()
    assert r.rc == 0, r
    a = sts.stats()["assertions"][0]
    assert a["header"]["alg"] == "RS256"
    assert isinstance(a["header"]["x5c"], list) and len(a["header"]["x5c"]) == 1
    assert a["claims"]["aud"] == "%s/%s/oauth2/token" % (sts.url, TENANT)


def test_certificate_status_shows_expiry(make_daemon, sts):
    d = make_daemon({"cert": cert_identity(sts)})
    ident = json.loads(d.run("status", "-o", "json").out)["identities"][0]
    assert ident["credential"] == "certificate"
    assert "batchtok test good" in ident["certificate"]
    # The good certificate was made valid for 29 more days: the log warns.
    assert 28 * 86400 < ident["certificate_expires"] - time.time() < 30 * 86400
    assert "expires on" in d.read_log() and "renew it" in d.read_log()


def test_expired_certificate_is_refused_locally(make_daemon, sts):
    d = make_daemon({"cert": cert_identity(sts, "expired")})
    r = d.get()
    assert r.rc == 6, r
    assert "expired on" in r.err and "renew it" in r.err
    assert sts.stats()["token_requests"] == 0
    assert "expired on" in d.read_log()


def test_unregistered_certificate_is_rejected(make_daemon, sts):
    d = make_daemon({"cert": cert_identity(sts, "unregistered")})
    r = d.get()
    assert r.rc == 6, r
    assert "AADSTS700027" in r.err and "certificate registered" in r.err


def test_encrypted_and_pkcs12_certificates(make_daemon, sts, tmp_path):
    # Registered certificates are fixed at the fake's start, so these use
    # keys of their own and must be refused by the service, not by the
    # loader: what is checked is that they load.
    enc, _ = make_cert(str(tmp_path), "enc", passphrase="pass phrase")
    pfx, _ = make_cert(str(tmp_path), "pfx", passphrase="pfx-pass", pkcs12=True)
    pw = tmp_path / "pw"
    pw.write_text("pass phrase\n")
    pw.chmod(0o600)
    pfxpw = tmp_path / "pfxpw"
    pfxpw.write_text("pfx-pass\n")
    pfxpw.chmod(0o600)
    d = make_daemon({"enc": cert_identity(sts, enc, certificate_passphrase_file=str(pw)),
                     "pfx": cert_identity(sts, pfx, certificate_passphrase_file=str(pfxpw))},
                    start=False)
    r = subprocess.run([d_path(), "-c", d.conf, "--check-config"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    d.start()
    r = d.get("-i", "pfx")
    assert r.rc == 6 and "AADSTS700027" in r.err, r


def d_path():
    from conftest import BATCHTOKD
    return BATCHTOKD


def test_certificate_config_errors(make_daemon, sts, tmp_path):
    enc, _ = make_cert(str(tmp_path), "enc2", passphrase="secret words")
    loose = str(tmp_path / "loose.pem")
    shutil.copy(sts.certs["good"], loose)
    os.chmod(loose, 0o644)
    d = make_daemon({"a": cert_identity(sts, enc), "b": cert_identity(sts, loose),
                     "c": cert_identity(sts, sts.certs["good"] + ".missing")}, start=False)
    r = subprocess.run([d_path(), "-c", d.conf, "--check-config"], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert "private key is encrypted" in r.stderr and "passphrase" in r.stderr
    assert "accessible by others" in r.stderr and "chmod 600" in r.stderr
    assert "cannot open certificate" in r.stderr
    assert "secret words" not in r.stderr


# --- managed identity (IMDS) --------------------------------------------------

def mi_identity(sts, **kw):
    o = {"credential": "managed-identity", "tenant": None, "client_id": None,
         "authority_host": None, "imds_endpoint": sts.imds_url}
    o.update(kw)
    return o


def test_managed_identity_system_assigned(make_daemon, sts):
    # A proxy in the environment must not be used for IMDS.
    d = make_daemon({"node": mi_identity(sts)},
                    env={"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    r = d.get()
    assert r.rc == 0, r
    assert jwt_claims(r.out.strip())["aud"] == BATCH
    st = sts.stats()
    assert st["imds_requests"] == 1 and st["token_requests"] == 0
    q = st["last_imds"]
    assert q["metadata"] == "true" and q["forwarded"] is None and q["via"] is None
    assert q["query"] == {"api-version": "2018-02-01", "resource": BATCH}
    # Cached: many gets, one IMDS request per token lifetime.
    for _ in range(20):
        assert d.get().rc == 0
    assert sts.stats()["imds_requests"] == 1


def test_managed_identity_user_assigned_selectors(make_daemon, sts):
    d = make_daemon({"a": mi_identity(sts, client_id=MI_CLIENT),
                     "b": mi_identity(sts, object_id=MI_OBJECT),
                     "c": mi_identity(sts, resource_id=MI_RESOURCE_ID),
                     "x": mi_identity(sts, client_id="99999999-9999-9999-9999-999999999999")})
    for name, key, value in (("a", "client_id", MI_CLIENT), ("b", "object_id", MI_OBJECT),
                             ("c", "msi_res_id", MI_RESOURCE_ID)):
        r = d.get("-i", name)
        assert r.rc == 0, r
        assert jwt_claims(r.out.strip())["appid"] == MI_CLIENT
        assert sts.stats()["last_imds"]["query"][key] == value
    r = d.get("-i", "x")
    assert r.rc == 6, r
    assert "managed identity endpoint: HTTP 400" in r.err and "assign" in r.err


def test_managed_identity_expiry_from_expires_on(make_daemon, sts):
    d = make_daemon({"node": mi_identity(sts)})
    j = json.loads(d.get("-o", "json").out)
    first = j["expires_on"]
    # A second daemon gets IMDS's cached token: same expiry, not "now + 1h".
    time.sleep(1.1)
    d2 = make_daemon({"node": mi_identity(sts)})
    assert json.loads(d2.get("-o", "json").out)["expires_on"] == first


def test_managed_identity_retries_imds_updating_and_throttling(make_daemon, sts):
    modes = ("410", "404", "429", "503")
    d = make_daemon({"n" + m: mi_identity(sts) for m in modes})
    for mode in modes:
        sts.reset()
        sts.fault(mode, count=1, target="imds")
        r = d.get("-i", "n" + mode)
        assert r.rc == 0, (mode, r)
        assert sts.stats()["imds_requests"] == 2, mode


def test_managed_identity_unreachable_and_persistent_failure(make_daemon, sts):
    d = make_daemon({"gone": mi_identity(sts, imds_endpoint="http://127.0.0.1:9"),
                     "node": mi_identity(sts)})
    r = d.get("-i", "gone")
    assert r.rc == 7, r
    assert "managed identity endpoint unreachable" in r.err and "Azure VM" in r.err
    sts.fault("500", target="imds")
    r = d.get("-i", "node")
    assert r.rc == 7, r
    assert "managed identity endpoint: HTTP 500" in r.err


def test_managed_identity_config_checks(make_daemon, sts):
    d = make_daemon({"x": mi_identity(sts, client_id=MI_CLIENT, object_id=MI_OBJECT,
                                      secret_file="/etc/passwd",
                                      imds_endpoint="ftp://x")}, start=False)
    r = subprocess.run([d_path(), "-c", d.conf, "--check-config"], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert "not several" in r.stderr
    assert "secret_file = applies to credential = secret" in r.stderr
    assert "imds_endpoint: 'ftp://x' must be an http:// or https:// URL" in r.stderr


# --- federated (workload identity) --------------------------------------------

def fed_identity(path, **kw):
    o = {"credential": "federated", "client_id": FED_CLIENT, "federated_token_file": path}
    o.update(kw)
    return o


def write_token(path, token):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(token + "\n")
    os.rename(tmp, path)


def test_federated_reads_the_rotating_file_every_time(make_daemon, sts, tmp_path):
    path = str(tmp_path / "token")
    t1 = sts.federated_token()
    write_token(path, t1)
    d = make_daemon({"aks": fed_identity(path)})
    r = d.get()
    assert r.rc == 0, r
    assert jwt_claims(r.out.strip())["appid"] == FED_CLIENT
    st = sts.stats()
    assert st["assertions"][0]["claims"]["sub"] == FED_SUBJECT
    assert sorted(st["last_form_keys"]) == ["client_assertion", "client_assertion_type",
                                            "client_id", "grant_type", "scope"]
    t2 = sts.federated_token()
    write_token(path, t2)
    assert d.get("--force-refresh").rc == 0
    assert sts.stats()["assertions"][1]["claims"]["jti"] == jwt_claims(t2)["jti"]


def test_federated_environment_defaults(make_daemon, sts, tmp_path):
    path = str(tmp_path / "token")
    write_token(path, sts.federated_token())
    env = {"AZURE_CLIENT_ID": FED_CLIENT, "AZURE_TENANT_ID": TENANT,
           "AZURE_FEDERATED_TOKEN_FILE": path, "AZURE_AUTHORITY_HOST": sts.url + "/"}
    d = make_daemon({"aks": {"credential": "federated", "client_id": None, "tenant": None,
                             "authority_host": None}}, env=env)
    r = d.get()
    assert r.rc == 0, r
    status = json.loads(d.run("status", "-o", "json").out)["identities"][0]
    assert status["client_id"] == FED_CLIENT and status["federated_token_file"] == path


def test_federated_failures(make_daemon, sts, tmp_path):
    paths = {n: str(tmp_path / n) for n in ("stale", "gone", "stranger")}
    write_token(paths["stale"], sts.federated_token(lifetime=-10))
    write_token(paths["gone"], sts.federated_token())
    write_token(paths["stranger"], sts.federated_token(subject="system:serviceaccount:x:y"))
    d = make_daemon({n: fed_identity(p) for n, p in paths.items()})
    r = d.get("-i", "stale")
    assert r.rc == 6, r
    assert "AADSTS700024" in r.err and "rotated" in r.err
    r = d.get("-i", "stranger")
    assert r.rc == 6, r
    assert "AADSTS70021" in r.err
    # A missing file is a clear local error, and nothing is sent.
    os.unlink(paths["gone"])
    before = sts.stats()["token_requests"]
    r = d.get("-i", "gone")
    assert r.rc == 6, r
    assert "cannot read federated_token_file" in r.err and "mounted" in r.err
    assert sts.stats()["token_requests"] == before


def project_token(tokens, token, stamp):
    """Writes token as the kubelet projects it (ENTRA.md 5): a timestamped
    directory, ..data pointing at it (swapped atomically) and the file name a
    link through ..data."""
    d = os.path.join(tokens, "..%s" % stamp)
    os.mkdir(d, 0o755)
    with open(os.path.join(d, "azure-identity-token"), "w") as f:
        f.write(token)
    os.chmod(os.path.join(d, "azure-identity-token"), 0o644)
    os.symlink("..%s" % stamp, os.path.join(tokens, "..data_tmp"))
    os.rename(os.path.join(tokens, "..data_tmp"), os.path.join(tokens, "..data"))
    link = os.path.join(tokens, "azure-identity-token")
    if not os.path.lexists(link):
        os.symlink("..data/azure-identity-token", link)
    return link


def test_federated_kubernetes_projected_layout(make_daemon, sts, tmp_path):
    tokens = str(tmp_path / "tokens")
    os.mkdir(tokens, 0o755)
    t1, t2 = sts.federated_token(), sts.federated_token()
    path = project_token(tokens, t1, "2024_01_01_00_00_00.1")
    d = make_daemon({"aks": fed_identity(path)})
    r = d.get()
    assert r.rc == 0, r
    assert sts.stats()["assertions"][0]["claims"]["jti"] == jwt_claims(t1)["jti"]
    # The kubelet rotates the token: a new directory, ..data swapped.
    project_token(tokens, t2, "2024_01_01_00_50_00.2")
    assert d.get("--force-refresh").rc == 0
    assert sts.stats()["assertions"][1]["claims"]["jti"] == jwt_claims(t2)["jti"]


def test_federated_file_that_is_not_trustworthy_is_refused(make_daemon, sts, tmp_path):
    nobody = pwd.getpwnam("nobody").pw_uid
    # A FIFO: opening it would wait for a writer forever.
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo, 0o600)
    # A link to /etc/shadow in a directory another user owns (and so could
    # have put there).
    evil = tmp_path / "evil"
    evil.mkdir()
    os.symlink("/etc/shadow", str(evil / "token"))
    os.chown(str(evil), nobody, nobody)
    # The token file itself writable by anyone, or owned by another user.
    loose = str(tmp_path / "loose")
    write_token(loose, sts.federated_token())
    os.chmod(loose, 0o666)
    theirs = str(tmp_path / "theirs")
    write_token(theirs, sts.federated_token())
    os.chown(theirs, nobody, nobody)
    d = make_daemon({"fifo": fed_identity(fifo), "shadow": fed_identity(str(evil / "token")),
                     "loose": fed_identity(loose), "theirs": fed_identity(theirs)})
    for name, why in (("fifo", "not a regular file"),
                      ("shadow", "the directory %s is owned by uid %d" % (evil, nobody)),
                      ("loose", "writable by its group or by others"),
                      ("theirs", "owned by uid %d" % nobody)):
        r = d.run("-t", "10", "get", "-i", name)
        assert r.rc == 6, (name, r)
        assert "cannot read federated_token_file" in r.err and why in r.err, (name, r)
    assert sts.stats()["token_requests"] == 0
    # The daemon was never stuck on the FIFO: it stops on SIGTERM (the
    # fixture checks, within 10 s).


# --- device code sign-in ------------------------------------------------------

def me_identity(**kw):
    o = {"credential": "device-code", "client_id": PUBLIC_CLIENT}
    o.update(kw)
    return o


class Login:
    """batchtok login running in the background; the prompt read from its
    stderr."""

    def __init__(self, d, name="me"):
        self.proc = subprocess.Popen([BATCHTOK, "-S", d.sock, "login", "-i", name],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.prompt = self.proc.stderr.readline()

    def code(self):
        return self.prompt.split("enter the code ")[1].split()[0]

    def finish(self, timeout=30):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self.prompt + err


def sign_in(d, sts, user="alice@contoso.com", name="me"):
    login = Login(d, name)
    assert "enter the code" in login.prompt, login.prompt
    sts.device(login.code(), "approve", user)
    return login.finish()


def test_device_code_login_then_tokens_with_rotation(make_daemon, sts, tmp_path):
    sts.control("/_control/device_settings", {"interval": 1, "slow_down": 1})
    d = make_daemon({"me": me_identity()}, state_dir=str(tmp_path / "state"))
    r = d.get()
    assert r.rc == 6 and "batchtok login -i me" in r.err, r
    login = Login(d)
    sts.device(login.code(), "approve", "alice@contoso.com")
    rc, out, err = login.finish()
    assert rc == 0, err
    assert out == "signed in as alice@contoso.com\n"
    # The code lets anyone sign in in the user's place: it is not logged.
    assert login.code() not in d.read_log()
    scope = sts.stats()["last_device_scope"].split()
    assert BATCH + "/.default" in scope and "offline_access" in scope
    r = d.get()
    assert r.rc == 0, r
    assert jwt_claims(r.out.strip())["upn"] == "alice@contoso.com"
    assert d.get("-o", "json").rc == 0
    assert sts.stats()["refresh_requests"] == 1
    # Each use of the refresh token rotates it; a forced refresh uses the new one.
    assert d.get("--force-refresh").rc == 0
    assert sts.stats()["refresh_requests"] == 2
    ident = json.loads(d.run("status", "-o", "json").out)["identities"][0]
    assert ident["signed_in"] == "alice@contoso.com" and ident["credential"] == "device-code"
    # The sign-in is kept sealed, owner-only, and survives a restart.
    state = tmp_path / "state"
    wait_for(lambda: (state / "me.signin").exists(), 5, what="the state file")
    assert (state / "me.signin").stat().st_mode & 0o777 == 0o600
    assert (state / "state.key").stat().st_mode & 0o777 == 0o600
    assert b"alice" not in (state / "me.signin").read_bytes()
    d.stop()
    d.start()
    r = d.get()
    assert r.rc == 0, r
    assert "signed in as alice@contoso.com" in d.read_log()
    # Logout forgets it: tokens are no longer served and the file is gone.
    assert d.run("logout", "-i", "me").rc == 0
    wait_for(lambda: not (state / "me.signin").exists(), 5, what="the state file to go")
    r = d.get()
    assert r.rc == 6 and "batchtok login" in r.err, r


def traced_calls(trace):
    """{pid: [(call, args, result)]} from `strace -ff -o TRACE` (a file per
    thread, so no call is split by another's)."""
    import glob
    import re
    calls = {}
    for path in glob.glob(trace + ".*"):
        with open(path) as f:
            for line in f:
                m = re.match(r"(\w+)\((.*)\)\s+= (-?\d+)", line)
                if m:
                    calls.setdefault(path, []).append((m.group(1), m.group(2),
                                                       int(m.group(3))))
    return calls


def test_sign_in_state_changes_are_durable(make_daemon, sts, tmp_path):
    # Each state file is written, fsync()ed and renamed into place (or
    # removed), and then its directory is fsync()ed; so is the key's
    # creation. Without the directory's fsync a crash can bring back a
    # refresh token the service has rotated away, or lose the key.
    state = str(tmp_path / "state")
    trace = str(tmp_path / "trace")
    wrapper = tmp_path / "traced-batchtokd"
    wrapper.write_text("#!/bin/sh\nexec strace -ff -qq -e trace=openat,rename,unlink,fsync "
                       "-o %s %s \"$@\"\n" % (trace, BATCHTOKD_PATH))
    wrapper.chmod(0o755)
    d = make_daemon({"me": me_identity()}, state_dir=state, start=False)
    # LeakSanitizer cannot run under ptrace; without ASan this is unused.
    d.env["ASAN_OPTIONS"] = ":".join([o for o in [d.env.get("ASAN_OPTIONS")] if o] +
                                     ["detect_leaks=0"])
    d.start(str(wrapper))
    rc, out, err = sign_in(d, sts)
    assert rc == 0, err
    signin = os.path.join(state, "me.signin")
    wait_for(lambda: os.path.exists(signin), 5, what="the state file")
    assert d.get("--force-refresh").rc == 0
    assert d.run("logout", "-i", "me").rc == 0
    wait_for(lambda: not os.path.exists(signin), 5, what="the state file to go")
    # Stop batchtokd itself: strace ends with it, with its exit status.
    with open("/proc/%d/task/%d/children" % (d.proc.pid, d.proc.pid)) as f:
        os.kill(int(f.read().split()[0]), signal.SIGTERM)
    assert d.proc.wait(10) == 0

    def synced_dir_next(calls, i):
        """The calls after calls[i] open the state directory and fsync it."""
        rest = [c for c in calls[i + 1:] if c[0] in ("openat", "fsync")][:2]
        return (len(rest) == 2 and rest[0][0] == "openat" and
                rest[0][1].startswith('AT_FDCWD, "%s", ' % state) and
                "O_DIRECTORY" in rest[0][1] and rest[1] == ("fsync", str(rest[0][2]), 0))

    changes = set()
    for pid, calls in traced_calls(trace).items():
        for i, (call, args, result) in enumerate(calls):
            if ((call == "rename" and args.endswith('"%s"' % signin)) or
                    (call == "unlink" and args == '"%s"' % signin) or
                    (call == "openat" and "state.key" in args and "O_EXCL" in args)) and \
                    result >= 0:
                changes.add(call)
                if call == "openat":
                    i = next(k for k in range(i + 1, len(calls))
                             if calls[k] == ("fsync", str(result), 0))
                assert synced_dir_next(calls, i), (call, args, calls[i + 1:i + 4])
    # The key's creation, the sign-in and its rotation (saves close together
    # may be written once), the sign-out.
    assert changes == {"openat", "rename", "unlink"}, changes


def test_device_code_declined_expired_and_denied(make_daemon, sts, tmp_path):
    d = make_daemon({"me": me_identity()}, state_dir=str(tmp_path / "state"))
    login = Login(d)
    sts.device(login.code(), "decline")
    rc, out, err = login.finish()
    assert rc == 6 and "declined" in err, err
    sts.control("/_control/device_settings", {"expires_in": 2, "interval": 1})
    rc, out, err = Login(d).finish()
    assert rc == 8 and "expired" in err and "batchtok login -i me" in err, err
    sts.control("/_control/device_settings", {"expires_in": 900})
    # Signing in is for administrators: nobody is not one.
    r = d.run("login", "-i", "me", user=65534)
    assert r.rc == 4, r
    r = d.run("login", "-i", "batchx")
    assert r.rc == 5, r


def test_device_code_revoked_refresh_token(make_daemon, sts, tmp_path):
    d = make_daemon({"me": me_identity()}, state_dir=str(tmp_path / "state"))
    rc, out, err = sign_in(d, sts, user="bob@contoso.com")
    assert rc == 0, err
    sts.control("/_control/revoke", {"user": "bob@contoso.com"})
    r = d.get()
    assert r.rc == 6, r
    assert "AADSTS50173" in r.err and "batchtok login" in r.err
    wait_for(lambda: not (tmp_path / "state" / "me.signin").exists(), 5,
             what="the state file to go")
    ident = json.loads(d.run("status", "-o", "json").out)["identities"][0]
    assert ident["signed_in"] == "-"


def test_device_code_state_sealed_to_its_key(make_daemon, sts, tmp_path):
    state = tmp_path / "state"
    d = make_daemon({"me": me_identity()}, state_dir=str(state))
    assert sign_in(d, sts)[0] == 0
    wait_for(lambda: (state / "me.signin").exists(), 5, what="the state file")
    d.stop()
    # Another key: the saved sign-in cannot be opened, and says so.
    (state / "state.key").write_bytes(os.urandom(32))
    d.start()
    r = d.get()
    assert r.rc == 6, r
    assert "cannot be used" in d.read_log() and "sealed with another key" in d.read_log()
