"""A published reference: `reference.json` (+ `arrays.npz`), written atomically, read safely.

A reference is one box's run of one stem, published so that another box (or the same
box later) can be verified against it (`tolerance publish`, `tolerance verify`). It is a
directory holding exactly:

* `reference.json`, schema `tolerance.reference/1`: the stem, the spec's content (box-local
  knobs stripped), the bounds, the steps axis, the code commit, the publishing box's
  environment fingerprint (box-local knobs stripped), per key its shape, dtype and per-block
  digests, the sha256 of every other file, and `self_sha256` (the sha256 of the document's
  canonical JSON without that field), so that no field can be edited unnoticed;
* `arrays.npz`, the box's arrays (absent in a digests-only reference).

Reading is hostile-input safe: nothing is unpickled, nothing runs, memory stays bounded
(the JSON is capped, files are hashed in blocks, the arrays are opened by the streaming
`.npz` reader), names are checked before any path is built from them, symbolic links and
extra files are refused, and every lie (a shape, a size, a hash, a block count) is one
`FormatError` line naming the directory and the field.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from tolerance._errors import FormatError, ToleranceError
from tolerance.io.digest import DIGEST_ALGORITHM, DIGEST_BYTES, block_digest
from tolerance.io.npy import MAX_NBYTES, MAX_NDIM, parse_descr
from tolerance.io.npz import Archive, Member, normalize_axis, plan_blocks

SCHEMA = "tolerance.reference/1"
MANIFEST = "reference.json"
ARRAYS = "arrays.npz"
#: the only files a reference may hold besides its manifest
_FILES = (ARRAYS,)
#: a manifest larger than this is refused (its digests list is the only part that grows:
#: 64 MiB holds ~1.5 million block digests)
MAX_MANIFEST_BYTES = 64 << 20
#: byte budget of one digest block (at the widest element, 8 bytes, as the exchange plans)
DIGEST_BLOCK_BYTES = 4 << 20
_WIDEST = 8
_HASH_BLOCK = 1 << 20

_TOP_FIELDS = ("schema", "stem", "box", "run_id", "spec", "spec_hash", "bounds", "steps_axis",
               "code", "environment", "digests_only", "keys", "files", "self_sha256")
_KEY_FIELDS = ("shape", "dtype", "digest", "blocks")
_BOUND_FIELDS = ("atol", "rtol", "ulp")


# --- small helpers -----------------------------------------------------------------------

def canonical_json(obj: Any) -> bytes:
    """The canonical JSON of a document (sorted keys, no spaces, ASCII, strict numbers)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _self_hash(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in doc.items()
                                          if k != "self_sha256"})).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def key_problem(key: Any) -> str | None:
    """Why `key` cannot name an array of a reference (it becomes a zip member name)."""
    if not isinstance(key, str) or not key:
        return "must be a non-empty string"
    if len(key) > 255 or key in (".", "..") or any(c in key for c in "/\\\0") or \
            any(ord(c) < 32 for c in key):
        return f"{key!r} is not a safe array name (no '/', '\\\\', control characters, '.', '..')"
    return None


def digest_plan(shape: tuple[int, ...], steps_axis: int | None,
                budget: int = DIGEST_BLOCK_BYTES) -> tuple[int | None, int]:
    """(normalized steps axis, steps per block) of a key's digest blocks: whole steps under
    `budget` bytes at the widest element, or flat C-order pieces when there is no axis."""
    ax = normalize_axis(steps_axis, len(shape))
    return ax, plan_blocks(shape, ax, _WIDEST, budget)[0]


def block_count(shape: tuple[int, ...], ax: int | None, per_block: int) -> int:
    """How many blocks `Member.chunks(ax, per_block)` yields for `shape` (at least one)."""
    total = shape[ax] if ax is not None else math.prod(shape)
    return max(1, -(-total // per_block))


def key_digests(member: Member, ax: int | None, per_block: int) -> list[str]:
    """The hex digest of every block of a member, in order (streamed, never loaded whole)."""
    return [block_digest(c).hex() for c in member.chunks(ax, per_block)]


# --- the reference as read -------------------------------------------------------------

@dataclass(frozen=True)
class KeyEntry:
    """One array of a reference: what it promises, and its blocks' digests."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    axis: int | None         # the steps axis, normalized for this shape
    per_block: int
    algorithm: str
    blocks: tuple[str, ...]


@dataclass
class Reference:
    """A validated reference directory (every file's sha256 already checked)."""

    path: Path
    doc: dict[str, Any]
    keys: dict[str, KeyEntry]

    @property
    def stem(self) -> str:
        return self.doc["stem"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.doc["spec"]

    @property
    def digests_only(self) -> bool:
        return bool(self.doc["digests_only"])

    @property
    def steps_axis(self) -> int | None:
        return self.doc["steps_axis"]

    @property
    def bounds(self) -> dict[str, dict[str, Any]]:
        return self.doc["bounds"]

    @property
    def arrays_path(self) -> Path | None:
        return None if self.digests_only else self.path / ARRAYS

    def open_arrays(self) -> Archive:
        """The arrays, through the streaming reader (CRC of every member checked)."""
        if self.arrays_path is None:
            raise FormatError(f"{self.path}: a digests-only reference holds no arrays")
        return Archive(self.arrays_path, verify_crc=True)


def _fail(where: Path, field: str, problem: str) -> FormatError:
    return FormatError(f"{where}: {MANIFEST}: {field}: {problem}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate field {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_hex(x: Any, nbytes: int) -> bool:
    if not isinstance(x, str) or len(x) != 2 * nbytes:
        return False
    try:
        bytes.fromhex(x)
    except ValueError:
        return False
    return x == x.lower()


def _check_bound(where: Path, field: str, b: Any) -> None:
    if not isinstance(b, dict) or set(b) != set(_BOUND_FIELDS):
        raise _fail(where, field, f"must hold exactly {', '.join(_BOUND_FIELDS)}")
    for name in ("atol", "rtol"):
        v = b[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not v >= 0 or not math.isfinite(v)):
            raise _fail(where, f"{field}.{name}", f"{v!r} is not a number >= 0 or null")
    if b["ulp"] is not None and (not _is_int(b["ulp"]) or b["ulp"] < 0):
        raise _fail(where, f"{field}.ulp", f"{b['ulp']!r} is not an integer >= 0 or null")


def _check_shape(where: Path, field: str, shape: Any, dtype: np.dtype) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or \
            not all(_is_int(d) and 0 <= d < MAX_NBYTES for d in shape):
        raise _fail(where, field, f"{shape!r} is not a list of at most {MAX_NDIM} "
                                  "non-negative integers")
    n = dtype.itemsize
    for d in shape:
        n *= d
        if n > MAX_NBYTES:
            raise _fail(where, field, f"{shape!r} is absurd (more than 2**62 bytes)")
    return tuple(shape)


def _list_dir(where: Path) -> set[str]:
    try:
        st = os.lstat(where)
    except OSError as exc:
        raise FormatError(f"{where}: cannot read the reference ({exc.strerror or exc})") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise FormatError(f"{where}: not a reference directory (a reference is a directory "
                          f"holding {MANIFEST})")
    try:
        return set(os.listdir(where))
    except OSError as exc:
        raise FormatError(f"{where}: cannot list ({exc.strerror or exc})") from None


def _regular(where: Path, name: str) -> int:
    try:
        st = os.lstat(where / name)
    except OSError as exc:
        raise FormatError(f"{where}: {name}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{where}: {name}: not a regular file (links are refused)")
    return st.st_size


def _read_manifest(where: Path) -> dict[str, Any]:
    size = _regular(where, MANIFEST)
    if size > MAX_MANIFEST_BYTES:
        raise FormatError(f"{where}: {MANIFEST}: {size} bytes (more than "
                          f"{MAX_MANIFEST_BYTES >> 20} MiB): refused")
    with open(where / MANIFEST, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{where}: {MANIFEST}: grew past {MAX_MANIFEST_BYTES >> 20} MiB "
                          "while being read: refused")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise FormatError(f"{where}: {MANIFEST}: not UTF-8 text") from None
    except RecursionError:
        raise FormatError(f"{where}: {MANIFEST}: nested too deeply") from None
    except ValueError as exc:
        raise FormatError(f"{where}: {MANIFEST}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: {MANIFEST}: not a JSON object")
    return doc


def read_reference(path: str | os.PathLike[str], *, check_arrays: bool = True) -> Reference:
    """Open and validate a reference directory. Raises FormatError (one line) on anything
    malformed, tampered with or hostile; reads nothing outside `path`.

    check_arrays: also open `arrays.npz` and check that it holds exactly the keys, shapes
    and dtypes the manifest promises (its sha256 is checked in every case).
    """
    where = Path(path)
    entries = _list_dir(where)
    if MANIFEST not in entries:
        raise FormatError(f"{where}: no {MANIFEST}: not a reference directory")
    doc = _read_manifest(where)

    # every field present, none unknown; the schema first
    if doc.get("schema") != SCHEMA:
        raise _fail(where, "schema", f"{doc.get('schema')!r} is not {SCHEMA!r}")
    missing = [f for f in _TOP_FIELDS if f not in doc]
    extra = sorted(set(doc) - set(_TOP_FIELDS))
    if missing:
        raise _fail(where, missing[0], "missing")
    if extra:
        raise _fail(where, extra[0], "unknown field")
    if not _is_hex(doc["self_sha256"], 32):
        raise _fail(where, "self_sha256", "not a sha256 hex digest")
    if _self_hash(doc) != doc["self_sha256"]:
        raise _fail(where, "self_sha256", "does not match the document (edited after "
                                          "publishing?)")

    # files: names first (never build a path from an unchecked name), then their hashes
    files = doc["files"]
    if not isinstance(files, dict):
        raise _fail(where, "files", "must be an object")
    for name, entry in files.items():
        if name not in _FILES:
            raise _fail(where, f"files.{name}", f"{name!r} is not a file of a reference "
                                                f"(only {', '.join(_FILES)})")
        if not isinstance(entry, dict) or set(entry) != {"sha256", "size"} or \
                not _is_hex(entry["sha256"], 32) or not _is_int(entry["size"]) or \
                entry["size"] < 0:
            raise _fail(where, f"files.{name}", "must be {\"sha256\": hex, \"size\": bytes}")
    unexpected = sorted(entries - {MANIFEST} - set(files))
    if unexpected:
        raise FormatError(f"{where}: {unexpected[0]}: a file the manifest does not list "
                          "(refused)")
    if not isinstance(doc["digests_only"], bool):
        raise _fail(where, "digests_only", "must be true or false")
    if doc["digests_only"] == (ARRAYS in files):
        raise _fail(where, "files", f"{ARRAYS} must be listed exactly when digests_only "
                                    "is false")
    for name, entry in files.items():
        if name not in entries:
            raise FormatError(f"{where}: {name}: missing (the manifest lists it)")
        size = _regular(where, name)
        if size != entry["size"]:
            raise FormatError(f"{where}: {name}: {size} bytes, the manifest says "
                              f"{entry['size']} (tampered with?)")
        digest, _ = file_sha256(where / name)
        if digest != entry["sha256"]:
            raise FormatError(f"{where}: {name}: sha256 mismatch (manifest "
                              f"{entry['sha256'][:16]}..., file {digest[:16]}...): "
                              "tampered with or corrupt")

    # the identity fields
    for field in ("stem", "box", "run_id"):
        if not isinstance(doc[field], str) or not doc[field] or key_problem(doc[field]):
            raise _fail(where, field, f"{doc[field]!r} is not a safe name")
    spec = doc["spec"]
    if not isinstance(spec, dict):
        raise _fail(where, "spec", "must be an object")
    if spec.get("stem") != doc["stem"]:
        raise _fail(where, "spec.stem", f"{spec.get('stem')!r} is not the reference's stem "
                                        f"{doc['stem']!r}")
    if not _is_hex(doc["spec_hash"], 32) or \
            hashlib.sha256(canonical_json(spec)).hexdigest() != doc["spec_hash"]:
        raise _fail(where, "spec_hash", "does not match the spec's content")
    ax = doc["steps_axis"]
    if ax is not None and not _is_int(ax):
        raise _fail(where, "steps_axis", f"{ax!r} is not an integer or null")
    for field in ("code", "environment"):
        if not isinstance(doc[field], dict):
            raise _fail(where, field, "must be an object")

    # the keys: shapes, dtypes, digest plans, block counts, bounds
    keys_doc, bounds = doc["keys"], doc["bounds"]
    if not isinstance(keys_doc, dict) or not keys_doc:
        raise _fail(where, "keys", "must be a non-empty object")
    if not isinstance(bounds, dict) or set(bounds) != set(keys_doc):
        raise _fail(where, "bounds", "must give a bound for exactly the reference's keys")
    keys: dict[str, KeyEntry] = {}
    for key, entry in keys_doc.items():
        kf = f"keys.{key}"
        if (why := key_problem(key)) is not None:
            raise _fail(where, kf, why)
        _check_bound(where, f"bounds.{key}", bounds[key])
        if not isinstance(entry, dict) or set(entry) != set(_KEY_FIELDS):
            raise _fail(where, kf, f"must hold exactly {', '.join(_KEY_FIELDS)}")
        dtype = parse_descr(entry["dtype"], f"{where}: {MANIFEST}: {kf}.dtype")
        shape = _check_shape(where, f"{kf}.shape", entry["shape"], dtype)
        try:
            nax = normalize_axis(ax, len(shape))
        except ValueError:
            raise _fail(where, "steps_axis", f"{ax} is out of range for {kf} of shape "
                                             f"{shape}") from None
        dg = entry["digest"]
        if not isinstance(dg, dict) or set(dg) != {"algorithm", "per_block"} or \
                not isinstance(dg["algorithm"], str) or not _is_int(dg["per_block"]) or \
                dg["per_block"] < 1:
            raise _fail(where, f"{kf}.digest", "must be {\"algorithm\": name, "
                                               "\"per_block\": integer >= 1}")
        blocks = entry["blocks"]
        expect = block_count(shape, nax, dg["per_block"])
        if not isinstance(blocks, list) or len(blocks) != expect:
            raise _fail(where, f"{kf}.blocks", f"must list {expect} digests (shape {shape}, "
                                               f"{dg['per_block']} per block)")
        nbytes = DIGEST_BYTES if dg["algorithm"] == DIGEST_ALGORITHM else None
        if not all(_is_hex(b, nbytes) if nbytes else isinstance(b, str) and len(b) <= 128
                   for b in blocks):
            raise _fail(where, f"{kf}.blocks", "holds a value that is not a digest")
        keys[key] = KeyEntry(key, shape, dtype, nax, dg["per_block"], dg["algorithm"],
                             tuple(blocks))

    ref = Reference(where, doc, keys)
    if check_arrays and not ref.digests_only:
        with ref.open_arrays() as arc:
            have = set(arc.keys())
            if have != set(keys):
                odd = sorted(have ^ set(keys))[0]
                raise FormatError(f"{where}: {ARRAYS}: {odd}: "
                                  + ("not in the manifest" if odd in have
                                     else "in the manifest, not in the arrays"))
            for key, e in keys.items():
                m = arc[key]
                if m.shape != e.shape or m.file_dtype != e.dtype:
                    raise FormatError(f"{where}: {ARRAYS}: {key}: shape {m.shape} dtype "
                                      f"{m.file_dtype.str}, the manifest says {e.shape} "
                                      f"{e.dtype.str}")
    return ref


def is_reference_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory holding a reference manifest (not yet validated)."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).exists()


# --- writing -----------------------------------------------------------------------------

def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 (or 2.0 when needed) .npy header for C-order data."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (dtype.str, tuple(shape))
    for version, prefix, fmt in (((1, 0), 10, "<H"), ((2, 0), 12, "<I")):
        pad = -(prefix + len(text) + 1) % 64
        body = (text + " " * pad + "\n").encode("latin1")
        if len(body) < (1 << (8 * struct.calcsize(fmt))):
            return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(body)) + body
    raise ValueError("header too long")  # pragma: no cover


def _copy_arrays(members: Iterable[Member], dest: Path) -> None:
    """Write the members into a new stored .npz, streamed in flat C-order pieces."""
    with zipfile.ZipFile(dest, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for m in members:
            with zf.open(f"{m.key}.npy", "w", force_zip64=True) as out:
                out.write(_npy_header(m.shape, m.dtype))
                for piece in m.chunks(None):
                    out.write(np.ascontiguousarray(piece).data)


def key_entries(members: Iterable[Member], steps_axis: int | None) -> dict[str, Any]:
    """The manifest's `keys` object for these members (each streamed once for digests)."""
    out: dict[str, Any] = {}
    for m in members:
        ax, per = digest_plan(m.shape, steps_axis)
        out[m.key] = {"shape": list(m.shape), "dtype": m.dtype.str,
                      "digest": {"algorithm": DIGEST_ALGORITHM, "per_block": per},
                      "blocks": key_digests(m, ax, per)}
    return out


def write_reference(out: str | os.PathLike[str], fields: Mapping[str, Any],
                    members: Iterable[Member], *, digests_only: bool = False) -> Path:
    """Publish a reference into the new directory `out` (never over an existing one).

    `fields`: the manifest's stem, box, run_id, spec, bounds, steps_axis, code and
    environment. The directory is built under a temporary name beside `out` and renamed
    into place at the end: readers see no reference or a whole one.
    """
    dest = Path(out)
    if os.path.lexists(dest):
        raise ToleranceError(f"{dest}: already exists (a reference is never overwritten)")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:  # `--out refs/stable` in a fresh project: its parents are made (nothing replaced)
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToleranceError(f"{parent}: cannot make the directory "
                             f"({exc.strerror or exc})") from None
    members = list(members)
    for m in members:
        if (why := key_problem(m.key)) is not None:
            raise ToleranceError(f"{m.path}: {m.key}: {why}")
    tmp = parent / f".{dest.name}.tmp-{os.getpid()}"
    try:
        os.mkdir(tmp)
    except OSError as exc:
        raise ToleranceError(f"{tmp}: cannot create ({exc.strerror or exc})") from None
    try:
        files: dict[str, Any] = {}
        if not digests_only:
            _copy_arrays(members, tmp / ARRAYS)
            digest, size = file_sha256(tmp / ARRAYS)
            files[ARRAYS] = {"sha256": digest, "size": size}
        spec = dict(fields["spec"])
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            **{k: fields[k] for k in ("stem", "box", "run_id", "spec")},
            "spec_hash": hashlib.sha256(canonical_json(spec)).hexdigest(),
            **{k: fields[k] for k in ("bounds", "steps_axis", "code", "environment")},
            "digests_only": digests_only,
            "keys": key_entries(members, fields["steps_axis"]),
            "files": files,
        }
        doc["self_sha256"] = _self_hash(doc)
        with open(tmp / MANIFEST, "x", encoding="ascii") as fh:
            fh.write(json.dumps(doc, indent=1, sort_keys=False, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:  # rename a directory: atomic; fails (ENOTEMPTY/EEXIST) if dest appeared
            if os.path.lexists(dest):
                raise FileExistsError
            os.rename(tmp, dest)
        except OSError:
            raise ToleranceError(f"{dest}: already exists (a reference is never "
                                 "overwritten)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


__all__ = ["ARRAYS", "KeyEntry", "MANIFEST", "Reference", "SCHEMA", "block_count",
           "canonical_json", "digest_plan", "file_sha256", "is_reference_dir",
           "key_digests", "key_entries", "key_problem", "read_reference", "write_reference"]
