#!/usr/bin/env bash
# The module import graph of the root crate: one edge `from -> to` per line, between the
# top-level modules of src/ (a folder module such as `store/` is one node; `main` is the
# crate root). An edge is any `crate::x` reference (a `use` line or a path in the code),
# and in main.rs any `x::` naming a module. Test code counts too: a test that imports a
# higher layer ties the layers together all the same.
#
# Exits 1, naming the modules of each cycle, if the graph has one: lower layers never
# import higher ones (STYLE.md, "No cycles"). Part of `make lint`.
#
#     scripts/modgraph.sh [SRC_DIR]      (default: src/ beside this script)
set -euo pipefail
src="${1:-$(dirname "$0")/../src}"
exec python3 - "$src" <<'EOF'
import os
import re
import sys

src = sys.argv[1]

# The modules: src/x.rs and src/x/mod.rs; every file under src/x/ belongs to x.
modules = {}
for entry in sorted(os.listdir(src)):
    path = os.path.join(src, entry)
    if entry.endswith(".rs") and entry != "main.rs" and os.path.isfile(path):
        modules.setdefault(entry[:-3], []).append(path)
    elif os.path.isdir(path) and os.path.isfile(os.path.join(path, "mod.rs")):
        for root, _, files in os.walk(path):
            modules.setdefault(entry, []).extend(
                os.path.join(root, f) for f in sorted(files) if f.endswith(".rs")
            )
modules["main"] = [os.path.join(src, "main.rs")]


RAW = re.compile(r'(?<![\w])b?r(#*)"')
CHAR = re.compile(r"'(\\.[^']*|[^\\'])'")


def code_of(text):
    """The text with comments, strings and char literals blanked out."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c in "br" and (m := RAW.match(text, i)):
            end = text.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append(" ")
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append(" ")
        elif c == "'" and (m := CHAR.match(text, i)):
            i = m.end()
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def heads(tree):
    """The first segment of each top-level item of a `{a::b, c, d::{e, f}}` group."""
    depth, item, items = 0, "", []
    for c in tree:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if depth == 0 and c == ",":
            items.append(item)
            item = ""
        else:
            item += c
    items.append(item)
    return [m.group(1) for it in items if (m := re.match(r"\s*(\w+)", it))]


def group(code, start):
    """The brace group that opens at `start`."""
    depth = 0
    for j in range(start, len(code)):
        depth += {"{": 1, "}": -1}.get(code[j], 0)
        if depth == 0:
            return code[start + 1 : j]
    return code[start + 1 :]


edges = set()
for mod, files in modules.items():
    for path in files:
        with open(path, encoding="utf-8") as f:
            code = code_of(f.read())
        targets = []
        for m in re.finditer(r"(?<![\w:])crate\s*::\s*(\{|\w+)", code):
            if m.group(1) == "{":
                targets += heads(group(code, m.start(1)))
            else:
                targets.append(m.group(1))
        if mod == "main":
            # The root names its modules without `crate::`.
            for m in re.finditer(r"(?<![\w:])(\w+)\s*::", code):
                if m.group(1) in modules:
                    targets.append(m.group(1))
        for t in targets:
            to = t if t in modules else "main"  # an item of the crate root
            if to != mod:
                edges.add((mod, to))

for a, b in sorted(edges):
    print(f"{a} -> {b}")

# Cycles: the strongly connected components of more than one module (Tarjan).
graph = {m: sorted(b for a, b in edges if a == m) for m in modules}
index, low, stack, on_stack, cycles = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            scc.append(w)
            if w == v:
                break
        if len(scc) > 1:
            cycles.append(sorted(scc))


sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index:
        visit(v)
for c in sorted(cycles):
    print(f"modgraph: import cycle among {', '.join(c)}", file=sys.stderr)
sys.exit(1 if cycles else 0)
EOF
