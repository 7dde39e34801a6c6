#!/usr/bin/env python3
"""The module import graph of one crate, from its `use crate::` / `use super::` /
`use self::` lines (outside `mod tests`), with its cycles and every import of a
module that encloses the importer.

    scripts/modgraph.py crates/idemstore/src

Exits 1 if it finds a cycle. Reads `use` lines only: a path written out in
full in the code (`crate::foo::bar()`) is not counted.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "crates/idemstore/src"


def module_of(path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


files = {}
for d, _, names in os.walk(root):
    for f in names:
        if f.endswith(".rs"):
            files[module_of(os.path.join(d, f))] = os.path.join(d, f)


def resolve(parts):
    """The longest prefix of `parts` that names a module."""
    for i in range(len(parts), 0, -1):
        m = "::".join(parts[:i])
        if m in files:
            return m
    return None


def expand(prefix, s):
    """`a::{b, c::{d}}` -> [`a::b`, `a::c::d`]."""
    m = re.match(r"^([\w:]*?)\{(.*)\}$", s)
    if not m:
        return [prefix + s]
    pre, inner = m.groups()
    out, depth, cur = [], 0, ""
    for ch in inner:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out += expand(prefix + pre, cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out += expand(prefix + pre, cur)
    return out


edges = {}
for m, p in files.items():
    src = re.split(r"#\[cfg\(test\)\]\s*mod tests", open(p).read())[0]
    here = [] if m == "crate" else m.split("::")
    deps = set()
    for u in re.finditer(r"\buse\s+([^;]+);", src):
        for path in expand("", re.sub(r"\s+", "", u.group(1))):
            parts = path.split("::")
            if parts[0] == "crate":
                parts = parts[1:]
            elif parts[0] == "super":
                base = here[:]
                while parts and parts[0] == "super":
                    parts, base = parts[1:], base[:-1]
                parts = base + parts
            elif parts[0] == "self":
                parts = here + parts[1:]
            else:
                continue  # an extern crate, or a child module (downwards)
            t = resolve(parts)
            if t and t not in (m, "crate"):
                deps.add(t)
    edges[m] = sorted(deps)

for m in sorted(edges):
    print(f"{m:28} -> {', '.join(edges[m])}")

# Tarjan's strongly connected components.
index, low, stack, on, cycles, n = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, []):
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
            cycles.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        visit(v)
up = [f"{m} -> {d}" for m, ds in sorted(edges.items()) for d in ds if m.startswith(d + "::")]
print("\ncycles:", "; ".join(" <-> ".join(c) for c in cycles) or "none")
print("imports of an enclosing module:", ", ".join(up) or "none")
sys.exit(1 if cycles else 0)
