"""The clients of WATCH, REFRESH, FORGET and CHALLENGE as users run them:
`batchtok watch`, `batchtok exec --on-rotate`, `batchtok refresh`, `batchtok
forget` and `batchtok get --claims`, against a real daemon and the fake token
service. Counts, not timings: short token lifetimes make the daemon rotate,
and every wait is for output or an exit, bounded."""

import base64
import json
import os
import re
import select
import signal
import shutil
import subprocess
import tempfile

import pytest

from conftest import BATCH, BATCHTOK, BUILD, TOP, as_user, jwt_claims

NOBODY = 65534


class Proc:
    """A process whose standard output is read line by line, each wait
    bounded, and which is stopped by its PID."""

    def __init__(self, argv, env=None, **kw):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, **kw)
        self.buf = b""

    def line(self, timeout=30):
        """The next line of output; fails if none comes within timeout."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, "no output within %d s: %s" % (timeout, self.buf)
            chunk = os.read(fd, 65536)
            assert chunk, "the output ended: rc=%s err=%s" % (self.proc.wait(10),
                                                               self.proc.stderr.read())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def wait(self, timeout=30):
        """(exit status, what it said on stderr)."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        return rc, self.proc.stderr.read().decode()

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.wait()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def procs():
    made = []

    def start(d, *args, user=None, env=None):
        """batchtok -S SOCKET ARGS against d; with user, as that uid."""
        prog, kw = BATCHTOK, {}
        if user is not None:
            prog, kw = d.shared.batchtok, as_user(user)
        p = Proc([prog, "-S", d.sock] + list(args), env=env, **kw)
        made.append(p)
        return p

    yield start
    for p in made:
        p.kill()


def test_watch_prints_each_rotation_once(make_daemon, sts, procs):
    """Two 4 s tokens, then an hour-long one: each watcher prints the three
    tokens, one line each as they come, and the token service saw three
    requests however many watch."""
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=2)
    plain = procs(d, "watch")
    as_json = procs(d, "watch", "-o", "json")
    tokens = [plain.line() for _ in range(3)]
    docs = [json.loads(as_json.line()) for _ in range(3)]
    assert len(set(tokens)) == 3
    assert [j["accessToken"] for j in docs] == tokens
    assert sts.stats()["token_requests"] == 3
    for j in docs:
        assert jwt_claims(j["accessToken"])["aud"] == BATCH
        assert j["identity"] == "batch" and j["resource"] == BATCH
        assert j["tokenType"] == "Bearer" and j["expires_on"] > 0
        assert set(j) == {"accessToken", "expiresOn", "expires_on", "tenant", "tokenType",
                          "identity", "resource", "refresh_at"}
    # Each comes with the daemon's plan for the next one, before its end.
    assert all(docs[i]["expires_on"] > docs[i]["refresh_at"] for i in range(3))
    # SIGTERM and SIGINT end a watch as planned: exit 0, nothing said.
    assert plain.stop(signal.SIGTERM) == (0, "")
    assert as_json.stop(signal.SIGINT) == (0, "")


def test_watch_goes_on_across_a_daemon_restart(make_daemon, sts, procs):
    d = make_daemon()
    w = procs(d, "watch")
    first = w.line()
    d.stop()
    d.start()
    # The new daemon has nothing cached: it fetches, and the watch prints it.
    second = w.line()
    assert second != first and jwt_claims(second)["aud"] == BATCH
    assert sts.stats()["token_requests"] == 2
    rc, err = w.stop()
    assert rc == 0
    # At most one line about the outage, and one when the daemon is back.
    lines = err.splitlines()
    assert all(line.startswith("batchtok: ") for line in lines), err
    assert len(lines) in (0, 2), err


def test_watch_exits_0_when_its_reader_goes_away(make_daemon, sts, procs):
    d = make_daemon()
    w = procs(d, "watch")
    w.line()
    # The reader closes its end: batchtok sees it at once (no token needs
    # to come first) and exits 0.
    w.proc.stdout.close()
    assert w.wait() == (0, "")
    # The same in a shell pipeline.
    r = subprocess.run(["bash", "-c", "set -o pipefail; %s -S %s watch | head -n 1"
                        % (BATCHTOK, d.sock)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    assert len(r.stdout.splitlines()) == 1 and r.stderr == ""


def test_watch_exit_codes(make_daemon, sts, procs, tmp_path):
    # No daemon: 3, as for get.
    r = subprocess.run([BATCHTOK, "-S", str(tmp_path / "none.sock"), "watch"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and r.stderr.startswith("batchtok: cannot reach batchtokd"), r
    d = make_daemon({"batch": {}, "other": {}})
    # A watch that cannot start: its status's exit code, one line.
    r = d.run("watch", "-i", "no-such-identity")
    assert r.rc == 5 and r.out == "" and len(r.err.splitlines()) == 1, r
    assert r.err.startswith("batchtok: ")
    # The identity goes away at a reload: the watch ends with 5.
    w = procs(d, "watch", "-i", "other")
    w.line()
    d.reload_with("[identity other]", "[identity renamed]")
    rc, err = w.wait()
    assert rc == 5 and err.startswith("batchtok: ") and len(err.splitlines()) == 1, err


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the client as another user")
def test_watch_of_a_user_who_loses_access_exits_4(make_daemon, sts, procs):
    d = make_daemon({"batch": {"allow_users": str(NOBODY)}}, socket_mode="0666")
    w = procs(d, "watch", user=NOBODY)
    w.line()
    d.reload_with("allow_users = %d" % NOBODY, "allow_users = root")
    rc, err = w.wait()
    assert rc == 4, err
    assert "may no longer use identity 'batch'" in err and err.count("\n") == 1, err


# The child: says where the token is and what it holds, then waits; on
# SIGUSR1 it reads the file again and says so, and after $ROTATIONS of them
# exits 7. SIGTERM makes it exit 42.
ROTATE_SCRIPT = r"""
f="$BATCHTOK_TOKEN_FILE"
echo "file $f $(stat -c %a "$f") $(stat -c %a "${f%/*}")"
echo "token $(cat "$f")"
echo "env $BATCHTOK_ACCESS_TOKEN"
rotations=0
trap 'echo "rotated $(stat -c %a "$f") $(cat "$f")"; rotations=$((rotations + 1))' USR1
trap 'kill $pid; exit 42' TERM
while [ $rotations -lt "${ROTATIONS:-1}" ]; do
    sleep 60 & pid=$!
    wait $pid
    kill $pid 2>/dev/null
done
exit 7
"""


def test_exec_on_rotate_replaces_the_file_and_signals(make_daemon, sts, procs, tmp_path):
    """The child finds the token in BATCHTOK_TOKEN_FILE (0600, in a private
    directory) and in the environment; at the rotation the file holds the new
    token before the signal comes; when the child ends the file and its
    directory are gone and batchtok exits with the child's status."""
    d = make_daemon(min_validity="1s")
    sts.fault("slow", lifetime=4, count=1)
    script = tmp_path / "child.sh"
    script.write_text(ROTATE_SCRIPT)
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    p = procs(d, "exec", "--on-rotate=USR1", "--", "sh", str(script), env=env)
    _, path, mode, dir_mode = p.line().split()
    assert (mode, dir_mode) == ("600", "700")
    assert os.path.dirname(os.path.dirname(path)) == str(tmp_path)
    first = p.line().split()[1]
    assert p.line() == "env " + first
    assert jwt_claims(first)["aud"] == BATCH
    rotated = p.line().split()
    assert rotated[:2] == ["rotated", "600"] and rotated[2] != first
    assert jwt_claims(rotated[2])["aud"] == BATCH
    assert p.wait() == (7, "")
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    assert sts.stats()["token_requests"] == 2


def test_exec_on_rotate_passes_signals_and_refresh_rotates(make_daemon, sts, procs, tmp_path):
    """An administrator's refresh is a rotation too; a SIGTERM for batchtok
    reaches the child, and batchtok exits as it did."""
    d = make_daemon()
    script = tmp_path / "child.sh"
    script.write_text(ROTATE_SCRIPT)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), ROTATIONS="2")
    p = procs(d, "exec", "--on-rotate=SIGUSR1", "--", "sh", str(script), env=env)
    path = p.line().split()[1]
    # The runtime directory is the user's own: the file goes there.
    assert os.path.dirname(os.path.dirname(path)) == str(tmp_path)
    first = p.line().split()[1]
    p.line()
    r = d.run("refresh")
    assert r.rc == 0, r
    rotated = p.line().split()
    assert rotated[0] == "rotated" and rotated[2] != first
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == (42, "")
    assert not os.path.exists(os.path.dirname(path))


def test_exec_on_rotate_usage(make_daemon):
    d = make_daemon()
    for args, text in ((["--on-rotate=NOPE"], "is not a signal"),
                       (["--on-rotate=HUP", "--compat"], "drop --on-rotate")):
        r = d.run("exec", *args, "--", "true")
        assert r.rc == 2 and text in r.err, r
    # No token, no command: what get would say.
    r = d.run("exec", "--on-rotate=HUP", "-i", "no-such", "--", "true")
    assert r.rc == 5 and r.err.startswith("batchtok: "), r


def test_exec_on_rotate_passes_over_directories_others_may_write(make_daemon, tmp_path):
    """A runtime directory or TMPDIR that another user could write to (and so
    swap the private directory in) is passed over for /tmp."""
    d = make_daemon()
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(str(loose), 0o777)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(loose), TMPDIR=str(loose))
    r = subprocess.run([BATCHTOK, "-S", d.sock, "exec", "--on-rotate=HUP", "--", "sh", "-c",
                        'echo "$BATCHTOK_TOKEN_FILE"; test -s "$BATCHTOK_TOKEN_FILE"'],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r
    assert re.fullmatch(r"/tmp/batchtok-exec\.\w{6}/token\n", r.stdout), r.stdout
    assert not os.path.exists(os.path.dirname(r.stdout.strip()))
    assert os.listdir(str(loose)) == []


def test_refresh_fetches_anew_and_pushes(make_daemon, sts, procs):
    d = make_daemon()
    w = procs(d, "watch")
    first = w.line()
    r = d.run("refresh")
    assert r.rc == 0, r
    assert re.fullmatch(r"refreshed batch %s: new token sha256:[0-9a-f]+ expires "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in \d+m\d\ds\), "
                        r"pushed to 1 watcher\n" % re.escape(BATCH), r.out), r.out
    second = w.line()
    assert second != first
    assert sts.stats()["token_requests"] == 2
    # Not held back by the 30 s limit on --force-refresh.
    assert d.run("refresh").rc == 0
    assert w.line() != second
    assert sts.stats()["token_requests"] == 3


def test_forget_drops_cached_tokens(make_daemon, sts):
    d = make_daemon({"batch": {}, "other": {}})
    first = d.get("-i", "batch").out
    d.get("-i", "other")
    r = d.run("forget", "-i", "batch")
    assert r.rc == 0, r
    assert r.out == ("forgot 1 cached token of identity batch; nothing was revoked at Entra "
                     "ID: tokens already handed out stay valid until they expire\n")
    assert d.get("-i", "batch").out != first
    assert sts.stats()["token_requests"] == 3
    r = d.run("forget", "--all")
    assert r.rc == 0 and r.out.startswith("forgot 2 cached tokens of every identity; "), r
    for args in ([], ["-i", "batch", "--all"]):
        r = d.run("forget", *args)
        assert r.rc == 2 and "-i IDENTITY or --all" in r.err, r


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the client as another user")
def test_refresh_and_forget_are_for_administrators(make_daemon, sts):
    d = make_daemon({"batch": {"allow_users": str(NOBODY)}}, socket_mode="0666")
    assert d.get(user=NOBODY).rc == 0
    for args in (["refresh"], ["forget", "-i", "batch"], ["forget", "--all"]):
        r = d.run(*args, user=NOBODY)
        assert r.rc == 4 and "for administrators" in r.err, r
        assert r.err.startswith("batchtok: ") and r.err.count("\n") == 1
    assert sts.stats()["token_requests"] == 1


CLAIMS = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'


def test_get_claims_reaches_the_token_service(make_daemon, sts):
    """The challenge as JSON, and as the base64 (or base64url, unpadded) of
    a WWW-Authenticate header: each reaches the token service, merged with
    cp1 for an identity that declares it."""
    d = make_daemon({"cae": {"client_capabilities": "cp1"}})
    r = d.get("-i", "cae", "--claims", CLAIMS, "-o", "json")
    assert r.rc == 0, r
    token = json.loads(r.out)["accessToken"]
    assert jwt_claims(token)["acrs"] == ["c1"]
    assert json.loads(sts.stats()["claims"][-1]) == {"access_token": {
        "acrs": {"essential": True, "value": "c1"}, "xms_cc": {"values": ["cp1"]}}}
    # The same claims again within 30 s: the token that challenge brought.
    header = base64.b64encode(CLAIMS.encode()).decode()
    assert d.get("-i", "cae", "--claims", header).out.strip() == token
    assert sts.stats()["token_requests"] == 1
    # Other claims, as base64url without padding, after the daemon's 30 s
    # would be BUSY; a new daemon takes them at once.
    d.stop()
    d.start()
    other = '{"access_token":{"acrs":{"essential":true,"value":"c2?>"}}}'
    b64url = base64.urlsafe_b64encode(other.encode()).decode().rstrip("=")
    r = d.get("-i", "cae", "--claims", b64url)
    assert r.rc == 0, r
    assert jwt_claims(r.out.strip())["acrs"] == ["c2?>"]
    assert json.loads(sts.stats()["claims"][-1])["access_token"]["acrs"]["value"] == "c2?>"


def test_get_claims_refuses_what_is_not_a_claims_challenge(make_daemon, sts):
    d = make_daemon()
    for bad in ("not base64!", "{", '{"a":1} x', "[1]", base64.b64encode(b"[1]").decode(),
                base64.b64encode(b"{\"a\":}").decode(), "{" + " " * 9000 + "}"):
        r = d.get("--claims", bad)
        assert r.rc == 2 and r.err.startswith("batchtok: --claims: "), (bad, r)
    r = d.get("--claims", CLAIMS, "--force-refresh")
    assert r.rc == 2 and "drop --force-refresh" in r.err, r
    assert sts.stats()["token_requests"] == 0


@pytest.fixture(scope="module")
def readme_poll_loop():
    """The README's libbatchtok poll() loop, as printed there, built against
    this build's libbatchtok.a and the public header alone."""
    with open(os.path.join(TOP, "README.md")) as f:
        text = f.read()
    section = text.split("### C: a watch in an event loop", 1)[1]
    code = section.split("```c\n", 1)[1].split("```", 1)[0]
    work = tempfile.mkdtemp(prefix="batchtok-readme-")
    try:
        src, prog = os.path.join(work, "poll_loop.c"), os.path.join(work, "poll_loop")
        with open(src, "w") as f:
            f.write(code)
        lib = os.path.join(BUILD, "libbatchtok.a")
        with open(lib, "rb") as f:
            san = ["-fsanitize=address,undefined"] if b"__asan_init" in f.read() else []
        cc = subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-Wall", "-Wextra",
                             "-Werror", "-I", os.path.join(TOP, "client")] + san +
                            ["-o", prog, src, lib], capture_output=True, text=True, timeout=120)
        assert cc.returncode == 0, cc.stderr
        yield prog
    finally:
        shutil.rmtree(work)


def test_readme_poll_loop(make_daemon, sts, readme_poll_loop):
    """It prints each token as it comes, across a daemon restart."""
    d = make_daemon({"cache": {"resources": "https://redis.azure.com/"}}, min_validity="1s")
    sts.fault("slow", lifetime=4, count=1)
    reader = Proc([readme_poll_loop], env=dict(os.environ, BATCHTOK_SOCKET=d.sock))
    try:
        lines = [reader.line() for _ in range(2)]
        d.stop()
        d.start()
        lines.append(reader.line())
        for line in lines:
            assert re.fullmatch(r"token until \d+, next at \d+", line), line
        # A 4 s token, then an hour's; the new daemon's may expire in the
        # same second as the one before: the requests tell them apart.
        assert lines[0] != lines[1]
        assert sts.stats()["token_requests"] == 3
    finally:
        reader.kill()
