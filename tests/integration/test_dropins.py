"""Drop-ins: the *.conf files in the directory beside the config file
(/etc/batchtok/batchtokd.conf.d, here the test config's own NAME.d), read
after it. An identity defined only in a drop-in serves tokens; a drop-in
added later is read on reload, by SIGHUP or `batchtok reload`; a bad one is
refused and the running config goes on; --check-config names a drop-in's
file and line, and on success every file it read."""

import os
import socket
import subprocess

from conftest import (BATCHTOKD, CLIENT, OTHER_CLIENT, OTHER_SECRET, SECRET, TENANT,
                      jwt_claims)


def identity(d, name, client=CLIENT, secret=SECRET):
    """An [identity NAME] of the fake token service's, its secret in a file
    of its own."""
    return ("[identity %s]\ncredential = secret\ntenant = %s\nclient_id = %s\n"
            "authority_host = %s\nsecret_file = %s\n"
            % (name, TENANT, client, d.sts.url, d.secret_file(name + ".secret", secret)))


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    return s, path


def messages_until(sock, needle, limit=20):
    """The daemon's notifications up to the one holding needle; each recv()
    waits at most the socket's 10 s."""
    got = []
    for _ in range(limit):
        msg = sock.recv(4096).decode()
        got.append(msg)
        if needle in msg:
            return got
    raise AssertionError("no %r in %r" % (needle, got))


def test_identities_from_dropins_and_reload(make_daemon, sts, tmp_path):
    ns, path = notify_socket(tmp_path)
    d = make_daemon(start=False)
    d.write_config({}, {})  # [daemon] alone: no identity in the main file
    d.env["NOTIFY_SOCKET"] = path
    dropins = d.conf + ".d"
    os.mkdir(dropins, 0o755)
    write(os.path.join(dropins, "10-batch.conf"), identity(d, "batch"))
    d.start()
    messages_until(ns, "READY=1")
    assert "configuration read from %s and 1 drop-in in %s" % (d.conf, dropins) in d.read_log()

    r = d.get("-i", "batch")
    assert r.rc == 0, r
    assert jwt_claims(r.out)["appid"] == CLIENT
    assert d.get("-i", "other").rc == 5

    # A second drop-in, read on SIGHUP: the daemon says RELOADING=1, then
    # READY=1 once the new config runs.
    write(os.path.join(dropins, "20-other.conf"),
          identity(d, "other", OTHER_CLIENT, OTHER_SECRET))
    d.hup()
    messages_until(ns, "RELOADING=1")
    messages_until(ns, "READY=1")
    r = d.get("-i", "other")
    assert r.rc == 0, r
    assert jwt_claims(r.out)["appid"] == OTHER_CLIENT
    # The identity that did not change kept its token.
    before = sts.stats()["token_requests"]
    assert d.get("-i", "batch").rc == 0
    assert sts.stats()["token_requests"] == before

    # A third, read on `batchtok reload`, which answers once it is done.
    write(os.path.join(dropins, "30-third.conf"), identity(d, "third"))
    r = d.run("reload")
    assert r.rc == 0, r
    r = d.get("-i", "third")
    assert r.rc == 0, r
    assert "configuration reloaded from %s and 3 drop-ins in %s" % (d.conf, dropins) \
        in d.read_log()

    # A bad drop-in is refused with its file and line; the running config
    # goes on.
    bad = os.path.join(dropins, "40-bad.conf")
    write(bad, "# added by hand\n[identity bad]\ncredential = telepathy\n")
    r = d.run("reload")
    assert r.rc == 1 and "%s:3: credential: 'telepathy'" % bad in r.err, r
    assert d.get("-i", "third").rc == 0
    os.unlink(bad)
    ns.close()


def check_config(conf, *args, env=None):
    return subprocess.run([BATCHTOKD, "--check-config", "-c", str(conf)] + list(args),
                          capture_output=True, text=True, timeout=30,
                          env=env or {"PATH": "/usr/bin:/bin"})


def test_check_config_names_dropin_file_and_line(tmp_path):
    conf = tmp_path / "batchtokd.conf"
    conf.write_text("[daemon]\nsocket = %s/x.sock\n[identity node]\n"
                    "credential = managed-identity\n" % tmp_path)
    dropins = tmp_path / "batchtokd.conf.d"
    dropins.mkdir()
    ok = dropins / "10-ok.conf"
    ok.write_text("[identity node2]\ncredential = managed-identity\n")
    bad = dropins / "20-bad.conf"
    bad.write_text("# added by config management\n[identity node]\n"
                   "credential = managed-identity\n[daemon]\nbogus = 1\n")
    # Neither is a drop-in: not read, not named.
    (dropins / "README").write_text("not a config\n")
    (dropins / "20-bad.conf.dpkg-old").write_text("not a config\n")

    p = check_config(conf, "--system")
    assert p.returncode == 1, p.stdout
    assert p.stderr.splitlines() == [
        "%s:2: [identity node] is defined twice, first at %s:3: define each identity in "
        "one section of one file (remove one, or rename it)" % (bad, conf),
        "%s:5: unknown key 'bogus' in [daemon]" % bad,
    ], p.stderr

    bad.write_text("# added by config management\n[identity node3]\n"
                   "credential = managed-identity\n")
    p = check_config(conf, "--system")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ("%s: OK (3 identities, system mode)\n"
                        "%s: OK (drop-in, 1 identities)\n"
                        "%s: OK (drop-in, 1 identities)\n" % (conf, ok, bad))

    # Who may write a drop-in decides who gets tokens.
    os.chmod(str(bad), 0o666)
    p = check_config(conf, "--system")
    assert p.returncode == 1
    assert "%s: the config file is writable by anyone (mode 0666): run chmod go-w" % bad \
        in p.stderr


def test_user_mode_reads_its_dropins(tmp_path):
    """The per-user config has drop-ins too, beside it in
    $XDG_CONFIG_HOME/batchtok."""
    conf_dir = tmp_path / "xdg" / "batchtok"
    (conf_dir / "batchtokd.conf.d").mkdir(parents=True)
    (conf_dir / "batchtokd.conf").write_text("[daemon]\nlog_level = info\n")
    me = conf_dir / "batchtokd.conf.d" / "me.conf"
    me.write_text("[identity me]\ncredential = device-code\n")
    p = subprocess.run([BATCHTOKD, "--check-config", "--user"], capture_output=True, text=True,
                       timeout=30, env={"PATH": "/usr/bin:/bin",
                                        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                                        "XDG_RUNTIME_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert p.stdout == ("%s/batchtokd.conf: OK (1 identities, user mode)\n"
                        "%s: OK (drop-in, 1 identities)\n" % (conf_dir, me))
