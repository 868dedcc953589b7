"""`.npy` headers parsed without pickle (docs/layers.md "io").

The header is a Python-literal dict; it is read with `ast.literal_eval` (no code runs, no
pickle) and then validated field by field. Only plain numeric/text dtypes are accepted:
object, structured and void dtypes (the ones NumPy would need pickle or a field list for)
are refused. Every problem is a `FormatError` of one line naming the file and the key.
"""
from __future__ import annotations

import ast
import re
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tolerance._errors import FormatError

MAGIC = b"\x93NUMPY"
#: bytes before the header text: magic, version (2), header length (2 or 4)
_PREFIX_V1 = len(MAGIC) + 2 + 2
_PREFIX_V2 = len(MAGIC) + 2 + 4
#: a header longer than this is refused (NumPy itself refuses > 10000 by default)
MAX_HEADER_LEN = 65536
#: more dimensions than NumPy supports is a lie
MAX_NDIM = 64
#: no array is larger than this many bytes (2**62: far above any disk, far below overflow)
MAX_NBYTES = 1 << 62

# A simple dtype string: optional byte order, one type character, optional size, and for
# datetimes an optional unit. Anything else (lists, tuples, 'O', 'V', '[(...)]') is refused.
_DESCR_RE = re.compile(r"^[<>|=]?(?:[?bBhHiIlLqQpPeEfdgFDG]|[biufcSUa]\d+|[Mm]8(?:\[\d*[A-Za-z]+\])?)$")
_KINDS_OK = frozenset("biufcSUMm")
_KEYS = frozenset({"descr", "fortran_order", "shape"})


@dataclass(frozen=True)
class NpyHeader:
    """What a `.npy` header promises."""

    dtype: np.dtype          # as stored in the file (byte order included)
    shape: tuple[int, ...]
    fortran_order: bool
    version: tuple[int, int]
    header_size: int         # bytes from the magic to the first data byte

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def _fail(where: str, problem: str) -> FormatError:
    return FormatError(f"{where}: {problem}")


def parse_descr(descr: object, where: str) -> np.dtype:
    """The dtype of a header's `descr`, refusing anything but simple numeric/text types."""
    if not isinstance(descr, str):
        raise _fail(where, f"unsupported dtype descr {descr!r} (structured/void dtypes are refused)")
    if not _DESCR_RE.match(descr):
        raise _fail(where, f"unsupported dtype descr {descr!r}")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"invalid dtype descr {descr!r}: {exc}") from None
    if dtype.hasobject or dtype.kind not in _KINDS_OK or dtype.fields is not None:
        raise _fail(where, f"unsupported dtype {descr!r} (object/void dtypes are refused)")
    if dtype.itemsize == 0:
        raise _fail(where, f"dtype {descr!r} has itemsize 0")
    return dtype


def parse_header_text(text: str, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Validate the header dict literal: exact keys, a simple descr, a sane shape."""
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise _fail(where, "header is not a Python literal dict") from None
    if not isinstance(d, dict):
        raise _fail(where, "header is not a dict")
    keys = set(d)
    if keys != _KEYS:
        missing = sorted(str(k) for k in _KEYS - keys)
        extra = sorted(repr(k) for k in keys - _KEYS)
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unexpected " + ", ".join(extra))
        raise _fail(where, "header keys: " + "; ".join(parts))
    dtype = parse_descr(d["descr"], where)
    fortran = d["fortran_order"]
    if not isinstance(fortran, bool):
        raise _fail(where, f"header fortran_order is {fortran!r}, not a bool")
    shape = d["shape"]
    if not isinstance(shape, tuple):
        raise _fail(where, f"header shape {shape!r} is not a tuple")
    if len(shape) > MAX_NDIM:
        raise _fail(where, f"header shape has {len(shape)} dimensions (more than {MAX_NDIM})")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise _fail(where, f"header shape {shape!r} holds a non-integer")
        if dim < 0:
            raise _fail(where, f"header shape {shape!r} holds a negative dimension")
        if dim >= MAX_NBYTES:
            raise _fail(where, f"header shape {shape!r} is absurd")
    n = dtype.itemsize
    for dim in shape:
        if dim:
            n *= dim
            if n > MAX_NBYTES:
                raise _fail(where, f"header shape {shape!r} is absurd (more than 2**62 bytes)")
    return dtype, shape, fortran


def read_header(read: Callable[[int], bytes], where: str) -> NpyHeader:
    """Parse a header from `read(n)` (which must return exactly n bytes or fewer at EOF).

    Reads only the prefix and the header text: never more than MAX_HEADER_LEN + 12 bytes.
    """
    prefix = read(len(MAGIC) + 2)
    if len(prefix) < len(MAGIC) + 2:
        raise _fail(where, "truncated .npy header")
    if prefix[: len(MAGIC)] != MAGIC:
        raise _fail(where, "bad .npy magic (not a .npy array)")
    version = (prefix[6], prefix[7])
    if version == (1, 0):
        raw = read(2)
        if len(raw) < 2:
            raise _fail(where, "truncated .npy header")
        (hlen,) = struct.unpack("<H", raw)
        start = _PREFIX_V1
        encoding = "latin1"
    elif version in ((2, 0), (3, 0)):
        raw = read(4)
        if len(raw) < 4:
            raise _fail(where, "truncated .npy header")
        (hlen,) = struct.unpack("<I", raw)
        start = _PREFIX_V2
        encoding = "latin1" if version == (2, 0) else "utf8"
    else:
        raise _fail(where, f"unsupported .npy version {version[0]}.{version[1]}")
    if hlen > MAX_HEADER_LEN:
        raise _fail(where, f".npy header length {hlen} is absurd")
    body = read(hlen)
    if len(body) < hlen:
        raise _fail(where, "truncated .npy header")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        raise _fail(where, "header is not valid text") from None
    if not text.endswith("\n"):
        raise _fail(where, "header does not end with a newline")
    stripped = text.rstrip(" \n")
    if stripped.strip(" ") != stripped or "\n" in stripped or "\x00" in text:
        raise _fail(where, "header padding is not spaces")
    dtype, shape, fortran = parse_header_text(stripped, where)
    return NpyHeader(dtype=dtype, shape=shape, fortran_order=fortran, version=version,
                     header_size=start + hlen)
