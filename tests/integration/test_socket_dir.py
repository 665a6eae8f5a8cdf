"""Where the socket may be made: only in a directory that root or batchtokd's
user owns and nobody else can write, reached through directories the same
is true of (or sticky ones); an existing file is replaced only if it is a
stale socket of batchtokd's user. What is refused names the cause and the
fix, and leaves what it found alone."""

import os
import socket
import stat
import subprocess

from conftest import BATCHTOKD, wait_for

NOBODY = 65534


def run_with_socket(d, path):
    """batchtokd with the config's socket = set to path, expected to refuse
    to start: its exit status and log."""
    with open(d.conf) as f:
        conf = f.read()
    with open(d.conf, "w") as f:
        f.write(conf.replace("socket = " + d.sock, "socket = " + path))
    p = subprocess.run([BATCHTOKD, "-c", d.conf], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr


def test_socket_directory_of_another_user_is_refused(make_daemon, tmp_path):
    d = make_daemon(start=False)
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    os.chown(other, NOBODY, NOBODY)
    rc, err = run_with_socket(d, str(other / "batchtokd.sock"))
    assert rc == 1, err
    assert "belongs to another user (uid %d" % NOBODY in err, err
    assert "choose a socket = in a directory that only root or batchtokd's user can write" in err
    assert os.listdir(other) == []


def test_socket_directory_others_can_write_is_refused_even_if_sticky(make_daemon, tmp_path):
    d = make_daemon(start=False)
    for mode in (0o777, 0o1777, 0o775):
        shared = tmp_path / ("shared-%o" % mode)
        shared.mkdir()
        os.chmod(shared, mode)
        rc, err = run_with_socket(d, str(shared / "batchtokd.sock"))
        assert rc == 1, err
        assert "is writable by its group or others (uid 0, mode %04o)" % mode in err, err
        assert os.listdir(shared) == []
        with open(d.conf) as f:
            conf = f.read()
        with open(d.conf, "w") as f:
            f.write(conf.replace("socket = " + str(shared / "batchtokd.sock"),
                                 "socket = " + d.sock))


def test_directory_above_may_be_sticky_but_not_writable(make_daemon, tmp_path):
    d = make_daemon(start=False)
    # Writable by others and not sticky, above a directory of root's: that
    # directory could be renamed away and replaced.
    above = tmp_path / "above"
    above.mkdir()
    os.chmod(above, 0o777)
    (above / "run").mkdir(mode=0o755)
    rc, err = run_with_socket(d, str(above / "run" / "batchtokd.sock"))
    assert rc == 1, err
    assert "is writable by its group or others and not sticky" in err, err


def test_stale_file_that_is_not_our_socket_is_left_alone(make_daemon, tmp_path):
    d = make_daemon(start=False)
    target = tmp_path / "target"
    target.write_text("precious\n")
    os.chmod(target, 0o600)
    # A symbolic link to another file, a regular file, and a socket of
    # another user, each where the socket should go.
    link = os.path.join(d.sockdir, "batchtokd.sock")
    os.symlink(str(target), link)
    try:
        rc, err = run_with_socket(d, link)
        assert rc == 1, err
        assert "is not a socket of batchtokd's user (it is a symbolic link" in err, err
        assert os.path.islink(link)
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
        assert target.read_text() == "precious\n"
    finally:
        os.unlink(link)
    with open(link, "w") as f:
        f.write("not a socket\n")
    try:
        rc, err = run_with_socket(d, link)
        assert rc == 1 and "(it is a regular file owned by uid 0)" in err, err
        with open(link) as f:
            assert f.read() == "not a socket\n"
    finally:
        os.unlink(link)
    s = socket.socket(socket.AF_UNIX)
    s.bind(link)
    s.close()
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    try:
        rc, err = run_with_socket(d, link)
        assert rc == 1 and "(it is a socket owned by uid %d)" % NOBODY in err, err
        assert os.path.exists(link)
    finally:
        os.unlink(link)


def test_stale_socket_of_ours_is_replaced_with_the_configured_mode(make_daemon):
    d = make_daemon(start=False, socket_mode="0640")
    s = socket.socket(socket.AF_UNIX)
    s.bind(d.sock)
    s.close()
    d.start()
    # The file existed before: wait for the daemon's answer, not for it.
    wait_for(lambda: d.run("ping").rc == 0, 10, what="the daemon's answer")
    st = os.lstat(d.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
