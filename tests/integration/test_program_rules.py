"""Identities granted to programs (allow_units, allow_user_units, allow_exes,
allow_cgroups): --check-config names a bad pattern at its line; a program
outside the rules is refused with what it is and what the identity allows,
exit 4; root passes; status lists an identity to whom a token request
would be given, and shows an administrator the rules and the requests per
caller unit."""

import json
import os
import select
import shutil
import signal
import subprocess

import pytest

from conftest import BATCH, BATCHTOKD, PYTHON, TOP, as_user, public_mkdtemp

CLIENT_PY = os.path.join(TOP, "client", "python")

NOBODY = 65534


def test_check_config_names_bad_patterns(tmp_path):
    conf = tmp_path / "batchtokd.conf"
    conf.write_text("[identity node]\n"             # 1
                    "credential = managed-identity\n"  # 2
                    "allow_units = etl@*\n"          # 3
                    "allow_exes = python3\n"         # 4
                    "allow_cgroups = /a//b\n"        # 5
                    "allow_user_units = dev.service\n")  # 6
    conf.chmod(0o600)
    r = subprocess.run([BATCHTOKD, "--check-config", "-c", str(conf)], capture_output=True,
                       text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "%s:3: allow_units: 'etl@*' is not NAME.TYPE: write the unit's type too, such " \
        "as etl@*.service" % conf in out, out
    assert "%s:4: allow_exes: 'python3' is not an absolute path" % conf in out, out
    assert "%s:5: allow_cgroups: '/a//b' has '//'" % conf in out, out
    assert "%s:1: [identity node]: allow_user_units = needs allow_users or allow_groups" \
        % conf in out, out


def test_a_program_outside_the_rules_is_refused(make_daemon, sts):
    d = make_daemon({"batch": {"default": "yes", "allow_users": "nobody"},
                     "etl": {"allow_units": "etl@*.service",
                             "allow_exes": "/usr/bin/python3 /opt/etl/bin/*"},
                     "both": {"allow_users": "nobody", "allow_units": "etl@*.service"}},
                    socket_mode="0666")
    # The test's own program is in no etl@ unit.
    r = d.get("-i", "etl", user=NOBODY)
    assert r.rc == 4, r
    assert r.err.startswith("batchtok: ") and r.err.endswith(
        ": identity etl allows etl@*.service, with exe /usr/bin/python3 or "
        "/opt/etl/bin/*\n"), r
    # With user rules too, the user passes and the program does not.
    r = d.get("-i", "both", user=NOBODY)
    assert r.rc == 4 and r.err.endswith(": identity both allows etl@*.service\n"), r
    assert "may not use" not in r.err
    # Without program rules, as before.
    assert d.get(user=NOBODY).rc == 0
    # Root may use every identity.
    assert d.get("-i", "etl").rc == 0
    log = d.read_log()
    assert "denied identity etl to pid " in log and "uid 65534: " in log, log
    # Status lists what a GET would give.
    r = d.run("status", "-o", "json", user=NOBODY)
    assert r.rc == 0, r
    names = [i["identity"] for i in json.loads(r.out)["identities"]]
    assert names == ["batch"], names
    assert "unit_requests" not in r.out
    # An administrator sees the rules and the requests per caller unit.
    r = d.run("status", "-o", "json")
    assert r.rc == 0, r
    st = json.loads(r.out)
    etl = [i for i in st["identities"] if i["identity"] == "etl"][0]
    assert etl["allow_units"] == "etl@*.service"
    assert etl["allow_exes"] == "/usr/bin/python3 /opt/etl/bin/*"
    units = st["unit_requests"]
    assert sum(u["requests"] for u in units) == 4, units
    assert sum(u["denied"] for u in units) == 2, units
    r = d.run("status")
    assert "unit_requests:\n" in r.out and " denied\n" in r.out, r.out
    # A token for the root request was served for the default resource.
    assert BATCH in d.run("status").out


# Run as nobody: connect (the daemon attests this process at accept), fork a
# child that keeps the connection, print both PIDs and exit. On SIGUSR1 the
# child asks on that connection and prints what it got to the file named.
REUSE = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import batchtok
c = batchtok.Client(sys.argv[2])
c.ping()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
child = os.fork()
if child:
    print(os.getpid(), child, flush=True)
    os._exit(0)
devnull = os.open(os.devnull, os.O_RDWR)
err = os.open(sys.argv[3] + ".err", os.O_WRONLY | os.O_CREAT, 0o600)
os.dup2(devnull, 0)
os.dup2(devnull, 1)
os.dup2(err, 2)
if signal.sigwait({signal.SIGUSR1, signal.SIGTERM}) != signal.SIGUSR1:
    os._exit(0)
c._connect = None  # the connection it has, or nothing: never a new one of its own
try:
    c.get_token(identity="py")
    said = "granted"
except batchtok.BatchtokError as e:
    said = "refused %d: %s" % (e.exit_code, e)
with open(sys.argv[3], "w") as f:
    f.write(said)
"""

HOLD = "import signal; signal.sigwait({signal.SIGTERM})"


def test_exe_rules_and_a_reused_pid(make_daemon, sts, shared, tmp_path):
    """allow_exes against the real executable of the caller, read through
    its pidfd-pinned PID: Python gets the identity, batchtok does not. Then
    the caller hands its connection to a child and exits, and a new Python
    process takes its PID (ns_last_pid) before the child asks: a daemon going
    by PID would see an allowed program; this one sees the caller exited."""
    python = os.path.realpath(PYTHON)
    d = make_daemon({"py": {"allow_users": "nobody", "allow_exes": python}}, socket_mode="0666")
    r = subprocess.run([PYTHON, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import batchtok; print(batchtok.Client(sys.argv[2])"
                        ".get_token(identity='py').access_token)", CLIENT_PY, d.sock],
                       capture_output=True, text=True, timeout=60, **as_user(NOBODY))
    assert r.returncode == 0 and r.stdout.count(".") == 2, r.stderr
    r = d.get("-i", "py", user=NOBODY)
    assert r.rc == 4 and "exe %s" % d.shared.batchtok in r.err and python in r.err, r
    # Compat capabilities are not issued for identities bound to programs.
    d2 = make_daemon({"py": {"allow_users": "nobody",
                             "allow_exes": python + " " + shared.batchtok}},
                     socket_mode="0666", compat_endpoint="127.0.0.1:0")
    r = d2.run("exec", "--compat", "-i", "py", "--", "true", user=NOBODY)
    assert r.rc == 4 and "compat endpoint cannot tell which program" in r.err, r

    public = public_mkdtemp("batchtok-reuse-")
    os.chmod(public, 0o1777)  # the child, as nobody, writes its answer there
    out = os.path.join(public, "said")
    p = subprocess.run([PYTHON, "-c", REUSE, CLIENT_PY, d.sock, out], capture_output=True,
                       text=True, timeout=60, **as_user(NOBODY))
    assert p.returncode == 0, p.stderr
    parent, child = map(int, p.stdout.split())
    holder = None
    try:
        # The parent has exited and been reaped: give its PID to a new
        # Python process of the same user. Bounded: other processes may
        # take the PID first.
        for _ in range(50):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(parent - 1))
            h = subprocess.Popen([PYTHON, "-c", HOLD], **as_user(NOBODY))
            if h.pid == parent:
                holder = h
                break
            h.terminate()
            h.wait(10)
        assert holder, "could not give PID %d to another process" % parent
        assert os.readlink("/proc/%d/exe" % parent) == python
        os.kill(child, signal.SIGUSR1)
        pidfd = os.pidfd_open(child)
        try:
            assert select.select([pidfd], [], [], 30)[0], "the child did not finish"
        finally:
            os.close(pidfd)
        assert os.path.exists(out), open(out + ".err").read()
        with open(out) as f:
            said = f.read()
        assert said.startswith("refused 4: ") and "has exited" in said, said
    finally:
        if holder:
            holder.terminate()
            holder.wait(10)
        try:
            os.kill(child, signal.SIGTERM)
        except ProcessLookupError:
            pass
        shutil.rmtree(public)


# As nobody: connect as Python (allowed) and, while this process lives,
# either let a forked child ask on the connection ("lend"), or execute
# another program (a copy of Python elsewhere, not allowed) that asks on it
# ("exec"). Prints what the asker got.
HANDOVER = r"""
import os, socket, sys
sys.path.insert(0, sys.argv[1])
import batchtok
mode, sock, copy = sys.argv[2], sys.argv[3], sys.argv[4]

def ask(c):
    c._connect = None  # the connection it has, never a new one
    try:
        c.get_token(identity="py")
        return "granted"
    except batchtok.BatchtokError as e:
        return "refused %d: %s" % (e.exit_code, e)

c = batchtok.Client(sock)
c.ping()
if mode == "lend":
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(w, ask(c).encode())
        os._exit(0)
    os.close(w)
    said = os.read(r, 4096).decode()
    os.waitpid(child, 0)
    print(said)
elif mode == "exec":
    fd = c._sock.detach()
    os.set_inheritable(fd, True)
    os.execv(copy, [copy, "-c", ADOPT, sys.argv[1], sock, str(fd)])
else:
    print(ask(c))
"""

ADOPT = r"""
import socket, sys
sys.path.insert(0, sys.argv[1])
import batchtok
c = batchtok.Client(sys.argv[2])
c._sock = socket.socket(fileno=int(sys.argv[3]))
c._sock.settimeout(60)
c._connect = None
try:
    c.get_token(identity="py")
    print("granted")
except batchtok.BatchtokError as e:
    print("refused %d: %s" % (e.exit_code, e))
"""


def test_a_connection_handed_over_or_outlived_by_its_program_is_not_attested(make_daemon, sts):
    """What was attested is the process that connected, running the program
    it ran then: a forked child asking on its connection, or the process
    after it has executed another program, is refused, while the process
    itself is granted."""
    python = os.path.realpath(PYTHON)
    d = make_daemon({"py": {"allow_users": "nobody", "allow_exes": python}}, socket_mode="0666")
    public = public_mkdtemp("batchtok-handover-")
    try:
        copy = os.path.join(public, "python-copy")
        shutil.copy(python, copy)
        os.chmod(copy, 0o755)
        script = HANDOVER.replace("ADOPT", repr(ADOPT))

        def run(mode):
            p = subprocess.run([PYTHON, "-c", script, CLIENT_PY, mode, d.sock, copy],
                               capture_output=True, text=True, timeout=60, **as_user(NOBODY))
            assert p.returncode == 0, p.stderr
            return p.stdout.strip()

        assert run("self") == "granted"
        said = run("lend")
        assert said.startswith("refused 4: ") and "sent on" in said, said
        said = run("exec")
        assert said.startswith("refused 4: ") and "executed another program" in said, said
    finally:
        shutil.rmtree(public)


def test_an_exe_path_from_another_namespace_is_not_trusted(make_daemon, sts, shared):
    """/proc/PID/exe is a path in the caller's mount namespace: in a user
    namespace of its own, any user can bind-mount batchtok over the allowed
    path and run it from there. Such a caller's executable is unknown, and
    an exe rule refuses it."""
    python = os.path.realpath(PYTHON)
    d = make_daemon({"py": {"allow_users": "nobody", "allow_exes": python}}, socket_mode="0666")
    p = subprocess.run(["unshare", "-Urm", "sh", "-c",
                        'mount --bind "$1" "$2" && exec "$2" -S "$3" get -i py', "sh",
                        shared.batchtok, python, d.sock],
                       capture_output=True, text=True, timeout=60, **as_user(NOBODY))
    if p.returncode != 4 and ("unshare failed" in p.stderr or "mount" in p.stderr):
        pytest.skip("unprivileged user namespaces are off here: %s" % p.stderr.strip())
    assert p.returncode == 4, (p.stdout, p.stderr)
    assert "user namespace of its own" in p.stderr, p.stderr


CONNECTED_THEN_RULED = r"""
import sys
sys.path.insert(0, sys.argv[1])
import batchtok
c = batchtok.Client(sys.argv[2])
c.ping()
print("connected", flush=True)
sys.stdin.readline()  # the reload that adds program rules
print(len(c.get_token(identity="py").access_token) > 0)
"""


def test_program_rules_added_by_a_reload_reach_open_connections(make_daemon, sts):
    """Without program rules no connection keeps a pidfd (a descriptor more
    each). A reload that adds some closes the idle connections made before,
    so that their clients come back pinned: a Python client connected
    before the reload gets its token after it, transparently."""
    python = os.path.realpath(PYTHON)
    d = make_daemon({"py": {"allow_users": "nobody"}}, socket_mode="0666")
    p = subprocess.Popen([PYTHON, "-c", CONNECTED_THEN_RULED, CLIENT_PY, d.sock],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, **as_user(NOBODY))
    try:
        assert p.stdout.readline() == "connected\n", p.stderr.read()
        d.reload_with("allow_users = nobody", "allow_users = nobody\nallow_exes = " + python)
        out, err = p.communicate("go\n", timeout=60)
        assert p.returncode == 0 and out.strip() == "True", err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    # And a program the new rules do not allow is refused.
    r = d.get("-i", "py", user=NOBODY)
    assert r.rc == 4 and python in r.err, r
