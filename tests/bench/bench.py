#!/usr/bin/python3
"""make bench: batchtok's performance figures, each next to a baseline
measured in the same run on the same machine.

1. Cached get through libbatchtok (1 and 64 concurrent clients) against a raw
   Unix-socket request/response of the same sizes (tests/bench/raw_echo.c).
2. `batchtok get` as a whole process against a trivial C program.
3. Daemon RSS with 100 identities holding tokens and 1,000 connected clients.
4. Upstream requests per token lifetime at 1, 10 and 1,000 concurrent clients.

Targets (benchmarks, not tests): library p50 <= 1.5x raw; process <= 1.5x
trivial; RSS <= 16 MiB; upstream requests per lifetime independent of the
number of clients.
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


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


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
        self.ca = os.path.join(sts, "ca.pem")
        self.ctx = ssl.create_default_context(cafile=self.ca)
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
    finally:
        env.close()


if __name__ == "__main__":
    main()
