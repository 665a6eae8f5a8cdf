"""The boot tier: batchtok's packages installed with apt-get into a Debian 12
root booted with systemd as PID 1 (systemd-nspawn -b), used as the README
says, by a member of the socket group, a stranger and an administrator; then
installed again by the Azure Batch start task (packaging/azure-batch/) and
used by a pool's tasks.

One container serves the whole file; the tests run in file order, each
building on the state the one before left, as an administrator's session
would. The fake token service runs on this machine's loopback, which the
container shares. Every wait is bounded; the container is powered off (and
its nspawn process stopped by PID) at the end."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
from conftest import (BATCH, CLIENT, MI_CLIENT, SECRET, TENANT, FakeSTS,  # noqa: E402
                      jwt_claims, wait_for)

BUILD = os.environ.get("BATCHTOK_BUILD", os.path.join(TOP, "build"))
CACHE = os.environ.get("BATCHTOK_BOOT_CACHE", "/var/cache/batchtok-boot")
# The last commit before the packaged service could start: its client is the
# "older batchtok" that must keep working against the new daemon.
OLD_COMMIT = "d46386e"
PATH = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_ENV = "DEBIAN_FRONTEND=noninteractive"
CONFOLD = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"


def run(*argv, timeout=120, input=None, **kw):
    """Runs argv in a process group of its own, killed whole on time-out (so
    nothing it started outlives it); input is bytes."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         **kw)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def need(cmd):
    if not shutil.which(cmd):
        pytest.fail("the boot tier needs %s (tests/install-deps.sh installs it)" % cmd)


class Result:
    def __init__(self, p):
        self.rc, self.out, self.err = p.returncode, p.stdout, p.stderr

    def __repr__(self):
        return "rc=%d\nstdout: %s\nstderr: %s" % (self.rc, self.out[-3000:], self.err[-3000:])


class Machine:
    """A booted container, driven from outside with nsenter."""

    def __init__(self, work, root_tar, debs):
        self.work = work
        self.root = os.path.join(work, "root")
        self.name = "batchtok-boot-%d" % os.getpid()
        self.nspawn = None
        os.makedirs(self.root)
        r = run("tar", "-C", self.root, "-xf", root_tar)
        assert r.returncode == 0, r.stderr
        self.host_pidns = os.readlink("/proc/self/ns/pid")
        self.log = open(os.path.join(work, "console.log"), "w")
        try:
            self.boot(debs)
        except BaseException:
            self.stop()
            raise

    def boot(self, debs):
        # --keep-unit and --register=no: no machined or host systemd needed.
        # CAP_IPC_LOCK: without it nspawn's own seccomp filter refuses mlock()
        # to everything in the container, which a host's PID 1 never does.
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--directory", self.root, "--machine", self.name,
             "--register=no", "--keep-unit", "--capability=CAP_IPC_LOCK",
             "--console=pipe", "--bind-ro=%s:/var/tmp/debs" % debs],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.leader = wait_for(self.find_leader, 30, what="the container's init")
        state = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and state not in ("running", "degraded"):
            r = self.sh("systemctl is-system-running --wait", timeout=90)
            state = r.out.strip()
        if state not in ("running", "degraded"):
            pytest.fail("the container did not boot (state %r); console: %s"
                        % (state, self.console()))

    def find_leader(self):
        """nspawn's child in a PID namespace of its own: the container's
        init (nspawn may have helpers of its own for a moment)."""
        if self.nspawn.poll() is not None:
            pytest.fail("systemd-nspawn exited with %d: %s"
                        % (self.nspawn.returncode, self.console()))
        r = run("pgrep", "-P", str(self.nspawn.pid))
        for pid in r.stdout.split():
            try:
                if os.readlink("/proc/%s/ns/pid" % pid) != self.host_pidns:
                    return int(pid)
            except OSError:
                pass
        return None

    def check_leader(self):
        """Every command enters the leader's namespaces: make sure it is still
        the container's init, never a host process that reused its PID."""
        ok = self.nspawn.poll() is None
        try:
            with open("/proc/%d/status" % self.leader) as f:
                ppid = re.search(r"^PPid:\s+(\d+)", f.read(), re.M).group(1)
            ok = ok and int(ppid) == self.nspawn.pid and \
                os.readlink("/proc/%d/ns/pid" % self.leader) != self.host_pidns
        except OSError:
            ok = False
        if not ok:
            pytest.fail("the container is gone (nspawn: %s); console: %s"
                        % (self.nspawn.poll(), self.console()))

    def console(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def sh(self, cmd, user=None, timeout=60, env=None, input=None):
        """Runs cmd with /bin/sh inside the container, as root or as user (with
        that user's groups), with a clean environment; input is bytes."""
        self.check_leader()
        envs = ["PATH=" + PATH, "LANG=C.UTF-8"] + ["%s=%s" % kv for kv in (env or {}).items()]
        argv = ["nsenter", "--target", str(self.leader), "--all", "--"]
        if user:
            argv += ["runuser", "-u", user, "--"]
            envs.append("HOME=/home/" + user)
        else:
            envs.append("HOME=/root")
        argv += ["env", "-i"] + envs + ["/bin/sh", "-c", cmd]
        return Result(run(*argv, timeout=timeout, input=input))

    def ok(self, cmd, **kw):
        r = self.sh(cmd, **kw)
        assert r.rc == 0, "%s\n%r" % (cmd, r)
        return r.out

    def write(self, p, data, mode="644", user=None):
        """Writes data (str or bytes) to p inside the container."""
        if isinstance(data, str):
            data = data.encode()
        self.ok("umask 077; cat > '%s' && chmod %s '%s'" % (p, mode, p), user=user,
                input=data)

    def stop(self):
        """Powers the container off; failing that, stops nspawn by its PID."""
        if self.nspawn and self.nspawn.poll() is None:
            try:
                self.sh("systemctl poweroff", timeout=30)
                self.nspawn.wait(60)
            except BaseException:
                pass
            for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                if self.nspawn.poll() is not None:
                    break
                self.nspawn.send_signal(sig)
                try:
                    self.nspawn.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
        self.log.close()


def build_debs(out):
    r = run(os.path.join(TOP, "packaging", "build-deb.sh"), out, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return {f.split("_")[0]: os.path.join(out, f) for f in os.listdir(out)
            if f.endswith(".deb") and "dbgsym" not in f}


def lower_version(deb, out):
    """The same package with a lower version and the conffile as it was
    before admin_group was enabled in it: the release an upgrade comes from."""
    tree = tempfile.mkdtemp(dir=out)
    assert run("dpkg-deb", "-R", deb, tree).returncode == 0
    control = os.path.join(tree, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    version = re.search(r"^Version: (.*)$", text, re.M).group(1)
    text = re.sub(r"^Version: .*$", "Version: 0.0.1~old", text, flags=re.M)
    text = text.replace("(= %s)" % version, "(= 0.0.1~old)")
    with open(control, "w") as f:
        f.write(text)
    conf = os.path.join(tree, "etc", "batchtok", "batchtokd.conf")
    if os.path.exists(conf):
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(re.sub(r"^admin_group", "# admin_group", text, flags=re.M))
        md5 = os.path.join(tree, "DEBIAN", "md5sums")
        r = run("sh", "-c", "cd %s && find . -type f ! -path './DEBIAN/*' | sed 's|^\\./||' "
                "| sort | xargs md5sum" % tree)
        with open(md5, "w") as f:
            f.write(r.stdout)
    name = os.path.basename(deb).replace("_" + version + "_", "_0.0.1~old_")
    r = run("dpkg-deb", "--root-owner-group", "-b", tree, os.path.join(out, name))
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tree)
    return os.path.join(out, name)


def old_client(work):
    """batchtok built from OLD_COMMIT's sources, or None where the clone
    lacks that commit (a shallow clone)."""
    git = ["git", "-c", "safe.directory=*", "-C", TOP]
    if run(*git, "cat-file", "-e", OLD_COMMIT + "^{commit}").returncode != 0:
        return None
    src = os.path.join(work, "old-src")
    os.makedirs(src)
    r = run("sh", "-c", '"$@" | tar -x -C %s' % src, "sh", *git, "archive", OLD_COMMIT,
            "Makefile", "client", "proto")
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "O", "SAN")}
    r = run("make", "-s", "-C", src, "O=build", "build/batchtok", env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return os.path.join(src, "build", "batchtok")


@pytest.fixture(scope="module")
def env():
    for cmd in ("systemd-nspawn", "mmdebstrap", "nsenter", "dpkg-buildpackage", "git"):
        need(cmd)
    if os.geteuid() != 0:
        pytest.fail("the boot tier runs as root (systemd-nspawn)")
    # Private to root: the container's files must not be reachable by the
    # host's users (its uids are the host's).
    work = tempfile.mkdtemp(prefix="batchtok-boot-", dir=os.environ.get("BOOT_TMPDIR"))
    try:
        debs_dir = os.path.join(work, "debs")
        os.makedirs(debs_dir)
        new = build_debs(os.path.join(work, "build"))
        for n in ("batchtokd", "libbatchtok0"):
            shutil.copy(new[n], debs_dir)
        old = [lower_version(new[n], debs_dir) for n in ("batchtokd", "libbatchtok0")]
        old_batchtok = old_client(work)
        r = run(os.path.join(HERE, "make-root.sh"), new["batchtokd"], new["libbatchtok0"],
                env=dict(os.environ, BATCHTOK_BOOT_CACHE=CACHE), timeout=600)
        assert r.returncode == 0, r.stderr
        sts = FakeSTS(work)
        try:
            m = Machine(os.path.join(work, "machine"), r.stdout.strip(), debs_dir)
            try:
                m.sts = sts
                m.new = ["/var/tmp/debs/" + os.path.basename(new[n])
                         for n in ("batchtokd", "libbatchtok0")]
                m.old = ["/var/tmp/debs/" + os.path.basename(p) for p in old]
                m.old_client = old_batchtok
                yield m
            finally:
                m.stop()
        finally:
            sts.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def config(m, extra=""):
    return ("[daemon]\nadmin_group = batchtok-admin\nca_file = /etc/batchtok/test-ca.pem\n%s\n"
            "[identity batch-prod]\ncredential = secret\ntenant = %s\nclient_id = %s\n"
            "secret_credential = batchtok_batch-prod.secret\nauthority_host = %s\n"
            "allow_groups = batchtok\nprefetch = yes\n" % (extra, TENANT, CLIENT, m.sts.url))


def get(m, user, *args, **kw):
    return m.sh("batchtok get " + " ".join(args), user=user, **kw)


def journal(m, *args):
    return m.ok("journalctl --no-pager -q " + " ".join(args))


def exists(m, path):
    return m.sh("test -e '%s'" % path).rc == 0


# --- an installed release, configured as the README says -------------------


def test_install_creates_users_and_enables_nothing(env):
    m = env
    m.ok("%s apt-get install -y -q %s" % (APT_ENV, " ".join(m.old)), timeout=180)
    assert "batchtok" in m.ok("getent passwd batchtok")
    assert m.ok("getent group batchtok-admin").startswith("batchtok-admin:")
    assert m.sh("systemctl is-enabled batchtokd.socket").out.strip() == "disabled"
    assert m.sh("systemctl is-active batchtokd.service").out.strip() == "inactive"
    assert m.ok("stat -c %a /etc/batchtok/credentials").strip() == "700"
    # The users of the rest of the file.
    m.ok("useradd -m -G batchtok alice && useradd -m bob && "
         "useradd -m -G batchtok,batchtok-admin carol && useradd -m dave")


def test_readme_setup_and_check_config(env):
    m = env
    with open(m.sts.ca, "rb") as f:
        m.write("/etc/batchtok/test-ca.pem", f.read())
    # README step 1: the secret, readable by root alone.
    m.ok("umask 077; printf '%%s\\n' '%s' > /etc/batchtok/credentials/batch-prod.secret"
         % SECRET)
    # Step 2: the identity (an administrator's change to the conffile).
    m.write("/etc/batchtok/batchtokd.conf", config(m))
    # Step 3: checked by root outside the unit, as the unit will pass it.
    out = m.ok("batchtokd --check-config")
    assert "OK (1 identities, system mode)" in out
    r = m.sh("chmod 644 /etc/batchtok/credentials/batch-prod.secret; batchtokd --check-config;"
             " rc=$?; chmod 600 /etc/batchtok/credentials/batch-prod.secret; exit $rc")
    assert r.rc == 1 and "/etc/batchtok/credentials/batch-prod.secret is accessible" in r.err
    assert SECRET not in r.out + r.err


def test_socket_activation_by_a_group_members_first_get(env):
    m = env
    m.ok("systemctl enable --now batchtokd.socket")
    before = m.sts.stats()["token_requests"]
    r = get(m, "alice")
    assert r.rc == 0, r
    token = r.out.strip()
    assert token.count(".") == 2
    assert m.sh("systemctl is-active batchtokd.service").out.strip() == "active"
    assert get(m, "alice").out.strip() == token
    assert m.sts.stats()["token_requests"] - before == 1
    m.token = token


# --- the upgrade to this tree's packages -------------------------------------


def test_upgrade_keeps_changed_conffile_and_restarts_cleanly(env):
    m = env
    pid = m.ok("systemctl show -P MainPID batchtokd").strip()
    assert pid != "0"
    m.ok("%s apt-get install -y -q %s %s" % (APT_ENV, CONFOLD, " ".join(m.new)), timeout=180)
    assert m.ok("dpkg-query -W -f '${Version}' batchtokd") != "0.0.1~old"
    assert m.ok("cat /etc/batchtok/batchtokd.conf") == config(m), \
        "the administrator's config was replaced"
    # The package's own new version sits beside it, as dpkg does.
    assert exists(m, "/etc/batchtok/batchtokd.conf.dpkg-dist")
    new_pid = m.ok("systemctl show -P MainPID batchtokd").strip()
    assert new_pid not in ("0", pid), "the upgrade did not restart the running daemon"
    assert m.ok("systemctl show -P Result batchtokd").strip() == "success"
    r = get(m, "alice")
    assert r.rc == 0, r


def test_older_batchtok_works_with_the_new_daemon(env):
    m = env
    if not m.old_client:
        pytest.skip("this clone has no commit %s (a shallow clone): no older client to run"
                    % OLD_COMMIT)
    with open(m.old_client, "rb") as f:
        m.write("/usr/local/bin/batchtok-old", f.read(), mode="755")
    r = m.sh("batchtok-old get", user="alice")
    assert r.rc == 0, r
    assert r.out.strip() == get(m, "alice").out.strip()
    r = m.sh("batchtok-old status", user="alice")
    assert r.rc == 0 and "batch-prod" in r.out, r


# --- the running service -------------------------------------------------------


def test_secure_heap_is_locked_under_the_unit(env):
    m = env
    pid = m.ok("systemctl show -P MainPID batchtokd").strip()
    status = m.ok("cat /proc/%s/status" % pid)
    locked = int(re.search(r"^VmLck:\s+(\d+) kB", status, re.M).group(1))
    assert locked >= 1024, "VmLck is %d kB under the shipped unit" % locked


def test_clean_start_logs_no_warning_and_names_its_mode(env):
    m = env
    m.ok("systemctl restart batchtokd")
    inv = m.ok("systemctl show -P InvocationID batchtokd").strip()
    assert get(m, "alice").rc == 0
    lines = journal(m, "_SYSTEMD_INVOCATION_ID=%s" % inv, "-o", "cat").splitlines()
    assert lines and "starting in system mode" in lines[0], lines
    warnings = journal(m, "_SYSTEMD_INVOCATION_ID=%s" % inv, "-p", "warning", "-o", "cat")
    assert warnings.strip() == "", warnings


def test_journal_has_structured_fields_and_no_secret(env):
    m = env
    token = get(m, "alice").out.strip()
    entries = [json.loads(l) for l in journal(m, "-u", "batchtokd", "-o", "json").splitlines()]
    assert any(e.get("BATCHTOK_IDENTITY") == "batch-prod" for e in entries)
    assert any(e.get("BATCHTOK_TOKEN_FINGERPRINT") for e in entries)
    everything = m.ok("journalctl --no-pager -o json")
    assert SECRET not in everything
    assert token not in everything and m.token not in everything


def test_stranger_is_denied(env):
    m = env
    r = get(m, "bob")
    assert r.rc == 4, r
    assert "group batchtok" in r.err and r.out == "", r


def test_admin_may_reload_a_member_may_not(env):
    m = env
    r = m.sh("batchtok reload", user="carol")
    assert r.rc == 0, r
    r = m.sh("batchtok reload", user="alice")
    assert r.rc == 4 and "admin" in r.err, r
    assert get(m, "alice").rc == 0


def test_systemctl_reload_restart_stop(env):
    m = env
    pid = m.ok("systemctl show -P MainPID batchtokd").strip()
    m.ok("systemctl reload batchtokd")
    assert m.ok("systemctl show -P MainPID batchtokd").strip() == pid
    assert get(m, "alice").rc == 0
    m.ok("systemctl restart batchtokd")
    assert m.ok("systemctl show -P MainPID batchtokd").strip() != pid
    assert get(m, "alice").rc == 0
    m.ok("systemctl stop batchtokd")
    assert m.ok("systemctl show -P Result batchtokd").strip() == "success"
    assert m.sh("systemctl is-active batchtokd.service").out.strip() == "inactive"
    # The socket stays: the next client starts it again.
    assert get(m, "alice").rc == 0
    assert m.sh("systemctl is-active batchtokd.service").out.strip() == "active"


def test_a_restart_keeps_tokens_in_the_descriptor_store_not_in_files(env):
    """systemctl restart: the daemon hands its tokens to systemd (a sealed
    memfd, FileDescriptorStoreMax=1) and takes them back, so the first
    request after the restart costs no token request; no file anywhere
    holds the token. A plain stop drops the store (systemd 252): the next
    start fetches."""
    m = env
    # The tests before started the service often: start it afresh within
    # systemd's start limit (5 in 10 s), which this test's two starts keep.
    m.ok("systemctl reset-failed batchtokd.service")
    token = get(m, "alice").out.strip()
    assert token.count(".") == 2
    before = m.sts.stats()["token_requests"]
    pid = m.ok("systemctl show -P MainPID batchtokd").strip()
    m.ok("systemctl restart batchtokd")
    assert m.ok("systemctl show -P MainPID batchtokd").strip() != pid
    r = get(m, "alice")
    assert r.rc == 0 and r.out.strip() == token, r
    assert m.sts.stats()["token_requests"] == before
    log = journal(m, "-u", "batchtokd", "-o", "cat", "_PID=%s" % pid)
    assert "handed 1 cached token to systemd's descriptor store" in log, log
    pid2 = m.ok("systemctl show -P MainPID batchtokd").strip()
    log = journal(m, "-u", "batchtokd", "-o", "cat", "_PID=%s" % pid2)
    assert "restored 1 cached token kept across the restart" in log, log
    # The signature part is the token's own; no file holds it, anywhere
    # the daemon or anyone could have written one (FIFOs and devices are
    # skipped: reading them would wait).
    sig = token.split(".")[2]
    r = m.sh("grep -rlF -D skip -- '%s' /etc /var /run /tmp /root /home /srv /opt "
             "/usr/local 2>/dev/null" % sig, timeout=300)
    assert r.out.strip() == "", r
    m.ok("systemctl stop batchtokd")
    r = get(m, "alice")
    assert r.rc == 0, (r, m.sh("systemctl status batchtokd.socket batchtokd.service; "
                               "journalctl --no-pager -n 40 -u batchtokd.socket -u batchtokd"))
    assert m.sts.stats()["token_requests"] == before + 1


def test_user_units_with_lingering(env):
    m = env
    uid = m.ok("id -u dave").strip()
    m.ok("loginctl enable-linger dave")
    user_env = {"XDG_RUNTIME_DIR": "/run/user/" + uid}
    wait_for(lambda: m.sh("test -S /run/user/%s/bus && systemctl --user is-system-running"
                          % uid, user="dave", env=user_env).out.strip()
             in ("running", "degraded"), 60, step=0.2, what="dave's user manager")
    m.ok("mkdir -p ~/.config/batchtok && umask 077 && printf '%%s\\n' '%s' > "
         "~/.config/batchtok/secret" % SECRET, user="dave")
    conf = config(m).replace("secret_credential = batchtok_batch-prod.secret",
                             "secret_file = /home/dave/.config/batchtok/secret")
    conf = conf.replace("admin_group = batchtok-admin\n", "").replace(
        "allow_groups = batchtok", "allow_users = dave")
    m.write("/home/dave/.config/batchtok/batchtokd.conf", conf, user="dave")
    m.ok("systemctl --user enable --now batchtokd.socket", user="dave", env=user_env)
    r = m.sh("batchtok get", user="dave", env=user_env)
    assert r.rc == 0, r
    assert m.sh("systemctl --user is-active batchtokd.service", user="dave",
                env=user_env).out.strip() == "active"
    status = m.ok("batchtok status", user="dave", env=user_env)
    assert "batch-prod" in status
    m.ok("systemctl --user stop batchtokd.service batchtokd.socket", user="dave", env=user_env)
    m.ok("loginctl disable-linger dave")


# --- removal -------------------------------------------------------------------


def test_purge_keeps_users_removes_state_and_says_what_it_leaves(env):
    m = env
    m.ok("systemctl disable --now batchtokd.socket batchtokd.service")
    r = m.sh("%s apt-get purge -y -q batchtokd libbatchtok0" % APT_ENV, timeout=180)
    assert r.rc == 0, r
    said = r.out + r.err
    assert "/etc/batchtok/credentials" in said and "batch-prod.secret" in said, said
    assert not exists(m, "/var/lib/batchtok")
    assert m.sh("getent passwd batchtok").rc == 0
    assert m.sh("getent group batchtok-admin").rc == 0
    assert not exists(m, "/usr/sbin/batchtokd")


# --- an Azure Batch pool node (packaging/azure-batch/) -------------------------
#
# With the packages purged, the container is a node as Batch hands it to a
# start task: the pool-scope auto-user exists (Batch creates it when it
# provisions a node), the start task's resource files are in its working
# directory and the AZ_BATCH_* variables are set as on a real node. The one
# stand-in is the metadata service: the fake IMDS on loopback, whose
# user-assigned identity is MI_CLIENT, named by BATCHTOK_TEST_IMDS_ENDPOINT.

START_TASK = os.path.join(TOP, "packaging", "azure-batch", "start-task.sh")
NODE_ROOT = "/mnt/batch/tasks"
STARTUP_WD = NODE_ROOT + "/startup/wd"
# What Batch names an application package's directory and variable on Linux
# (application batchtok, version 0.2.0).
APP_DIR = NODE_ROOT + "/applications/batchtok0.2.0"
APP_VAR = "AZ_BATCH_APP_PACKAGE_batchtok_0_2_0"
STORAGE = "https://storage.azure.com/"
# The pool-scope non-admin auto-user on Linux nodes, and its group.
AUTO_USER = "_azbatch"
TASKS = 200


def node_env(m, **extra):
    """The variables Batch sets for a start task (batch-compute-node-
    environment-variables), and the test's IMDS."""
    env = {"AZ_BATCH_ACCOUNT_NAME": "contoso",
           "AZ_BATCH_ACCOUNT_URL": "https://contoso.westeurope.batch.azure.com",
           "AZ_BATCH_POOL_ID": "batchtok-pool", "AZ_BATCH_NODE_ID": "tvm-1_1-20260101t000000z",
           "AZ_BATCH_NODE_IS_DEDICATED": "true", "AZ_BATCH_NODE_ROOT_DIR": NODE_ROOT,
           "AZ_BATCH_NODE_SHARED_DIR": NODE_ROOT + "/shared",
           "AZ_BATCH_NODE_STARTUP_DIR": NODE_ROOT + "/startup",
           "AZ_BATCH_TASK_DIR": NODE_ROOT + "/startup", "AZ_BATCH_TASK_WORKING_DIR": STARTUP_WD,
           "AZ_BATCH_TASK_USER_IDENTITY": "PoolAdmin",
           "BATCHTOK_TEST_IMDS_ENDPOINT": m.sts.imds_url}
    env.update(extra)
    return env


def start_task(m, script, **env):
    """The pool's start task command line, run as root in its working
    directory, as Batch runs it."""
    return m.sh('cd "$AZ_BATCH_TASK_WORKING_DIR" && %s --client-id %s --resources "%s %s" '
                "--compat 127.0.0.1:0" % (script, MI_CLIENT, BATCH, STORAGE),
                env=node_env(m, **env), timeout=300)


def imds_requests(m):
    return m.sts.stats()["imds_requests"]


def conf(m):
    return m.ok("cat /etc/batchtok/batchtokd.conf")


def test_batch_start_task_installs_and_serves_the_pool_identity(env):
    m = env
    m.ok("groupadd _azbatchgrp && useradd -m -g _azbatchgrp %s" % AUTO_USER)
    # The resource files: the script and the packages (not the older
    # versions that share /var/tmp/debs).
    m.ok("mkdir -p %s %s/shared && cp %s %s" % (STARTUP_WD, NODE_ROOT, " ".join(m.new), STARTUP_WD))
    with open(START_TASK, "rb") as f:
        m.write(STARTUP_WD + "/start-task.sh", f.read(), mode="770")
    before = imds_requests(m)
    r = start_task(m, "./start-task.sh")
    assert r.rc == 0, r
    assert "ready:" in r.out and "_azbatch joined the group batchtok" in r.out, r
    # Its one check token: one request, for the pool's identity.
    assert imds_requests(m) - before == 1
    q = m.sts.stats()["last_imds"]["query"]
    assert q["client_id"] == MI_CLIENT and q["resource"] == BATCH, q
    text = conf(m)
    assert text.splitlines().count("[identity node]") == 1
    assert "client_id = %s" % MI_CLIENT in text and "allow_groups = batchtok" in text
    assert m.sh("systemctl is-enabled batchtokd.socket").out.strip() == "enabled"
    assert "batchtok" in m.ok("id -nG %s" % AUTO_USER).split()


def test_a_task_as_the_pool_auto_user_gets_the_node_token(env):
    m = env
    before = imds_requests(m)
    r = m.sh("batchtok get -i node -r %s" % BATCH, user=AUTO_USER)
    assert r.rc == 0, r
    token = r.out.strip()
    claims = jwt_claims(token)
    assert claims["aud"] == BATCH and claims["appid"] == MI_CLIENT, claims
    # The start task's token, from the daemon's cache.
    assert imds_requests(m) == before
    # An SDK under exec --compat asks the compat endpoint in App Service's
    # shape (bash's /dev/tcp stands in for its HTTP client) and gets the same.
    r = m.sh("batchtok exec --compat -i node -- bash -c '"
             'hp=${IDENTITY_ENDPOINT#http://}; host=${hp%%%%/*}; '
             'exec 3<>/dev/tcp/${host%%:*}/${host##*:} && '
             'printf "GET /%%s?api-version=2019-08-01&resource=%s HTTP/1.1\\r\\nHost: %%s\\r\\n'
             'X-IDENTITY-HEADER: %%s\\r\\nConnection: close\\r\\n\\r\\n" '
             '"${hp#*/}" "$host" "$IDENTITY_HEADER" >&3 && cat <&3' "'" % BATCH,
             user=AUTO_USER)
    assert r.rc == 0 and r.out.startswith("HTTP/1.1 200"), r
    body = json.loads(r.out[r.out.index("{"):r.out.rindex("}") + 1])
    assert body["access_token"] == token
    # A task-scope auto-user is made for its task, after the start task: not
    # in the group, so refused, with the reason.
    m.ok("useradd -m -g _azbatchgrp _azbatchtask_1")
    r = m.sh("batchtok get -i node", user="_azbatchtask_1")
    assert r.rc == 4 and "group batchtok" in r.err, r


def test_200_concurrent_tasks_cause_one_imds_request(env):
    m = env
    before = imds_requests(m)
    # TASKS processes of the auto-user at once, each asking for a resource
    # nobody has asked for yet; the shell waits for every one of them (and
    # the whole group is killed if that takes longer than the time-out).
    script = ('d=$(mktemp -d) && i=0 && while [ $i -lt %d ]; do '
              '{ batchtok get -i node -r %s >$d/out.$i 2>$d/err.$i; echo $? >$d/rc.$i; } & '
              'i=$((i + 1)); done; wait; '
              'echo "ok $(cat $d/rc.* | grep -cx 0)"; '
              'echo "tokens $(cat $d/out.* | sort -u | wc -l)"; '
              'cat $d/err.* | sort | uniq -c | head -5; rm -rf "$d"' % (TASKS, STORAGE))
    r = m.sh(script, user=AUTO_USER, timeout=120)
    assert r.rc == 0, r
    assert "ok %d\n" % TASKS in r.out and "tokens 1\n" in r.out, r
    assert imds_requests(m) - before == 1
    q = m.sts.stats()["last_imds"]["query"]
    assert q["resource"] == STORAGE and q["client_id"] == MI_CLIENT, q


def test_start_task_rerun_changes_nothing(env):
    m = env
    text = conf(m)
    group = m.ok("getent group batchtok")
    pid = m.ok("systemctl show -P MainPID batchtokd").strip()
    before = imds_requests(m)
    # After a reboot Batch runs the same command line again...
    r = start_task(m, "./start-task.sh")
    assert r.rc == 0, r
    assert "(unchanged)" in r.out and "_azbatch is in the group batchtok already" in r.out, r
    # ... and a pool may take the packages from an application package
    # instead: the script finds the .deb files beside itself.
    m.ok("mkdir -p %s && cp %s/*.deb %s/start-task.sh %s" % (APP_DIR, STARTUP_WD, STARTUP_WD,
                                                            APP_DIR))
    r = start_task(m, '"$%s/start-task.sh"' % APP_VAR, **{APP_VAR: APP_DIR})
    assert r.rc == 0 and "(unchanged)" in r.out, r
    assert conf(m) == text
    assert m.ok("getent group batchtok") == group
    assert m.ok("systemctl show -P MainPID batchtokd").strip() == pid, \
        "an unchanged config restarted the daemon"
    assert imds_requests(m) == before
    assert m.sh("batchtok get -i node", user=AUTO_USER).rc == 0


# --- which program is asking (allow_units, allow_user_units, allow_exes) -------
#
# The daemon attests each caller at accept (SO_PEERPIDFD): its unit, its user
# unit, its executable, pinned to the process rather than its PID. The
# identities below narrow access to programs; alice may use all three by her
# groups, so only the program decides.

PROBE = "/usr/local/bin/attest-probe"


def program_rules(m):
    base = ("credential = secret\ntenant = %s\nclient_id = %s\nauthority_host = %s\n"
            "secret_credential = batchtok_batch-prod.secret\n" % (TENANT, CLIENT, m.sts.url))
    return (config(m) +
            "\n[identity etl]\n" + base + "allow_groups = batchtok\nallow_units = etl@*.service\n"
            "\n[identity probe-only]\n" + base + "allow_users = alice\nallow_exes = %s\n" % PROBE +
            # Any user can name a unit of their own manager anything:
            # allow_user_units needs a user rule beside it.
            "\n[identity jobs]\n" + base + "allow_users = dave\nallow_user_units = job@*.service\n")


@pytest.fixture(scope="module")
def probe(env, tmp_path_factory):
    """attest_probe.c built here against this tree's libbatchtok and put in
    the container, where the package's libbatchtok.so.0 runs it."""
    m = env
    out = str(tmp_path_factory.mktemp("probe") / "attest-probe")
    r = run("cc", "-std=gnu11", "-Wall", "-Werror", "-I", os.path.join(TOP, "client"),
            "-o", out, os.path.join(HERE, "attest_probe.c"), "-L", BUILD, "-lbatchtok")
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        m.write(PROBE, f.read(), mode="755")
    return PROBE


def test_units_decide_who_gets_an_identity(env, probe):
    m = env
    m.write("/etc/batchtok/batchtokd.conf", program_rules(m))
    assert "OK (4 identities" in m.ok("batchtokd --check-config")
    m.ok("systemctl restart batchtokd")
    # alice's etl@1.service gets a token; her other unit and her login
    # shell do not, and are told what they were and what was required.
    r = m.sh("systemd-run --quiet --wait --pipe --unit etl@1.service --uid=alice "
             "batchtok get -i etl", timeout=60)
    assert r.rc == 0 and r.out.count(".") == 2, r
    r = m.sh("systemd-run --quiet --wait --pipe --unit backup.service --uid=alice "
             "batchtok get -i etl", timeout=60)
    assert r.rc == 4, r
    assert "unit backup.service, exe /usr/bin/batchtok" in r.err, r
    assert "etl@*.service" in r.err, r
    r = get(m, "alice", "-i", "etl")
    assert r.rc == 4 and "etl@*.service" in r.err, r
    # A member of the group still needs the unit; bob is in neither.
    r = m.sh("systemd-run --quiet --wait --pipe --unit etl@2.service --uid=bob "
             "batchtok get -i etl", timeout=60)
    assert r.rc == 4, r


def test_exe_rule_and_the_journal_names_the_program(env, probe):
    m = env
    r = m.sh("%s get probe-only" % probe, user="alice")
    assert r.rc == 0 and r.out.startswith("token "), r
    r = get(m, "alice", "-i", "probe-only")
    assert r.rc == 4 and "exe /usr/bin/batchtok" in r.err and probe in r.err, r
    # A unit that stays after its command, so its invocation ID can be read.
    # The unit asks for an identity it may not have: the denial is logged
    # (a warning), with the caller's fields.
    m.ok("systemd-run --quiet -p RemainAfterExit=yes --unit etl@3.service --uid=alice "
         "batchtok get -i probe-only", timeout=60)
    wait_for(lambda: m.ok("systemctl show -P SubState etl@3.service").strip() in
             ("exited", "failed"), 30,
             step=0.1, what="etl@3.service to finish")
    assert m.ok("systemctl show -P ExecMainStatus etl@3.service").strip() == "4"
    inv = m.ok("systemctl show -P InvocationID etl@3.service").strip()
    m.sh("systemctl stop etl@3.service; systemctl reset-failed etl@3.service")
    entries = [json.loads(l) for l in journal(m, "-u", "batchtokd", "-o", "json").splitlines()]
    mine = [e for e in entries if e.get("BATCHTOK_UNIT") == "etl@3.service"]
    assert mine, "no journal entry names the unit"
    assert all(e.get("BATCHTOK_EXE") == "/usr/bin/batchtok" for e in mine), mine
    assert any("probe-only" in e.get("MESSAGE", "") for e in mine), mine
    assert any(e.get("BATCHTOK_INVOCATION_ID") == inv for e in mine), (inv, mine)
    # An administrator sees requests counted by unit.
    status = m.ok("batchtok status -o json", user="carol")
    assert "etl@3.service" in status, status


def test_user_unit_rule(env):
    m = env
    uid = m.ok("id -u dave").strip()
    # dave may connect to the system socket (its group), and his manager,
    # started anew, has the group too.
    m.ok("usermod -a -G batchtok dave && systemctl stop user@%s.service && "
         "loginctl enable-linger dave" % uid)
    user_env = {"XDG_RUNTIME_DIR": "/run/user/" + uid}
    wait_for(lambda: m.sh("systemctl --user is-system-running", user="dave",
                          env=user_env).out.strip() in ("running", "degraded"), 60, step=0.2,
             what="dave's user manager")
    # The system daemon's socket: dave's own user daemon may be listening at
    # the per-user default.
    run_user = ("systemd-run --user --quiet --wait --pipe --unit %s "
                "batchtok -S /run/batchtok/batchtokd.sock get -i jobs")
    r = m.sh(run_user % "job@nightly.service", user="dave", env=user_env, timeout=60)
    assert r.rc == 0, r
    r = m.sh(run_user % "other.service", user="dave", env=user_env, timeout=60)
    assert r.rc == 4 and "user unit other.service" in r.err and "job@*.service" in r.err, r
    m.ok("loginctl disable-linger dave")


def test_compat_refuses_identities_bound_to_programs(env):
    m = env
    m.write("/etc/batchtok/batchtokd.conf",
            program_rules(m).replace("[daemon]\n", "[daemon]\ncompat_endpoint = 127.0.0.1:50342\n"))
    m.ok("systemctl restart batchtokd")
    r = m.sh("systemd-run --quiet --wait --pipe --unit etl@4.service --uid=alice "
             "batchtok exec --compat -i etl -- true", timeout=60)
    assert r.rc == 4 and "compat" in r.err, r


def test_a_reused_pid_is_not_the_caller(env, probe):
    """The probe connects (and is attested: its executable is allowed),
    hands the connection to a child and exits; a new process running the
    same executable takes its PID (ns_last_pid, on a procfs of the
    container's own); then the child asks. A daemon going by PID would see
    an allowed program; this one sees the caller has exited."""
    m = env
    m.ok("rm -f /tmp/probe.out")
    parent, child = map(int, m.ok("setpriv --reuid=alice --regid=alice --init-groups "
                                  "%s reuse probe-only /tmp/probe.out" % probe,
                                  user=None).split())
    script = ("mkdir -p /run/ns-proc && mount -t proc proc /run/ns-proc && "
              "i=0; b=0; while [ $i -lt 20 ] && [ $b != %d ]; do "
              "echo %d > /run/ns-proc/sys/kernel/ns_last_pid; "
              "setpriv --reuid=alice --regid=alice --init-groups %s hold "
              "</dev/null >/dev/null 2>&1 & b=$!; "
              "[ $b = %d ] || kill $b; i=$((i + 1)); done; umount /run/ns-proc; echo $b"
              % (parent, parent - 1, probe, parent))
    holder = int(m.ok(script).strip())
    try:
        assert holder == parent, "could not give PID %d to another process" % parent
        assert m.ok("readlink /proc/%d/exe" % holder).strip() == probe
        m.ok("kill -USR1 %d && timeout 30 tail --pid=%d -f /dev/null" % (child, child))
        said = m.ok("cat /tmp/probe.out")
        assert said.startswith("refused: ") and "has exited" in said, said
    finally:
        m.sh("kill %d %d" % (holder, child))


def test_the_sandbox_gives_what_attestation_needs_and_no_more(env, probe):
    """The daemon's unit, its command swapped for the probe, as root's
    service runs it: it reads PID 1's executable (CAP_SYS_PTRACE,
    ProtectProc=default), and may not read or write another process's
    memory (process_vm_readv/writev are filtered)."""
    m = env
    unit = m.ok("systemctl cat batchtokd.service")
    unit = "\n".join(l for l in unit.splitlines() if not l.startswith("#"))
    unit = (unit.replace("Type=notify", "Type=oneshot")
            .replace("ExecStart=/usr/sbin/batchtokd --system", "ExecStart=%s vm 1" % probe)
            .replace("WatchdogSec=60", "").replace("Requires=batchtokd.socket", "")
            .replace("ExecReload=/bin/kill -HUP $MAINPID", "")
            .replace("Restart=on-failure", "")
            .replace("[Service]\n", "[Service]\nStandardOutput=file:/run/vm-probe.out\n"))
    m.write("/run/systemd/system/vm-probe.service", unit)
    m.ok("systemctl daemon-reload && systemctl start vm-probe.service", timeout=60)
    r = m.sh("cat /run/vm-probe.out")
    assert r.rc == 0, (unit, m.sh("systemctl status vm-probe.service; journalctl -u "
                                  "vm-probe.service --no-pager | tail -20"))
    out = r.out
    m.ok("rm /run/systemd/system/vm-probe.service /run/vm-probe.out && "
         "systemctl daemon-reload")
    assert "exe /usr/lib/systemd/systemd" in out or "exe /lib/systemd/systemd" in out, out
    assert "process_vm_readv Operation not permitted" in out, out
    assert "process_vm_writev Operation not permitted" in out, out
