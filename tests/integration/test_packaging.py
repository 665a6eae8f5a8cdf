"""What a distribution ships: the systemd units (verified and scored by
systemd-analyze), the man pages (linted), the Debian packages (built with
dpkg-buildpackage, unpacked, lintian-checked) and the RPM spec (built with
rpmbuild). No running systemd is needed."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import BATCHTOKD, TOP, VERSION

MANPAGES = ["client/batchtok.1", "daemon/batchtokd.conf.5", "proto/batchtok-protocol.7",
            "daemon/batchtokd.8"]


# Run from make check, make's variables (O=, SAN=1) must not reach the
# packages' own builds.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "O", "SAN")}


def run(*args, **kw):
    kw.setdefault("env", CLEAN_ENV)
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, **kw)


def units_for_test(tmp_path):
    """Copies of the units whose ExecStart= names the binary just built,
    which systemd-analyze verify requires to exist."""
    out = {}
    for rel in ("batchtokd.service", "batchtokd.socket", "user/batchtokd.service",
                "user/batchtokd.socket"):
        dst = tmp_path / rel
        dst.parent.mkdir(exist_ok=True)
        text = open(os.path.join(TOP, "systemd", rel)).read()
        dst.write_text(text.replace("/usr/sbin/batchtokd", os.path.abspath(BATCHTOKD)))
        out[rel] = str(dst)
    return out


def test_units_verify_clean(tmp_path):
    u = units_for_test(tmp_path)
    r = run("systemd-analyze", "verify", "--man=no", u["batchtokd.socket"],
            u["batchtokd.service"])
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stderr
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    r = run("systemd-analyze", "verify", "--user", "--man=no", u["user/batchtokd.socket"],
            u["user/batchtokd.service"], env=dict(CLEAN_ENV, XDG_RUNTIME_DIR=str(xdg)))
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stderr


def test_service_exposure_at_most_2():
    r = run("systemd-analyze", "security", "--offline=yes",
            os.path.join(TOP, "systemd", "batchtokd.service"))
    m = re.search(r"Overall exposure level for batchtokd.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout
    text = open(os.path.join(TOP, "systemd", "batchtokd.service")).read()
    for want in ("Type=notify", "WatchdogSec=", "ExecReload=", "User=batchtok",
                 "CapabilityBoundingSet=CAP_SYS_PTRACE\n", "ProtectProc=default\n",
                 "SystemCallFilter=~process_vm_readv process_vm_writev\n",
                 "ProtectSystem=strict", "PrivateTmp=yes",
                 "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n", "StateDirectory="):
        assert want in text, want
    sock = open(os.path.join(TOP, "systemd", "user", "batchtokd.socket")).read()
    assert "ListenStream=%t/batchtok/batchtokd.sock" in sock


def test_man_pages_lint_and_render():
    for page in MANPAGES:
        path = os.path.join(TOP, page)
        r = run("mandoc", "-Tlint", "-W", "warning", path)
        assert r.returncode == 0 and r.stdout + r.stderr == "", (page, r.stdout, r.stderr)
        r = run("man", "--warnings", "-l", "-Tutf8", path)
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
        assert "SEE ALSO" in re.sub(".\x08", "", r.stdout)  # without overstrike


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    # A worktree's .git is a file.
    if not os.path.exists(os.path.join(TOP, ".git")):
        pytest.skip("the packages are built from a git checkout's tracked files")
    out = tmp_path_factory.mktemp("deb")
    r = run(os.path.join(TOP, "packaging", "build-deb.sh"), str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def deb_files(path):
    r = run("dpkg-deb", "-c", str(path))
    assert r.returncode == 0, r.stderr
    return {line.split()[5].lstrip(".") for line in r.stdout.splitlines()
            if not line.startswith("d")}


def test_deb_contents(debs):
    daemon = deb_files(debs / ("batchtokd_%s_amd64.deb" % VERSION))
    for f in ("/usr/sbin/batchtokd", "/usr/bin/batchtok", "/etc/batchtok/batchtokd.conf",
              "/lib/systemd/system/batchtokd.service", "/lib/systemd/system/batchtokd.socket",
              "/usr/lib/systemd/user/batchtokd.service",
              "/usr/lib/systemd/user/batchtokd.socket",
              "/usr/lib/sysusers.d/batchtokd.conf", "/usr/lib/tmpfiles.d/batchtokd.conf",
              "/usr/share/man/man8/batchtokd.8.gz", "/usr/share/man/man1/batchtok.1.gz",
              "/usr/share/man/man5/batchtokd.conf.5.gz",
              "/usr/share/man/man7/batchtok-protocol.7.gz"):
        assert f in daemon, f
    # The drop-in directory, empty, for configuration management to fill.
    r = run("dpkg-deb", "-c", str(debs / ("batchtokd_%s_amd64.deb" % VERSION)))
    dirs = {line.split()[5].rstrip("/").lstrip("."): line.split()[:2]
            for line in r.stdout.splitlines() if line.startswith("d")}
    assert dirs.get("/etc/batchtok/batchtokd.conf.d") == ["drwxr-xr-x", "root/root"], dirs
    assert not any(f.startswith("/etc/batchtok/batchtokd.conf.d/") for f in daemon)
    # The Azure Batch pool recipe, where users look for examples.
    for f in ("README.md", "start-task.sh", "pool.json"):
        assert "/usr/share/doc/batchtokd/examples/azure-batch/" + f in daemon, f
    lib = deb_files(debs / ("libbatchtok0_%s_amd64.deb" % VERSION))
    assert {f for f in lib if "/lib/" in f} == {"/usr/lib/x86_64-linux-gnu/libbatchtok.so.0"}
    dev = deb_files(debs / ("libbatchtok-dev_%s_amd64.deb" % VERSION))
    for f in ("/usr/include/batchtok.h", "/usr/lib/x86_64-linux-gnu/libbatchtok.a",
              "/usr/lib/x86_64-linux-gnu/libbatchtok.so",
              "/usr/lib/x86_64-linux-gnu/pkgconfig/batchtok.pc"):
        assert f in dev, f
    # The client library needs libc alone.
    info = run("dpkg-deb", "-f", str(debs / ("libbatchtok0_%s_amd64.deb" % VERSION)), "Depends").stdout
    assert info.strip().startswith("libc6") and "," not in info
    # The Python client: the standard library only, importable where
    # Debian's python3 looks.
    py = debs / ("python3-batchtok_%s_all.deb" % VERSION)
    for f in ("__init__.py", "aio.py"):
        assert "/usr/lib/python3/dist-packages/batchtok/" + f in deb_files(py), f
    assert run("dpkg-deb", "-f", str(py), "Depends").stdout.strip() == "python3:any"


def test_deb_maintainer_scripts(debs, tmp_path):
    run("dpkg-deb", "-e", str(debs / ("batchtokd_%s_amd64.deb" % VERSION)), str(tmp_path / "c"))
    postinst = (tmp_path / "c" / "postinst").read_text()
    # The user exists before tmpfiles.d creates its directory.
    assert 0 < postinst.index("systemd-sysusers") < postinst.index("systemd-tmpfiles")
    # Nothing is enabled or started without being asked: units are only
    # re-enabled if they were, never enabled on first install or started.
    assert "was-enabled defaults to true" not in postinst
    assert "deb-systemd-invoke start" not in postinst
    assert "deb-systemd-invoke restart" not in postinst
    # A modified config survives upgrades: it is a conffile.
    assert (tmp_path / "c" / "conffiles").read_text().split() == ["/etc/batchtok/batchtokd.conf"]
    sysusers = open(os.path.join(TOP, "systemd", "batchtok.sysusers")).read()
    assert re.search(r"^u batchtok ", sysusers, re.M)


def test_lintian_clean(debs):
    changes = [f for f in os.listdir(debs) if f.endswith(".changes")]
    r = run("lintian", "--no-cfg", "--display-info", "--pedantic", str(debs / changes[0]))
    tags = [l for l in r.stdout.splitlines() if re.match(r"^[EWIP]: ", l)]
    assert r.returncode == 0 and tags == [], r.stdout + r.stderr


def test_rpm_spec_builds(tmp_path):
    if not os.path.exists(os.path.join(TOP, ".git")):
        pytest.skip("the source tarball is made from a git checkout")
    top = tmp_path / "rpm"
    (top / "SOURCES").mkdir(parents=True)
    tree = run("git", "-C", TOP, "stash", "create").stdout.strip() or "HEAD"
    r = run("git", "-C", TOP, "archive", "--prefix=batchtok-%s/" % VERSION, "-o",
            str(top / "SOURCES" / ("batchtok-%s.tar.gz" % VERSION)), tree)
    assert r.returncode == 0, r.stderr
    # --nodeps: Debian has no RPM database to satisfy BuildRequires from.
    r = run("rpmbuild", "--define", "_topdir " + str(top), "--nodeps", "-bb",
            os.path.join(TOP, "packaging", "batchtok.spec"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rpms = sorted(os.listdir(top / "RPMS" / "x86_64"))
    assert rpms == ["batchtok-%s-1.x86_64.rpm" % VERSION,
                    "batchtok-devel-%s-1.x86_64.rpm" % VERSION,
                    "batchtok-libs-%s-1.x86_64.rpm" % VERSION]
    assert os.listdir(top / "RPMS" / "noarch") == ["python3-batchtok-%s-1.noarch.rpm" % VERSION]
    files = run("rpm", "-qlp", str(top / "RPMS" / "x86_64" / rpms[0])).stdout.split()
    assert "/usr/sbin/batchtokd" in files and "/usr/lib/sysusers.d/batchtok.conf" in files
    # The drop-in directory, owned by the package and empty.
    assert "/etc/batchtok/batchtokd.conf.d" in files
    assert not any(f.startswith("/etc/batchtok/batchtokd.conf.d/") for f in files)
    # The doc directory is batchtok or batchtok-VERSION, as rpm is configured.
    assert any(re.match(r"/usr/share/doc/batchtok[^/]*/azure-batch/start-task\.sh$", f)
               for f in files), files
    shutil.rmtree(top)
