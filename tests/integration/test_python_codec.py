"""The Python client's codec for protocol version 2 and the messages added
with it (WATCH, REFRESH, FORGET, CHALLENGE), against bytes written out by
hand from proto/PROTOCOL.md; then Watch, Rotation and the version
negotiation against a stand-in for batchtokd that says exactly what the
test tells it to. No daemon, no token service."""

import asyncio
import os
import queue
import socket
import struct
import sys
import threading
import time

import pytest

from conftest import TOP, read_frame, wait_for

sys.path.insert(0, os.path.join(TOP, "client", "python"))
import batchtok  # noqa: E402
import batchtok.aio  # noqa: E402

BATCH = "https://batch.core.windows.net/"
TENANT = "00000000-0000-0000-0000-000000000000"


def h(text):
    """Bytes from a hex dump: "00 00 00 0d 01 ...", whitespace ignored."""
    return bytes.fromhex("".join(text.split()))


def s(text):
    b = text.encode()
    return struct.pack(">I", len(b)) + b


# The codec, byte for byte.

def test_hello_and_get_token_are_the_documented_bytes():
    # PROTOCOL.md's example: HELLO 1..2 (id 0) and GET_TOKEN for "batch".
    assert batchtok._hello_frame() == h("00 00 00 0d 01 00 00 00 00 00 00 00 01 00 00 00 02")
    assert batchtok._frame(batchtok.GET_TOKEN, 1, batchtok._token_query("batch", None, None, 0)) \
        == h("00 00 00 1e 02 00 00 00 01 00 00 00 05 62 61 74 63 68 00 00 00 00 00 00 00 00"
             "00 00 00 00 00 00 00 00")


def test_hello_replies_of_both_versions():
    # Version 2, as in PROTOCOL.md: batchtokd 0.3.0, requests 0x1fffe.
    body = h("00 00 00 02 00 00 00 0f 62 61 74 63 68 74 6f 6b 64 20 30 2e 33 2e 30"
             "00 00 00 00 00 01 ff fe")
    assert batchtok._hello_reply(body) == (2, "batchtokd 0.3.0", 0x1fffe)
    # Version 1 lists nothing: HELLO through COMPAT.
    assert batchtok.V1_REQUESTS == 0x7fe
    assert batchtok._hello_reply(h("00 00 00 01") + s("batchtokd 0.1.0")) == \
        (1, "batchtokd 0.1.0", 0x7fe)
    for bad in (h("00 00 00 01") + s("x") + h("00"),            # trailing bytes
                h("00 00 00 02") + s("x") + h("00 00 00 00"),   # a short list
                h("00 00 00 03") + s("x") + h("00" * 8)):       # not asked for
        with pytest.raises(batchtok.BatchtokError):
            batchtok._hello_reply(bad)
    assert batchtok._has(0x1fffe, batchtok.WATCH) and not batchtok._has(0x7fe, batchtok.WATCH)
    assert not batchtok._has(0x1fffe, 64) and not batchtok._has(0x1fffe, 0)


def test_new_requests_encode_as_documented():
    # WATCH 13: a token query; min_validity 30.
    assert batchtok._frame(batchtok.WATCH, 1, batchtok._token_query("batch", "", "", 30)) == h(
        "00 00 00 1e 0d 00 00 00 01  00 00 00 05 62 61 74 63 68  00 00 00 00  00 00 00 00"
        "00 00 00 1e  00 00 00 00")
    # REFRESH 14: a token query naming a scope.
    assert batchtok._frame(batchtok.REFRESH, 7, batchtok._token_query(None, None, "r/.default",
                                                                      0)) == h(
        "00 00 00 23 0e 00 00 00 07  00 00 00 00  00 00 00 00  00 00 00 0a"
        "72 2f 2e 64 65 66 61 75 6c 74  00 00 00 00  00 00 00 00")
    # FORGET 15: one identity (flags 0), or all (identity "", flags 1).
    assert batchtok._frame(batchtok.FORGET, 2, batchtok._forget_body("b", False)) == h(
        "00 00 00 0e 0f 00 00 00 02  00 00 00 01 62  00 00 00 00")
    assert batchtok._frame(batchtok.FORGET, 3, batchtok._forget_body(None, True)) == h(
        "00 00 00 0d 0f 00 00 00 03  00 00 00 00  00 00 00 01")
    with pytest.raises(ValueError):
        batchtok._forget_body("b", True)
    # CHALLENGE 16: a token query, then the claims JSON as given; a dict is
    # sent as compact JSON.
    claims = '{"access_token":{"nbf":{"essential":true}}}'
    want = h("00 00 00 4d 10 00 00 00 04  00 00 00 05 62 61 74 63 68  00 00 00 00"
             "00 00 00 00  00 00 00 00  00 00 00 00") + s(claims)
    assert batchtok._frame(batchtok.CHALLENGE, 4, batchtok._challenge_body(
        "batch", None, None, 0, claims)) == want
    assert batchtok._frame(batchtok.CHALLENGE, 4, batchtok._challenge_body(
        "batch", None, None, 0, {"access_token": {"nbf": {"essential": True}}})) == want


def event(status=0, message="", token="", expires_on=0, token_type="", identity="",
          resource="", tenant="", refresh_at=0):
    return (struct.pack(">I", status) + s(message) + s(token) + struct.pack(">Q", expires_on) +
            s(token_type) + s(identity) + s(resource) + s(tenant) +
            struct.pack(">Q", refresh_at))


def token_event(token="a.b.c", expires_on=1795325662, refresh_at=1795323862):
    return event(token=token, expires_on=expires_on, token_type="Bearer", identity="batch",
                 resource=BATCH, tenant=TENANT, refresh_at=refresh_at)


def test_watch_events_decode():
    # A token: the token reply's fields, then refresh_at.
    body = h("00 00 00 00  00 00 00 00  00 00 00 05 61 2e 62 2e 63  00 00 00 00 6b 02 7e de"
             "00 00 00 06 42 65 61 72 65 72  00 00 00 05 62 61 74 63 68  00 00 00 01 72"
             "00 00 00 01 74  00 00 00 00 6b 02 77 d6")
    t = batchtok._watch_event(body)
    assert isinstance(t, batchtok.Token)
    assert t == ("a.b.c", 1795325662, "Bearer", "batch", "r", "t")
    assert t.refresh_at == 1795323862
    # refresh_at 0: not planned.
    assert batchtok._watch_event(token_event(refresh_at=0)).refresh_at is None
    # An error event: status, message, empty token fields.
    e = batchtok._watch_event(event(7, "HTTP 503 from the token service"))
    assert isinstance(e, batchtok.WatchError) and isinstance(e, batchtok.BatchtokError)
    assert (e.status, e.message, e.exit_code) == (7, "HTTP 503 from the token service", 7)
    assert str(e) == "HTTP 503 from the token service"
    assert batchtok._watch_event(event(8)).message == "timeout"
    # Malformed: trailing or missing bytes; a token no header can carry.
    for bad in (body + b"\0", body[:-1], token_event(token="a b")):
        with pytest.raises(batchtok.BatchtokError) as e:
            batchtok._watch_event(bad)
        assert not isinstance(e.value, batchtok.WatchError)


def test_token_keeps_its_shape():
    """Token is still the six-field tuple GET_TOKEN gives (unpacking,
    equality), with refresh_at beside them."""
    t = batchtok.Token("a.b.c", 1, "Bearer", "i", "r", "t", refresh_at=5)
    access_token, expires_on, _, _, _, _ = t
    assert len(t) == 6 and t == batchtok.Token("a.b.c", 1, "Bearer", "i", "r", "t")
    assert t.refresh_at == 5 and t._replace(expires_on=2).refresh_at is None
    assert batchtok.Token(*t).refresh_at is None
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(t)).refresh_at == 5 and copy.copy(t).refresh_at == 5


def test_records_decode():
    # REFRESH's reply: STR, TIME, INT fields.
    body = (h("00 00 00 04") + s("identity") + h("01") + s("batch") +
            s("expires") + h("03 00 00 00 00 6b 02 7e de") +
            s("refresh") + h("03" + "00" * 8) +
            s("watchers") + h("02 00 00 00 00 00 00 00 03") + h("00 00 00 00"))
    assert batchtok._record_reply(batchtok._Reader(body)) == {
        "identity": "batch", "expires": 1795325662, "refresh": None, "watchers": 3}
    # INT is two's complement; BOOL; a child record.
    body = (h("00 00 00 02") + s("n") + h("02" + "ff" * 8) + s("ok") + h("04" + "00" * 7 + "01") +
            h("00 00 00 01") + h("00 00 00 01") + s("token") + h("01") + s("r") + h("00 00 00 00"))
    assert batchtok._record_reply(batchtok._Reader(body)) == {
        "n": -1, "ok": True, "children": [{"token": "r"}]}
    for bad in (h("00 00 00 01") + s("k") + h("05") + h("00" * 8) + h("00 00 00 00"),
                h("00 00 00 00 00 00 00 00 00"), h("00 00 00 41")):
        with pytest.raises(batchtok.BatchtokError):
            batchtok._record_reply(batchtok._Reader(bad))


def test_unsupported_message_names_the_request_and_version():
    e = batchtok._unsupported(batchtok.WATCH, "batchtokd 0.1.0")
    assert str(e) == "WATCH is not supported by this batchtokd (0.1.0): upgrade batchtokd"
    assert (e.status, e.exit_code) == (9, 1)


# A stand-in for batchtokd: each connection is handed to the next handler
# the test gave, in a thread of its own.

def frame(type_, id_, body=b""):
    return batchtok._frame(type_, id_, body)


def hello_reply(version=2, server="batchtokd 0.3.0", requests=0x1fffe):
    body = struct.pack(">I", version) + s(server)
    if version >= 2:
        body += struct.pack(">Q", requests)
    return frame(batchtok.HELLO | 0x80, 0, body)


def error(id_, status, message):
    return frame(0xFF, id_, struct.pack(">I", status) + s(message))


class StandIn:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.handlers = queue.Queue()
        self.seen = queue.Queue()  # what each handler returned or raised
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            handler = self.handlers.get(timeout=10)
            threading.Thread(target=self.run, args=(handler, conn), daemon=True).start()

    def run(self, handler, conn):
        conn.settimeout(10)
        try:
            self.seen.put(handler(conn))
        except Exception as e:
            self.seen.put(e)
        finally:
            conn.close()

    def result(self):
        r = self.seen.get(timeout=10)
        if isinstance(r, Exception):
            raise r
        return r

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@pytest.fixture
def stand_in(tmp_path):
    st = StandIn(str(tmp_path / "stand-in.sock"))
    yield st
    st.close()


def expect_hello(conn):
    assert read_frame(conn) == (1, 0, struct.pack(">II", 1, 2))


def watch_handler(*replies, hello=None, wait_eof=True):
    """A connection that expects HELLO 1..2 and a WATCH, then sends replies
    (frames, or callables to call); returns the WATCH's body."""
    def handle(conn):
        expect_hello(conn)
        conn.sendall(hello or hello_reply())
        type_, id_, body = read_frame(conn)
        assert (type_, id_) == (batchtok.WATCH, 1)
        for r in replies:
            if callable(r):
                r()
            else:
                conn.sendall(r)
        if wait_eof:
            # Until the client closes.
            conn.settimeout(30)
            assert read_frame(conn) is None
        return body
    return handle


def watch_frame(body):
    return frame(batchtok.WATCH | 0x80, 1, body)


def test_version_1_daemon_gets_no_new_request(stand_in):
    """Against a daemon from before version 2: GET_TOKEN goes out behind
    HELLO as it always did; WATCH, REFRESH, FORGET and CHALLENGE are
    refused with the daemon's version, never sent; a credential's claims
    become a forced refresh, as before."""
    old = hello_reply(1, "batchtokd 0.1.0")
    reply = (s("a.b.c") + struct.pack(">Q", 1795325662) + s("Bearer") + s("batch") + s(BATCH) +
             s(TENANT))

    def v1(conn):
        expect_hello(conn)
        conn.sendall(old)
        got = []
        while True:
            f = read_frame(conn)
            if f is None:
                return got
            got.append(f)
            conn.sendall(frame(f[0] | 0x80, f[1], s("batchtokd 0.1.0") if f[0] == 6 else reply))

    def hello_only(conn):
        expect_hello(conn)
        conn.sendall(old)
        return read_frame(conn)

    stand_in.handlers.put(v1)
    for _ in range(2):  # the connections of watch() and on_rotate()
        stand_in.handlers.put(hello_only)
    with batchtok.Client(stand_in.path) as c:
        assert c.get_token("batch").access_token == "a.b.c"
        for call in (lambda: c.watch("batch"), lambda: c.refresh("batch"),
                     lambda: c.forget("batch"), lambda: c.get_token("batch", claims="{}"),
                     lambda: c.on_rotate(print)):
            with pytest.raises(batchtok.BatchtokError) as e:
                call()
            assert e.value.status == 9 and "is not supported by this batchtokd (0.1.0): " \
                "upgrade batchtokd" in str(e.value)
        cred = batchtok.BatchtokCredential("batch", client=c)
        assert cred.get_token(BATCH + "/.default", claims='{"a":1}').token == "a.b.c"
        assert c.ping() == "batchtokd 0.1.0"
    results = [stand_in.result() for _ in range(3)]
    # The watches' own connections saw HELLO alone.
    assert results.count(None) == 2
    got = [r for r in results if r is not None][0]
    # The one connection carried GET_TOKEN, the forced refresh and PING: the
    # refused requests were never sent.
    assert [(t, flags) for t, _, body in got for flags in [body[-4:]]] == [
        (2, h("00 00 00 00")), (2, h("00 00 00 01")), (6, b"")]
    assert got[1][2] == batchtok._token_query("batch", None, BATCH + "/.default", 0, True)


def test_version_1_daemon_refuses_watch_before_it_is_sent(stand_in):
    def hello_only(conn):
        expect_hello(conn)
        conn.sendall(hello_reply(1, "batchtokd 0.1.0"))
        return read_frame(conn)

    stand_in.handlers.put(hello_only)
    with pytest.raises(batchtok.BatchtokError) as e:
        batchtok.Client(stand_in.path).watch()
    assert str(e.value) == "WATCH is not supported by this batchtokd (0.1.0): upgrade batchtokd"
    assert stand_in.result() is None  # nothing after HELLO, then the close
    # A version 2 daemon that does not list WATCH: the same.
    stand_in.handlers.put(hello_only)
    with pytest.raises(batchtok.BatchtokError) as e:
        batchtok.Client(stand_in.path).watch()
    assert stand_in.result() is None


def test_watch_yields_tokens_and_error_events_until_the_final_error(stand_in):
    stand_in.handlers.put(watch_handler(
        watch_frame(token_event("t.o.1")),
        watch_frame(event(7, "token service unavailable")),
        watch_frame(token_event("t.o.2", refresh_at=0)),
        error(1, 3, "uid 0 may no longer use identity 'batch'")))
    with batchtok.Client(stand_in.path).watch("batch", min_validity=30) as w:
        events = []
        with pytest.raises(batchtok.BatchtokError) as e:
            for ev in w:
                events.append(ev)
        assert (e.value.status, e.value.exit_code) == (3, 4)
        assert not isinstance(e.value, batchtok.WatchError)
        assert [type(ev) for ev in events] == [batchtok.Token, batchtok.WatchError,
                                               batchtok.Token]
        assert events[0].access_token == "t.o.1" and events[0].refresh_at == 1795323862
        assert events[1].status == 7 and events[2].refresh_at is None
        assert w.token is events[2]
        assert list(w) == []  # ended
    assert stand_in.result() == batchtok._token_query("batch", None, None, 30)


def test_watch_resubscribes_when_the_daemon_stops(stand_in):
    """ERROR UNAVAILABLE (the daemon is stopping) and a cut connection are
    not the end: the watch connects again and sends the same WATCH; the
    token it had is not yielded twice."""
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1")),
                                        error(1, 7, "batchtokd is stopping"), wait_eof=False))
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1")),
                                        watch_frame(token_event("t.o.2")), wait_eof=False))
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.3"))))
    w = batchtok.Client(stand_in.path).watch("batch")
    assert [next(w).access_token for _ in range(3)] == ["t.o.1", "t.o.2", "t.o.3"]
    w.close()
    bodies = [stand_in.result() for _ in range(3)]
    assert bodies == [batchtok._token_query("batch", None, None, 0)] * 3
    assert stand_in.connections == 3


def test_watch_resubscribes_after_being_dropped_as_slow(stand_in):
    """ERROR BUSY (the daemon dropped a watcher whose events piled up) is
    not the end either, as in libbatchtok: the watch starts again."""
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1")),
                                        error(1, 11, "the watch ended: its events were not "
                                              "read"), wait_eof=False))
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.2"))))
    w = batchtok.Client(stand_in.path).watch("batch")
    assert [next(w).access_token for _ in range(2)] == ["t.o.1", "t.o.2"]
    w.close()
    assert stand_in.connections == 2


def test_watch_says_so_after_the_timeout_and_goes_on(stand_in):
    stand_in.handlers.put(watch_handler(watch_frame(token_event()), wait_eof=False))
    w = batchtok.Client(stand_in.path, timeout=0.5).watch()
    assert isinstance(next(w), batchtok.Token)
    stand_in.close()  # no daemon any more
    start = time.monotonic()
    for _ in range(2):  # an event per timeout, not the end
        e = next(w)
        assert isinstance(e, batchtok.WatchError), e
        assert str(e).startswith("daemon not reachable: ") and e.exit_code == 3
        assert "cannot reach batchtokd" in str(e)
    assert time.monotonic() - start < 10
    w.close()


def test_close_interrupts_a_blocked_watch_and_rotation_stops(stand_in):
    stand_in.handlers.put(watch_handler())  # nothing comes
    w = batchtok.Client(stand_in.path).watch()
    done = queue.Queue()
    threading.Thread(target=lambda: done.put(list(w)), daemon=True).start()
    # The reader is (or is about to be) blocked in recv(): close() from
    # here ends it either way.
    wait_for(lambda: w._busy, 5, what="the iteration to start")
    w.close()
    assert done.get(timeout=5) == []
    assert stand_in.result()  # the client closed its end

    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1"))))
    got, errors = [], []

    def callback(t):
        got.append(t)
        raise RuntimeError("the callback's own bug")

    r = batchtok.Client(stand_in.path).on_rotate(callback, on_error=errors.append)
    assert r.wait(10).access_token == "t.o.1" and r.token is got[0]
    assert isinstance(errors[0], RuntimeError)  # reported; the watch goes on
    assert r.running
    start = time.monotonic()
    assert r.stop(5) is True
    assert time.monotonic() - start < 5 and not r.running and r.error is None
    assert stand_in.result()


def test_rotation_reports_error_events_and_the_end(stand_in):
    stand_in.handlers.put(watch_handler(watch_frame(event(6, "AADSTS7000215")),
                                        watch_frame(token_event("t.o.1")),
                                        error(1, 4, "no identity 'batch'"), wait_eof=False))
    got, errors = [], []
    r = batchtok.Client(stand_in.path).on_rotate(got.append, on_error=errors.append)
    r._thread.join(10)
    assert not r.running
    assert [t.access_token for t in got] == ["t.o.1"]
    assert [type(e) for e in errors] == [batchtok.WatchError, batchtok.BatchtokError]
    assert errors[1] is r.error and r.error.status == 4
    stand_in.result()


def test_aio_watch_against_the_stand_in(stand_in):
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1")),
                                        watch_frame(event(8, "slow")),
                                        error(1, 7, "batchtokd is stopping"), wait_eof=False))
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1")),
                                        watch_frame(token_event("t.o.2")),
                                        error(1, 5, "not served"), wait_eof=False))

    async def main():
        events = []
        async with batchtok.aio.Client(stand_in.path) as c:
            with pytest.raises(batchtok.BatchtokError) as e:
                async for ev in c.watch("batch"):
                    events.append(ev)
            assert e.value.status == 5
        return events

    events = asyncio.run(asyncio.wait_for(main(), 30))
    assert [getattr(e, "access_token", None) or e.status for e in events] == \
        ["t.o.1", 8, "t.o.2"]
    assert stand_in.result() == stand_in.result() == batchtok._token_query("batch", None, None, 0)

    # Refused unsent by a version 1 daemon, at the first step.
    def hello_only(conn):
        expect_hello(conn)
        conn.sendall(hello_reply(1, "batchtokd 0.1.0"))
        return read_frame(conn)

    stand_in.handlers.put(hello_only)

    async def old():
        with pytest.raises(batchtok.BatchtokError) as e:
            async with batchtok.aio.Client(stand_in.path).watch():
                pass
        return str(e.value)

    assert asyncio.run(old()) == \
        "WATCH is not supported by this batchtokd (0.1.0): upgrade batchtokd"
    assert stand_in.result() is None


def test_aio_rotation_stops_while_waiting(stand_in):
    stand_in.handlers.put(watch_handler(watch_frame(token_event("t.o.1"))))

    async def main():
        got = []

        async def callback(t):
            got.append(t.access_token)

        c = batchtok.aio.Client(stand_in.path)
        r = await c.on_rotate(callback)
        assert (await r.wait(10)).access_token == "t.o.1"
        assert await r.stop(5) is True
        assert not r.running
        return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == ["t.o.1"]
    assert stand_in.result()
