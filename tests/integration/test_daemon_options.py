"""batchtokd's own command line: options are read in order up to --version or
--help, a usage error exits 2, and the mode decides the default config, socket
and state paths that --check-config then uses."""

import os
import subprocess

import pytest

from conftest import BATCHTOKD, VERSION

GOOD = "[daemon]\nsocket = %s/x.sock\n[identity node]\ncredential = managed-identity\n"
NO_SOCKET = "[identity node]\ncredential = managed-identity\n"


def run(args, env=None):
    """batchtokd with args and only the environment given (and PATH)."""
    e = {"PATH": "/usr/bin:/bin"}
    e.update(env or {})
    return subprocess.run([BATCHTOKD] + args, capture_output=True, text=True, env=e,
                          timeout=30)


# args, exit status, text on stdout, text on stderr
OPTIONS = [
    (["--version"], 0, "batchtokd %s\n" % VERSION, ""),
    (["--help"], 0, "usage: batchtokd [--system | --user]", ""),
    # Read in order: the first of --version and --help wins, and nothing
    # after it is looked at.
    (["--help", "--version"], 0, "usage: batchtokd", ""),
    (["--version", "--help"], 0, "batchtokd %s\n" % VERSION, ""),
    (["--version", "--system", "--user", "extra"], 0, "batchtokd %s\n" % VERSION, ""),
    (["--log-level", "debug", "--version"], 0, "batchtokd %s\n" % VERSION, ""),
    # ...and an error before it still counts.
    (["--user", "--system", "--version"], 2, "",
     "batchtokd: --system and --user exclude each other\n"),
    (["--log-level", "loud", "--version"], 2, "",
     "batchtokd: --log-level: 'loud' is not error, warning, info or debug\n"),
    (["--bogus"], 2, "", "usage: batchtokd"),
    (["-h"], 2, "", "usage: batchtokd"),
    (["-c"], 2, "", "usage: batchtokd"),
    (["extra"], 2, "", "batchtokd: unexpected argument 'extra'\n"),
    (["--system", "--system", "--version"], 0, "batchtokd", ""),
]


@pytest.mark.parametrize("args,status,out,err", OPTIONS, ids=[" ".join(o[0]) for o in OPTIONS])
def test_options(args, status, out, err):
    p = run(args)
    assert p.returncode == status, p.stdout + p.stderr
    assert p.stdout.startswith(out) if out else p.stdout == "", p.stdout
    assert p.stderr.endswith(err) if err.endswith("\n") else err in p.stderr, p.stderr
    if status == 2 and not err.startswith("usage"):
        assert "usage" not in p.stderr


def test_check_config_names_the_mode(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text(GOOD % tmp_path)
    for args, mode in ((["--system"], "system"), (["--user"], "user")):
        p = run(["--check-config", "-c", str(conf)] + args,
                {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)})
        assert p.returncode == 0, p.stderr
        assert p.stdout == "%s: OK (1 identities, %s mode)\n" % (conf, mode)
        assert p.stderr == ""


def test_user_mode_defaults(tmp_path):
    """User mode finds its config under $XDG_CONFIG_HOME (or ~/.config) and
    its socket under $XDG_RUNTIME_DIR; without them it says what is missing."""
    xdg = tmp_path / "xdg"
    (xdg / "batchtok").mkdir(parents=True)
    (xdg / "batchtok" / "batchtokd.conf").write_text(NO_SOCKET)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    p = run(["--check-config", "--user"],
            {"XDG_CONFIG_HOME": str(xdg), "XDG_RUNTIME_DIR": str(run_dir)})
    assert p.returncode == 0, p.stderr
    assert p.stdout == "%s/batchtok/batchtokd.conf: OK (1 identities, user mode)\n" % xdg

    # No $XDG_CONFIG_HOME: ~/.config.
    (tmp_path / ".config").symlink_to(xdg)
    p = run(["--check-config", "--user"],
            {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(run_dir)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("%s/.config/batchtok/batchtokd.conf: OK" % tmp_path)

    # Neither: no config path at all.
    p = run(["--check-config", "--user"])
    assert p.returncode == 1
    assert "user mode needs $XDG_CONFIG_HOME or $HOME, or -c FILE" in p.stderr

    # No $XDG_RUNTIME_DIR: said, and a config without socket = is refused.
    p = run(["--check-config", "--user"], {"XDG_CONFIG_HOME": str(xdg)})
    assert p.returncode == 1
    assert "user mode needs $XDG_RUNTIME_DIR for its socket" in p.stderr
    assert "no socket: set socket = in [daemon]" in p.stderr


def test_config_errors_go_to_the_log_when_starting(tmp_path):
    """--check-config prints the config's problems; a daemon starting logs
    them (after its first line) and exits 1."""
    conf = tmp_path / "c.conf"
    conf.write_text("[daemon]\nbogus = 1\n" + NO_SOCKET)
    p = run(["--check-config", "--system", "-c", str(conf)])
    assert p.returncode == 1
    assert p.stderr == "%s:2: unknown key 'bogus' in [daemon]\n" % conf
    p = run(["--system", "-c", str(conf)])
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert "starting in system mode" in lines[0], p.stderr
    assert lines[1:] == ["batchtokd: error: %s:2: unknown key 'bogus' in [daemon]" % conf]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"),
                    reason="needs root to mount a group file in a private namespace")
def test_a_big_group_is_found(tmp_path):
    """A group with thousands of members does not fit a 4 KiB lookup buffer
    (ERANGE); it was reported as 'no group named'. The group file is
    replaced in a private mount namespace only."""
    members = ",".join("member%05d" % i for i in range(3000))
    group = tmp_path / "group"
    group.write_text(open("/etc/group").read() + "bigteam:x:4242:%s\n" % members)
    conf = tmp_path / "c.conf"
    conf.write_text(GOOD % tmp_path + "allow_groups = bigteam\n")
    script = 'mount --bind "$1" /etc/group && exec "$2" --check-config --user -c "$3"'
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", str(group), BATCHTOKD, str(conf)],
                       capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "XDG_RUNTIME_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert "OK (1 identities" in p.stdout
