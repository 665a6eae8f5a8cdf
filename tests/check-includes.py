#!/usr/bin/python3
"""check-includes.py - fails if modules include each other in a cycle, or a
directory includes one above it. A module is NAME.c with NAME.h; it depends
on every module whose header it includes with #include "..." (from the .c or
the .h). Directories are layers, each allowed what is listed below it:
proto/ nothing of ours; client/ proto/; in the daemon, lib/ (facilities that
know no identity), identity/ (the config and how an identity gets a token),
core/ (the cache and the service layer), front/ (the socket, the compat
endpoint), and daemon/ itself, the wiring, which may use them all. Prints
each cycle or breach and exits 1; exits 0 when there is none."""

import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What each layer may include besides itself.
MAY_USE = {
    "proto": set(),
    "client": {"proto"},
    "daemon/lib": {"proto"},
    "daemon/identity": {"proto", "daemon/lib"},
    "daemon/core": {"proto", "daemon/lib", "daemon/identity"},
    "daemon/front": {"proto", "daemon/lib", "daemon/identity", "daemon/core"},
    "daemon": {"proto", "daemon/lib", "daemon/identity", "daemon/core", "daemon/front"},
}
DIRS = sorted(MAY_USE)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules():
    """{module: set of modules it includes}; a module is 'dir/name'."""
    deps = {}
    for d in DIRS:
        for f in sorted(os.listdir(os.path.join(TOP, d))):
            name, ext = os.path.splitext(f)
            if ext not in (".c", ".h"):
                continue
            mod = "%s/%s" % (d, name)
            with open(os.path.join(TOP, d, f)) as fh:
                text = fh.read()
            for inc in INCLUDE.findall(text):
                path = os.path.normpath(os.path.join(d, inc))
                target = os.path.splitext(path)[0]
                if target != mod:
                    deps.setdefault(mod, set()).add(target)
            deps.setdefault(mod, set())
    return deps


def cycles(deps):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in deps:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def main():
    deps = modules()
    bad = 0
    for comp in cycles(deps):
        bad += 1
        edges = ["%s -> %s" % (a, b) for a in comp for b in sorted(deps[a]) if b in comp]
        print("include cycle: %s (%s)" % (", ".join(comp), "; ".join(edges)))
    for mod, targets in sorted(deps.items()):
        layer = os.path.dirname(mod)
        for t in sorted(targets):
            tl = os.path.dirname(t)
            if tl not in MAY_USE:
                bad += 1
                print("%s includes %s, which is in no layer" % (mod, t))
            elif tl != layer and tl not in MAY_USE[layer]:
                bad += 1
                print("layer breach: %s includes %s (%s/ may use %s)"
                      % (mod, t, layer, ", ".join(sorted(MAY_USE.get(layer, ()))) or "nothing"))
    n = len(deps)
    if bad:
        print("check-includes: %d problems in %d modules" % (bad, n))
        return 1
    print("check-includes: %d modules, no include cycles, layers kept" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
