"""batchtok: Microsoft Entra ID access tokens from the local batchtokd, for
Python programs and the Azure SDKs.

Standard library only; it speaks batchtokd's wire protocol
(proto/PROTOCOL.md) over the daemon's Unix socket, the way libbatchtok does.

    from batchtok import BatchtokCredential
    cred = BatchtokCredential(identity="batch-prod")
    token = cred.get_token("https://batch.core.windows.net//.default")

BatchtokCredential is an azure.core TokenCredential (get_token(*scopes) ->
AccessToken) for clients built on azure-core; BatchtokBatchCredentials is
the msrest-style credential (signed_session) that azure-batch's
BatchServiceClient (13.x, msrest-based) takes. batchtok.aio has Client and
BatchtokCredential for asyncio, the latter an azure.core AsyncTokenCredential.

Long-running programs (a connection to Redis or PostgreSQL opened with a
token must re-authenticate before that token ends) subscribe instead of
asking: Client.watch() iterates over each token as batchtokd gets it, and
Client.on_rotate(callback) calls callback(token) from a thread of its own.

    def reauth(token):
        with lock:
            redis_conn.execute_command("AUTH", user, token.access_token)

    rotation = batchtok.Client().on_rotate(reauth, resource="https://redis.azure.com")
    ...
    rotation.stop()

These and Client.refresh()/forget() (administrators) need batchtokd 0.3.0
(protocol version 2, which lists them); against an older daemon they raise
BatchtokError "WATCH is not supported by this batchtokd (0.1.0): upgrade
batchtokd" without sending anything, and everything else works as before.
"""

import collections
import json
import logging
import os
import socket
import struct
import threading
import time

__all__ = ["Client", "Token", "BatchtokError", "WatchError", "Watch", "Rotation",
           "BatchtokCredential", "BatchtokBatchCredentials", "default_socket",
           "BATCH_RESOURCE", "BATCH_SCOPE"]
__version__ = "0.3.0"

BATCH_RESOURCE = "https://batch.core.windows.net/"
BATCH_SCOPE = BATCH_RESOURCE + "/.default"
SYSTEM_SOCKET = "/run/batchtok/batchtokd.sock"

# The protocol versions this client speaks. Version 2 differs only in the
# HELLO reply, which lists the request types the daemon answers.
PROTO_VERSION_MIN, PROTO_VERSION_MAX = 1, 2
HELLO, GET_TOKEN, STATUS, INSPECT, RELOAD, PING = 1, 2, 3, 4, 5, 6
LOGIN, LOGIN_WAIT, LOGOUT, COMPAT = 7, 8, 9, 10
WATCH, REFRESH, FORGET, CHALLENGE = 13, 14, 15, 16
TYPE_NAMES = {HELLO: "HELLO", GET_TOKEN: "GET_TOKEN", STATUS: "STATUS", INSPECT: "INSPECT",
              RELOAD: "RELOAD", PING: "PING", LOGIN: "LOGIN", LOGIN_WAIT: "LOGIN_WAIT",
              LOGOUT: "LOGOUT", COMPAT: "COMPAT", 11: "COMPAT_RENEW", 12: "COMPAT_REVOKE",
              WATCH: "WATCH", REFRESH: "REFRESH", FORGET: "FORGET", CHALLENGE: "CHALLENGE"}
# What every daemon answers, a version 1 one too (batchtokd 0.1.0, whose
# HELLO reply lists nothing): HELLO through COMPAT. Only these requests ride
# right behind HELLO; a newer one waits for the HELLO reply's list.
V1_REQUESTS = sum(1 << t for t in range(HELLO, COMPAT + 1))
REPLY, ERROR = 0x80, 0xFF
FORCE_REFRESH = 0x1
FORGET_ALL = 0x1
REPLY_MAX = 1024 * 1024
HELLO_ID = 0  # requests are numbered from 1
UNAVAILABLE, UNSUPPORTED, BUSY = 7, 9, 11

# Status codes carried by ERROR, and the errno-like exit codes batchtok uses.
STATUS_NAMES = {1: "internal", 2: "bad request", 3: "denied", 4: "unknown identity",
                5: "resource not allowed", 6: "credential rejected", 7: "unavailable",
                8: "timeout", 9: "unsupported", 10: "version", 11: "busy"}
STATUS_EXIT = {3: 4, 4: 5, 5: 5, 6: 6, 7: 7, 8: 8}

_TokenFields = collections.namedtuple(
    "Token", "access_token expires_on token_type identity resource tenant")


class Token(_TokenFields):
    """A token from batchtokd: access_token, expires_on (Unix time),
    token_type, identity, resource, tenant; a tuple of those six, compared
    by them. refresh_at is when the daemon plans to fetch the next one (Unix
    time), known for the tokens of a watch; None otherwise."""

    def __new__(cls, access_token, expires_on, token_type, identity, resource, tenant,
                refresh_at=None):
        self = super().__new__(cls, access_token, expires_on, token_type, identity, resource,
                               tenant)
        self.refresh_at = refresh_at
        return self

    refresh_at = None  # what _make() and _replace() leave


class BatchtokError(Exception):
    """batchtokd refused or could not be reached. status is the protocol's
    status code (0 when the daemon was not reached); exit_code is what the
    batchtok command would exit with."""

    def __init__(self, message, status=0):
        super().__init__(message)
        self.status = status
        self.message = message
        self.exit_code = STATUS_EXIT.get(status, 3 if status == 0 else 1)


class WatchError(BatchtokError):
    """An error event of a watch, yielded (not raised): batchtokd could not
    fetch a new token while the last one nears its end (status UNAVAILABLE,
    CREDENTIAL_REJECTED, TIMEOUT...). The watch goes on; the next token comes
    as an event."""


def default_socket():
    """$BATCHTOK_SOCKET, else the user's socket if it exists, else the
    system's, as batchtok and libbatchtok choose."""
    path = os.environ.get("BATCHTOK_SOCKET")
    if path:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        user = os.path.join(runtime, "batchtok", "batchtokd.sock")
        if os.path.exists(user):
            return user
    return SYSTEM_SOCKET


# The codec: frames and bodies as bytes, shared by the Client here and the
# one in batchtok.aio, which differ only in how the bytes travel.

def _string(s):
    b = (s or "").encode()
    if b"\0" in b:
        raise ValueError("strings sent to batchtokd cannot hold NUL")
    return struct.pack(">I", len(b)) + b


def _frame(type_, id_, body=b""):
    return struct.pack(">IBI", 5 + len(body), type_, id_) + body


def _hello_frame():
    """HELLO for versions 1 to 2, with id 0: a BUSY refusal of a new
    connection comes with id 0 too, so both end the connection."""
    return _frame(HELLO, HELLO_ID, struct.pack(">II", PROTO_VERSION_MIN, PROTO_VERSION_MAX))


def _token_query(identity, resource, scope, min_validity, force_refresh=False):
    return (_string(identity) + _string(resource) + _string(scope) +
            struct.pack(">II", int(min_validity), FORCE_REFRESH if force_refresh else 0))


def _challenge_body(identity, resource, scope, min_validity, claims):
    """CHALLENGE: a token query, then the claims request as JSON text (what
    azure-core passes, decoded from the resource's WWW-Authenticate)."""
    if not isinstance(claims, str):
        claims = json.dumps(claims, separators=(",", ":"))
    return _token_query(identity, resource, scope, min_validity) + _string(claims)


def _forget_body(identity, all_):
    if all_ and identity:
        raise ValueError("forget: name an identity or pass all=True, not both")
    return _string("" if all_ else identity) + struct.pack(">I", FORGET_ALL if all_ else 0)


def _has(requests, type_):
    return type_ < 64 and bool(requests >> type_ & 1)


def _hello_reply(body):
    """(version, server, requests) from a HELLO reply: version 1's lists no
    request types, its daemon answers V1_REQUESTS."""
    r = _Reader(body)
    version, server = r.u32(), r.string()
    if version == 1:
        requests = V1_REQUESTS
    elif version == 2:
        requests = r.u64()
    else:
        raise BatchtokError("batchtokd answered HELLO with version %d, not one of %d to %d"
                            % (version, PROTO_VERSION_MIN, PROTO_VERSION_MAX), 1)
    r.end()
    return version, server, requests


def _unsupported(type_, server):
    """The error for a request the daemon did not list: never sent."""
    name = TYPE_NAMES.get(type_, "request type %d" % type_)
    version = server[10:] if server.startswith("batchtokd ") else server
    return BatchtokError("%s is not supported by this batchtokd (%s): upgrade batchtokd"
                         % (name, version), UNSUPPORTED)


def _frame_length(header):
    """What follows a frame's 4-byte length header; a broken one raises."""
    (length,) = struct.unpack(">I", header)
    if length < 5 or length > REPLY_MAX:
        raise BatchtokError("batchtokd sent a malformed frame", 1)
    return length


def _split_frame(data):
    """(type, id, body) of the frame that followed its length header."""
    return data[0], struct.unpack(">I", data[1:5])[0], data[5:]


class _Reader:
    def __init__(self, body):
        self.body, self.pos = body, 0

    def take(self, n):
        if self.pos + n > len(self.body):
            raise BatchtokError("batchtokd sent a malformed reply", 1)
        b = self.body[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def string(self):
        return self.take(self.u32()).decode()

    def end(self):
        if self.pos != len(self.body):
            raise BatchtokError("batchtokd sent a malformed reply", 1)


def _error(body):
    """The BatchtokError an ERROR reply's body carries."""
    r = _Reader(body)
    status, message = r.u32(), r.string()
    return BatchtokError(message or STATUS_NAMES.get(status, "error"), status)


def _reply(type_, rtype, body):
    """A _Reader on the body of the reply to a request of type_; an ERROR
    reply is raised as its BatchtokError."""
    if rtype == ERROR:
        raise _error(body)
    if rtype != type_ | REPLY:
        raise BatchtokError("batchtokd answered out of step", 1)
    return _Reader(body)


def _refused(rtype, body):
    """What a frame with HELLO's id other than its reply means: the daemon
    refused the connection (VERSION, or BUSY at max_clients_per_uid) and
    closes it."""
    if rtype == ERROR:
        return _error(body)
    return BatchtokError("batchtokd answered out of step", 1)


def _token(r):
    """The Token a GET_TOKEN reply holds, refused unless it can go into a
    header as it is."""
    t = Token(r.string(), r.u64(), r.string(), r.string(), r.string(), r.string())
    r.end()
    return _bearer(t)


def _watch_event(body):
    """The Token or WatchError a WATCH|REPLY frame's body holds."""
    r = _Reader(body)
    status, message = r.u32(), r.string()
    fields = (r.string(), r.u64(), r.string(), r.string(), r.string(), r.string())
    refresh_at = r.u64()
    r.end()
    if status:
        return WatchError(message or STATUS_NAMES.get(status, "error"), status)
    return _bearer(Token(*fields, refresh_at=refresh_at or None))


_KINDS = {1: "STR", 2: "INT", 3: "TIME", 4: "BOOL"}


def _record(r, depth=1):
    """A record (STATUS, REFRESH, FORGET replies) as a dict of its fields:
    STR a str, INT an int, TIME Unix time or None for never, BOOL a bool;
    child records, if any, as a list under "children"."""
    n = r.u32()
    if n > 64 or depth > 4:
        raise BatchtokError("batchtokd sent a malformed reply", 1)
    fields = {}
    for _ in range(n):
        key, kind = r.string(), r.take(1)[0]
        if kind == 1:
            fields[key] = r.string()
        elif kind in _KINDS:
            v = r.u64()
            fields[key] = (v - (1 << 64) if v >> 63 else v) if kind == 2 else \
                (v or None) if kind == 3 else bool(v)
        else:
            raise BatchtokError("batchtokd sent a malformed reply", 1)
    children = [_record(r, depth + 1) for _ in range(r.u32())]
    if children:
        fields["children"] = children
    return fields


def _record_reply(r):
    rec = _record(r)
    r.end()
    return rec


def _bearer(t):
    # As libbatchtok does, refuse a token with spaces or control characters
    # (never repeating it).
    for s in (t.access_token, t.token_type):
        if not s or any(not 0x20 < ord(c) < 0x7f for c in s):
            raise BatchtokError("batchtokd sent a token holding spaces or control "
                                "characters, which is not a bearer token: refused "
                                "(upgrade batchtokd, which refuses such a reply from "
                                "the token service and logs it)", 1)
    return t


def _server(r):
    """The server string a PING reply holds."""
    v = r.string()
    r.end()
    return v


class _Lost(Exception):
    """The connection went away before the reply came: the daemon closed it
    (a restart, client_idle_timeout) or it broke. Every request these clients
    send is safe to repeat (libbatchtok's SAFE_TO_REPEAT), so it goes again,
    once, on a new connection; only a second loss reaches the caller."""

    def __init__(self, message, status):
        super().__init__(message)
        self.message, self.status = message, status

    def error(self):
        return BatchtokError(self.message, self.status)


def _lost(e):
    """The _Lost for an OSError (or EOF, e None) on an open connection."""
    if e is None:
        return _Lost("batchtokd closed the connection", 1)
    return _Lost("lost the connection to batchtokd: %s" % (e.strerror or e), 0)


def _unreachable(path, e):
    return BatchtokError("cannot reach batchtokd at %s: %s (is it running?)"
                         % (path, e.strerror or e))


def _timed_out(timeout):
    return BatchtokError("batchtokd did not answer within %.0f s" % timeout, 8)


def _recv_exact(sock, n):
    chunks, left = [], n
    while left:
        b = sock.recv(min(left, 65536))
        if not b:
            raise _lost(None)
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _read_frame(sock):
    """(type, id, body) of the next frame on sock; EOF raises _Lost, other
    errors are the socket's."""
    return _split_frame(_recv_exact(sock, _frame_length(_recv_exact(sock, 4))))


class Client:
    """One connection to batchtokd; safe to share between threads (requests
    are serialised). It connects on first use, and again when the daemon
    closed the connection (a restart, client_idle_timeout): the request that
    found it gone goes again, once, on the new one. batchtok.aio.Client is
    the same for asyncio.

    It speaks protocol versions 1 and 2: GET_TOKEN and PING go out right
    behind HELLO, as every daemon answers them; a request added since
    (WATCH, REFRESH, FORGET, CHALLENGE) waits for the HELLO reply and is
    sent only if the daemon lists it, else refused with BatchtokError
    status 9 (UNSUPPORTED, exit_code 1)."""

    def __init__(self, socket_path=None, timeout=60.0):
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self._sock = None
        self._next_id = 1
        self._lock = threading.Lock()
        # From the current connection's HELLO reply, once read.
        self._requests = None
        self._server = ""

    def close(self):
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _drop(self):
        if self._sock:
            self._sock.close()
        self._sock = None
        self._requests = None

    def _connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            raise _unreachable(self.socket_path, e) from None
        self._sock = s

    def _recv_exact(self, n):
        return _recv_exact(self._sock, n)

    def _read_frame(self):
        return _read_frame(self._sock)

    def _hello(self, rtype, body):
        """Takes a frame with HELLO's id: the reply (kept), or a refusal."""
        if rtype != HELLO | REPLY:
            raise _refused(rtype, body)
        _, self._server, self._requests = _hello_reply(body)

    def _exchange(self, type_, body):
        """Sends one request (behind HELLO on a new connection) and returns
        its reply's (type, body); None, having sent nothing, if the daemon
        does not answer type_."""
        out = b""
        if self._sock is None:
            self._connect()
            out = _hello_frame()
        try:
            if self._requests is None and not _has(V1_REQUESTS, type_):
                # Only the HELLO reply says whether the daemon knows type_.
                self._sock.sendall(out)
                out = b""
                rtype, rid, rbody = self._read_frame()
                if rid != HELLO_ID:
                    raise BatchtokError("batchtokd answered out of step", 1)
                self._hello(rtype, rbody)
            if self._requests is not None and not _has(self._requests, type_):
                if out:
                    self._sock.sendall(out)
                return None
            req_id = self._next_id
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            self._sock.sendall(out + _frame(type_, req_id, body))
            while True:
                rtype, rid, rbody = self._read_frame()
                if rid == HELLO_ID:
                    self._hello(rtype, rbody)
                    continue
                if rid != req_id:
                    raise BatchtokError("batchtokd answered out of step", 1)
                return rtype, rbody
        except socket.timeout:
            raise
        except OSError as e:
            raise _lost(e) from None

    def _request(self, type_, body):
        with self._lock:
            try:
                try:
                    got = self._exchange(type_, body)
                except _Lost:
                    self._drop()
                    got = self._exchange(type_, body)
            except _Lost as e:
                self._drop()
                raise e.error() from None
            except socket.timeout:
                # A late reply would put the stream out of step.
                self._drop()
                raise _timed_out(self.timeout) from None
            except BatchtokError:
                # Refused, or a broken frame: this connection is done.
                self._drop()
                raise
            if got is None:
                raise _unsupported(type_, self._server)
            try:
                return _reply(type_, got[0], got[1])
            except BatchtokError as e:
                if e.status in (0, 1):
                    self._drop()
                raise

    def get_token(self, identity=None, resource=None, scope=None, min_validity=0,
                  force_refresh=False, claims=None):
        """A Token for identity (default: the daemon's) and resource (default:
        the identity's first) or scope ("RESOURCE/.default").

        claims (the JSON claims request of a resource's 401 challenge,
        decoded from its WWW-Authenticate, as azure-core passes it; a dict is
        sent as JSON) asks for a fresh token with those claims: a CHALLENGE
        request, which batchtokd 0.3.0 on answers (older: BatchtokError
        status 9). The daemon fetches once for every caller with the same
        claims, at most once per 30 s per token."""
        if claims:
            return _token(self._request(CHALLENGE, _challenge_body(
                identity, resource, scope, min_validity, claims)))
        return _token(self._request(GET_TOKEN, _token_query(identity, resource, scope,
                                                            min_validity, force_refresh)))

    def ping(self):
        return _server(self._request(PING, b""))

    def refresh(self, identity=None, resource=None, scope=None):
        """Administrators: makes batchtokd fetch the token of identity and
        resource anew now (once for all who ask meanwhile, not held back by
        the 30 s limit on forced refreshes) and push it to its watchers.
        Returns the reply's record as a dict: identity, resource,
        fingerprint, expires and refresh (Unix time), watchers."""
        return _record_reply(self._request(REFRESH, _token_query(identity, resource, scope, 0)))

    def forget(self, identity=None, all=False):
        """Administrators: makes batchtokd drop the cached tokens of identity
        (all=True: of every identity), and their remembered errors. It
        revokes nothing at Entra ID: a token handed out stays valid until it
        expires. Returns {"forgotten": N}, the tokens dropped."""
        return _record_reply(self._request(FORGET, _forget_body(identity, all)))

    def watch(self, identity=None, resource=None, min_validity=0, *, scope=None):
        """Subscribes to the token of identity and resource (or scope), on a
        connection of its own; returns a Watch, an iterator over events:
        the current Token, then each replacement as soon as batchtokd has
        it (in normal operation at least min_validity before the old one
        ends), with refresh_at set. See Watch."""
        return Watch(self.socket_path, self.timeout,
                     _token_query(identity, resource, scope, min_validity))

    def on_rotate(self, callback, identity=None, resource=None, min_validity=0, *, scope=None,
                  on_error=None):
        """Runs a watch (see watch()) in a daemon thread of its own and calls
        callback(token) for each Token, the current one first. on_error(err)
        gets the watch's error events (WatchError: the watch goes on), what
        callback raised, and the error that ended the watch (a
        BatchtokError that is not a WatchError); without on_error they are
        logged to the "batchtok" logger. Returns a Rotation: .token is the
        latest token, .stop() ends it.

        The subscription is made before this returns: a daemon that cannot
        be reached or does not answer WATCH raises here."""
        return Rotation(self.watch(identity, resource, min_validity, scope=scope), callback,
                        on_error)


_log = logging.getLogger("batchtok")

WATCH_ID = 1  # the one request of a watch's connection
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0


def _gave_up(path, timeout, last):
    return WatchError("daemon not reachable: the watch lost batchtokd at %s and could not "
                      "subscribe again within %g s (%s); it goes on trying" % (path, timeout, last),
                      0)


def _retry_subscribe(e):
    """Whether a failed subscription is worth another try: the daemon is
    restarting (not listening yet, the connection cut, stopping, or busy),
    not one that refuses what is asked."""
    if isinstance(e, _Lost):
        return True
    return e.status in (0, UNAVAILABLE, 11)


class Watch:
    """The events of one WATCH (see Client.watch), on a connection of its
    own. Iterate over it: each event is a Token, or a WatchError when
    batchtokd cannot fetch a new token while the last one nears its end
    (yielded, not raised: the watch goes on). An ERROR that ends the watch
    is raised as BatchtokError: the peer lost access at a reload (status 3),
    the identity or resource is gone (4, 5).

    When the connection is lost, the daemon stops (a restart), or it ended
    the watch because its events were not read fast enough (BUSY), the
    watch connects again and resubscribes by itself, waiting 0.1 s, then
    twice as long each time up to 5 s, between tries, as libbatchtok does.
    Each timeout seconds (the Client's) without success it yields a
    WatchError "daemon not reachable" (exit_code 3) and goes on trying. The
    first token after resubscribing is not yielded again if it is the one
    yielded last.

    One thread iterates; close(), from any thread, ends the iteration (a
    read blocked in another thread returns, and the iteration stops). It is
    a context manager. .token is the last Token yielded."""

    def __init__(self, socket_path, timeout, query):
        self.socket_path = socket_path
        self.timeout = timeout
        self.token = None
        self._query = query
        self._lock = threading.Lock()
        self._closed = False
        self._ended = False
        self._wake = threading.Event()  # close() ends a backoff wait
        self._sock = None
        self._resubscribed = False
        self._lost = None  # why the watch is down, while it is
        self._delay = BACKOFF_FIRST
        self._busy = True  # a thread is in __next__ (here: subscribing)
        try:
            self._subscribe()
        except _Lost as e:
            raise e.error() from None
        finally:
            self._release()

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Ends the watch and closes its connection; an iteration blocked in
        another thread stops (StopIteration)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            if self._sock is not None:
                try:
                    # Wakes a recv() blocked in another thread, which closes.
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                if not self._busy:
                    self._sock.close()
                    self._sock = None

    def _release(self):
        """The iterating thread is done for now; it closes the socket if
        close() came meanwhile."""
        with self._lock:
            self._busy = False
            if self._closed and self._sock is not None:
                self._sock.close()
                self._sock = None

    def _set_sock(self, sock):
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._sock = sock
            return True

    def _drop(self):
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _subscribe(self):
        """Connects, reads the HELLO reply (the daemon must list WATCH) and
        sends the WATCH. Raises BatchtokError, or _Lost when the connection
        broke on the way."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if not self._set_sock(sock):
            raise StopIteration
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.socket_path)
            except OSError as e:
                raise _unreachable(self.socket_path, e) from None
            try:
                sock.sendall(_hello_frame())
                rtype, rid, body = _read_frame(sock)
                if rid != HELLO_ID or rtype != HELLO | REPLY:
                    raise _refused(rtype, body)
                _, server, requests = _hello_reply(body)
                if not _has(requests, WATCH):
                    raise _unsupported(WATCH, server)
                sock.sendall(_frame(WATCH, WATCH_ID, self._query))
            except socket.timeout:
                raise _timed_out(self.timeout) from None
            except OSError as e:
                raise _lost(e) from None
            # Events come when they come: no timeout on reading them.
            sock.settimeout(None)
        except BaseException:
            self._drop()
            raise

    def _event(self):
        """The next event; raises _Lost when the connection ends (or the
        daemon stops), BatchtokError when the watch ends."""
        try:
            rtype, rid, body = _read_frame(self._sock)
        except OSError as e:
            raise _lost(e) from None
        if rid == WATCH_ID and rtype == WATCH | REPLY:
            return _watch_event(body)
        if rid in (WATCH_ID, HELLO_ID) and rtype == ERROR:
            e = _error(body)
            if e.status in (UNAVAILABLE, BUSY):
                # The daemon is stopping (a restart, most likely), or it
                # dropped a watcher that fell behind: watch again.
                raise _Lost(str(e), e.status)
            raise e
        raise BatchtokError("batchtokd answered out of step", 1)

    def _resubscribe(self):
        """Connects again and resubscribes, with backoff. Returns None once
        subscribed, or a WatchError after timeout seconds without success
        (the next call goes on trying)."""
        start, last = time.monotonic(), self._lost
        while True:
            wait = self._delay
            if self.timeout is not None:
                left = start + self.timeout - time.monotonic()
                if left <= 0:
                    return _gave_up(self.socket_path, self.timeout, last)
                wait = min(wait, left)
            if self._wake.wait(wait):
                raise StopIteration
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            try:
                self._subscribe()
                self._resubscribed = True
                self._lost = None
                return None
            except (_Lost, BatchtokError) as e:
                if not _retry_subscribe(e):
                    raise
                last = e

    def __next__(self):
        with self._lock:
            if self._closed or self._ended:
                raise StopIteration
            self._busy = True
        try:
            while True:
                if self._lost is not None:
                    err = self._resubscribe()
                    if err is not None:
                        return err
                    continue
                try:
                    ev = self._event()
                except _Lost as e:
                    self._drop()
                    if self._closed:
                        raise StopIteration
                    self._lost, self._delay = e, BACKOFF_FIRST
                    continue
                if self._closed:
                    # close() came while connecting, too early to cut it.
                    raise StopIteration
                if isinstance(ev, Token):
                    again = self._resubscribed and self.token is not None and \
                        ev.access_token == self.token.access_token
                    self._resubscribed = False
                    if again:
                        continue
                    self.token = ev
                return ev
        except StopIteration:
            self._ended = True
            raise
        except BatchtokError:
            self._ended = True
            self._drop()
            raise
        finally:
            self._release()


class Rotation:
    """A watch run by Client.on_rotate in a daemon thread: callback(token)
    for each Token. .token is the latest token (None before the first),
    .error the BatchtokError that ended the watch, if one did."""

    def __init__(self, watch, callback, on_error=None):
        self.token = None
        self.error = None
        self._watch = watch
        self._callback = callback
        self._on_error = on_error
        self._first = threading.Event()  # a token was handed out, or the watch ended
        self._thread = threading.Thread(target=self._run, name="batchtok-on-rotate", daemon=True)
        self._thread.start()

    def _report(self, err):
        if self._on_error is not None:
            try:
                self._on_error(err)
                return
            except Exception:
                _log.exception("batchtok: on_error raised")
        if isinstance(err, WatchError):
            _log.warning("batchtok: %s", err)
        elif isinstance(err, BatchtokError):
            _log.error("batchtok: the watch ended: %s", err)
        else:
            _log.error("batchtok: the on_rotate callback raised", exc_info=err)

    def _run(self):
        try:
            for ev in self._watch:
                if isinstance(ev, WatchError):
                    self._report(ev)
                    continue
                self.token = ev
                try:
                    self._callback(ev)
                except Exception as e:
                    self._report(e)
                self._first.set()
        except BatchtokError as e:
            self.error = e
            self._report(e)
        except Exception as e:  # a bug: not silently
            self.error = e
            _log.exception("batchtok: the watch failed")
        finally:
            self._watch.close()
            self._first.set()

    @property
    def running(self):
        return self._thread.is_alive()

    def wait(self, timeout=None):
        """The first token, once callback has had it (at most timeout
        seconds); raises the error that ended the watch before one came, or
        BatchtokError status 8 on timeout."""
        self._first.wait(timeout)
        if self.token is not None:
            return self.token
        if self.error is not None:
            raise self.error
        raise _timed_out(timeout or 0)

    def stop(self, timeout=5.0):
        """Ends the watch and joins its thread (at most timeout seconds: a
        callback still running is not interrupted). Returns whether the
        thread has ended. Safe to call from the callback."""
        self._watch.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _access_token_type():
    try:
        from azure.core.credentials import AccessToken
        return AccessToken
    except ImportError:
        return collections.namedtuple("AccessToken", "token expires_on")


def _scope(scopes):
    """A credential's get_token scopes as Client.get_token's keywords."""
    if len(scopes) != 1:
        raise ValueError("batchtokd serves one resource per token: pass exactly one "
                         "scope, like %r" % BATCH_SCOPE)
    scope = scopes[0]
    return {"scope": scope} if scope.endswith("/.default") else {"resource": scope}


class BatchtokCredential:
    """An azure.core TokenCredential backed by batchtokd: the daemon caches and
    refreshes, so every call is one round trip on a local socket.

    get_token(scope, claims=CLAIMS), which azure-core's challenge policies
    call after a 401 with a claims challenge, asks batchtokd for a fresh
    token with those claims (CHALLENGE); a daemon before 0.3.0, which cannot
    take claims, is asked for a forced refresh instead, as this credential
    did before.

    on_rotate(token) (optional) is called with each token of the watched
    resource, the current one first, from a thread of the credential's own
    (Client.on_rotate): the resource= argument if given, and then the
    watch starts here, else the scope of the first get_token() call, and
    then it starts with that call (which raises if it cannot start). It
    runs until close(); on_error as for Client.on_rotate. .rotation is its
    Rotation (None until it started)."""

    def __init__(self, identity=None, socket_path=None, client=None, timeout=60.0,
                 on_rotate=None, resource=None, on_error=None):
        self.identity = identity
        self._client = client or Client(socket_path, timeout)
        self._access_token = _access_token_type()
        self._on_rotate, self._on_error = on_rotate, on_error
        self._rotation_lock = threading.Lock()
        self.rotation = None
        if on_rotate is not None and resource:
            self._rotate({"resource": resource})

    def _rotate(self, what):
        with self._rotation_lock:
            if self.rotation is None:
                self.rotation = self._client.on_rotate(self._on_rotate, self.identity,
                                                       on_error=self._on_error,
                                                       resource=what.get("resource"),
                                                       scope=what.get("scope"))

    def get_token(self, *scopes, claims=None, tenant_id=None, **kwargs):
        what = _scope(scopes)
        if self._on_rotate is not None and self.rotation is None:
            self._rotate(what)
        t = None
        if claims:
            try:
                t = self._client.get_token(self.identity, claims=claims, **what)
            except BatchtokError as e:
                if e.status != UNSUPPORTED:
                    raise
        if t is None:
            t = self._client.get_token(self.identity, force_refresh=bool(claims), **what)
        return self._access_token(t.access_token, int(t.expires_on))

    def close(self):
        if self.rotation is not None:
            self.rotation.stop()
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BatchtokBatchCredentials:
    """Credentials for msrest-based clients such as azure-batch 13.x's
    BatchServiceClient: signed_session() puts the daemon's current token in
    the Authorization header before every request."""

    def __init__(self, identity=None, resource=BATCH_RESOURCE, socket_path=None, client=None,
                 timeout=60.0):
        self.identity = identity
        self.resource = resource
        self._client = client or Client(socket_path, timeout)

    def signed_session(self, session=None):
        if session is None:
            import requests  # what msrest itself uses
            session = requests.Session()
        t = self._client.get_token(self.identity, resource=self.resource)
        session.headers["Authorization"] = "%s %s" % (t.token_type, t.access_token)
        return session

    def refresh_session(self, session=None):
        return self.signed_session(session)
