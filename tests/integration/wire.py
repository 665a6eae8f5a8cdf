"""The batchtok wire protocol (proto/PROTOCOL.md) as a test speaks it, with
nothing but the standard library: frames, the token query, the WATCH event,
flat records. Run as a program it watches a token and prints one line per
frame, for tests that watch as another user:

    wire.py SOCKET IDENTITY   ->  "token", "error STATUS MESSAGE",
                                  "end STATUS MESSAGE" or "end"
"""

import socket
import struct
import sys


def frame(type_, id_, body=b""):
    return struct.pack(">IBI", 5 + len(body), type_, id_) + body


HELLO, GET_TOKEN, WATCH, REFRESH, FORGET, CHALLENGE, ERROR = 1, 2, 13, 14, 15, 16, 0xFF
REPLY = 0x80
OK, BAD_REQUEST, DENIED, UNAVAILABLE, BUSY = 0, 2, 3, 7, 11
RESOURCE = "https://batch.core.windows.net/"


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def query(identity="", resource="", scope="", min_validity=0, flags=0):
    return string(identity) + string(resource) + string(scope) + struct.pack(
        ">II", min_validity, flags)


class Reader:
    def __init__(self, body):
        self.b, self.i = body, 0

    def u32(self):
        self.i += 4
        return struct.unpack(">I", self.b[self.i - 4:self.i])[0]

    def u64(self):
        self.i += 8
        return struct.unpack(">Q", self.b[self.i - 8:self.i])[0]

    def str(self):
        n = self.u32()
        self.i += n
        return self.b[self.i - n:self.i].decode()


def record(body):
    """A flat record (no children) as a dict."""
    r = Reader(body)
    out = {}
    for _ in range(r.u32()):
        key = r.str()
        kind = r.b[r.i]
        r.i += 1
        out[key] = r.str() if kind == 1 else r.u64()
    assert r.u32() == 0
    return out


class Conn:
    """One connection speaking protocol version 2, frames read whole."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""
        self.s.sendall(frame(HELLO, 0, struct.pack(">II", 1, 2)))
        t, _, body = self.read()
        assert t == HELLO | REPLY, (t, body)

    def send(self, type_, id_, body):
        self.s.sendall(frame(type_, id_, body))

    def read(self):
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    f, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return f[0], struct.unpack(">I", f[1:5])[0], f[5:]
            chunk = self.s.recv(1 << 20)
            if not chunk:
                return None, None, None
            self.buf += chunk

    def event(self):
        """The next frame: ("token", id, token, expires_on, refresh_at),
        ("error", id, status, message) for an error event, or ("end", id,
        status, message) for an ERROR frame."""
        t, id_, body = self.read()
        if t is None:
            return ("eof",)
        r = Reader(body)
        if t == ERROR:
            return ("end", id_, r.u32(), r.str())
        assert t == WATCH | REPLY, t
        status, message = r.u32(), r.str()
        token, expires_on = r.str(), r.u64()
        r.str(), r.str(), r.str(), r.str()
        refresh_at = r.u64()
        assert r.i == len(body)
        if status:
            return ("error", id_, status, message)
        return ("token", id_, token, expires_on, refresh_at)

    def close(self):
        self.s.close()



def main():
    c = Conn(sys.argv[1])
    c.send(WATCH, 1, query(sys.argv[2]))
    while True:
        ev = c.event()
        if ev[0] == "token":
            print("token", flush=True)
        elif ev[0] == "error":
            print("error %d %s" % (ev[2], ev[3]), flush=True)
        else:
            print("end" if ev[0] == "eof" else "end %d %s" % (ev[2], ev[3]), flush=True)
            break


if __name__ == "__main__":
    main()
