#!/usr/bin/python3
"""A fake Microsoft Entra ID token service for batchtok's tests and demo.

Serves HTTPS on loopback with a CA made at start-up, issues real RS256-signed
JWT access tokens for registered (tenant, client, secret) triples on the v1
(/oauth2/token) and v2 (/oauth2/v2.0/token) endpoints, answers mistakes with
Entra's error body shape and AADSTS codes, counts what it receives, and
injects faults on request.

It also plays the other parties batchtokd talks to:
  - client assertions (certificates) are verified: header, thumbprint
    against the registered certificates, signature (RS256 or PS256), claims;
  - federated credentials: an OIDC issuer of its own signs workload tokens
    (/_control/federated_token) that apps trust by issuer and subject;
  - device-code sign-in with approval, decline and expiry under test control,
    refresh tokens rotated on every use and revocable;
  - an Azure Batch account (GET /jobs, paged) on a third port that checks
    bearer tokens as Batch does: signature, audience, expiry;
  - the instance metadata service (IMDS), on a second, plain-HTTP port, with
    its quirks: Metadata: true required, all-string replies, cached tokens
    whose expires_in counts from issuance, 404/410/429/5xx on request;
  - Azure Resource Manager (management.azure.com), the few calls az CLI
    makes at login (the subscription list: empty), on a fourth port, and a
    CONNECT proxy on a fifth that tunnels management.azure.com:443 to it and
    refuses every other host, so that an unmodified az CLI (HTTPS_PROXY) can
    log in with nothing leaving loopback. The server certificate names
    management.azure.com as well.

Usage: fake_sts.py STATE_DIR [--port N] [--lifetime SECONDS]

Writes STATE_DIR/ca.pem (trust this), STATE_DIR/signing.pem (the token
signing public key), STATE_DIR/{imds,batch,arm,proxy}_port and
STATE_DIR/port, then serves
until SIGTERM. Registered apps come from STATE_DIR/apps.json if present,
else the demo app:
  {"tenants": {"TENANT": {"CLIENT_ID": "SECRET" | {
        "secret": S, "certificates": [PEM, ...],
        "federated": [{"subject": SUB}], "public": true}, ...}},
   "imds": {"user_assigned": [{"client_id": C, "object_id": O,
                               "resource_id": R}]}}

Control endpoints (plain JSON, same port):
  GET  /_control/stats             counters and the last request's form keys;
                                   the claims field of the last 100 token
                                   requests; for the token endpoints (token_*,
                                   imds_*) also the most requests seen in any
                                   one second (*_peak_1s, a sliding window over
                                   their arrival) and the most handled at once
                                   (max_concurrent, imds_max_concurrent: from
                                   the request's arrival until its answer is
                                   written)
  POST /_control/faults            {"mode": M, "count": N, "retry_after": S,
                                    "lifetime": S, "delay": S, "refresh_in": S,
                                    "target": "sts" | "imds", "resource": R}
       pad: bytes of filler claim in each token (large tokens)
       M: none | slow (only the delay) | 500 | 503 | 429 | hang | reset |
          badjson | huge | empty | badtoken (a 200 whose access_token holds
          CR/LF and a header line, as a hostile service would send); for IMDS
          also 404 | 410
       count: how many token requests the fault applies to (-1: all)
       resource: IMDS only: the fault applies to requests for R alone
  POST /_control/reset             counters back to zero, faults off
  GET  /_control/devices           pending device codes [{user_code, ...}]
  POST /_control/device            {"user_code": C, "action": "approve" |
                                    "decline", "user": NAME}
  POST /_control/device_settings   {"interval": S, "expires_in": S,
                                    "slow_down": N}
  POST /_control/revoke            {"user": NAME}: its refresh tokens die
  POST /_control/federated_token   {"subject": SUB, "lifetime": S,
                                    "audience": A} -> {"token": JWT}
"""

import base64
import collections
import datetime
import http.server
import json
import os
import select
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

DEMO_TENANT = "00000000-0000-0000-0000-000000000000"
DEMO_CLIENT = "11111111-1111-1111-1111-111111111111"
DEMO_SECRET = "demo-secret-not-for-production"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# What the badtoken fault hands out: served as is, it would add a header line
# to the request of anyone who pastes it into one.
BAD_TOKEN = "eyJhbGciOi.eyJhdWQi.c2ln\r\nX-Injected: yes\x1b[2J"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_pki(state):
    """CA, server certificate for 127.0.0.1/localhost/::1, signing key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchtok test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    import ipaddress
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("management.azure.com"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    with open(os.path.join(state, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(state, "server.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
        f.write(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(state, "signing.pem"), "wb") as f:
        f.write(signing.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return os.path.join(state, "server.pem"), signing


class PeakRate:
    """The most events seen in any one-second window: each event is counted
    with those less than a second before it, so every half-open window of a
    second is covered. Call with the state's lock held."""

    def __init__(self):
        self.recent = collections.deque()
        self.peak = 0

    def event(self):
        now = time.monotonic()
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        self.recent.append(now)
        self.peak = max(self.peak, len(self.recent))


class State:
    def __init__(self, apps, imds, lifetime):
        self.lock = threading.Lock()
        self.apps = apps
        self.imds = imds
        self.default_lifetime = lifetime
        self.reset()

    def reset(self):
        with self.lock:
            self.token_requests = 0
            self.issued = 0
            self.errors = 0
            self.faulted = 0
            self.max_concurrent = 0
            self.concurrent = 0
            self.last_form_keys = []
            self.claims = []          # the claims form field of each token request, or None
            self.last_user_agent = ""
            self.faults = {}
            self.assertions = []      # verified client assertions: header, claims
            self.jtis = set()
            self.imds_requests = 0
            self.imds_concurrent = 0
            self.imds_max_concurrent = 0
            self.imds_rate = PeakRate()
            self.token_rate = PeakRate()
            self.last_imds = {}
            self.imds_cache = {}
            self.device_requests = 0
            self.device_polls = 0
            self.last_device_scope = ""
            self.devices = {}         # device_code -> state
            self.device_settings = {"interval": 1, "expires_in": 900, "slow_down": 0}
            self.refresh_requests = 0
            self.batch_requests = 0
            self.batch_authorized = 0
            self.batch_refused = 0
            self.arm_requests = []    # "GET /path" of authorised ARM calls
            self.arm_refused = 0
            self.proxy_tunnels = 0
            self.proxy_refused = []   # CONNECT targets refused
            self.refresh_tokens = {}  # token -> {user, client, tenant, revoked}

    def take_fault(self, target="sts", resource=None):
        """The fault for this request, or None; counts down."""
        with self.lock:
            f = self.faults.get(target, {})
            if f.get("mode", "none") == "none" or f.get("count", 0) == 0:
                return None
            if f.get("resource") is not None and f["resource"] != resource:
                return None
            if f["count"] > 0:
                f["count"] -= 1
            self.faulted += 1
            return dict(f)


def entra_error(status, error, code, text):
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return status, {
        "error": error,
        "error_description": "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\n"
                             "Timestamp: %s" % (code, text, trace, corr, ts),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
    }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-sts/1"

    def log_message(self, fmt, *args):
        if os.environ.get("FAKE_STS_VERBOSE"):
            sys.stderr.write("fake_sts: " + (fmt % args) + "\n")

    def send_json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        st = self.server.state
        if self.path == "/_control/stats":
            with st.lock:
                self.send_json(200, {
                    "token_requests": st.token_requests, "issued": st.issued,
                    "errors": st.errors, "faulted": st.faulted,
                    "max_concurrent": st.max_concurrent,
                    "token_peak_1s": st.token_rate.peak,
                    "imds_max_concurrent": st.imds_max_concurrent,
                    "imds_peak_1s": st.imds_rate.peak,
                    "last_form_keys": st.last_form_keys,
                    "claims": st.claims[-100:],
                    "last_user_agent": st.last_user_agent,
                    "assertions": st.assertions,
                    "imds_requests": st.imds_requests, "last_imds": st.last_imds,
                    "device_requests": st.device_requests,
                    "device_polls": st.device_polls,
                    "last_device_scope": st.last_device_scope,
                    "refresh_requests": st.refresh_requests,
                    "batch_requests": st.batch_requests,
                    "batch_authorized": st.batch_authorized,
                    "batch_refused": st.batch_refused,
                    "arm_requests": st.arm_requests, "arm_refused": st.arm_refused,
                    "proxy_tunnels": st.proxy_tunnels,
                    "proxy_refused": st.proxy_refused,
                    "live_refresh_tokens": sum(1 for r in st.refresh_tokens.values()
                                               if not r["revoked"])})
            return
        if self.path == "/_control/devices":
            with st.lock:
                self.send_json(200, [{"user_code": d["user_code"], "state": d["state"],
                                      "client_id": d["client_id"]}
                                     for d in st.devices.values()])
            return
        self.send_json(404, {"error": "not_found"})

    def control(self, path, f):
        st = self.server.state
        if path == "/_control/faults":
            f.setdefault("count", -1)
            with st.lock:
                st.faults[f.pop("target", "sts")] = f
        elif path == "/_control/reset":
            st.reset()
        elif path == "/_control/device":
            with st.lock:
                for d in st.devices.values():
                    if d["user_code"] == f["user_code"]:
                        d["state"] = "approved" if f["action"] == "approve" else "declined"
                        d["user"] = f.get("user", "user@example.com")
                        break
                else:
                    return self.send_json(404, {"error": "no such user_code"})
        elif path == "/_control/device_settings":
            with st.lock:
                st.device_settings.update(f)
        elif path == "/_control/revoke":
            with st.lock:
                for r in st.refresh_tokens.values():
                    if r["user"] == f["user"]:
                        r["revoked"] = True
        elif path == "/_control/federated_token":
            now = int(time.time())
            claims = {"iss": self.server.issuer_url, "sub": f["subject"],
                      "aud": f.get("audience", "api://AzureADTokenExchange"),
                      "iat": now, "nbf": now, "exp": now + int(f.get("lifetime", 3600)),
                      "jti": str(uuid.uuid4())}
            return self.send_json(200, {"token": self.server.sign_jwt(
                {"alg": "RS256", "typ": "JWT", "kid": "oidc"}, claims,
                self.server.issuer_key)})
        else:
            return self.send_json(404, {"error": "not_found"})
        self.send_json(200, {"ok": True})

    def do_POST(self):
        st = self.server.state
        body = self.read_body()
        if self.path.startswith("/_control/"):
            self.control(self.path, json.loads(body or b"{}"))
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 3 and parts[1:] == ["oauth2", "token"]:
            self.token(parts[0], 1, body)
        elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            self.token(parts[0], 2, body)
        elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "devicecode"]:
            self.devicecode(parts[0], body)
        else:
            self.send_json(404, {"error": "not_found"})

    def token(self, tenant, version, body):
        st = self.server.state
        with st.lock:
            st.token_requests += 1
            st.token_rate.event()
            st.concurrent += 1
            st.max_concurrent = max(st.max_concurrent, st.concurrent)
        try:
            self.token_inner(tenant, version, body)
        finally:
            with st.lock:
                st.concurrent -= 1

    def token_inner(self, tenant, version, body):
        st = self.server.state
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                           keep_blank_values=True))
        with st.lock:
            st.last_form_keys = sorted(form)
            st.last_user_agent = self.headers.get("User-Agent", "")
            st.claims.append(form.get("claims"))
        self.last_claims = form.get("claims")
        fault = st.take_fault() or {}
        if form.get("grant_type") in (DEVICE_GRANT, "refresh_token"):
            fault = {}  # faults are for the client-credentials path
        mode = fault.get("mode", "none")
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if mode == "hang":
            time.sleep(float(fault.get("hang", 3600)))
            return
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.close()
            return
        if mode in ("500", "503"):
            hdr = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") else {}
            self.send_json(int(mode), {"error": "temporarily_unavailable",
                                       "error_description": "AADSTS90033: service unavailable"},
                           hdr)
            return
        if mode == "429":
            _, obj = entra_error(429, "temporarily_unavailable", 90055, "tenant throttled")
            self.send_json(429, obj, {"Retry-After": str(fault.get("retry_after", 60))})
            return
        if mode == "badjson":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "12")
            self.end_headers()
            self.wfile.write(b"{not json!!}")
            return
        if mode == "huge":
            chunk = b"x" * 65536
            n = 64
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(chunk) * n))
            self.end_headers()
            try:
                for _ in range(n):
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        if mode == "empty":
            self.send_json(200, {"token_type": "Bearer"})
            return
        if mode == "badtoken":
            self.send_json(200, {"token_type": "Bearer", "expires_in": 3599,
                                 "access_token": BAD_TOKEN})
            return

        status, obj = self.issue(tenant, version, form, fault)
        with st.lock:
            if status == 200:
                st.issued += 1
            else:
                st.errors += 1
        self.send_json(status, obj)

    def app(self, tenant, cid):
        """(registration, None) or (None, error response)."""
        clients = self.server.state.apps.get(tenant)
        if clients is None:
            return None, entra_error(400, "invalid_tenant", 90002,
                                     "Tenant '%s' not found." % tenant)
        if cid not in clients:
            return None, entra_error(400, "unauthorized_client", 700016,
                                     "Application with identifier '%s' was not found in "
                                     "the directory." % cid)
        app = clients[cid]
        return ({"secret": app} if isinstance(app, str) else app), None

    def audience(self, version, form):
        """Entra keeps everything before the last slash of a /.default scope
        as the audience (ENTRA.md 1.2): ".../batch.core.windows.net//.default"
        gives ".../batch.core.windows.net/"."""
        if version == 1:
            return form.get("resource", "") or None
        scopes = form.get("scope", "").split()
        defaults = [x for x in scopes if x.endswith("/.default")]
        if len(defaults) != 1:
            return None
        return defaults[0][: defaults[0].rfind("/")]

    def issue(self, tenant, version, form, fault):
        grant = form.get("grant_type")
        if grant == DEVICE_GRANT:
            return self.device_poll(tenant, form)
        if grant == "refresh_token":
            return self.refresh(tenant, form)
        if grant != "client_credentials":
            return entra_error(400, "unsupported_grant_type", 70003,
                               "The app requested an unsupported grant type.")
        cid = form.get("client_id", "")
        app, err = self.app(tenant, cid)
        if err:
            return err
        if app.get("public"):
            return entra_error(401, "invalid_client", 7000218,
                               "The request body must contain client_assertion or "
                               "client_secret: public clients cannot use this grant.")
        if "client_secret" in form:
            if form["client_secret"] != app.get("secret"):
                return entra_error(401, "invalid_client", 7000215,
                                   "Invalid client secret provided.")
        elif "client_assertion" in form:
            if form.get("client_assertion_type") != JWT_BEARER:
                return entra_error(400, "invalid_request", 900144,
                                   "client_assertion_type must be %s." % JWT_BEARER)
            err = self.verify_assertion(tenant, version, cid, app, form["client_assertion"])
            if err:
                return err
        else:
            return entra_error(400, "invalid_request", 7000218,
                               "The request body must contain client_assertion or "
                               "client_secret.")
        if version == 2 and not form.get("scope", "").endswith("/.default"):
            return entra_error(400, "invalid_scope", 1002012,
                               "The provided value for scope %s is not valid."
                               % form.get("scope", ""))
        aud = self.audience(version, form)
        if not aud:
            if version == 2:
                return entra_error(400, "invalid_scope", 1002012,
                                   "The provided value for scope %s is not valid."
                                   % form.get("scope", ""))
            return entra_error(400, "invalid_request", 900144,
                               "The request body must contain the parameter 'resource'.")
        lifetime = int(fault.get("lifetime") or self.server.state.default_lifetime)
        return 200, self.token_body(version, tenant, cid, aud, lifetime, fault)

    def token_body(self, version, tenant, cid, aud, lifetime, fault, extra=None):
        now = int(time.time())
        claims = {
            "aud": aud, "iss": "https://sts.windows.net/%s/" % tenant,
            "iat": now, "nbf": now, "exp": now + lifetime,
            "appid": cid, "azp": cid, "oid": str(uuid.uuid4()), "sub": cid,
            "tid": tenant, "ver": "1.0" if version == 1 else "2.0",
            "uti": b64url(os.urandom(16)),
        }
        # What a claims request asks for shows in the token, as Entra does
        # for CAE-capable resources (ENTRA.md 8): the capabilities and the
        # authentication context.
        try:
            asked = json.loads(getattr(self, "last_claims", None) or "{}").get("access_token", {})
        except (ValueError, AttributeError):
            asked = {}
        if isinstance(asked, dict):
            if isinstance(asked.get("xms_cc"), dict):
                claims["xms_cc"] = asked["xms_cc"].get("values", [])
            if isinstance(asked.get("acrs"), dict) and "value" in asked["acrs"]:
                claims["acrs"] = [asked["acrs"]["value"]]
        if fault.get("pad"):
            claims["pad"] = "x" * int(fault["pad"])
        claims.update(extra or {})
        token = self.server.sign_jwt({"typ": "JWT", "alg": "RS256", "kid": "fake-sts"},
                                     claims, self.server.signing)
        if version == 2:
            obj = {"token_type": "Bearer", "expires_in": lifetime,
                   "ext_expires_in": lifetime, "access_token": token}
            if fault.get("refresh_in"):
                obj["refresh_in"] = int(fault["refresh_in"])
        else:
            obj = {"token_type": "Bearer", "expires_in": str(lifetime),
                   "ext_expires_in": str(lifetime), "expires_on": str(now + lifetime),
                   "not_before": str(now), "resource": aud, "access_token": token}
        return obj

    # --- client assertions (ENTRA.md 2) and federated tokens (5) ---

    def verify_assertion(self, tenant, version, cid, app, assertion):
        st = self.server.state
        bad = lambda code, text: entra_error(401 if code == 700027 else 400, "invalid_client",
                                             code, text)
        try:
            h64, p64, s64 = assertion.split(".")
            header = json.loads(b64url_decode(h64))
            claims = json.loads(b64url_decode(p64))
            sig = b64url_decode(s64)
        except Exception:
            return bad(700027, "Client assertion is not a valid JWT.")
        signing_input = (h64 + "." + p64).encode()
        if "x5t" not in header and "x5t#S256" not in header:
            return self.verify_federated(cid, app, header, claims, sig, signing_input)
        cert = None
        for pem in app.get("certificates", []):
            c = x509.load_pem_x509_certificate(pem.encode())
            der = c.public_bytes(serialization.Encoding.DER)
            sha1 = hashes.Hash(hashes.SHA1())
            sha1.update(der)
            sha256 = hashes.Hash(hashes.SHA256())
            sha256.update(der)
            # x5t with or without padding (ENTRA.md 2.1).
            if (header.get("x5t", "").rstrip("=") == b64url(sha1.finalize()) or
                    header.get("x5t#S256", "").rstrip("=") == b64url(sha256.finalize())):
                cert = c
                break
        if cert is None:
            return bad(700027, "Client assertion contains an invalid signature. [Reason - "
                       "The key was not found.]")
        if header.get("alg") == "RS256":
            pad = padding.PKCS1v15()
        elif header.get("alg") == "PS256":
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        else:
            return bad(700027, "Client assertion uses an unsupported algorithm.")
        try:
            cert.public_key().verify(sig, signing_input, pad, hashes.SHA256())
        except Exception:
            return bad(700027, "Client assertion contains an invalid signature. [Reason - "
                       "The provided signature value did not match the expected signature "
                       "value.]")
        now = time.time()
        token_url = "%s/%s/oauth2/%stoken" % (self.server.url, tenant,
                                             "" if version == 1 else "v2.0/")
        if claims.get("aud") != token_url:
            return bad(700027, "Client assertion audience %r is not the token endpoint."
                       % claims.get("aud"))
        if claims.get("iss") != cid or claims.get("sub") != cid:
            return bad(700021, "Client assertion application identifier doesn't match "
                       "'client_id' parameter.")
        exp, nbf = float(claims.get("exp", 0)), float(claims.get("nbf", now))
        if exp < now - 60 or nbf > now + 60 or exp - nbf > 3600:
            return bad(700024, "Client assertion is not within its valid time range.")
        if not cert.not_valid_before <= datetime.datetime.utcnow() <= cert.not_valid_after:
            return bad(700027, "Client assertion was signed with an expired certificate.")
        with st.lock:
            if not claims.get("jti") or claims["jti"] in st.jtis:
                return bad(700027, "Client assertion jti is missing or was replayed.")
            st.jtis.add(claims["jti"])
            st.assertions.append({"header": header, "claims": claims})
        return None

    def verify_federated(self, cid, app, header, claims, sig, signing_input):
        bad = lambda code, text: entra_error(400, "invalid_client", code, text)
        try:
            self.server.issuer_key.public_key().verify(sig, signing_input, padding.PKCS1v15(),
                                                       hashes.SHA256())
        except Exception:
            return bad(700027, "Client assertion contains an invalid signature.")
        if claims.get("exp", 0) < time.time():
            return bad(700024, "Client assertion is not within its valid time range. "
                       "Current time: %s, assertion valid to: %s."
                       % (int(time.time()), claims.get("exp")))
        for fed in app.get("federated", []):
            if (claims.get("iss") == self.server.issuer_url and
                    claims.get("sub") == fed["subject"] and
                    claims.get("aud") == fed.get("audience", "api://AzureADTokenExchange")):
                with self.server.state.lock:
                    self.server.state.assertions.append({"header": header, "claims": claims})
                return None
        return bad(70021, "No matching federated identity record found for presented "
                   "assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'."
                   % (claims.get("iss"), claims.get("sub")))

    # --- device code (ENTRA.md 6) ---

    def devicecode(self, tenant, body):
        st = self.server.state
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                           keep_blank_values=True))
        with st.lock:
            st.device_requests += 1
            st.last_device_scope = form.get("scope", "")
        cid = form.get("client_id", "")
        app, err = self.app(tenant, cid)
        if err:
            return self.send_json(*err)
        if not app.get("public"):
            return self.send_json(*entra_error(400, "invalid_client", 7000218,
                                               "The application is not a public client."))
        if not self.audience(2, form):
            return self.send_json(*entra_error(400, "invalid_scope", 70011,
                                               "The provided value for scope is not valid."))
        code = b64url(os.urandom(24))
        user_code = "".join("ABCDEFGHJKLMNPQRSTUVWXYZ"[b % 24] for b in os.urandom(8))
        with st.lock:
            cfg = dict(st.device_settings)
            st.devices[code] = {"user_code": user_code, "client_id": cid, "tenant": tenant,
                                "scope": form.get("scope", ""), "state": "pending",
                                "expires": time.time() + cfg["expires_in"],
                                "slow_down": cfg.get("slow_down", 0)}
        uri = self.server.url + "/devicelogin"
        self.send_json(200, {
            "device_code": code, "user_code": user_code, "verification_uri": uri,
            "expires_in": cfg["expires_in"], "interval": cfg["interval"],
            "message": "To sign in, use a web browser to open the page %s and enter the "
                       "code %s to authenticate." % (uri, user_code)})

    def device_poll(self, tenant, form):
        st = self.server.state
        with st.lock:
            st.device_polls += 1
            d = st.devices.get(form.get("device_code", ""))
            if d is None:
                return entra_error(400, "bad_verification_code", 70018,
                                   "The provided value for the input parameter "
                                   "'device_code' is not valid.")
            if d["slow_down"] > 0:
                d["slow_down"] -= 1
                _, obj = entra_error(400, "slow_down", 70016, "Polling too fast.")
                obj["error"] = "slow_down"
                return 400, obj
            if time.time() > d["expires"]:
                return entra_error(400, "expired_token", 70019,
                                   "Verification code expired.")
            state = d["state"]
            if state == "declined":
                del st.devices[form["device_code"]]
                return entra_error(400, "authorization_declined", 70000,
                                   "The user declined the sign-in.")
            if state == "pending":
                return entra_error(400, "authorization_pending", 70016,
                                   "OAuth 2.0 device flow error. Authorization is pending. "
                                   "Continue polling.")
            del st.devices[form["device_code"]]
        return self.user_tokens(tenant, d["client_id"], d["user"], d["scope"])

    def user_tokens(self, tenant, cid, user, scope):
        st = self.server.state
        aud = self.audience(2, {"scope": scope})
        obj = self.token_body(2, tenant, cid, aud, st.default_lifetime, {},
                              {"upn": user, "name": user, "scp": "user_impersonation"})
        obj["scope"] = scope
        if "offline_access" in scope.split():
            rt = b64url(os.urandom(32))
            with st.lock:
                st.refresh_tokens[rt] = {"user": user, "client": cid, "tenant": tenant,
                                         "revoked": False}
            obj["refresh_token"] = rt
        now = int(time.time())
        obj["id_token"] = self.server.sign_jwt(
            {"typ": "JWT", "alg": "RS256", "kid": "fake-sts"},
            {"aud": cid, "iss": "%s/%s/v2.0" % (self.server.url, tenant), "iat": now,
             "nbf": now, "exp": now + 3600, "preferred_username": user, "name": user,
             "oid": str(uuid.uuid5(uuid.NAMESPACE_DNS, user)), "tid": tenant},
            self.server.signing)
        obj["client_info"] = b64url(json.dumps({"uid": "u", "utid": tenant}).encode())
        return 200, obj

    def refresh(self, tenant, form):
        st = self.server.state
        with st.lock:
            st.refresh_requests += 1
            r = st.refresh_tokens.get(form.get("refresh_token", ""))
        if r is None:
            return entra_error(400, "invalid_grant", 70008,
                               "The provided authorization code or refresh token has "
                               "expired due to inactivity.")
        if r["revoked"]:
            return entra_error(400, "invalid_grant", 50173,
                               "The provided grant has expired due to it being revoked, a "
                               "fresh auth token is needed.")
        if r["client"] != form.get("client_id") or r["tenant"] != tenant:
            return entra_error(400, "invalid_grant", 70000,
                               "The refresh token was issued to another client.")
        if not self.audience(2, form):
            return entra_error(400, "invalid_scope", 70011, "The scope is not valid.")
        # Rotation: a new refresh token each time; the old one stays usable
        # (ENTRA.md 6.4).
        return self.user_tokens(tenant, r["client"], r["user"], form.get("scope", ""))


class ImdsHandler(Handler):
    """The instance metadata service's token endpoint (ENTRA.md 3.1)."""
    server_version = "fake-imds/1"
    handling = False  # a token request counted in imds_concurrent

    def do_POST(self):
        self.send_json(405, {"error": "method_not_allowed"})

    def send_json(self, status, obj, headers=None):
        # A request stops counting as handled before its answer goes out:
        # once the client has the answer it may rightly send the next one,
        # which must not find this one still counted.
        if self.handling:
            st = self.server.state
            with st.lock:
                st.imds_concurrent -= 1
            self.handling = False
        super().send_json(status, obj, headers)

    def do_GET(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        token = url.path == "/metadata/identity/oauth2/token"
        with st.lock:
            st.imds_requests += 1
            st.last_imds = {"path": url.path, "query": q,
                            "metadata": self.headers.get("Metadata"),
                            "forwarded": self.headers.get("X-Forwarded-For"),
                            "via": self.headers.get("Via")}
            if token:
                st.imds_rate.event()
                st.imds_concurrent += 1
                st.imds_max_concurrent = max(st.imds_max_concurrent, st.imds_concurrent)
                self.handling = True
        try:
            self.imds_token(st, url, q)
        finally:
            if self.handling:
                with st.lock:
                    st.imds_concurrent -= 1
                self.handling = False

    def imds_token(self, st, url, q):
        if url.path != "/metadata/identity/oauth2/token":
            return self.send_json(404, {"error": "not_found"})
        if self.headers.get("Metadata") != "true":
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "Required metadata header not "
                                                             "specified"})
        fault = st.take_fault("imds", q.get("resource")) or {}
        mode = fault.get("mode", "none")
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if mode in ("404", "410", "429", "500", "503"):
            hdr = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") else {}
            return self.send_json(int(mode), {"error": "unavailable",
                                              "error_description": "IMDS is updating"}, hdr)
        if mode == "badtoken":
            now = int(time.time())
            return self.send_json(200, {"access_token": BAD_TOKEN, "refresh_token": "",
                                        "expires_in": "3599", "expires_on": str(now + 3599),
                                        "not_before": str(now), "resource": q.get("resource"),
                                        "token_type": "Bearer"})
        if q.get("api-version") != "2018-02-01" or not q.get("resource"):
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "api-version and resource are "
                                                             "required"})
        selectors = [k for k in ("client_id", "object_id", "msi_res_id") if k in q]
        if len(selectors) > 1:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "Multiple identities"})
        ident = "system"
        if selectors:
            key = {"msi_res_id": "resource_id"}.get(selectors[0], selectors[0])
            for ua in st.imds.get("user_assigned", []):
                if ua.get(key) == q[selectors[0]]:
                    ident = ua["client_id"]
                    break
            else:
                return self.send_json(400, {"error": "invalid_request",
                                            "error_description": "Identity not found"})
        # IMDS hands out cached tokens: expires_in counts from issuance.
        now = int(time.time())
        lifetime = int(fault.get("lifetime") or st.default_lifetime)
        with st.lock:
            cached = st.imds_cache.get((ident, q["resource"]))
            if cached is None or cached[1] - now < 60:
                body = self.token_body(1, "imds-tenant", ident, q["resource"], lifetime, {})
                cached = (body["access_token"], now + lifetime, now)
                st.imds_cache[(ident, q["resource"])] = cached
        token, exp, iat = cached
        self.send_json(200, {"access_token": token, "refresh_token": "",
                             "expires_in": str(exp - iat), "expires_on": str(exp),
                             "not_before": str(iat), "resource": q["resource"],
                             "token_type": "Bearer"})


class BatchHandler(Handler):
    """A fake Azure Batch account (ENTRA.md 9): GET /jobs checks the bearer
    token as Batch does - signature by the token service, audience
    https://batch.core.windows.net/ with its slash, expiry - and pages the
    job list with odata.nextLink."""
    server_version = "fake-batch/1"
    JOBS = [{"id": "job-%d" % i, "state": "active", "poolInfo": {"poolId": "pool"}}
            for i in range(3)]

    def do_POST(self):
        self.send_json(405, {"code": "UnsupportedHttpVerb"})

    def refuse(self, detail):
        with self.server.state.lock:
            self.server.state.batch_refused += 1
        self.send_json(401, {
            "odata.metadata": "%s/$metadata#Microsoft.Azure.Batch.Protocol.Entities."
                              "Container.errors/@Element" % self.server.batch_url,
            "code": "AuthenticationFailed",
            "message": {"lang": "en-US", "value": "Server failed to authenticate the "
                                                  "request."},
            "values": [{"key": "AuthenticationErrorDetail", "value": detail}]})

    def do_GET(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        with st.lock:
            st.batch_requests += 1
        bad = check_bearer(self, ["https://batch.core.windows.net/"])
        if bad:
            return self.refuse(bad)
        if url.path != "/jobs" or "api-version" not in q:
            return self.send_json(404, {"code": "ResourceNotFound"})
        with st.lock:
            st.batch_authorized += 1
        start = int(q.get("$skiptoken", 0))
        page = {"odata.metadata": self.server.batch_url + "/$metadata#jobs",
                "value": self.JOBS[start:start + 2]}
        if start + 2 < len(self.JOBS):
            page["odata.nextLink"] = "%s/jobs?api-version=%s&$skiptoken=%d" % (
                self.server.batch_url, q["api-version"], start + 2)
        self.send_json(200, page)


def check_bearer(handler, audiences):
    """What is wrong with the request's bearer token, as a resource server
    checks it (signature by this service, audience, expiry), or None."""
    auth = handler.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return "The request is not authenticated: no bearer token."
    try:
        h64, p64, s64 = auth[7:].split(".")
        handler.server.signing.public_key().verify(
            b64url_decode(s64), (h64 + "." + p64).encode(), padding.PKCS1v15(),
            hashes.SHA256())
        claims = json.loads(b64url_decode(p64))
    except Exception:
        return "The access token signature is invalid."
    if claims.get("aud") not in audiences:
        return ("The access token has been obtained from wrong audience or resource '%s'. "
                "It should exactly match (including forward slash) with one of the allowed "
                "audiences %s" % (claims.get("aud"), ", ".join("'%s'" % a for a in audiences)))
    if claims.get("exp", 0) < time.time():
        return "The access token expiry UTC time is earlier than current UTC time."
    return None


class ArmHandler(Handler):
    """A fake Azure Resource Manager: the calls az CLI makes at login.
    Tokens are checked as ARM does; the identity has no subscription."""
    server_version = "fake-arm/1"
    AUDIENCES = ["https://management.core.windows.net/", "https://management.azure.com/",
                 "https://management.azure.com"]

    def do_GET(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        bad = check_bearer(self, self.AUDIENCES)
        if bad:
            with st.lock:
                st.arm_refused += 1
            return self.send_json(401, {"error": {"code": "InvalidAuthenticationToken",
                                                  "message": bad}})
        with st.lock:
            st.arm_requests.append("GET " + url.path)
        if url.path in ("/subscriptions", "/tenants"):
            return self.send_json(200, {"value": []})
        self.send_json(404, {"error": {"code": "NotFound", "message": "fake ARM serves "
                                       "/subscriptions and /tenants only"}})


class ProxyHandler(socketserver.StreamRequestHandler):
    """A CONNECT proxy that tunnels management.azure.com:443 to the fake
    ARM and refuses (403) everything else, recording what it refused."""
    IDLE = 60  # seconds a tunnel may carry nothing before it is closed

    def handle(self):
        st = self.server.state
        self.connection.settimeout(30)
        line = self.rfile.readline(4096).decode("latin-1").split()
        while self.rfile.readline(4096) not in (b"\r\n", b"\n", b""):
            pass
        target = line[1] if len(line) == 3 and line[0] == "CONNECT" else ""
        if target != "management.azure.com:443":
            with st.lock:
                st.proxy_refused.append(target or " ".join(line)[:200])
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            return
        up = socket.create_connection(("127.0.0.1", self.server.arm_port), timeout=30)
        with st.lock:
            st.proxy_tunnels += 1
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        socks = [self.connection, up]
        try:
            while True:
                ready, _, _ = select.select(socks, [], [], self.IDLE)
                if not ready:
                    return
                for r in ready:
                    data = r.recv(65536)
                    if not data:
                        return
                    (up if r is self.connection else self.connection).sendall(data)
        finally:
            up.close()


def sign_jwt(header, claims, key):
    signing_input = (b64url(json.dumps(header).encode()) + "." +
                     b64url(json.dumps(claims).encode()))
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    state_dir = sys.argv[1]
    port, lifetime = 0, 3600
    args = sys.argv[2:]
    while args:
        opt = args.pop(0)
        if opt == "--port":
            port = int(args.pop(0))
        elif opt == "--lifetime":
            lifetime = int(args.pop(0))
        else:
            sys.exit("fake_sts: unknown option " + opt)
    os.makedirs(state_dir, exist_ok=True)
    apps_file = os.path.join(state_dir, "apps.json")
    imds = {}
    if os.path.exists(apps_file):
        with open(apps_file) as f:
            conf = json.load(f)
        apps, imds = conf["tenants"], conf.get("imds", {})
    else:
        apps = {DEMO_TENANT: {DEMO_CLIENT: DEMO_SECRET}}
    server_pem, signing = make_pki(state_dir)
    httpd = Server(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_pem)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    state = State(apps, imds, lifetime)
    imdsd = Server(("127.0.0.1", 0), ImdsHandler)
    batchd = Server(("127.0.0.1", 0), BatchHandler)
    batchd.socket = ctx.wrap_socket(batchd.socket, server_side=True)
    armd = Server(("127.0.0.1", 0), ArmHandler)
    armd.socket = ctx.wrap_socket(armd.socket, server_side=True)
    proxyd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), ProxyHandler)
    proxyd.daemon_threads = True
    proxyd.state = state
    proxyd.arm_port = armd.server_address[1]
    for srv in (httpd, imdsd, batchd, armd):
        srv.state = state
        srv.signing = signing
        srv.issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
            if srv is httpd else httpd.issuer_key
        srv.url = "https://127.0.0.1:%d" % httpd.server_address[1]
        srv.issuer_url = srv.url + "/oidc"
        srv.sign_jwt = sign_jwt
        srv.batch_url = "https://127.0.0.1:%d" % batchd.server_address[1]
    threading.Thread(target=imdsd.serve_forever, daemon=True).start()
    threading.Thread(target=batchd.serve_forever, daemon=True).start()
    threading.Thread(target=armd.serve_forever, daemon=True).start()
    threading.Thread(target=proxyd.serve_forever, daemon=True).start()
    for name, srv in (("arm_port", armd), ("proxy_port", proxyd)):
        with open(os.path.join(state_dir, name), "w") as f:
            f.write(str(srv.server_address[1]))
    with open(os.path.join(state_dir, "batch_port"), "w") as f:
        f.write(str(batchd.server_address[1]))
    with open(os.path.join(state_dir, "imds_port"), "w") as f:
        f.write(str(imdsd.server_address[1]))
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    tmp = os.path.join(state_dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(httpd.server_address[1]))
    os.rename(tmp, os.path.join(state_dir, "port"))
    httpd.serve_forever()


if __name__ == "__main__":
    main()
