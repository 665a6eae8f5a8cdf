"""Bad clients, access control, limits, configuration and reload."""

import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import time

from conftest import (BATCHTOKD, OTHER_CLIENT, OTHER_SECRET, SECRET, accepts, as_user, frame,
                      hello, public_mkdtemp, read_frame, wait_for)

NOBODY = pwd.getpwnam("nobody").pw_uid


def test_garbage_and_huge_length_prefix_do_not_disturb_others(make_daemon):
    d = make_daemon()
    token = d.get().out
    # A 4 GiB length prefix: refused from the header alone, then closed.
    big = d.connect_raw()
    big.sendall(struct.pack(">I", 0xFFFFFFFF) + b"\x02\x00\x00\x00\x01")
    f = read_frame(big)
    assert f is not None and f[0] == 0xFF and b"larger than" in f[2]
    assert big.recv(1) == b""
    # Pure garbage: a length too short for a header.
    junk = d.connect_raw()
    junk.sendall(b"\x00\x00\x00\x01garbage")
    assert read_frame(junk)[0] == 0xFF
    # Half a request, left hanging; and a client that never sends HELLO.
    half = d.connect_raw()
    half.sendall(hello()[:6])
    nohello = d.connect_raw()
    nohello.sendall(frame(6, 7))
    f = read_frame(nohello)
    assert f[0] == 0xFF and b"HELLO" in f[2]
    # An unknown message type gets an error and the connection stays usable.
    rude = d.connect_raw()
    rude.sendall(hello() + frame(0x42, 9) + frame(6, 10))
    assert read_frame(rude)[0] == 0x81
    f = read_frame(rude)
    assert f[:2] == (0xFF, 9) and struct.unpack(">I", f[2][:4])[0] == 9
    f = read_frame(rude)
    assert f[:2] == (0x86, 10)
    # Meanwhile everyone else is served as before.
    for _ in range(5):
        assert d.get().out == token
    for s in (big, junk, half, nohello, rude):
        s.close()
    assert d.proc.poll() is None


def test_malformed_body_gets_an_error_and_the_connection_goes_on(make_daemon):
    d = make_daemon()
    s = d.connect_raw()
    s.sendall(hello() + frame(2, 1, b"\x00\x00\x10\x00abc") + frame(6, 2))
    assert read_frame(s)[0] == 0x81
    f = read_frame(s)
    assert f[:2] == (0xFF, 1) and struct.unpack(">I", f[2][:4])[0] == 2
    assert read_frame(s)[:2] == (0x86, 2)


def test_max_clients_refuses_extra_connections_clearly(make_daemon):
    d = make_daemon(max_clients="3")
    held = [d.connect_raw() for _ in range(3)]
    for s in held:
        s.sendall(hello())
        assert read_frame(s)[0] == 0x81
    r = d.run("ping")
    assert r.rc == 1 and "max_clients" in r.err, r
    held.pop().close()
    wait_for(lambda: d.run("ping").rc == 0, 5, what="a free slot")


def test_access_control_by_peer_credentials(make_daemon):
    d = make_daemon({
        "open": {"allow_users": "nobody"},
        "closed": {"client_id": OTHER_CLIENT, "secret": OTHER_SECRET, "default": "yes"},
        "bygroup": {"allow_groups": str(NOBODY + 1000)},
    }, socket_mode="0666")
    assert d.get("-i", "open", user=NOBODY).rc == 0
    r = d.get("-i", "closed", user=NOBODY)
    assert r.rc == 4 and "may not use identity 'closed'" in r.err, r
    assert d.get(user=NOBODY).rc == 4
    assert d.get("-i", "bygroup", user=NOBODY).rc == 4
    # Root may use everything; reload and the full status are admin-only.
    assert d.get("-i", "closed").rc == 0
    r = d.run("reload", user=NOBODY)
    assert r.rc == 4 and "administrators" in r.err, r
    st = d.run("status", user=NOBODY).out
    assert "identity open" in st and "closed" not in st
    assert "denied identity closed" in d.read_log()


def test_socket_mode_keeps_others_out(make_daemon):
    d = make_daemon(socket_mode="0600")
    r = d.run("ping", user=NOBODY)
    assert r.rc == 4 and "permission denied" in r.err, r


def test_reload_keeps_unchanged_tokens_and_rejects_bad_configs(make_daemon, sts):
    d = make_daemon({"a": {"default": "yes"},
                     "b": {"client_id": OTHER_CLIENT, "secret": OTHER_SECRET}})
    ta, tb = d.get("-i", "a").out, d.get("-i", "b").out
    assert sts.stats()["token_requests"] == 2
    # b's secret changes: its token goes, a's stays cached.
    with open(d.conf) as f:
        text = f.read()
    with open(d.conf, "a") as f:
        f.write("\n[identity c]\ncredential = secret\ntenant = contoso.onmicrosoft.com\n"
                "client_id = 1\nsecret_file = %s\n" % d.secret_file("c.secret", "x"))
    d.secret_file("b.secret", OTHER_SECRET + "-rotated")
    r = d.run("reload")
    assert r.rc == 0, r
    assert d.get("-i", "a").out == ta
    assert sts.stats()["token_requests"] == 2
    assert d.get("-i", "b").rc == 6
    # A broken config is refused and the running one goes on.
    with open(d.conf, "w") as f:
        f.write(text + "\n[identity broken]\ncredential = telepathy\n")
    r = d.run("reload")
    assert r.rc == 1 and "telepathy" in r.err and "batchtokd.conf:" in r.err, r
    d.hup()
    time.sleep(0.3)
    assert d.get("-i", "a").out == ta
    assert "still running the previous configuration" in d.read_log()


def test_check_config_reports_file_and_line(tmp_path, sts):
    conf = tmp_path / "bad.conf"
    secret = tmp_path / "s"
    secret.write_text(SECRET)
    os.chmod(str(secret), 0o644)
    conf.write_text("[daemon]\nmin_validity = soon\nfetch_concurrency = 0\n"
                    "\n[identity x]\ncredential = secret\ntenant = t\nclient_id = c\n"
                    "secret_file = %s\nbogus = 1\n[identity y]\ncredential = secret\n" % secret)
    p = subprocess.run([BATCHTOKD, "--check-config", "-c", str(conf)], capture_output=True,
                       text=True)
    assert p.returncode == 1
    err = p.stderr
    assert "bad.conf:2: min_validity" in err
    assert "bad.conf:3: fetch_concurrency" in err
    assert "bad.conf:10: unknown key 'bogus'" in err
    assert "chmod 600" in err
    assert "tenant = is missing" in err
    assert SECRET not in err
    os.chmod(str(secret), 0o600)
    conf.write_text("[identity x]\ncredential = secret\ntenant = t\nclient_id = c\n"
                    "secret_file = %s\n" % secret)
    p = subprocess.run([BATCHTOKD, "--check-config", "-c", str(conf)], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr


def test_secret_from_systemd_credentials_directory(make_daemon, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "batch-secret").write_text(SECRET + "\n")
    os.chmod(str(creds / "batch-secret"), 0o400)
    d = make_daemon({"batch": {"secret_credential": "batch-secret"}},
                    env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert d.get().rc == 0


def test_process_is_hardened(sts, shared):
    # Run as an unprivileged user: only then does non-dumpability show, as
    # /proc/PID files owned by root instead of by the process's own user.
    # Everything it executes or reads is where that user can reach it.
    work = public_mkdtemp("batchtok-hard-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write(SECRET)
    os.chmod(secret, 0o600)
    os.chown(secret, NOBODY, -1)
    os.chown(work, NOBODY, -1)
    conf = os.path.join(work, "conf")
    sock = os.path.join(work, "sock")
    with open(conf, "w") as f:
        f.write("[daemon]\nsocket = %s\nca_file = %s\n[identity a]\ncredential = secret\n"
                "tenant = t\nclient_id = c\nsecret_file = %s\nauthority_host = %s\n"
                % (sock, shared.copy(sts.ca), secret, sts.url))
    os.chmod(conf, 0o644)
    p = subprocess.Popen([shared.batchtokd, "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, **as_user(NOBODY))
    try:
        wait_for(lambda: accepts(sock) or p.poll() is not None, 10, what="batchtokd")
        assert p.poll() is None
        assert os.stat("/proc/%d" % p.pid).st_uid == NOBODY
        assert os.stat("/proc/%d/mem" % p.pid).st_uid == 0
        assert os.stat("/proc/%d/environ" % p.pid).st_uid == 0
        with open("/proc/%d/limits" % p.pid) as f:
            core = [l for l in f if l.startswith("Max core file size")][0]
        assert core.split()[4:6] == ["0", "0"]
        with open("/proc/%d/status" % p.pid) as f:
            locked = [l for l in f if l.startswith("VmLck:")][0]
        # The secure heap holding the secret is locked in memory.
        assert int(locked.split()[1]) >= 1024, locked
        with open("/proc/%d/cmdline" % p.pid, "rb") as f:
            assert SECRET.encode() not in f.read()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        shutil.rmtree(work)


def test_another_daemon_on_the_same_socket_is_refused(make_daemon):
    d = make_daemon()
    p = subprocess.run([BATCHTOKD, "-c", d.conf], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "already listening" in p.stderr
    assert d.run("ping").rc == 0
