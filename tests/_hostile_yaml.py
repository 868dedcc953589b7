"""A hostile corpus of configuration files, generated (nothing is stored in the repo).

Each case is (id, fault class, what to write). What to write is either bytes (written
into a plain file) or a `Special` (a path made by the test: a FIFO, /dev/zero, a sparse
10 GB file, ...). Every case must be refused by the loader with ONE line that names the
file, exit 2, fast: the classes are the faults issue 11.7 lists (size, alias bombs,
recursive aliases, deep nesting, NUL and control characters, bad UTF-8, syntax, duplicate
keys, values that cannot be built, quadratic checks), several variants each.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tolerance.config._yaml import MAX_BYTES, MAX_DEPTH

GOOD_BOX = b"  - name: a\n    host: localhost\n"


@dataclass(frozen=True)
class Special:
    """A path the test makes in `where` (returns it)."""

    make: Callable[[Path], Path]


@dataclass(frozen=True)
class Case:
    id: str
    fault: str
    content: bytes | Special


def _cluster(tail: bytes) -> bytes:
    return b"schema: 1\nboxes:\n" + GOOD_BOX + tail


def _laughs(levels: int, width: int = 9) -> bytes:
    """The billion laughs: each level an anchored list of `width` aliases of the last."""
    out = [b'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    for i in range(1, levels + 1):
        out.append(f"l{i}: &l{i} [".encode() + b",".join([f"*l{i - 1}".encode()] * width) + b"]\n")
    return b"".join(out)


def _map_laughs(levels: int, *, merge: bool = False) -> bytes:
    """Mappings of 9 aliases of the last level; with `merge`, each also merges the last
    (`<<: [*m]`), so the merge keys expand too."""
    out = [b"m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}\n"]
    for i in range(1, levels + 1):
        items = ", ".join(f"k{j}: *m{i - 1}" for j in range(9))
        head = f"<<: [*m{i - 1}], " if merge else ""
        out.append(f"m{i}: &m{i} {{{head}{items}}}\n".encode())
    return b"".join(out)


def _alias_chain(n: int) -> bytes:
    """a1: [*a0], a2: [*a1], ...: each alias one level deeper than the last."""
    out = [b"a0: &a0 [x]\n"]
    out += [f"a{i}: &a{i} [*a{i - 1}]\n".encode() for i in range(1, n + 1)]
    return b"".join(out)


def _fifo(where: Path) -> Path:
    p = where / "fifo.yaml"
    os.mkfifo(p)
    return p


def _sparse(where: Path) -> Path:
    p = where / "huge.yaml"
    with open(p, "wb") as f:
        f.truncate(10 << 30)   # 10 GB of holes: the size is refused before a byte is read
    return p


def _over_cap(where: Path) -> Path:
    p = where / "big.yaml"
    p.write_bytes(b"schema: 1\n" + b"# " + b"x" * MAX_BYTES + b"\n")
    return p


def _symlink_zero(where: Path) -> Path:
    p = where / "zero.yaml"
    p.symlink_to("/dev/zero")
    return p


def _directory(where: Path) -> Path:
    p = where / "dir.yaml"
    p.mkdir()
    return p


def _dangling(where: Path) -> Path:
    p = where / "dangling.yaml"
    p.symlink_to(where / "nowhere.yaml")
    return p


def _proc_environ(where: Path) -> Path:  # a regular file of size 0 that reads NUL bytes
    return Path("/proc/self/environ")


def corpus() -> list[Case]:
    cases = [
        # -- size and not-a-file ----------------------------------------------------------
        Case("dev-zero", "size", Special(lambda w: Path("/dev/zero"))),
        Case("dev-urandom", "size", Special(lambda w: Path("/dev/urandom"))),
        Case("symlink-to-dev-zero", "size", Special(_symlink_zero)),
        Case("fifo-no-writer", "size", Special(_fifo)),
        Case("sparse-10GB", "size", Special(_sparse)),
        Case("over-cap-by-bytes", "size", Special(_over_cap)),
        Case("directory", "size", Special(_directory)),
        Case("dangling-symlink", "size", Special(_dangling)),
        # -- alias bombs (each ~1 KB) -----------------------------------------------------
        Case("laughs-9-levels", "alias-bomb", _laughs(9)),
        Case("laughs-in-boxes", "alias-bomb", _laughs(9).replace(b"l0:", b"schema: 1\nl0:", 1)
             + b"boxes: *l9\n"),
        Case("mapping-laughs", "alias-bomb", _map_laughs(8)),
        Case("merge-laughs", "alias-bomb", _map_laughs(8, merge=True)),
        Case("wide-alias-fanout", "alias-bomb", b"a: &a [" + b",".join([b"x"] * 600) + b"]\nb: ["
             + b",".join([b"*a"] * 400) + b"]\n"),
        Case("alias-chain-2000", "alias-bomb", _alias_chain(2000)),
        # -- recursive aliases ------------------------------------------------------------
        Case("recursive-seq", "recursive-alias", b"a: &a [*a]\n"),
        Case("recursive-map", "recursive-alias", b"a: &a {k: *a}\n"),
        Case("recursive-deep", "recursive-alias", b"a: &a [[[{k: [*a]}]]]\n"),
        Case("recursive-merge", "recursive-alias", b"a: &a {<<: *a, k: 1}\n"),
        Case("recursive-boxes", "recursive-alias", b"schema: 1\nboxes: &b [*b]\n"),
        # -- deep nesting -----------------------------------------------------------------
        Case("flow-seq-5000", "nesting", b"[" * 5000 + b"]" * 5000),
        Case("flow-map-5000", "nesting", b"{a: " * 5000 + b"}" * 5000),
        Case("block-seq-5000", "nesting", b"- " * 5000 + b"x\n"),
        Case("block-map-600", "nesting", b"".join(b" " * i + b"a:\n" for i in range(600))),
        Case(f"just-over-{MAX_DEPTH}", "nesting", b"x: " + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"\n"),
        Case("nested-via-alias", "nesting", b"a: &a " + b"[" * 40 + b"]" * 40 + b"\nb: "
             + b"[" * 40 + b"*a" + b"]" * 40 + b"\n"),
        # -- NUL and control characters ---------------------------------------------------
        Case("nul-first-byte", "control", b"\0schema: 1\n"),
        Case("nul-in-value", "control", _cluster(b"    tags: [a\0b]\n")),
        Case("nul-in-quoted", "control", _cluster(b'    tags: ["a\0b"]\n')),
        Case("escape-char", "control", _cluster(b"    tags: [\x1b[31mred]\n")),
        Case("del-char", "control", _cluster(b"    tags: [a\x7f]\n")),
        Case("form-feed", "control", b"schema: 1\n\x0c\nboxes: []\n"),
        Case("proc-environ", "control", Special(_proc_environ)),
        # -- bad UTF-8 --------------------------------------------------------------------
        Case("lone-ff", "utf8", _cluster(b"    tags: [\xff]\n")),
        Case("latin1-e-acute", "utf8", _cluster(b"    tags: [caf\xe9]\n")),
        Case("truncated-at-eof", "utf8", _cluster(b"    tags: [x]\n# \xe2\x82")),
        Case("overlong-slash", "utf8", _cluster(b"    tags: [\xc0\xaf]\n")),
        Case("encoded-surrogate", "utf8", _cluster(b"    tags: [\xed\xa0\x80]\n")),
        Case("utf16-bom", "utf8", "schema: 1\n".encode("utf-16")),
        # -- syntax -----------------------------------------------------------------------
        Case("unclosed-flow", "syntax", b"schema: 1\nboxes: [\n"),
        Case("tab-indent", "syntax", b"schema: 1\nboxes:\n\t- name: a\n"),
        Case("unterminated-quote", "syntax", b'schema: 1\nboxes: "abc\n'),
        Case("value-not-allowed", "syntax", b"schema: 1\nboxes: a: b: c\n"),
        Case("two-documents", "syntax", _cluster(b"") + b"---\nschema: 1\n"),
        Case("undefined-alias", "syntax", b"schema: 1\nboxes: *nowhere\n"),
        Case("anchor-twice", "syntax", b"a: &x 1\nb: &x 2\n"),
        Case("bad-directive", "syntax", b"%YAML 9.9\n---\nschema: 1\n"),
        # -- duplicate keys ---------------------------------------------------------------
        Case("dup-top", "duplicate", _cluster(b"") + b"schema: 1\n"),
        Case("dup-nested", "duplicate", _cluster(b"    host: other\n")),
        Case("dup-int-spelling", "duplicate", b"schema: 1\nboxes: []\n1: a\n0x1: b\n"),
        Case("dup-quoted-plain", "duplicate", b'schema: 1\n"boxes": []\nboxes: []\n'),
        Case("dup-flow", "duplicate", b"{schema: 1, schema: 1, boxes: []}\n"),
        # -- values that cannot be built --------------------------------------------------
        Case("python-tag", "construct", b"schema: !!python/object/apply:os.system ['true']\n"),
        Case("unknown-tag", "construct", b"schema: !mine 1\n"),
        Case("no-such-date", "construct", b"schema: 1\nwhen: 2020-02-31\n"),
        Case("int-5000-digits", "construct", b"schema: " + b"9" * 5000 + b"\n"),
        Case("bad-base64", "construct", b"schema: !!binary 'z'\n"),
        Case("bad-float-tag", "construct", b"schema: !!float abc\n"),
        Case("unhashable-key", "construct", b"? [1, 2]\n: 3\n"),
        # -- linear checks on big inputs (refused: every entry is a problem) --------------
        Case("45000-duplicate-tags", "quadratic",
             _cluster(b"    tags:\n" + b"      - t\n" * 45000)),
        Case("15000-unknown-keys", "quadratic",
             _cluster(b"".join(b"    k%d: 1\n" % i for i in range(15000)))),
    ]
    return cases


#: a valid registry with 45,000 distinct tags (must be accepted, and fast)
def tags_45000() -> bytes:
    return _cluster(b"    tags:\n" + b"".join(b"      - t%d\n" % i for i in range(45000))
                    + b"  - name: b\n    host: localhost\n")


def materialize(case: Case, where: Path) -> Path:
    """The path of `case` in the directory `where` (made fresh per case)."""
    where.mkdir(parents=True, exist_ok=True)
    if isinstance(case.content, Special):
        return case.content.make(where)
    p = where / f"{case.id}.yaml"
    p.write_bytes(case.content)
    return p
