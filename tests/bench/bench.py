#!/usr/bin/python3
"""make bench: batchtok's performance figures, each next to a baseline
measured in the same run on the same machine.

1. Cached get through libbatchtok (1 and 64 concurrent clients) against a raw
   Unix-socket request/response of the same sizes (tests/bench/raw_echo.c).
2. `batchtok get` as a whole process against a trivial C program.
3. Daemon RSS with 100 identities holding tokens and 1,000 connected clients.
4. Upstream requests per token lifetime at 1, 10 and 1,000 concurrent clients.
5. The compat endpoint's token GET from a C load client (tests/bench/
   compat_load.c, 1 and 64 keep-alive connections, and a connection per
   request) against a raw loopback HTTP server answering a fixed response of
   the same size (tests/bench/raw_http.c), hit by the same client.
6. 10,000 idle connections held by another uid (nobody), on the socket and
   then on the compat endpoint (tests/bench/flood.c): daemon RSS, and an
   allowed user's cached get (and compat GET) during the flood against the
   same figures without it.
7. The guard on the token services: 1,000 processes at once (tests/bench/
   burst.c) asking for 50 resources of one managed identity: the peak rate
   and concurrency the fake IMDS sees, its requests, and the time until every
   process has its token; with the default caps (20 a second, 5 at once)
   against the same burst with the caps off, for a fast IMDS and for one that
   takes 0.2 s an answer.
8. A restart under systemd's descriptor store (the store played on the wire
   as systemd plays it: tests/integration/sdmanager.py) against a cold
   restart: upstream requests, and the time from the new process's start to
   the first token, 20 identities with tokens cached.

Targets (benchmarks, not tests): library p50 <= 1.5x raw; process <= 1.5x
trivial; RSS <= 16 MiB; upstream requests per lifetime independent of the
number of clients; an allowed user served within a second during a flood;
IMDS never above 20 requests a second or 5 at once, every process served.
The bench prints figures; it does not pass or fail on them.
"""

import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import ssl

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BATCHTOK_BUILD", os.path.join(TOP, "build"))
TENANT = "00000000-0000-0000-0000-000000000000"
CLIENT = "11111111-1111-1111-1111-111111111111"
SECRET = "demo-secret-not-for-production"
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
BATCHTOK = os.path.join(BUILD, "batchtok")
NOBODY = 65534
FLOOD = 10000  # idle connections in section 6
NOFILE = 65536  # open files wanted by the bench and what it starts


def raise_nofile():
    """The soft open-file limit to NOFILE, and the hard one too when it is
    lower and we may (root): section 6 holds 10,000 connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < NOFILE:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
            return
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, NOFILE), hard))


def as_nobody():
    """preexec_fn: the child runs as nobody, no supplementary groups, as
    tests/integration/conftest.py's as_user() does."""
    raise_nofile()
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    sys.exit("bench: timed out waiting for " + what)


def accepts(path):
    """True once something listens on the Unix socket path: the daemon is
    ready when it accepts a connection, not when its socket file appears."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="batchtok-bench-")
        self.procs = []
        sts = os.path.join(self.dir, "sts")
        self.sts = self.spawn(["/usr/bin/python3", os.path.join(TOP, "tests", "fake_sts.py"), sts])
        wait_for(lambda: os.path.exists(os.path.join(sts, "port")), 20, "fake token service")
        self.url = "https://127.0.0.1:" + open(os.path.join(sts, "port")).read()
        self.imds_url = "http://127.0.0.1:" + open(os.path.join(sts, "imds_port")).read()
        self.ca = os.path.join(sts, "ca.pem")
        self.ctx = ssl.create_default_context(cafile=self.ca)
        # nobody reaches the socket and runs the flood helper from here,
        # wherever the checkout is.
        os.chmod(self.dir, 0o711)
        self.flood = os.path.join(self.dir, "flood")
        shutil.copy(os.path.join(BUILD, "bench", "flood"), self.flood)
        os.chmod(self.flood, 0o755)
        self.secret = os.path.join(self.dir, "secret")
        with open(self.secret, "w") as f:
            f.write(SECRET)
        os.chmod(self.secret, 0o600)

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=raise_nofile, **kw)
        self.procs.append(p)
        return p

    def control(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data)
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            return json.loads(r.read())

    def daemon(self, name, identities=1, extra="", prefetch=False):
        sock = os.path.join(self.dir, name + ".sock")
        conf = os.path.join(self.dir, name + ".conf")
        lines = ["[daemon]", "socket = " + sock, "ca_file = " + self.ca, "log_level = warning",
                 extra]
        for i in range(identities):
            lines += ["[identity id%d]" % i, "credential = secret", "tenant = " + TENANT,
                      "client_id = " + CLIENT, "secret_file = " + self.secret,
                      "authority_host = " + self.url, "default = %s" % ("yes" if i == 0 else "no"),
                      "prefetch = %s" % ("yes" if prefetch else "no")]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = self.spawn([os.path.join(BUILD, "batchtokd"), "-c", conf])
        wait_for(lambda: accepts(sock), 10, "batchtokd")
        return p, sock

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)
        shutil.rmtree(self.dir, ignore_errors=True)


def load(mode, sock, threads, seconds, req_bytes=None):
    argv = [os.path.join(BUILD, "bench", "bench_client"), mode, sock, str(threads), str(seconds)]
    if req_bytes:
        argv.append(str(req_bytes))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                         preexec_fn=raise_nofile)
    if out.returncode != 0:
        sys.exit("bench: %s failed: %s" % (" ".join(argv), out.stderr))
    return json.loads(out.stdout)


def compat_load(sock, port, conns, seconds, max_requests, close=False):
    """compat_load run under `batchtok exec --compat` (its capability and
    endpoint); port: the raw HTTP floor's, or None for the endpoint."""
    argv = [BATCHTOK, "-S", sock, "exec", "--compat", "--",
            os.path.join(BUILD, "bench", "compat_load"), str(port) if port else "-",
            str(conns), str(seconds), str(max_requests)] + (["close"] if close else [])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                         preexec_fn=raise_nofile)
    if out.returncode != 0:
        sys.exit("bench: %s failed: %s" % (" ".join(argv), out.stderr))
    return json.loads(out.stdout)


def status(sock):
    out = subprocess.run([BATCHTOK, "-S", sock, "status", "-o", "json"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        sys.exit("bench: status failed: " + out.stderr)
    return json.loads(out.stdout)


def start_flood(env, kind, target):
    """FLOOD idle connections from nobody to the Unix socket or the compat
    port; returns (process, its report, seconds to open them). The helper
    ends by itself after 120 s at the latest."""
    t0 = time.monotonic()
    p = subprocess.Popen([env.flood, kind, str(target), str(FLOOD), "120"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
                         preexec_fn=as_nobody)
    env.procs.append(p)
    line = p.stdout.readline()
    if not line:
        sys.exit("bench: flood %s failed" % kind)
    return p, json.loads(line), time.monotonic() - t0


def stop_flood(env, p, sock, field):
    """Ends the flood (stdin closed, then its pid) and waits until the
    daemon has let its connections go."""
    p.stdin.close()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        env.stop(p)
    wait_for(lambda: status(sock)[field] < 100, 30, "the flood's connections to close")


def spawn_time(argv, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6, sorted(times)[int(n * 0.99) - 1] * 1e6


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


COMPAT_ROW = "   %-10s %5d/%-5d us %9.0f     %5d/%-5d us %9.0f     %.2fx (%.2fx)"
COMPAT_PER_REQUEST = 2000  # requests on a connection each, bounded: ports


def section5(env, sock):
    """The compat endpoint against a raw loopback HTTP floor of the same
    response size, both hit by compat_load."""
    warm = compat_load(sock, None, 1, 5, 100)  # a token in the cache; the sizes
    port_file = os.path.join(env.dir, "raw_http.port")
    env.spawn([os.path.join(BUILD, "bench", "raw_http"), port_file,
               str(warm["response_bytes"])])
    wait_for(lambda: os.path.exists(port_file), 10, "raw_http")
    raw_port = int(open(port_file).read())
    print("\n5. compat endpoint token GET (App Service shape, request %d B, response %d B), "
          "%gs per run" % (warm["request_bytes"], warm["response_bytes"], SECONDS))
    print("   %-10s %-28s %-28s %s" % ("conns", "compat p50/p99, req/s",
                                      "raw HTTP p50/p99, req/s", "ratio p50 (rps)"))
    for conns in (1, 64):
        raw = compat_load(sock, raw_port, conns, SECONDS, 10 ** 8)
        got = compat_load(sock, None, conns, SECONDS, 10 ** 8)
        print(COMPAT_ROW % (conns, got["p50_us"], got["p99_us"], got["rps"], raw["p50_us"],
                            raw["p99_us"], raw["rps"], got["p50_us"] / max(raw["p50_us"], 1),
                            got["rps"] / raw["rps"]))
    raw = compat_load(sock, raw_port, 1, SECONDS, COMPAT_PER_REQUEST, close=True)
    got = compat_load(sock, None, 1, SECONDS, COMPAT_PER_REQUEST, close=True)
    print(COMPAT_ROW % ("1, new", got["p50_us"], got["p99_us"], got["rps"], raw["p50_us"],
                        raw["p99_us"], raw["rps"], got["p50_us"] / max(raw["p50_us"], 1),
                        got["rps"] / raw["rps"]))
    print("   (\"1, new\": a connection per request, %d requests at most)" %
          COMPAT_PER_REQUEST)


def process_time(sock, n=200):
    """`batchtok get` as a whole process (a new connection each), n runs."""
    p50, p99 = spawn_time([BATCHTOK, "-S", sock, "get"], n)
    return {"p50_us": p50, "p99_us": p99}


def flood_row(what, base, during):
    return "   %-26s %5d/%-5d us     %5d/%-5d us     %.2fx (%.2fx)" % (
        what, base["p50_us"], base["p99_us"], during["p50_us"], during["p99_us"],
        during["p50_us"] / max(base["p50_us"], 1), during["p99_us"] / max(base["p99_us"], 1))


def section6(env, d, sock, compat_port):
    """10,000 idle connections of another uid on each listener in turn."""
    print("\n6. %s idle connections held by another uid (nobody), %gs per run"
          % (format(FLOOD, ","), SECONDS))
    base = {c: load("lib", sock, c, SECONDS) for c in (1, 64)}
    base_proc = process_time(sock)
    base_compat = compat_load(sock, None, 1, SECONDS, 10 ** 8)
    for kind, target, field in (("unix", sock, "clients"), ("tcp", compat_port,
                                                             "compat_clients")):
        rss0 = rss_kib(d.pid)
        p, rep, opened = start_flood(env, kind, target)
        held = status(sock)[field] - (kind == "unix")  # less status's own
        rss = rss_kib(d.pid)
        during = {c: load("lib", sock, c, SECONDS) for c in (1, 64)}
        during_proc = process_time(sock)
        during_compat = compat_load(sock, None, 1, SECONDS, 10 ** 8) if kind == "tcp" else None
        still = status(sock)[field] - (kind == "unix")
        stop_flood(env, p, sock, field)
        where = "socket" if kind == "unix" else "compat endpoint (TCP)"
        print("\n   on the %s: opened in %.1f s by %d process(es), %d refused; the daemon "
              "counts %d at the start, %d at the end" % (where, opened, rep["processes"],
                                                         rep["refused"], held, still))
        print("   daemon RSS %.1f MiB, %.1f MiB just before (+%.1f KiB a connection)" % (
            rss / 1024, rss0 / 1024, (rss - rss0) / max(held, 1)))
        print("   %-26s %-20s %-20s %s" % ("allowed user (root)", "no flood p50/p99",
                                          "with flood p50/p99", "ratio p50 (p99)"))
        for c in (1, 64):
            print(flood_row("get via libbatchtok, %d cl" % c, base[c], during[c]))
        print(flood_row("batchtok get, process", base_proc, during_proc))
        if during_compat:
            print(flood_row("compat GET, 1 conn", base_compat, during_compat))


GUARD_PROCS = 1000
GUARD_RESOURCES = ["https://r%02d.example.com/" % i for i in range(50)]


def guard_daemon(env, name, caps):
    """A daemon with one managed identity of GUARD_RESOURCES at the fake
    IMDS, and the guard's caps as given (imds_rate, imds_concurrency)."""
    sock = os.path.join(env.dir, name + ".sock")
    conf = os.path.join(env.dir, name + ".conf")
    lines = ["[daemon]", "socket = " + sock, "log_level = warning",
             "max_clients_per_uid = %d" % (GUARD_PROCS + 100), "fetch_concurrency = 64",
             "imds_rate = %d" % caps[0], "imds_concurrency = %d" % caps[1],
             "[identity node]", "credential = managed-identity",
             "imds_endpoint = " + env.imds_url]
    lines += ["resources = " + ", ".join(GUARD_RESOURCES[i:i + 4])
              for i in range(0, len(GUARD_RESOURCES), 4)]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    p = env.spawn([os.path.join(BUILD, "batchtokd"), "-c", conf])
    wait_for(lambda: accepts(sock), 10, "batchtokd")
    return p, sock


def section7(env):
    """1,000 processes at once for 50 resources of one managed identity."""
    print("\n7. the guard on IMDS: %s processes at once, %d resources of one managed identity"
          % (format(GUARD_PROCS, ","), len(GUARD_RESOURCES)))
    print("   %-14s %-10s %9s %12s %12s %11s %6s" % (
        "IMDS answers", "caps", "requests", "peak rate", "peak conc.", "all tokens", "ok"))
    for delay in (0, 0.2):
        for caps in ((20, 5), (0, 0)):
            env.control("/_control/reset", {})
            env.control("/_control/faults", {"mode": "slow", "delay": delay, "count": -1,
                                             "target": "imds"})
            d, sock = guard_daemon(env, "guard%d%d" % (caps[0], delay * 10), caps)
            out = subprocess.run([os.path.join(BUILD, "bench", "burst"), sock,
                                  str(GUARD_PROCS), "node"] + GUARD_RESOURCES,
                                 capture_output=True, text=True, timeout=300,
                                 preexec_fn=raise_nofile)
            if out.returncode != 0:
                sys.exit("bench: burst failed: " + out.stderr)
            rep = json.loads(out.stdout)
            st = env.control("/_control/stats")
            print("   %-14s %-10s %9d %10d/s %12d %9.2f s %6d" % (
                "immediately" if not delay else "after %g s" % delay,
                "%d/s, %d" % caps if caps[0] else "off", st["imds_requests"],
                st["imds_peak_1s"], st["imds_max_concurrent"], rep["seconds"], rep["ok"]))
            env.stop(d)
    env.control("/_control/reset", {})


def section1b(sock, raw_sock):
    """Connection setup (connect, HELLO, close) against the raw socket's,
    and what attesting the caller at accept costs of it."""
    conn = load("connect", sock, 1, SECONDS)
    raw = load("connect", raw_sock, 1, SECONDS)
    att = json.loads(subprocess.run([os.path.join(BUILD, "bench", "attest_cost"), "20000"],
                                    capture_output=True, text=True, check=True).stdout)
    print("\n1b. connection setup: connect, HELLO, close; 1 client, %gs per run" % SECONDS)
    print("   daemon      %5d/%-5d us %9.0f conn/s" % (conn["p50_us"], conn["p99_us"], conn["rps"]))
    print("   raw socket  %5d/%-5d us %9.0f conn/s   ratio p50 %.2fx" % (
        raw["p50_us"], raw["p99_us"], raw["rps"], conn["p50_us"] / max(raw["p50_us"], 1)))
    print("   attesting the caller (SO_PEERPIDFD, cgroup, unit, exe, liveness): %.1f us of it;"
          " without it %.0f us" % (att["us_per_attest"],
                                   max(conn["p50_us"] - att["us_per_attest"], 0)))


def section8(env, rounds=5, identities=20):
    sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
    from sdmanager import Manager, spawn

    sock = os.path.join(env.dir, "warm.sock")
    conf = os.path.join(env.dir, "warm.conf")
    lines = ["[daemon]", "socket = " + sock, "ca_file = " + env.ca, "log_level = warning"]
    for i in range(identities):
        lines += ["[identity id%d]" % i, "credential = secret", "tenant = " + TENANT,
                  "client_id = " + CLIENT, "secret_file = " + env.secret,
                  "authority_host = " + env.url]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    get = [os.path.join(BUILD, "batchtok"), "-S", sock, "get", "-i"]

    def start(m, fds=()):
        t0 = time.monotonic()
        p = spawn([os.path.join(BUILD, "batchtokd"), "-c", conf], m, os.environ, fds,
                  ["tokens"] * len(fds), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env.procs.append(p)  # stopped by its PID if the section fails
        m.wait_for("READY=1")
        subprocess.run(get + ["id0"], check=True, stdout=subprocess.DEVNULL)
        return p, (time.monotonic() - t0) * 1000

    def stop(p, m):
        m.fds.clear()
        p.send_signal(signal.SIGTERM)
        p.wait(20)
        m.drain()
        return list(m.fds)

    m = Manager(env.dir)
    try:
        p, _ = start(m)
        for i in range(identities):
            subprocess.run(get + ["id%d" % i], check=True, stdout=subprocess.DEVNULL)
        fds = stop(p, m)
        figures = {"warm": [], "cold": []}
        requests = {"warm": [], "cold": []}
        for _ in range(rounds):
            for kind in ("warm", "cold"):
                before = env.control("/_control/stats")["token_requests"]
                p, ms = start(m, fds if kind == "warm" else ())
                for i in range(1, identities):
                    subprocess.run(get + ["id%d" % i], check=True, stdout=subprocess.DEVNULL)
                requests[kind].append(env.control("/_control/stats")["token_requests"] - before)
                figures[kind].append(ms)
                for fd in fds:
                    os.close(fd)
                fds = stop(p, m)
        print("\n8. restart with %d tokens cached, median of %d: from the new process's start "
              "to its first token" % (identities, rounds))
        for kind, what in (("warm", "descriptor store"), ("cold", "cold start")):
            print("   %-17s %6.1f ms, %4.1f upstream requests for the %d identities' first gets"
                  % (what, statistics.median(figures[kind]), statistics.median(requests[kind]),
                     identities))
        print("   ratio             %.2fx" % (statistics.median(figures["warm"]) /
                                             statistics.median(figures["cold"])))
    finally:
        for fd in m.fds:
            os.close(fd)
        m.fds.clear()
        m.close()


def main():
    raise_nofile()
    env = Env()
    try:
        print("batchtok benchmark (%d cores, %s)" % (os.cpu_count(), time.strftime("%Y-%m-%d %H:%M")))
        # 1. Cached get against the raw round trip of the same sizes.
        d, sock = env.daemon("main")
        token = subprocess.run([os.path.join(BUILD, "batchtok"), "-S", sock, "get"],
                               capture_output=True, text=True, check=True).stdout.strip()
        req_bytes = 9 + 4 * 3 + 8  # GET_TOKEN with defaults
        reply_bytes = 9 + 4 + len(token) + 8 + 4 + 6 + 4 + 3 + 4 + 31 + 4 + 36
        raw_sock = os.path.join(env.dir, "raw.sock")
        env.spawn([os.path.join(BUILD, "bench", "raw_echo"), raw_sock, str(reply_bytes)])
        wait_for(lambda: os.path.exists(raw_sock), 10, "raw_echo")
        print("\n1. cached get (request %d B, reply %d B), %gs per run" % (req_bytes, reply_bytes,
                                                                        SECONDS))
        print("   %-8s %-28s %-28s %s" % ("clients", "libbatchtok p50/p99, req/s",
                                          "raw socket p50/p99, req/s", "ratio p50 (rps)"))
        for threads in (1, 64):
            raw = load("raw", raw_sock, threads, SECONDS, req_bytes)
            lib = load("lib", sock, threads, SECONDS)
            print("   %-8d %5d/%-5d us %9.0f     %5d/%-5d us %9.0f     %.2fx (%.2fx)" % (
                threads, lib["p50_us"], lib["p99_us"], lib["rps"], raw["p50_us"],
                raw["p99_us"], raw["rps"], lib["p50_us"] / max(raw["p50_us"], 1),
                lib["rps"] / raw["rps"]))
        section1b(sock, raw_sock)
        # 2. Whole process.
        n = 300
        cli = spawn_time([os.path.join(BUILD, "batchtok"), "-S", sock, "get"], n)
        triv = spawn_time([os.path.join(BUILD, "bench", "trivial")], n)
        print("\n2. whole process, median/p99 of %d runs (fork+exec+wait from Python)" % n)
        print("   batchtok get  %6.0f/%-6.0f us" % cli)
        print("   trivial C     %6.0f/%-6.0f us" % triv)
        print("   ratio         %.2fx" % (cli[0] / triv[0]))
        env.stop(d)

        # 3. Memory: 100 identities with tokens, 1,000 idle clients.
        env.control("/_control/reset", {})
        d, sock = env.daemon("rss", identities=100, prefetch=True,
                             extra="max_clients_per_uid = 1100")
        wait_for(lambda: env.control("/_control/stats")["issued"] >= 100, 30, "100 prefetches")
        base = rss_kib(d.pid)
        hold = subprocess.Popen([os.path.join(BUILD, "bench", "bench_client"), "hold", sock,
                                 "1000", "30"], stdout=subprocess.PIPE, text=True,
                                preexec_fn=raise_nofile)
        env.procs.append(hold)
        if not hold.stdout.readline():
            sys.exit("bench: bench_client hold failed")
        full = rss_kib(d.pid)
        print("\n3. daemon RSS: %.1f MiB with 100 identities and tokens, %.1f MiB with 1,000 "
              "clients connected too" % (base / 1024, full / 1024))
        env.stop(hold)
        env.stop(d)

        # 4. Upstream requests per token lifetime against client count, in
        # steady state: short tokens so that several lifetimes fit in a run.
        life, window = 6, 18
        print("\n4. upstream requests per token lifetime, steady state over %d s of %d-s tokens"
              % (window, life))
        print("   (min_validity 1s: the schedule refreshes at half life, so it predicts 2 per"
              " lifetime whatever the number of clients)")
        for clients in (1, 10, 1000):
            env.control("/_control/faults", {"mode": "slow", "lifetime": life, "count": -1})
            d, sock = env.daemon("up%d" % clients,
                                 extra="min_validity = 1s\nmax_clients_per_uid = 1100")
            subprocess.run([os.path.join(BUILD, "batchtok"), "-S", sock, "get"], check=True,
                           stdout=subprocess.DEVNULL)
            before = env.control("/_control/stats")["token_requests"]
            r = load("lib", sock, clients, window)
            n = env.control("/_control/stats")["token_requests"] - before
            print("   %5d clients: %2d upstream requests, %.2f per lifetime, for %d gets "
                  "(%.0f gets/s)" % (clients, n, n / (window / life), r["requests"], r["rps"]))
            env.stop(d)
        env.control("/_control/reset", {})

        # One daemon for 5 and 6, set to hold the flood: the connection caps
        # above it, idle connections kept (the compat endpoint closes them
        # after 30 s whatever is set, so its flood is measured within that).
        d, sock = env.daemon("conn", extra="\n".join([
            "compat_endpoint = 127.0.0.1:0", "socket_mode = 0666",
            "max_clients = %d" % (FLOOD + 256), "max_clients_per_uid = %d" % (FLOOD + 256),
            "client_idle_timeout = 10m"]))
        compat_port = int(status(sock)["compat_endpoint"].rsplit(":", 1)[1])
        section5(env, sock)
        section6(env, d, sock, compat_port)
        env.stop(d)
        section7(env)
        section8(env)
    finally:
        env.close()


if __name__ == "__main__":
    main()
