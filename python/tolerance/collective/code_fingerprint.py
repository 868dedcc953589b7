"""Code fingerprint of a box root: is the same code about to run on every box?

The fingerprint is git HEAD plus a hash of the uncommitted changes. A change to a `.py`
file that leaves its AST unchanged (comments, blank lines, formatting) counts as no
change, so a box whose checkout differs only cosmetically still agrees with the others.
Untracked files are not code (a cluster file or scratch notes in one root must not make
the boxes differ) unless the spec names them (`code: [glob, ...]`, fnmatch-style globs
relative to the box root, `*` crossing folders). A root that is not a git checkout is
fingerprinted from its files' contents.

Files are read in bounded memory: contents are hashed in 1 MiB chunks, and only a `.py`
file of at most 8 MiB is parsed for its AST (a larger one is hashed by its bytes, the same
rule on every box), so a huge data file in a root costs no more than a small one.

This module runs no MPI; the handshake compares what every rank computed here.
"""
from __future__ import annotations

import ast
import fnmatch
import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Folders that never hold the code of a run: outputs, builds, environments, caches.
_SKIP_DIRS = frozenset({".git", "runs", "build", "dist", ".venv", "venv", "__pycache__",
                        ".hypothesis", ".pytest_cache", "node_modules"})
# A non-git root is walked for at most this many files: a fingerprint is a handshake
# figure, not a backup; past the cap the walk says so in the fingerprint itself.
_MAX_WALK_FILES = 20000
_GIT_TIMEOUT_S = 30
_AST_MAX_BYTES = 8 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CodeFingerprint:
    """What a box would run: `digest` is compared across boxes, `files` explains a mismatch."""

    digest: str
    head: str | None                      # git HEAD, or None outside a git checkout
    files: dict[str, str] = field(default_factory=dict)  # changed path -> content hash

    def to_dict(self) -> dict:
        return {"digest": self.digest, "head": self.head, "files": dict(self.files)}

    @classmethod
    def from_dict(cls, d: dict) -> "CodeFingerprint":
        return cls(digest=str(d["digest"]), head=d.get("head"), files=dict(d.get("files") or {}))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def python_content_hash(source: bytes) -> str:
    """Hash of a Python file's AST: comments, blank lines and layout do not change it.

    A file that does not parse is hashed by its bytes (a syntax error is a real change).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "raw:" + _sha(source)
    return "ast:" + _sha(ast.dump(tree, annotate_fields=True, include_attributes=False).encode())


def content_hash(path: str, data: bytes) -> str:
    if path.endswith(".py") and len(data) <= _AST_MAX_BYTES:
        return python_content_hash(data)
    return "raw:" + _sha(data)


def file_hash(path: Path, rel: str) -> str:
    """`content_hash` of a file, read in bounded memory."""
    if rel.endswith(".py") and path.stat().st_size <= _AST_MAX_BYTES:
        return python_content_hash(path.read_bytes())
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "raw:" + h.hexdigest()


def _named(rel_to_root: str, globs) -> bool:
    return any(fnmatch.fnmatchcase(rel_to_root, g) for g in globs)


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          timeout=_GIT_TIMEOUT_S, stdin=subprocess.DEVNULL).stdout


def _git_fingerprint(root: Path, globs=()) -> CodeFingerprint | None:
    try:
        top = Path(_git(root, "rev-parse", "--show-toplevel").decode().strip())
        head = _git(root, "rev-parse", "--verify", "-q", "HEAD").decode().strip() or None
        status = _git(root, "status", "--porcelain=v1", "-z",
                      "--untracked-files=all" if globs else "--untracked-files=no",
                      "--no-renames", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    real_root = root.resolve()
    changed: dict[str, str] = {}
    for entry in status.split(b"\0"):
        if len(entry) < 4:
            continue
        code, rel = entry[:2].decode(), entry[3:].decode("utf-8", "surrogateescape")
        path = top / rel
        if code == "??":
            try:
                in_root = path.resolve().relative_to(real_root).as_posix()
            except ValueError:
                continue
            if not _named(in_root, globs):
                continue  # untracked, and the spec does not call it code
        try:
            h = file_hash(path, rel) if path.is_file() else None
        except OSError:
            h = None
        if h is None:
            changed[rel] = "deleted"
            continue
        if code != "??" and head is not None and h.startswith("ast:"):
            try:  # the committed version, when it is small enough to parse
                size = int(_git(top, "cat-file", "-s", f"HEAD:{rel}").strip() or 0)
                before = _git(top, "show", f"HEAD:{rel}") if size <= _AST_MAX_BYTES else None
            except (OSError, subprocess.SubprocessError, ValueError):
                before = None
            if before is not None and content_hash(rel, before) == h:
                continue  # a change that leaves the AST as it was is no change
        changed[rel] = h
    blob = (head or "no-head").encode() + b"\0" + b"".join(
        f"{k}\0{v}\0".encode("utf-8", "surrogateescape") for k, v in sorted(changed.items()))
    return CodeFingerprint(digest=_sha(blob), head=head, files=changed)


def _walk_fingerprint(root: Path) -> CodeFingerprint:
    files: dict[str, str] = {}
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            count += 1
            if count > _MAX_WALK_FILES:
                files["<truncated>"] = str(_MAX_WALK_FILES)
                break
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            try:
                files[rel] = file_hash(p, rel)
            except OSError:
                files[rel] = "unreadable"
    blob = b"".join(f"{k}\0{v}\0".encode("utf-8", "surrogateescape") for k, v in sorted(files.items()))
    return CodeFingerprint(digest=_sha(b"walk\0" + blob), head=None, files=files)


def code_fingerprint(root: str | os.PathLike, code_globs=()) -> CodeFingerprint:
    """The code fingerprint of a box root (git HEAD + uncommitted changes, AST-normalized;
    untracked files only where `code_globs` names them)."""
    root = Path(root)
    return _git_fingerprint(root, tuple(code_globs)) or _walk_fingerprint(root)


def differing_files(a: CodeFingerprint, b: CodeFingerprint) -> list[str]:
    """Paths whose content differs between two fingerprints (for the refusal table)."""
    keys = set(a.files) | set(b.files)
    return sorted(k for k in keys if a.files.get(k) != b.files.get(k))


# ----------------------------------------------------------------- --sync push
_BUNDLE_MAX = 256 << 20


def make_push(checkout: str | os.PathLike) -> dict:
    """`--sync push`: the checkout's HEAD as a git bundle (what every box checks out)."""
    import base64
    import tempfile

    from tolerance._errors import ToleranceError

    where = Path(checkout)
    try:
        commit = _git(where, "rev-parse", "--verify", "-q", "HEAD").decode().strip()
    except (OSError, subprocess.SubprocessError):
        raise ToleranceError(f"--sync push: {where} is not a git checkout with a commit "
                             "(push ships the controller's HEAD)") from None
    with tempfile.TemporaryDirectory(prefix="tolerance-push-") as tmp:
        path = Path(tmp) / "head.bundle"
        try:
            _git(where, "bundle", "create", "-q", str(path), "HEAD")
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToleranceError(f"--sync push: {where}: git bundle failed: {exc}") from None
        if path.stat().st_size > _BUNDLE_MAX:
            raise ToleranceError(f"--sync push: {where}: the bundle of HEAD is "
                                 f"{path.stat().st_size >> 20} MiB (more than "
                                 f"{_BUNDLE_MAX >> 20} MiB)")
        data = path.read_bytes()
    return {"commit": commit, "bundle": base64.b64encode(data).decode("ascii")}


def apply_push(root: str | os.PathLike, push: dict, box: str) -> str | None:
    """Check the pushed commit out in a box root; None when done, else why it was refused.

    A root whose tree is clean (or differs only AST-neutrally) is brought to the commit; a
    root with real local changes is refused, naming its files: nothing of it is touched.
    """
    import base64
    import tempfile

    root = Path(root)
    commit = str(push["commit"])
    fp = _git_fingerprint(root)
    if fp is None:
        return f"box {box}: --sync push: its root {root} is not a git checkout"
    if fp.files:
        files = sorted(fp.files)
        shown = ", ".join(files[:5]) + (f" (+{len(files) - 5} more)" if len(files) > 5 else "")
        return (f"box {box}: --sync push refused: its root {root} has local changes "
                f"({shown}); commit or discard them, or run with --sync verify")
    if fp.head == commit:
        return None
    with tempfile.TemporaryDirectory(prefix="tolerance-push-") as tmp:
        path = Path(tmp) / "head.bundle"
        path.write_bytes(base64.b64decode(push["bundle"]))
        try:
            _git(root, "fetch", "-q", "--no-tags", str(path), "HEAD")
            got = _git(root, "rev-parse", "FETCH_HEAD").decode().strip()
            if got != commit:
                return f"box {box}: --sync push: the bundle holds {got[:12]}, not {commit[:12]}"
            _git(root, "checkout", "-q", "--detach", commit)
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            return (f"box {box}: --sync push: git in {root} failed: "
                    f"{said[-1] if said else exc}")
        except (OSError, subprocess.SubprocessError) as exc:
            return f"box {box}: --sync push: git in {root} failed: {exc}"
    return None
