"""The wire format of an `Accumulator` (what crosses processes and MPI ranks).

A versioned little-endian layout, no pickle: a fixed header (settings and shape), the
dtype names, the per-step shape, the optional per-step atol values, then the native
statistics in the one layout the C++ core defines (`_native.Stats.to_bytes`). `decode`
checks every field against the others before it allocates anything the bytes do not pay
for, and raises ValueError naming the field.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from tolerance import _native

MAGIC = b"TOLACC"
VERSION = 2
# magic, version, flags, atol, rtol, ulp, steps_axis, steps, inner, a-name len, b-name len,
# ndim, number of per-step atol values, first step
HEAD = struct.Struct("<6sHIddQqqqBBHqq")
F_ULP, F_AXIS_NONE, F_STARTED, F_ATOL, F_RTOL, F_ATOL_STEPS = 1, 2, 4, 8, 16, 32
_ALL_FLAGS = F_ULP | F_AXIS_NONE | F_STARTED | F_ATOL | F_RTOL | F_ATOL_STEPS
#: the longest dtype name is "float16"/"float32"/"float64"/"uint16"... (7 characters)
_MAX_NAME = 16
#: NumPy's own limit on the number of dimensions
_MAX_NDIM = 64
_FLOATS = ("float16", "float32", "float64")
_U64_MAX = 2**64 - 1


@dataclass
class State:
    """Everything an Accumulator carries (settings, progress, statistics)."""

    atol: Optional[float]
    rtol: Optional[float]
    ulp: Optional[int]
    atol_steps: Optional[np.ndarray]
    first_step: int
    steps_axis: Optional[int]
    steps: int
    inner: int
    names: Optional[Tuple[str, str]]
    step_shape: Optional[Tuple[int, ...]]
    stats: "_native.Stats"


def encode(s: State) -> bytes:
    flags = ((F_ULP if s.ulp is not None else 0) | (F_AXIS_NONE if s.steps_axis is None else 0)
             | (F_STARTED if s.names is not None else 0) | (F_ATOL if s.atol is not None else 0)
             | (F_RTOL if s.rtol is not None else 0)
             | (F_ATOL_STEPS if s.atol_steps is not None else 0))
    na, nb = (n.encode() for n in (s.names or ("", "")))
    step_shape = s.step_shape or ()
    atol_steps = (np.zeros(0, "<f8") if s.atol_steps is None
                  else np.ascontiguousarray(s.atol_steps, dtype="<f8"))
    return b"".join([
        HEAD.pack(MAGIC, VERSION, flags, 0.0 if s.atol is None else s.atol,
                  0.0 if s.rtol is None else s.rtol, 0 if s.ulp is None else min(s.ulp, _U64_MAX),
                  0 if s.steps_axis is None else s.steps_axis, s.steps, s.inner, len(na), len(nb),
                  len(step_shape), atol_steps.size, s.first_step),
        na, nb, struct.pack(f"<{len(step_shape)}q", *step_shape), atol_steps.tobytes(),
        s.stats.to_bytes(),
    ])


def _bad(field: str, why: str) -> ValueError:
    return ValueError(f"accumulator data field '{field}': {why}")


def decode(data: bytes) -> State:
    """The State in `data`; ValueError naming the field on anything malformed or inconsistent."""
    mv = memoryview(bytes(data))
    if len(mv) < HEAD.size:
        raise _bad("header", f"truncated ({len(mv)} bytes, the header alone takes {HEAD.size})")
    (magic, version, flags, atol, rtol, ulp, axis, steps, inner, la, lb, ndim,
     nat, first_step) = HEAD.unpack_from(mv, 0)
    if magic != MAGIC:
        raise _bad("magic", "not accumulator data")
    if version != VERSION:
        raise _bad("version", f"unsupported version {version} (this reads {VERSION})")
    if flags & ~_ALL_FLAGS:
        raise _bad("flags", f"unknown flags {flags:#x}")
    if la > _MAX_NAME or lb > _MAX_NAME:
        raise _bad("names", "dtype name too long")
    if ndim > _MAX_NDIM:
        raise _bad("ndim", f"{ndim} dimensions (at most {_MAX_NDIM})")
    off = HEAD.size
    # caps before any allocation: every length is paid for by bytes that are present
    if nat < 0 or nat > (len(mv) - off) // 8:
        raise _bad("atol_steps", f"{nat} values do not fit in {len(mv)} bytes")
    need = off + la + lb + 8 * ndim + 8 * nat + _native.Stats.FIXED_BYTES
    if len(mv) < need:
        raise _bad("length", f"truncated ({len(mv)} bytes, at least {need} needed)")
    try:
        na = bytes(mv[off:off + la]).decode("ascii")
        nb = bytes(mv[off + la:off + la + lb]).decode("ascii")
    except UnicodeDecodeError:
        raise _bad("names", "malformed dtype names") from None
    off += la + lb
    step_shape = struct.unpack_from(f"<{ndim}q", mv, off)
    off += 8 * ndim
    atol_steps = np.frombuffer(mv, dtype="<f8", count=nat, offset=off).astype(np.float64)
    off += 8 * nat
    try:
        stats = _native.Stats.from_bytes(mv[off:])  # read in place, no copy
    except ValueError as e:
        raise ValueError(f"accumulator data: {e}") from None

    started = bool(flags & F_STARTED)
    axis_none = bool(flags & F_AXIS_NONE)
    from tolerance.compare.kernel import SUPPORTED_DTYPES  # the public set of names
    if started and (na not in SUPPORTED_DTYPES or nb not in SUPPORTED_DTYPES):
        raise _bad("names", f"unsupported dtypes {na!r}, {nb!r}")
    if not started and (la or lb):
        raise _bad("names", "dtype names but no data")
    if steps < 0 or inner < 0:
        raise _bad("steps", "negative steps or elements")
    if any(n < 0 for n in step_shape):
        raise _bad("step_shape", "negative length")
    for name, v in (("atol", atol), ("rtol", rtol)):
        if not v >= 0.0:
            raise _bad(name, f"invalid bound {v}")
    if not flags & F_ATOL and atol != 0.0 or not flags & F_RTOL and rtol != 0.0:
        raise _bad("atol", "an unset bound with a value")
    if flags & F_ATOL_STEPS:
        if axis_none:
            raise _bad("atol_steps", "per-step bounds need a steps axis")
        if not np.all(atol_steps >= 0.0):
            raise _bad("atol_steps", "holds a negative or invalid bound")
        if first_step < 0 or nat - first_step < steps:
            raise _bad("atol_steps", f"{nat} values for steps {first_step}..{first_step + steps}")
    elif nat:
        raise _bad("atol_steps", "values without the flag")
    if first_step < 0:
        raise _bad("first_step", "negative")
    same_float = started and na == nb and na in _FLOATS
    if flags & F_ULP and started and not same_float:
        raise _bad("ulp", f"a ULP bound needs the same float type, got {na} and {nb}")
    if not same_float and stats.max_ulp != 0:
        raise _bad("max_ulp", "set without the same float type")
    series_len = stats.series.size
    if series_len != steps:
        raise _bad("steps", f"{steps} steps, but {series_len} series entries")
    if not started and steps:
        raise _bad("steps", "steps without data")
    if axis_none:
        if ndim:
            raise _bad("step_shape", "a shape without a steps axis")
        if steps != (1 if started else 0):
            raise _bad("steps", "steps_axis=None holds one step")
        if stats.size != inner:
            raise _bad("size", f"{stats.size} elements, but {inner} were folded")
        per_step = inner
    else:
        if inner:
            raise _bad("inner", "flat pieces with a steps axis")
        if not -ndim - 1 <= axis <= ndim:
            raise _bad("steps_axis", f"{axis} is out of range for {ndim + 1} dimensions")
        if not started and ndim:
            raise _bad("step_shape", "a shape but no data")
        per_step = math.prod(step_shape)
        if stats.size != steps * per_step:
            raise _bad("size", f"{stats.size} elements, but {steps} steps of {per_step}")
    if stats.max_abs >= 0.0:
        if not 0 <= stats.arg_step < steps or not 0 <= stats.arg_inner < per_step:
            raise _bad("arg_step", "argmax outside the array")
        if not 0 <= stats.rel_step < steps or not 0 <= stats.rel_inner < per_step:
            raise _bad("rel_step", "relative argmax outside the array")
    return State(atol=atol if flags & F_ATOL else None, rtol=rtol if flags & F_RTOL else None,
                 ulp=ulp if flags & F_ULP else None,
                 atol_steps=atol_steps if flags & F_ATOL_STEPS else None, first_step=first_step,
                 steps_axis=None if axis_none else axis, steps=steps, inner=inner,
                 names=(na, nb) if started else None,
                 step_shape=None if not started or axis_none else tuple(step_shape), stats=stats)
