"""Fixtures for batchtok's integration tests: the fake token service, real
batchtokd processes with generated configs, and the batchtok command.

Every process started here is stopped by its PID; every wait is bounded."""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("BATCHTOK_BUILD", os.path.join(TOP, "build"))
BATCHTOKD = os.path.join(BUILD, "batchtokd")
BATCHTOK = os.path.join(BUILD, "batchtok")
PYTHON = "/usr/bin/python3"


def _sanitized():
    """Whether this build was made with ASan (make check's second pass)."""
    try:
        with open(BATCHTOKD, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized()


def _version():
    """The version the Makefile builds (VERSION := X)."""
    import re
    with open(os.path.join(TOP, "Makefile")) as f:
        return re.search(r"^VERSION\s*:=\s*(\S+)", f.read(), re.M).group(1)


VERSION = _version()

TENANT = "00000000-0000-0000-0000-000000000000"
CLIENT = "11111111-1111-1111-1111-111111111111"
SECRET = "s3cr3t-Value~with.odd&chars=+/%"
OTHER_CLIENT = "22222222-2222-2222-2222-222222222222"
OTHER_SECRET = "another-secret-value-for-tests"
BATCH = "https://batch.core.windows.net/"
CERT_CLIENT = "33333333-3333-3333-3333-333333333333"
FED_CLIENT = "44444444-4444-4444-4444-444444444444"
PUBLIC_CLIENT = "55555555-5555-5555-5555-555555555555"
MI_CLIENT = "66666666-6666-6666-6666-666666666666"
MI_OBJECT = "77777777-7777-7777-7777-777777777777"
MI_RESOURCE_ID = ("/subscriptions/0/resourceGroups/rg/providers/"
                  "Microsoft.ManagedIdentity/userAssignedIdentities/node")
FED_SUBJECT = "system:serviceaccount:default:batch"


def make_cert(directory, name, days=30, start_days=-1, passphrase=None, pkcs12=False):
    """A self-signed RSA certificate and key made at test time; returns
    (path of the credential file, PEM of the certificate)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12 as p12
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchtok test " + name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=start_days))
            .not_valid_after(now + datetime.timedelta(days=start_days + days))
            .sign(key, hashes.SHA256()))
    enc = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
           else serialization.NoEncryption())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if pkcs12:
        path = os.path.join(directory, name + ".pfx")
        data = p12.serialize_key_and_certificates(b"batchtok", key, cert, None, enc)
    else:
        path = os.path.join(directory, name + ".pem")
        data = pem + key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, enc)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path, pem.decode()


def ready(notify):
    """Whether READY=1 arrived on the notification socket (within 0.1 s)."""
    notify.settimeout(0.1)
    try:
        while True:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return True
    except socket.timeout:
        return False


def accepts(path):
    """Whether a Unix socket at path accepts a connection: the daemon is
    listening (a socket file alone may be a stale one)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def as_user(uid):
    """subprocess keyword arguments that run a process as uid (its group the
    same number, no supplementary groups), in a working directory any user can
    enter: never the checkout, which may sit under a private directory such as
    a 0700 /root. What such a process executes or reads comes from `shared`."""
    return {"preexec_fn": lambda: (os.setgroups([]), os.setgid(uid), os.setuid(uid)),
            "cwd": "/"}


def public_mkdtemp(prefix):
    """A new 0755 directory whose every ancestor any user can enter: under the
    temporary directory unless TMPDIR is private, then under /tmp."""
    base = tempfile.gettempdir()
    d = os.path.realpath(base)
    while d != "/":
        if not os.stat(d).st_mode & 0o001:
            base = "/tmp"
            break
        d = os.path.dirname(d)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o755)
    return path


class Shared:
    """Copies of what a process running as another user executes or reads, in
    a directory every user can enter, made once per session: the checkout and
    the build directory may be private to their owner, and the tests must not
    depend on where they live."""

    def __init__(self):
        self.dir = public_mkdtemp("batchtok-shared-")
        try:
            self.batchtok = self.copy(BATCHTOK)
            self.batchtokd = self.copy(BATCHTOKD)
            # The Python client: add self.python_path to sys.path to import it.
            self.python_path = os.path.join(self.dir, "python")
            shutil.copytree(os.path.join(TOP, "client", "python", "batchtok"),
                            os.path.join(self.python_path, "batchtok"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            for root, dirs, files in os.walk(self.python_path):
                os.chmod(root, 0o755)
                for f in files:
                    os.chmod(os.path.join(root, f), 0o644)
        except BaseException:
            # A build directory without the programs, say: leave nothing behind.
            self.remove()
            raise

    def copy(self, path, name=None):
        """A copy of the file at path that every user can read (and execute,
        if the original is executable); returns the copy's path."""
        dst = os.path.join(self.dir, name or os.path.basename(path))
        shutil.copyfile(path, dst)
        os.chmod(dst, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
        return dst

    def remove(self):
        shutil.rmtree(self.dir)


@pytest.fixture(scope="session")
def shared():
    s = Shared()
    yield s
    s.remove()


def wait_for(pred, timeout=10.0, step=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class FakeSTS:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "sts")
        os.makedirs(self.dir)
        # Certificates: registered, registered but expired, and one the
        # application does not know (a wrong key).
        self.certs = {}
        for name, kw in {"good": {}, "expired": {"start_days": -30, "days": 29},
                         "unregistered": {}}.items():
            self.certs[name], pem = make_cert(self.dir, name, **kw)
            if name != "unregistered":
                self.certs[name + "_pem"] = pem
        apps = {TENANT: {
            CLIENT: SECRET, OTHER_CLIENT: OTHER_SECRET,
            CERT_CLIENT: {"certificates": [self.certs["good_pem"],
                                           self.certs["expired_pem"]]},
            FED_CLIENT: {"federated": [{"subject": FED_SUBJECT}]},
            PUBLIC_CLIENT: {"public": True}}}
        imds = {"user_assigned": [{"client_id": MI_CLIENT, "object_id": MI_OBJECT,
                                   "resource_id": MI_RESOURCE_ID}]}
        with open(os.path.join(self.dir, "apps.json"), "w") as f:
            json.dump({"tenants": apps, "imds": imds}, f)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([PYTHON, os.path.join(TOP, "tests", "fake_sts.py"),
                                      self.dir], stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(self.dir, "port")
        wait_for(lambda: os.path.exists(port_file), 20, what="the fake token service")
        with open(port_file) as f:
            self.port = int(f.read())
        self.url = "https://127.0.0.1:%d" % self.port
        with open(os.path.join(self.dir, "imds_port")) as f:
            self.imds_url = "http://127.0.0.1:%d" % int(f.read())
        with open(os.path.join(self.dir, "batch_port")) as f:
            self.batch_url = "https://127.0.0.1:%d" % int(f.read())
        # What az CLI reaches as https://management.azure.com, through the
        # proxy (HTTPS_PROXY), which tunnels nothing else.
        with open(os.path.join(self.dir, "proxy_port")) as f:
            self.proxy_url = "http://127.0.0.1:%d" % int(f.read())
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ctx = ssl.create_default_context(cafile=self.ca)

    def control(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            return json.loads(r.read())

    def stats(self):
        return self.control("/_control/stats")

    def fault(self, mode, **kw):
        kw["mode"] = mode
        return self.control("/_control/faults", kw)

    def devices(self):
        return self.control("/_control/devices")

    def device(self, user_code, action, user="alice@contoso.com"):
        return self.control("/_control/device", {"user_code": user_code, "action": action,
                                                 "user": user})

    def federated_token(self, subject=FED_SUBJECT, lifetime=3600):
        return self.control("/_control/federated_token",
                            {"subject": subject, "lifetime": lifetime})["token"]

    def reset(self):
        return self.control("/_control/reset", {})

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="session")
def sts():
    work = tempfile.mkdtemp(prefix="batchtok-sts-")
    s = FakeSTS(work)
    yield s
    s.stop()
    shutil.rmtree(work)


@pytest.fixture(autouse=True)
def _reset_sts(request):
    if "sts" in request.fixturenames:
        request.getfixturevalue("sts").reset()
    yield


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self):
        return "rc=%d out=%r err=%r" % (self.rc, self.out[:200], self.err)


class Daemon:
    def __init__(self, workdir, sts, shared, identities, daemon_opts, env=None, start=True):
        self.dir = workdir
        self.sts = sts
        self.shared = shared
        # The socket sits in a directory any user can reach, so that tests can
        # connect as another user and let the daemon's own checks decide.
        self.sockdir = public_mkdtemp("batchtok-sock-")
        self.sock = os.path.join(self.sockdir, "batchtokd.sock")
        self.conf = os.path.join(workdir, "batchtokd.conf")
        self.logpath = os.path.join(workdir, "batchtokd.log")
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc = None
        self.write_config(identities, daemon_opts)
        if start:
            self.start()

    def secret_file(self, name, value, mode=0o600):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(value + "\n")
        os.chmod(path, mode)
        return path

    def write_config(self, identities, daemon_opts):
        lines = ["[daemon]", "socket = " + self.sock, "ca_file = " + self.sts.ca,
                 "log_level = debug"]
        lines += ["%s = %s" % kv for kv in daemon_opts.items()]
        for name, opts in identities.items():
            lines += ["", "[identity %s]" % name]
            o = {"credential": "secret", "tenant": TENANT, "client_id": CLIENT,
                 "authority_host": self.sts.url}
            o.update(opts)
            if o["credential"] == "secret" and "secret_file" not in o and \
                    "secret_credential" not in o:
                o["secret_file"] = self.secret_file(name + ".secret",
                                                    o.pop("secret", SECRET))
            o.pop("secret", None)
            lines += ["%s = %s" % kv for kv in o.items() if kv[1] is not None]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, program=BATCHTOKD):
        """Starts program (this build's batchtokd unless told; under
        $BATCHTOK_DAEMON_WRAPPER, valgrind for one, if set) with the config,
        and waits for its READY=1 (sd_notify), or, when the test listens for
        notifications itself, until its socket accepts a connection; stop()
        stops it by PID."""
        wrapper = os.environ.get("BATCHTOK_DAEMON_WRAPPER", "").split()
        limit = 60 if wrapper else 10
        env, notify = self.env, None
        if "NOTIFY_SOCKET" not in env:
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = tempfile.mktemp(prefix="notify-", suffix=".sock", dir=self.dir)
            notify.bind(path)
            env = dict(env, NOTIFY_SOCKET=path)
        self.log = open(self.logpath, "a")
        self.proc = subprocess.Popen(wrapper + [program, "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        if notify is None:
            wait_for(lambda: accepts(self.sock) or self.proc.poll() is not None, limit,
                     what="the daemon to accept connections")
        else:
            with notify:
                wait_for(lambda: ready(notify) or self.proc.poll() is not None, limit,
                         what="the daemon's READY=1")
            os.unlink(path)
        assert self.proc.poll() is None, "batchtokd exited: " + self.read_log()

    def read_log(self):
        if not os.path.exists(self.logpath):
            return ""
        with open(self.logpath) as f:
            return f.read()

    def run(self, *args, timeout=60, user=None, env=None):
        """batchtok ARGS against this daemon; with user, run as that uid (from
        the shared copy of the command, which that user can execute)."""
        prog, kw = BATCHTOK, {}
        if user is not None:
            prog, kw = self.shared.batchtok, as_user(user)
        p = subprocess.run([prog, "-S", self.sock] + list(args), capture_output=True,
                           text=True, timeout=timeout, env=env, **kw)
        return Result(p)

    def get(self, *args, **kw):
        return self.run("get", *args, **kw)

    def reload_with(self, old, new):
        """Replaces old by new in the config and reloads it, waiting until
        the daemon has (the reload request answers when it is done)."""
        with open(self.conf) as f:
            conf = f.read()
        assert old in conf, old
        with open(self.conf, "w") as f:
            f.write(conf.replace(old, new))
        r = self.run("reload")
        assert r.rc == 0, r

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60 if os.environ.get("BATCHTOK_DAEMON_WRAPPER") else 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("batchtokd did not stop on SIGTERM in time")
        self.log.close()
        if os.path.exists(self.sock):
            raise AssertionError("batchtokd left its socket behind")
        return rc

    def connect_raw(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.sock)
        return s


@pytest.fixture
def make_daemon(sts, shared, tmp_path):
    made = []

    def make(identities=None, start=True, env=None, **daemon_opts):
        d = Daemon(str(tmp_path), sts, shared, identities or {"batch": {}}, daemon_opts, env,
                   start)
        made.append(d)
        return d

    yield make
    for d in made:
        rc = d.stop()
        # A clean stop means every handle was closed and uv_loop_close()
        # succeeded: the daemon exits 1 otherwise.
        assert rc in (0, None), "batchtokd exited %s: %s" % (rc, d.read_log()[-2000:])
        assert SECRET not in d.read_log(), "the secret reached the daemon's log"
        os.rmdir(d.sockdir)


def jwt_claims(token):
    import base64
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def frame(type_, id_, body=b""):
    import struct
    return struct.pack(">IBI", 5 + len(body), type_, id_) + body


def hello():
    import struct
    return frame(1, 0, struct.pack(">II", 1, 1))


def read_frame(sock):
    import struct
    hdr = b""
    while len(hdr) < 4:
        chunk = sock.recv(4 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    (n,) = struct.unpack(">I", hdr)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return body[0], struct.unpack(">I", body[1:5])[0], body[5:]
