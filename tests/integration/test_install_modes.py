"""How the daemon meets the machine when run by hand: the mode it picks and
says, the socket directory it makes, and what a client that cannot reach the
socket is told."""

import grp
import os

from conftest import SECRET

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
    os.chmod(run, 0o700)
    try:
        r = d.get(user=NOBODY)
    finally:
        os.chmod(run, 0o755)
        stop_and_clean(d)
    assert r.rc == 4, r
    assert "cannot enter %s" % run in r.err and "chmod 755" in r.err, r.err
    assert "group" not in r.err, r.err


def test_client_names_the_socket_group_it_is_not_in(make_daemon):
    group = grp.getgrgid(0).gr_name
    d = make_daemon({"batch": {"allow_users": str(NOBODY)}}, socket_mode="0660",
                    socket_group=group)
    r = d.get(user=NOBODY)
    assert r.rc == 4, r
    assert "add you to its group %s" % group in r.err, r.err
    assert SECRET not in r.err
