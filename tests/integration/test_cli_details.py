"""Details a user meets walking the README: each command's --help, exec's exit
codes for a command that cannot run, denials that name the user,
--check-config's socket directory, and the man pages as rendered."""

import json
import os
import pwd
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import BATCH, BATCHTOK, BATCHTOKD, PYTHON, TOP, as_user
from test_compat import _end_compat_programs, compat_env  # noqa: F401

MANDOC = shutil.which("mandoc")


def render(page):
    """The page as mandoc prints it to a terminal, without overstrikes."""
    r = subprocess.run([MANDOC, "-T", "ascii", os.path.join(TOP, page)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return subprocess.run(["col", "-b"], input=r.stdout, capture_output=True, text=True,
                          timeout=60).stdout


def words(text):
    return " ".join(text.split())


@pytest.mark.skipif(not MANDOC, reason="mandoc is not installed")
def test_conf_page_renders_compat_endpoint():
    """The compat_endpoint entry of batchtokd.conf(5) reads as written: both
    example addresses quoted, the parenthesis closed after the port-0 note."""
    text = words(render("daemon/batchtokd.conf.5"))
    assert ("An HTTP endpoint on a loopback address (`127.0.0.1:50342' or `[::1]:50342'; "
            "port 0 picks a free one) that answers managed-identity token requests") in text, \
        text[text.find("compat_endpoint="):][:600]


@pytest.mark.skipif(not MANDOC, reason="mandoc is not installed")
def test_man_pages_lint_without_style_messages():
    """mandoc -T lint reports nothing but cross-references to the project's own
    pages, which are not installed where it looks."""
    pages = ["client/batchtok.1", "daemon/batchtokd.conf.5", "daemon/batchtokd.8",
             "proto/batchtok-protocol.7"]
    r = subprocess.run([MANDOC, "-T", "lint"] + [os.path.join(TOP, p) for p in pages],
                       capture_output=True, text=True, timeout=60)
    left = [line for line in (r.stdout + r.stderr).splitlines()
            if line and "referenced manual not found" not in line]
    assert not left, "\n".join(left)


def check_config(path):
    r = subprocess.run([BATCHTOKD, "--check-config", "-c", str(path)], capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_check_config_reports_a_socket_in_a_missing_directory(tmp_path):
    """batchtokd creates only the socket's own directory: --check-config says,
    with file and line, when the directory above it is missing too, and how
    to fix it; one level missing is fine."""
    conf = tmp_path / "batchtokd.conf"
    missing = tmp_path / "no" / "such"
    conf.write_text("[daemon]\n; where clients connect\nsocket = %s/batchtokd.sock\n\n"
                    "[identity node]\ncredential = managed-identity\n" % missing)
    rc, out = check_config(conf)
    assert rc == 1, out
    assert ("%s:3: socket: the directory %s does not exist, nor %s above it, and batchtokd "
            "creates only the last one: create %s (mkdir -p %s)"
            % (conf, missing, missing.parent, missing.parent, missing.parent)) in out, out
    (tmp_path / "no").mkdir()
    rc, out = check_config(conf)
    assert rc == 0 and "OK" in out, out


COMMANDS = ("get", "status", "inspect", "exec", "login", "logout", "reload", "ping", "watch",
            "refresh", "forget")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(tmp_path, flag):
    """batchtok COMMAND --help (or -h) prints that command's usage on stdout
    and exits 0, without a daemon; options before it are parsed as usual."""
    sock = str(tmp_path / "none.sock")
    for cmd in COMMANDS:
        takes_i = cmd not in ("status", "reload", "ping")
        for args in ([cmd, flag], [cmd, "-i", "x", flag] if takes_i else [cmd, flag]):
            p = subprocess.run([BATCHTOK, "-S", sock] + args, capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, (args, p.stderr)
            assert p.stdout.startswith("usage: batchtok %s" % cmd), (args, p.stdout)
            assert p.stderr == "", (args, p.stderr)
    p = subprocess.run([BATCHTOK, "get", "--help"], capture_output=True, text=True, timeout=60)
    for option in ("--identity", "--resource", "--scope", "--min-validity", "--force-refresh",
                   "--output"):
        assert option in p.stdout, p.stdout
    # The list of all commands points at COMMAND --help.
    p = subprocess.run([BATCHTOK, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "'batchtok COMMAND --help'" in p.stdout, p.stdout
    assert all("\n  %s " % c in p.stdout or "\n  %s\n" % c in p.stdout for c in COMMANDS)


def test_help_after_the_command_to_run_is_the_command_s(tmp_path):
    """In exec, what follows -- (or the command's name) belongs to the command:
    its --help is not batchtok's."""
    sock = str(tmp_path / "none.sock")
    for args in (["exec", "--", "ls", "--help"], ["exec", "ls", "-h"]):
        p = subprocess.run([BATCHTOK, "-S", sock] + args, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 3 and p.stdout == "", (args, p.stdout, p.stderr)


def test_exec_exits_127_or_126_when_the_command_cannot_run(make_daemon, sts, tmp_path):
    """As shells and env(1) do: 127 for a command not found, 126 for one found
    but not executable, each with a message naming the command and why."""
    d = make_daemon()
    r = d.run("exec", "--", "batchtok-no-such-command", "arg")
    assert r.rc == 127, r
    assert r.err == ("batchtok: cannot run batchtok-no-such-command: command not found in "
                     "PATH\n"), r
    missing = str(tmp_path / "missing")
    r = d.run("exec", "--", missing)
    assert r.rc == 127 and r.err == "batchtok: cannot run %s: No such file or directory\n" \
        % missing, r
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = d.run("exec", "--", str(script))
    assert r.rc == 126 and r.err == "batchtok: cannot run %s: Permission denied\n" \
        % script, r
    r = d.run("exec", "--", str(tmp_path))
    assert r.rc == 126 and r.err.startswith("batchtok: cannot run %s: " % tmp_path), r
    # A command that runs exits with its own status.
    r = d.run("exec", "--", "/bin/sh", "-c", "exit 3")
    assert r.rc == 3 and r.err == "", r


NOBODY = 65534


def test_a_denial_names_the_user(make_daemon, sts):
    """'user NAME (uid N) may not use identity ...': the reply and the log name
    the user, whether the name is looked up (first) or cached (second)."""
    name = pwd.getpwuid(NOBODY).pw_name
    d = make_daemon({"batch": {"allow_users": "root"}}, socket_mode="0666")
    for _ in range(2):
        r = d.get(user=NOBODY)
        assert r.rc == 4, r
        assert r.err == ("batchtok: user %s (uid %d) may not use identity 'batch': an "
                         "administrator can add the user to its allow_users or allow_groups\n"
                         % (name, NOBODY)), r
    assert d.read_log().count("denied identity batch to pid ") == 2
    assert ", user %s (uid %d)" % (name, NOBODY) in d.read_log()
    # Other requests on the same connection go on: status still answers.
    assert "identity" not in d.run("status", user=NOBODY).err


GET_AS_NOBODY = """
import http.client, json, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
c.request("GET", u.path + "?" + u.query, headers={"X-IDENTITY-HEADER": sys.argv[2]})
r = c.getresponse()
print(json.dumps({"status": r.status, "body": json.loads(r.read() or "null")}))
"""


def test_a_compat_denial_names_the_user(make_daemon, sts):
    """A capability whose user was dropped from the identity: the 403 names
    the user."""
    name = pwd.getpwuid(NOBODY).pw_name
    d = make_daemon({"batch": {"allow_users": "nobody"}}, socket_mode="0666",
                    compat_endpoint="127.0.0.1:0")
    # The program holding the capability is still running.
    env = compat_env(d, user=NOBODY)
    d.reload_with("allow_users = nobody", "allow_users = root")
    url = "%s?api-version=2019-08-01&resource=%s" % (env["IDENTITY_ENDPOINT"],
                                                    urllib.parse.quote(BATCH, safe=""))
    p = subprocess.run([PYTHON, "-c", GET_AS_NOBODY, url, env["IDENTITY_HEADER"]],
                       capture_output=True, text=True, timeout=60, **as_user(NOBODY))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == 403, out
    assert out["body"]["error_description"].startswith(
        "user %s (uid %d) may not use identity 'batch'" % (name, NOBODY)), out
    assert "denied identity batch to user %s (uid %d)" % (name, NOBODY) in d.read_log()


def test_an_option_that_does_not_apply_is_named_itself(tmp_path):
    # "-i x" names -i, not x; "--identity=x" names itself whole.
    sock = str(tmp_path / "none.sock")
    r = subprocess.run([BATCHTOK, "-S", sock, "status", "-i", "x"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "option '-i' does not apply" in r.stderr, r.stderr
    r = subprocess.run([BATCHTOK, "-S", sock, "status", "--identity=x"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "option '--identity=x' does not apply" in r.stderr, r.stderr
