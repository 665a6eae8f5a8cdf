#!/usr/bin/python3
"""A fake Microsoft Entra ID token service for batchtok's tests and demo.

Serves HTTPS on loopback with a CA made at start-up, issues real RS256-signed
JWT access tokens for registered (tenant, client, secret) triples on the v1
(/oauth2/token) and v2 (/oauth2/v2.0/token) endpoints, answers mistakes with
Entra's error body shape and AADSTS codes, counts what it receives, and
injects faults on request.

Usage: fake_sts.py STATE_DIR [--port N] [--lifetime SECONDS]

Writes STATE_DIR/ca.pem (trust this), STATE_DIR/signing.pem (the token
signing public key) and STATE_DIR/port, then serves until SIGTERM.
Registered apps come from STATE_DIR/apps.json if present, else the demo app:
  {"tenants": {"TENANT": {"CLIENT_ID": "SECRET", ...}}}

Control endpoints (plain JSON, same port):
  GET  /_control/stats             counters and the last request's form keys
  POST /_control/faults            {"mode": M, "count": N, "retry_after": S,
                                    "lifetime": S, "delay": S, "refresh_in": S}
       M: none | slow (only the delay) | 500 | 503 | 429 | hang | reset |
          badjson | huge | empty
       count: how many token requests the fault applies to (-1: all)
  POST /_control/reset             counters back to zero, faults off
"""

import base64
import datetime
import http.server
import json
import os
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


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


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
                x509.DNSName("localhost"),
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


class State:
    def __init__(self, apps, lifetime):
        self.lock = threading.Lock()
        self.apps = apps
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
            self.last_user_agent = ""
            self.fault = {"mode": "none", "count": 0}

    def take_fault(self):
        """The fault for this request, or None; counts down."""
        with self.lock:
            f = self.fault
            if f.get("mode", "none") == "none" or f.get("count", 0) == 0:
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
                    "last_form_keys": st.last_form_keys,
                    "last_user_agent": st.last_user_agent})
            return
        self.send_json(404, {"error": "not_found"})

    def do_POST(self):
        st = self.server.state
        body = self.read_body()
        if self.path == "/_control/faults":
            f = json.loads(body or b"{}")
            f.setdefault("count", -1)
            with st.lock:
                st.fault = f
            self.send_json(200, {"ok": True})
            return
        if self.path == "/_control/reset":
            st.reset()
            self.send_json(200, {"ok": True})
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 3 and parts[1:] == ["oauth2", "token"]:
            self.token(parts[0], 1, body)
        elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            self.token(parts[0], 2, body)
        else:
            self.send_json(404, {"error": "not_found"})

    def token(self, tenant, version, body):
        st = self.server.state
        with st.lock:
            st.token_requests += 1
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
        fault = st.take_fault() or {}
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

        status, obj = self.issue(tenant, version, form, fault)
        with st.lock:
            if status == 200:
                st.issued += 1
            else:
                st.errors += 1
        self.send_json(status, obj)

    def issue(self, tenant, version, form, fault):
        st = self.server.state
        if form.get("grant_type") != "client_credentials":
            return entra_error(400, "unsupported_grant_type", 70003,
                               "The app requested an unsupported grant type.")
        clients = st.apps.get(tenant)
        if clients is None:
            return entra_error(400, "invalid_tenant", 90002,
                               "Tenant '%s' not found." % tenant)
        cid = form.get("client_id", "")
        if cid not in clients:
            return entra_error(400, "unauthorized_client", 700016,
                               "Application with identifier '%s' was not found in the "
                               "directory." % cid)
        if "client_secret" not in form:
            return entra_error(400, "invalid_request", 7000218,
                               "The request body must contain client_assertion or "
                               "client_secret.")
        if form["client_secret"] != clients[cid]:
            return entra_error(401, "invalid_client", 7000215,
                               "Invalid client secret provided.")
        if version == 2:
            scope = form.get("scope", "")
            if not scope.endswith("/.default") or " " in scope:
                return entra_error(400, "invalid_scope", 1002012,
                                   "The provided value for scope %s is not valid." % scope)
            # Entra keeps everything before the last slash as the audience
            # (ENTRA.md 1.2): ".../batch.core.windows.net//.default" gives
            # ".../batch.core.windows.net/".
            aud = scope[: scope.rfind("/")]
        else:
            aud = form.get("resource", "")
            if not aud:
                return entra_error(400, "invalid_request", 900144,
                                   "The request body must contain the parameter 'resource'.")
        lifetime = int(fault.get("lifetime") or st.default_lifetime)
        now = int(time.time())
        claims = {
            "aud": aud, "iss": "https://sts.windows.net/%s/" % tenant,
            "iat": now, "nbf": now, "exp": now + lifetime,
            "appid": cid, "azp": cid, "oid": str(uuid.uuid4()), "sub": cid,
            "tid": tenant, "ver": "1.0" if version == 1 else "2.0",
            "uti": b64url(os.urandom(16)),
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": "fake-sts"}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        sig = self.server.signing.sign(signing_input.encode(), padding.PKCS1v15(),
                                       hashes.SHA256())
        token = signing_input + "." + b64url(sig)
        if version == 2:
            obj = {"token_type": "Bearer", "expires_in": lifetime,
                   "ext_expires_in": lifetime, "access_token": token}
            if fault.get("refresh_in"):
                obj["refresh_in"] = int(fault["refresh_in"])
        else:
            obj = {"token_type": "Bearer", "expires_in": str(lifetime),
                   "ext_expires_in": str(lifetime), "expires_on": str(now + lifetime),
                   "not_before": str(now), "resource": aud, "access_token": token}
        return 200, obj


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
    if os.path.exists(apps_file):
        with open(apps_file) as f:
            apps = json.load(f)["tenants"]
    else:
        apps = {DEMO_TENANT: {DEMO_CLIENT: DEMO_SECRET}}
    server_pem, signing = make_pki(state_dir)
    httpd = Server(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_pem)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.state = State(apps, lifetime)
    httpd.signing = signing
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    tmp = os.path.join(state_dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(httpd.server_address[1]))
    os.rename(tmp, os.path.join(state_dir, "port"))
    httpd.serve_forever()


if __name__ == "__main__":
    main()
