"""What stays of a token in batchtokd's memory once it has been served: only
the cache's copy, in the secure heap (a region madvise()d MADV_DONTDUMP, "dd"
in smaps). The token service's raw reply (TLS records, libcurl's buffers,
the JSON parser's strings) must not linger in ordinary memory."""

import re

import pytest

from conftest import SECRET


def ordinary_memory(pid):
    """(start, end) of every readable region of pid outside the secure heap
    and other regions the process keeps out of core dumps."""
    regions, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4)]
                continue
            if line.startswith("VmFlags:") and cur:
                flags = line.split()[1:]
                # Readable, writable, not a file's text, not dd (the secure
                # heap), not the vsyscall page.
                if (cur[2].startswith("rw") and "dd" not in flags and
                        "[vsyscall]" not in cur[3] and "[vvar]" not in cur[3]):
                    regions.append((cur[0], cur[1]))
                cur = None
    return regions


def find_in_memory(pid, needle):
    hits = []
    try:
        mem = open("/proc/%d/mem" % pid, "rb", buffering=0)
    except PermissionError:
        # batchtokd is not dumpable: reading it takes CAP_SYS_PTRACE.
        pytest.skip("reading batchtokd's memory needs root (CAP_SYS_PTRACE)")
    with mem:
        for start, end in ordinary_memory(pid):
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            i = data.find(needle)
            while i >= 0:
                hits.append(hex(start + i))
                i = data.find(needle, i + 1)
    return hits


def test_served_token_is_only_in_the_secure_heap(make_daemon, sts):
    d = make_daemon()
    r = d.get()
    assert r.rc == 0, r
    token = r.out.strip().encode()
    # The JWT's signature alone: no other copy of it can be a coincidence.
    sig = token.rsplit(b".", 1)[1]
    assert len(sig) > 100
    assert d.run("ping").rc == 0
    assert find_in_memory(d.proc.pid, sig) == []
    assert find_in_memory(d.proc.pid, SECRET.encode()) == []
