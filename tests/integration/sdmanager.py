"""systemd's side of sd_notify and socket passing, as tests and the bench
need it without systemd: the notification socket (what the daemon says,
and the descriptors it hands over with FDSTORE=1), and starting a program
with descriptors at 3, 4, ... named by LISTEN_FDNAMES, LISTEN_PID its own."""

import os
import socket
import subprocess
import time


class Manager:
    """The notification socket's end of systemd: what the daemon says, and
    the descriptors it hands over."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        self.fds = []

    def receive(self, timeout=10):
        self.sock.settimeout(timeout)
        msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 8)
        self.messages.append(msg.decode())
        self.fds += fds
        return msg.decode()

    def wait_for(self, line, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.receive(max(0.1, deadline - time.monotonic())).split("\n"):
                return
        raise AssertionError("no %s from the daemon" % line)

    def drain(self):
        """What is queued already (the sender is gone)."""
        self.sock.setblocking(False)
        try:
            while True:
                msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 8)
                self.messages.append(msg.decode())
                self.fds += fds
        except BlockingIOError:
            pass
        self.sock.setblocking(True)

    def close(self):
        self.sock.close()
        for fd in self.fds:
            os.close(fd)


def spawn(argv, manager, env, pass_fds=(), names=(), **kw):
    """argv as systemd starts a service: NOTIFY_SOCKET, and the descriptors
    at 3, 4, ... named by LISTEN_FDNAMES, LISTEN_PID its own."""
    env = dict(env, NOTIFY_SOCKET=manager.path)
    targets = tuple(range(3, 3 + len(pass_fds)))

    def place():
        # Out of the way first, so that no source is overwritten early.
        high = [os.dup(fd) for fd in pass_fds]
        for fd, target in zip(high, targets):
            os.dup2(fd, target)
        for fd in high:
            os.close(fd)

    if pass_fds:
        env.update(LISTEN_FDS=str(len(pass_fds)), LISTEN_FDNAMES=":".join(names))
    return subprocess.Popen(["sh", "-c", 'export LISTEN_PID=$$; exec "$0" "$@"'] + list(argv),
                            pass_fds=targets, preexec_fn=place, env=env, **kw)
