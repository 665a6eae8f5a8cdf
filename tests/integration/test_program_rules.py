"""Identities granted to programs (allow_units, allow_user_units, allow_exes,
allow_cgroups): --check-config names a bad pattern at its line; a program
outside the rules is refused with what it is and what the identity allows,
exit 4; root passes; status lists an identity to whom a token request
would be given, and shows an administrator the rules and the requests per
caller unit."""

import json
import subprocess

from conftest import BATCHTOKD, BATCH

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
