#!/usr/bin/env python3
"""Fails when the modules of a Rust crate import each other in a circle.

    python3 scripts/check-import-cycles.py [--strict] [--include-tests] [--edges] SRC_DIR...
    python3 scripts/check-import-cycles.py --self-test

--edges also prints every module-to-module import found (to see why a circle closes).

SRC_DIR is a crate's source directory (plugin/src, proxy/src). Its lib.rs, and its main.rs as a
crate of its own, are the roots; modules are found by following `mod name;` declarations (with
`#[path]`), so a file no `mod` names is not read. Exit status: 0 no circle, 1 a circle (each is
printed), 2 bad usage or an unreadable directory.

What counts as an import. Comments and the insides of string and character literals are ignored.
In each module, every path that names a module of the crate is a dependency of that module on the
module holding the named item:
  - `use` trees (`use crate::a::{b, c::D}`, `pub use`, `use super::*`, `as` renames);
  - paths written inline: `crate::a::f()`, `super::x::Y`, `self::z`;
  - paths starting with a child module's name (`commands::add::add` in lib.rs) or with a name the
    module imported (`nft::apply` after `use crate::nft`, `Family::Inet` after
    `use crate::nft::Family`);
  - `super::` is the parent module, `self::` the module itself, `crate::` the root.
A path is followed through re-exports (`pub use inner::Thing` in lib.rs makes `crate::Thing` a
dependency on `inner`, not on the root); glob re-exports are not followed. Items inside
`#[cfg(test)]` (a `mod tests { .. }`, a `#[cfg(test)] mod tests;` file, a gated `use`, anything
under `#![cfg(test)]`) are left out unless --include-tests: tests may reach across layers.
Macros are invisible unless called by path (`crate::m!`).

What a circle is. The check runs at every level of the module tree: at the crate root and inside
each module that has child modules (a folder such as nft/, or a file with inline modules). At a
level, each child module is one node together with everything below it (nft/, nft/check.rs,
nft/socket.rs... are the one node `nft` at the root level), and an edge A -> B means code somewhere
in A's subtree uses an item of B's subtree. A circle is a strongly connected set of two or more
nodes: A reaches B and B reaches A. At the crate root, the root file's own items (lib.rs: `run`,
`dispatch`) are a node too, named `crate`: it is where the program starts, and a module that
reaches back into it makes a circle with it. Inside a folder, the folder's own file (mod.rs) is not
a node unless --strict: it commonly holds what its children share (an error type) while wiring them
together, and the folder is already judged as one node a level up. --strict counts it, the way the
root is counted.

Each circle is printed with its members, one shortest loop through them with the file and line of
each import that closes it, and the other imports inside the circle.
"""

import argparse
import bisect
import os
import re
import signal
import sys
import tempfile

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_RE = re.compile(
    r"(?<![\w:$.'])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)"
)
MOD_RE = re.compile(r"(?<![\w:$])mod\s+(" + IDENT + r")\s*([;{])")
USE_RE = re.compile(r"(?<![\w:$])use\s+([^;]*);")
ATTR_RE = re.compile(r"#\s*(!?)\s*\[")


# --- lexing ---------------------------------------------------------------------------------------

NEXT_RE = re.compile(r'/[/*]|"|\'|r#*"')
STRING_RE = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
BLOCK_RE = re.compile(r"/\*|\*/")
BRACKET_RE = re.compile(r"[(){}\[\]]")


def blank(src):
    """`src` with comments and the contents of string and char literals replaced by spaces
    (newlines kept), so offsets and line numbers stay those of the file."""
    out = list(src)
    n = len(src)

    def wipe(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while True:
        m = NEXT_RE.search(src, i)
        if not m:
            break
        i, tok = m.start(), m.group()
        if tok == "//":
            j = src.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif tok == "/*":
            depth, j = 1, i + 2
            while depth:
                b = BLOCK_RE.search(src, j)
                if not b:
                    j = n
                    break
                depth += 1 if b.group() == "/*" else -1
                j = b.end()
            wipe(i, j)
            i = j
        elif tok[0] == "r":
            if not raw_string_start(src, i):
                i += 1
                continue
            hashes = len(tok) - 2
            end = src.find('"' + "#" * hashes, m.end())
            end = n if end < 0 else end
            wipe(m.end(), end)
            i = end + 1 + hashes
        elif tok == '"':
            s = STRING_RE.match(src, i + 1)
            j = s.end() - 1 if s else n
            wipe(i + 1, j)
            i = j + 1
        elif i + 1 < n and src[i + 1] == "\\":
            # A char literal with an escape ('\n', '\'', '\u{1F600}').
            j = src.find("'", i + 3)
            j = n if j < 0 else j
            wipe(i + 1, j)
            i = j + 1
        elif i + 2 < n and src[i + 2] == "'":
            wipe(i + 1, i + 2)  # 'a'
            i += 3
        else:
            i += 1  # a lifetime or a label: 'a, 'static
    return "".join(out)


def raw_string_start(src, i):
    """Whether the `r` at `i` opens a raw string (r"..", r#".."#, br"..", cr"..")."""
    j = i + 1
    while j < len(src) and src[j] == "#":
        j += 1
    if j >= len(src) or src[j] != '"':
        return False
    prev = i - 1
    if prev >= 0 and src[prev] in "bc":
        prev -= 1
    return prev < 0 or not (src[prev].isalnum() or src[prev] == "_")


def matching(text, open_at):
    """Index of the bracket closing the one at `open_at` (or the end of `text`)."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack = [pairs[text[open_at]]]
    pos = open_at + 1
    while stack:
        m = BRACKET_RE.search(text, pos)
        if not m:
            return len(text) - 1
        c, pos = m.group(), m.end()
        if c in pairs:
            stack.append(pairs[c])
        elif c == stack[-1]:
            stack.pop()
        else:  # unbalanced (macro input): resynchronise on the outer bracket
            while stack and stack[-1] != c:
                stack.pop()
            if stack:
                stack.pop()
    return pos - 1


def item_end(text, start):
    """End of the item (or field, arm, statement) starting at `start`: a `;` or `,` outside
    brackets, the end of its first `{ }` body, or the `}` closing what encloses it."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth == 0:
                return i
            depth -= 1
        elif c == "{" and depth == 0:
            return matching(text, i) + 1
        elif c == "{":
            i = matching(text, i)
        elif c == "}" and depth == 0:
            return i
        elif c in ";," and depth == 0:
            return i + 1
        i += 1
    return len(text)


def is_test_cfg(attr):
    """Whether an attribute's content (`cfg(test)`, `cfg(all(test, unix))`) compiles only in
    tests."""
    m = re.fullmatch(r"\s*cfg\s*\((.*)\)\s*", attr, re.S)
    if not m:
        return False
    pred = m.group(1).strip()
    if pred == "test":
        return True
    m = re.fullmatch(r"all\s*\((.*)\)", pred, re.S)
    return bool(m) and "test" in [p.strip() for p in split_top(m.group(1))]


def split_top(s):
    """Splits `s` on commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return [p for p in parts if p.strip()]


# --- one file -------------------------------------------------------------------------------------

class Source:
    """One file of the crate: its text, the module it is, its inline modules and what is
    excluded."""

    def __init__(self, path, module, include_tests):
        with open(path, encoding="utf-8") as f:
            self.raw = f.read()
        self.path = path
        self.module = module
        self.lines = self.raw.splitlines()
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.raw)]
        self.text = blank(self.raw)
        self.excluded = []  # (start, end) ranges compiled only for tests
        self.attrs = []  # (start, end, content) of every attribute
        for m in ATTR_RE.finditer(self.text):
            end = matching(self.text, m.end() - 1)
            content = self.text[m.end():end]
            raw_content = self.raw[m.end():end]
            self.attrs.append((m.start(), end + 1, raw_content))
            if include_tests or not is_test_cfg(content):
                continue
            if m.group(1):  # inner attribute: the enclosing module
                self.excluded.append(self.enclosing_block(m.start()))
            else:
                self.excluded.append((m.start(), item_end(self.text, end + 1)))
        # Inline modules: (open brace, close brace, name).
        self.inline = []
        for m in MOD_RE.finditer(self.text):
            if m.group(2) == "{" and not self.is_excluded(m.start()):
                brace = m.end() - 1
                self.inline.append((brace, matching(self.text, brace), m.group(1)))

    def enclosing_block(self, pos):
        depth = 0
        for i in range(pos - 1, -1, -1):
            c = self.text[i]
            if c == "}":
                depth += 1
            elif c == "{":
                if depth == 0:
                    return (i, matching(self.text, i))
                depth -= 1
        return (0, len(self.text))

    def is_excluded(self, pos):
        return any(a <= pos < b for a, b in self.excluded)

    def module_at(self, pos):
        """The module path at offset `pos`: the file's, plus the inline modules around it."""
        inner = sorted((a, name) for a, b, name in self.inline if a < pos < b)
        return self.module + tuple(name for _, name in inner)

    def line_of(self, pos):
        return bisect.bisect_right(self.line_starts, pos)

    def path_attr_before(self, pos):
        """The `#[path = "..."]` among the attributes directly before `pos`, if any."""
        found = None
        for a, b, content in reversed([x for x in self.attrs if x[1] <= pos]):
            if self.text[b:pos].strip():
                break
            m = re.fullmatch(r'\s*path\s*=\s*"([^"]*)"\s*', content)
            if m:
                found = m.group(1)
            pos = a
        return found


# --- use trees ------------------------------------------------------------------------------------

def use_leaves(tree):
    """The leaves of a use tree as (segments, bound name): `a::{b, c::D as E, self, *}` gives
    (a,b) b, (a,c,D) E, (a) a, (a,*) None."""
    tree = re.sub(r"\s+", " ", tree).strip()
    return list(_leaves(tree, ()))


def _leaves(tree, prefix):
    tree = tree.strip()
    if not tree:
        return
    if tree.startswith("::"):
        tree = tree[2:].strip()
        prefix = prefix + ("::",)
    brace = tree.find("{")
    if brace >= 0:
        head = [s.strip() for s in tree[:brace].split("::") if s.strip()]
        inner = tree[brace + 1:tree.rfind("}")]
        for part in split_top(inner):
            yield from _leaves(part, prefix + tuple(head))
        return
    name = None
    m = re.fullmatch(r"(.*?)\s+as\s+(" + IDENT + r")", tree)
    if m:
        tree, name = m.group(1), m.group(2)
    segs = [s.strip() for s in tree.split("::") if s.strip()]
    if segs == ["self"] and prefix:
        segs = []
    full = prefix + tuple(segs)
    if not full or full[-1] == "*":
        yield full, None
        return
    bound = name or full[-1]
    if bound == "self" or bound == "_":
        bound = None
    yield full, bound


# --- the crate ------------------------------------------------------------------------------------

class Crate:
    def __init__(self, root_file, include_tests):
        self.include_tests = include_tests
        self.files = {}  # module -> Source
        self.modules = {()}  # every module, inline ones included
        self.children = {}  # module -> set of child names
        self.imports = {}  # module -> {name: (module where written, segments)}
        self.uses = []  # (Source, pos, module, segments)
        self.warnings = []
        self._load(root_file, ())
        for src in self.files.values():
            self._read_paths(src)

    def _add_module(self, module):
        self.modules.add(module)
        for k in range(len(module)):
            self.children.setdefault(module[:k], set()).add(module[k])

    def _load(self, path, module):
        src = Source(path, module, self.include_tests)
        self.files[module] = src
        self._add_module(module)
        base = os.path.dirname(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem not in ("lib", "main", "mod"):
            base = os.path.join(base, stem)
        for a, b, name in src.inline:
            self._add_module(src.module_at(a + 1))
        for m in MOD_RE.finditer(src.text):
            if m.group(2) != ";" or src.is_excluded(m.start()):
                continue
            here = src.module_at(m.start())
            child = here + (m.group(1),)
            inline_dirs = here[len(module):]
            explicit = src.path_attr_before(m.start())
            if explicit is not None:
                d = os.path.dirname(path) if not inline_dirs else os.path.join(base, *inline_dirs)
                candidates = [os.path.join(d, explicit)]
            else:
                d = os.path.join(base, *inline_dirs)
                candidates = [os.path.join(d, m.group(1) + ".rs"),
                              os.path.join(d, m.group(1), "mod.rs")]
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                self.warnings.append(f"{path}:{src.line_of(m.start())}: no file for mod "
                                     f"{m.group(1)} (looked at {', '.join(candidates)})")
                self._add_module(child)
                continue
            self._load(found, child)

    def _read_paths(self, src):
        text = list(src.text)
        for m in USE_RE.finditer(src.text):
            if src.is_excluded(m.start()):
                continue
            here = src.module_at(m.start())
            for segs, bound in use_leaves(m.group(1)):
                if segs and segs[0] == "::":
                    continue  # an extern crate
                if bound is not None:
                    self.imports.setdefault(here, {})[bound] = (here, segs)
                self.uses.append((src, m.start(), here, segs))
            for k in range(m.start(), m.end()):
                if text[k] != "\n":
                    text[k] = " "
        rest = "".join(text)
        for m in PATH_RE.finditer(rest):
            if src.is_excluded(m.start()):
                continue
            segs = tuple(re.sub(r"\s+", "", m.group(1)).split("::"))
            self.uses.append((src, m.start(), src.module_at(m.start()), segs))

    def absolute(self, here, segs, depth=0):
        """`segs` written in module `here`, from the crate root; None when it leaves the crate."""
        if not segs or depth > 16:
            return None
        first = segs[0]
        if first == "crate":
            return tuple(segs[1:])
        if first == "self":
            return here + tuple(segs[1:])
        if first == "super":
            up = here
            rest = list(segs)
            while rest and rest[0] == "super":
                if not up:
                    return None
                up, rest = up[:-1], rest[1:]
            return up + tuple(rest)
        if first in self.children.get(here, ()):
            return here + tuple(segs)
        imported = self.imports.get(here, {}).get(first)
        if imported is not None and imported[1] != tuple(segs):
            base = self.absolute(imported[0], imported[1], depth + 1)
            return None if base is None else base + tuple(segs[1:])
        return None

    def target(self, path, depth=0):
        """The module holding the item `path` names, through re-exports."""
        i = len(path)
        while i > 0 and path[:i] not in self.modules:
            i -= 1
        module = path[:i]
        if i < len(path) and depth < 16:
            imported = self.imports.get(module, {}).get(path[i])
            if imported is not None:
                base = self.absolute(imported[0], imported[1])
                if base is not None and base != path[:i + 1]:
                    return self.target(base + tuple(path[i + 1:]), depth + 1)
        return module

    def edges(self):
        """{(from module, to module): (file, line, source line)} for every dependency."""
        out = {}
        for src, pos, here, segs in self.uses:
            if segs and segs[-1] == "*":
                segs = segs[:-1]
            path = self.absolute(here, segs)
            if path is None:
                continue
            to = self.target(path)
            if to == here:
                continue
            if (here, to) not in out:
                line = src.line_of(pos)
                out[(here, to)] = (src.path, line, src.lines[line - 1].strip())
        return out


# --- circles --------------------------------------------------------------------------------------

def strongly_connected(nodes, succ):
    """Tarjan's algorithm: the components of two or more nodes."""
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(succ.get(v, ())):
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
                comps.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(nodes)))
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return comps


def shortest_loop(start, succ, members):
    """A shortest path start -> ... -> start inside `members`."""
    prev = {start: None}
    queue = [start]
    while queue:
        nxt = []
        for v in queue:
            for w in sorted(succ.get(v, ())):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        queue = nxt
    return [start]


def name(module):
    return "::".join(module) if module else "crate"


def circles(crate, strict):
    """Every circle, as (level, members, loop, {(a, b): evidence})."""
    edges = crate.edges()
    found = []
    for level in sorted(crate.children, key=lambda m: (len(m), m)):
        own = level if (strict or level == ()) else None

        def node(module):
            if module[:len(level)] != level:
                return None
            if module == level:
                return own
            return module[:len(level) + 1]

        succ, evidence = {}, {}
        for (a, b), ev in edges.items():
            na, nb = node(a), node(b)
            if na is None or nb is None or na == nb:
                continue
            succ.setdefault(na, set()).add(nb)
            evidence.setdefault((na, nb), ev)
        nodes = set(succ) | {w for ws in succ.values() for w in ws}
        for comp in strongly_connected(nodes, succ):
            members = set(comp)
            inside = {k: v for k, v in evidence.items() if k[0] in members and k[1] in members}
            found.append((level, comp, shortest_loop(comp[0], succ, members), inside))
    return found


def report(label, crate, found, out):
    for w in crate.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not found:
        print(f"{label}: no import circle ({len(crate.modules)} modules)", file=out)
        return
    print(f"{label}: {len(found)} import circle(s)", file=out)
    for level, comp, loop, inside in found:
        where = "the crate root" if level == () else name(level)
        print(f"\n  circle at {where}: {', '.join(name(m) for m in comp)}", file=out)
        shown = set()
        for a, b in zip(loop, loop[1:]):
            f, line, text = inside[(a, b)]
            print(f"    {name(a)} -> {name(b)}    {f}:{line}: {text}", file=out)
            shown.add((a, b))
        rest = sorted(k for k in inside if k not in shown)
        if rest:
            print("    other imports inside this circle:", file=out)
            for a, b in rest:
                f, line, _ = inside[(a, b)]
                print(f"      {name(a)} -> {name(b)}    {f}:{line}", file=out)


def check_dir(src_dir, strict, include_tests, out, show_edges=False):
    """Checks every crate root in `src_dir`; returns the number of circles, None when there is
    no root."""
    roots = [os.path.join(src_dir, f) for f in ("lib.rs", "main.rs")
             if os.path.isfile(os.path.join(src_dir, f))]
    if not roots:
        return None
    total = 0
    for root in roots:
        crate = Crate(root, include_tests)
        if show_edges:
            for (a, b), (f, line, _) in sorted(crate.edges().items()):
                print(f"{name(a)} -> {name(b)}    {f}:{line}", file=out)
        found = circles(crate, strict)
        report(root, crate, found, out)
        total += len(found)
    return total


# --- self-test ------------------------------------------------------------------------------------

SELF_TESTS = [
    # (name, files, flags, expected circles as sorted member lists)
    ("acyclic", {
        "lib.rs": "mod a; mod b;\npub fn run() { a::f(); }\n",
        "a.rs": "use crate::b::g;\npub fn f() { g() }\n",
        "b.rs": "pub fn g() {}\n",
    }, {}, []),
    ("two modules", {
        "lib.rs": "mod a; mod b;\n",
        "a.rs": "use crate::b::{self, G};\n",
        "b.rs": "pub struct G; fn h() { super::a::f(); }\n",
    }, {}, [["a", "b"]]),
    ("the root and a module", {
        "lib.rs": "mod a;\npub struct Outcome;\nfn go() { a::run(); }\n",
        "a.rs": "pub fn run() -> crate::Outcome { crate::Outcome }\n",
    }, {}, [["a", "crate"]]),
    ("inside a folder", {
        "lib.rs": "mod f;\n",
        "f/mod.rs": "mod x;\nmod y;\n",
        "f/x.rs": "use super::y::Y;\npub struct X;\n",
        "f/y.rs": "pub struct Y(crate::f::x::X);\n",
    }, {}, [["f::x", "f::y"]]),
    ("a folder's own file is shared ground unless --strict", {
        "lib.rs": "mod g;\n",
        "g/mod.rs": "mod z;\npub enum Error {}\nfn f() { z::run() }\n",
        "g/z.rs": "use super::Error;\npub fn run() {}\n",
    }, {}, []),
    ("the same, --strict", {
        "lib.rs": "mod g;\n",
        "g/mod.rs": "mod z;\npub enum Error {}\nfn f() { z::run() }\n",
        "g/z.rs": "use super::Error;\npub fn run() {}\n",
    }, {"strict": True}, [["g", "g::z"]]),
    ("tests are left out", {
        "lib.rs": "mod a; mod b;\n",
        "a.rs": "use crate::b::B;\n",
        "b.rs": "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::*;\n}\n"
                "#[cfg(test)]\nmod more;\n",
        "b/more.rs": "use crate::a::A;\n",
    }, {}, []),
    ("tests are counted with --include-tests", {
        "lib.rs": "mod a; mod b;\n",
        "a.rs": "use crate::b::B;\n",
        "b.rs": "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::*;\n}\n",
    }, {"include_tests": True}, [["a", "b"]]),
    ("re-exports are followed, comments and strings ignored", {
        "lib.rs": "mod a; mod b;\npub use a::Thing;\nfn go() { b::f(); }\n",
        "a.rs": "pub struct Thing; // use crate::b\nconst S: &str = \"crate::b::f\";\n"
                "const R: &str = r#\"crate::b::\"#; const C: char = '\"';\n"
                "const Q: (char, &str) = ('\\'', \"crate::b::f\");\n",
        "b.rs": "pub fn f() -> crate::Thing { crate::Thing }\n",
    }, {}, []),
    ("names brought in by use", {
        "lib.rs": "mod a; mod b;\n",
        "a.rs": "use crate::b;\npub struct A;\nfn f() { b::g(); }\n",
        "b.rs": "use crate::a::A as Other;\npub fn g() -> Other { Other }\n",
    }, {}, [["a", "b"]]),
    ("three modules, through a nested path", {
        "lib.rs": "pub mod a;\npub mod b;\npub mod c;\n",
        "a.rs": "pub fn f() { crate::b::inner::g() }\n",
        "b.rs": "pub mod inner { pub fn g() { crate::c::h() } }\n",
        "c.rs": "use crate::{a::f as af};\npub fn h() { af() }\n",
    }, {}, [["a", "b", "c"]]),
]


def self_test():
    failures = 0
    for label, files, flags, want in SELF_TESTS:
        with tempfile.TemporaryDirectory() as d:
            for rel, body in files.items():
                p = os.path.join(d, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "w", encoding="utf-8") as f:
                    f.write(body)
            crate = Crate(os.path.join(d, "lib.rs"), flags.get("include_tests", False))
            got = [sorted(name(m) for m in comp)
                   for _, comp, _, _ in circles(crate, flags.get("strict", False))]
            if sorted(got) != sorted(want) or crate.warnings:
                failures += 1
                print(f"self-test {label!r}: want {want}, got {got} {crate.warnings}")
    if failures:
        print(f"self-test: {failures} of {len(SELF_TESTS)} cases failed")
        return 1
    print(f"self-test: ok ({len(SELF_TESTS)} cases)")
    return 0


def main():
    ap = argparse.ArgumentParser(
        description="Fail when a Rust crate's modules import each other in a circle "
                    "(see the header of this script for the exact rules).")
    ap.add_argument("src_dirs", nargs="*", metavar="SRC_DIR")
    ap.add_argument("--strict", action="store_true",
                    help="count a folder's own file (mod.rs) as a node inside the folder")
    ap.add_argument("--include-tests", action="store_true",
                    help="also read code under #[cfg(test)]")
    ap.add_argument("--edges", action="store_true",
                    help="also print every module-to-module import found")
    ap.add_argument("--self-test", action="store_true",
                    help="check the checker on small generated crates")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.src_dirs:
        ap.error("give at least one crate source directory (or --self-test)")
    total = 0
    for d in args.src_dirs:
        n = check_dir(d, args.strict, args.include_tests, sys.stdout, args.edges)
        if n is None:
            print(f"{d}: no lib.rs or main.rs", file=sys.stderr)
            return 2
        total += n
    return 1 if total else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    sys.exit(main())
