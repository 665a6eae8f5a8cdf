"""How the daemon meets the machine when run by hand: the mode it picks and
says, the socket directory it makes, and what a client that cannot reach the
socket is told."""

import grp
import os
import shutil
import signal
import subprocess

from conftest import CLIENT, SECRET, TENANT, accepts, as_user, public_mkdtemp, wait_for

NOBODY = 65534


def socket_in_new_directory(make_daemon, **opts):
    """A daemon whose socket lies in a directory it must make itself; stop it
    with stop_and_clean."""
    d = make_daemon({"batch": {"allow_users": str(NOBODY)}}, start=False, **opts)
    d.sock = os.path.join(d.sockdir, "run", "batchtokd.sock")
    d.write_config({"batch": {"allow_users": str(NOBODY)}}, opts)
    d.start()
    return d


def stop_and_clean(d):
    assert d.stop() == 0
    os.rmdir(os.path.dirname(d.sock))


def test_first_log_line_names_the_mode(make_daemon):
    d = make_daemon()
    assert d.get().rc == 0
    first = d.read_log().splitlines()[0]
    assert "starting in system mode (root)" in first, first


def test_socket_directory_the_daemon_makes_is_traversable(make_daemon):
    # The daemon's umask is 0077: the directory must still let those the
    # socket's mode admits reach it.
    d = socket_in_new_directory(make_daemon, socket_mode="0666")
    assert os.stat(os.path.dirname(d.sock)).st_mode & 0o777 == 0o755
    r = d.get(user=NOBODY)
    stop_and_clean(d)
    assert r.rc == 0, r


def test_client_says_which_directory_it_cannot_enter(make_daemon):
    d = socket_in_new_directory(make_daemon, socket_mode="0666")
    run = os.path.dirname(d.sock)
    # The directory above the socket's: the message names that one, not the
    # socket's own (which is searchable).
    os.chmod(d.sockdir, 0o700)
    try:
        r = d.get(user=NOBODY)
    finally:
        os.chmod(d.sockdir, 0o755)
    os.chmod(run, 0o700)
    try:
        r2 = d.get(user=NOBODY)
    finally:
        os.chmod(run, 0o755)
        stop_and_clean(d)
    assert r.rc == 4, r
    assert "cannot enter %s," % d.sockdir in r.err and "chmod 755" in r.err, r.err
    assert "group" not in r.err, r.err
    assert r2.rc == 4 and "cannot enter %s," % run in r2.err, r2.err


def test_client_names_the_socket_group_it_is_not_in(make_daemon):
    group = grp.getgrgid(0).gr_name
    d = make_daemon({"batch": {"allow_users": str(NOBODY)}}, socket_mode="0660",
                    socket_group=group)
    r = d.get(user=NOBODY)
    assert r.rc == 4, r
    assert "add you to its group %s" % group in r.err, r.err
    assert SECRET not in r.err


def test_dedicated_user_runs_system_mode_by_hand(sts, shared, tmp_path):
    # As the packaged unit does, but by hand: a non-root user with --system.
    work = public_mkdtemp("batchtok-dedicated-")
    try:
        secret = os.path.join(work, "secret")
        with open(secret, "w") as f:
            f.write(SECRET)
        os.chmod(secret, 0o600)
        os.chown(secret, NOBODY, -1)
        sock = os.path.join(work, "run", "batchtokd.sock")
        os.mkdir(os.path.dirname(sock))
        os.chown(os.path.dirname(sock), NOBODY, -1)
        conf = os.path.join(work, "batchtokd.conf")
        with open(conf, "w") as f:
            f.write("[daemon]\nsocket = %s\nca_file = %s\n[identity a]\ncredential = secret\n"
                    "tenant = %s\nclient_id = %s\nsecret_file = %s\nauthority_host = %s\n"
                    "allow_users = %d\n" % (sock, shared.copy(sts.ca, "ca.pem"), TENANT,
                                             CLIENT, secret, sts.url, NOBODY))
        os.chmod(conf, 0o644)
        log = open(os.path.join(str(tmp_path), "log"), "w+")
        p = subprocess.Popen([shared.batchtokd, "--system", "-c", conf], stdout=log,
                             stderr=subprocess.STDOUT, **as_user(NOBODY))
        try:
            wait_for(lambda: accepts(sock) or p.poll() is not None, 10,
                     what="batchtokd")
            r = subprocess.run([shared.batchtok, "-S", sock, "get"], capture_output=True,
                               text=True, timeout=30, **as_user(NOBODY))
            assert r.returncode == 0, r.stderr
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(10) == 0
        log.seek(0)
        first = log.read().splitlines()[0]
        assert "starting in system mode" in first and "(" not in first, first
    finally:
        shutil.rmtree(work)
