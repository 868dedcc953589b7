"""The one canonical divergence kernel: `divergence`, `Divergence`, `Accumulator`,
`assert_bounded` (DESIGN.md "The numbers", "Streaming and memory").

The figures come from the native kernels (`tolerance._native.compute`); this module only
checks arguments, moves the steps axis to the front (a view: nothing is copied) and turns
the native statistics into a `Divergence`.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from tolerance import _native

__all__ = ["Divergence", "divergence", "Accumulator", "assert_bounded", "SUPPORTED_DTYPES"]

#: dtype name -> native code (csrc/kernels.hpp enum DType)
_CODES = {
    "bool": 0, "int8": 1, "int16": 2, "int32": 3, "int64": 4,
    "uint8": 5, "uint16": 6, "uint32": 7, "uint64": 8,
    "float16": 9, "float32": 10, "float64": 11,
}
SUPPORTED_DTYPES = tuple(_CODES)
_SUPPORTED_TEXT = ", ".join(SUPPORTED_DTYPES)
_FLOATS = ("float16", "float32", "float64")
_U64_MAX = 2**64 - 1

_env_kernel = os.environ.get("TOLERANCE_KERNEL")
if _env_kernel and _env_kernel not in ("auto", _native.kernel_isa()):
    warnings.warn(f"TOLERANCE_KERNEL={_env_kernel!r} is not available on this CPU (choices: "
                  f"{', '.join(_native._available_kernels())}); using {_native.kernel_isa()!r}",
                  RuntimeWarning, stacklevel=2)


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _dtype_name(dt: np.dtype) -> str:
    """Canonical dtype name (byte order dropped), or TypeError naming the supported set."""
    if dt.kind in "biuf" and dt.fields is None and dt.subdtype is None:
        name = dt.newbyteorder("=").name
        if name in _CODES:
            return name
    raise TypeError(f"unsupported dtype {dt}: supported dtypes are {_SUPPORTED_TEXT}")


def _check_pair(da: np.dtype, db: np.dtype, ulp: Optional[int]) -> Tuple[str, str]:
    na, nb = _dtype_name(da), _dtype_name(db)
    if (na in _FLOATS) != (nb in _FLOATS):
        raise TypeError(f"cannot compare {na} with {nb}: a float dtype compares only with a float "
                        f"dtype and an integer or bool dtype only with an integer or bool dtype "
                        f"(supported dtypes are {_SUPPORTED_TEXT})")
    if ulp is not None and not (na == nb and na in _FLOATS):
        raise ValueError(f"ulp needs both inputs of the same float type, got {na} and {nb}")
    return na, nb


def _swapped(dt: np.dtype) -> bool:
    return dt.itemsize > 1 and not dt.isnative


def _check_params(atol: float, rtol: float, ulp: Optional[int], threads: Optional[int]):
    atol, rtol = float(atol), float(rtol)
    if not atol >= 0.0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    if not rtol >= 0.0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    if ulp is not None:
        if isinstance(ulp, (bool, np.bool_)) or not isinstance(ulp, (int, np.integer)) or ulp < 0:
            raise ValueError(f"ulp must be an integer >= 0 or None, got {ulp!r}")
        ulp = int(ulp)
    if threads is None:
        threads = _default_threads()
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    return atol, rtol, ulp, int(threads)


def _norm_axis(axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"steps_axis must be an integer or None, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"steps_axis {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def _unravel(flat: int, shape: Sequence[int]) -> Tuple[int, ...]:
    out = []
    for n in reversed(shape):
        out.append(flat % n if n else 0)
        flat = flat // n if n else 0
    return tuple(reversed(out))


def _json_float(x: float) -> Any:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


@dataclass(frozen=True)
class Divergence:
    """How far two arrays are apart (DESIGN.md "The numbers")."""

    max_abs: float
    argmax: Optional[Tuple[int, ...]]
    step: Optional[int]
    max_rel: float
    max_ulp: Optional[int]
    count_over: int
    nan_mismatch: int
    nan_both: int
    inf_mismatch: int
    size: int
    onset: Optional[int]
    series: np.ndarray
    series_over: np.ndarray
    within: bool
    #: index of the first greatest relative difference (extra; used by assert_bounded)
    argmax_rel: Optional[Tuple[int, ...]] = None

    def to_dict(self) -> dict:
        """A JSON-safe dict: non-finite floats as "nan"/"inf"/"-inf", tuples and arrays as lists."""
        return {
            "max_abs": _json_float(self.max_abs),
            "argmax": None if self.argmax is None else list(self.argmax),
            "step": self.step,
            "max_rel": _json_float(self.max_rel),
            "max_ulp": self.max_ulp,
            "count_over": self.count_over,
            "nan_mismatch": self.nan_mismatch,
            "nan_both": self.nan_both,
            "inf_mismatch": self.inf_mismatch,
            "size": self.size,
            "onset": self.onset,
            "series": [_json_float(float(x)) for x in self.series],
            "series_over": [int(x) for x in self.series_over],
            "within": self.within,
        }


_MAGIC = b"TOLACC"
_VERSION = 1
# magic, version, flags, atol, rtol, ulp, steps_axis, steps, inner, a-name len, b-name len, ndim
_HEAD = struct.Struct("<6sHIddQqqqBBH")
# max_abs, arg_step, arg_inner, max_rel, rel_step, rel_inner, max_ulp, count_over,
# nan_mismatch, nan_both, inf_mismatch, size, step0, series length
_STATS = struct.Struct("<dqqdqqQqqqqqqq")
_F_ULP, _F_AXIS_NONE, _F_STARTED = 1, 2, 4


class Accumulator:
    """Folds chunk pairs, in order, into the statistics of the whole arrays.

    With a steps axis, each `update` is a block of consecutive steps along it; with
    ``steps_axis=None`` each update is the next flat C-order piece of the one step.
    `merge` takes an accumulator covering what comes right after; `to_bytes`/`from_bytes`
    carry one across processes (a versioned little-endian format, no pickle).
    """

    def __init__(self, *, atol: float = 0.0, rtol: float = 0.0, ulp: Optional[int] = None,
                 steps_axis: Optional[int] = 0, threads: Optional[int] = None):
        self.atol, self.rtol, self.ulp, self.threads = _check_params(atol, rtol, ulp, threads)
        if steps_axis is not None and (isinstance(steps_axis, bool)
                                       or not isinstance(steps_axis, (int, np.integer))):
            raise TypeError(f"steps_axis must be an integer or None, got {steps_axis!r}")
        self.steps_axis = None if steps_axis is None else int(steps_axis)
        self.steps = 0
        self._inner = 0  # elements folded into the one step (steps_axis=None)
        self._names: Optional[Tuple[str, str]] = None
        self._step_shape: Optional[Tuple[int, ...]] = None
        self._stats = _native.Stats()

    # -- folding ------------------------------------------------------------------------
    def _fix(self, names: Tuple[str, str], step_shape: Optional[Tuple[int, ...]]) -> None:
        if self._names is None:
            self._names = names
        elif self._names != names:
            raise ValueError(f"dtypes changed: this accumulator holds {self._names[0]} vs "
                             f"{self._names[1]}, got {names[0]} vs {names[1]}")
        if step_shape is not None:
            if self._step_shape is None:
                self._step_shape = step_shape
            elif self._step_shape != step_shape:
                raise ValueError(f"per-step shape changed: this accumulator holds "
                                 f"{self._step_shape}, got {step_shape}")

    def update(self, a_chunk: Any, b_chunk: Any) -> "Accumulator":
        a, b = np.asarray(a_chunk), np.asarray(b_chunk)
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
        names = _check_pair(a.dtype, b.dtype, self.ulp)
        if self.steps_axis is None:
            self._fix(names, None)
            a2, b2 = a[np.newaxis], b[np.newaxis]
            step_offset, inner_offset = 0, self._inner
        else:
            if a.ndim == 0:
                raise ValueError("a 0-d chunk has no steps axis (use steps_axis=None)")
            ax = _norm_axis(self.steps_axis, a.ndim)
            a2, b2 = np.moveaxis(a, ax, 0), np.moveaxis(b, ax, 0)
            self._fix(names, a2.shape[1:])
            step_offset, inner_offset = self.steps, 0
        ulp = _U64_MAX if self.ulp is None else min(self.ulp, _U64_MAX)
        st = _native.compute(a2, _CODES[names[0]], _swapped(a.dtype), b2, _CODES[names[1]],
                             _swapped(b.dtype), self.atol, self.rtol, ulp,
                             names[0] == names[1] and names[0] in _FLOATS,
                             step_offset, inner_offset, self.threads)
        if self.steps_axis is None:
            self._stats.merge(st)
            self._inner += a.size
            self.steps = 1
        else:
            self._stats.merge(st)
            self.steps += a2.shape[0]
        return self

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Fold `other`, which covers the steps (or flat pieces) right after self's; in place."""
        if not isinstance(other, Accumulator):
            raise TypeError(f"can only merge an Accumulator, got {type(other).__name__}")
        mine = (self.atol, self.rtol, self.ulp, self.steps_axis)
        theirs = (other.atol, other.rtol, other.ulp, other.steps_axis)
        if mine != theirs:
            raise ValueError(f"cannot merge accumulators with different settings "
                             f"(atol, rtol, ulp, steps_axis): {mine} vs {theirs}")
        if other._names is not None:
            self._fix(other._names, other._step_shape)
        if self.steps_axis is None:
            self._stats.merge(other._stats, 0, self._inner)
            self._inner += other._inner
            self.steps = max(self.steps, other.steps)
        else:
            self._stats.merge(other._stats, self.steps, 0)
            self.steps += other.steps
        return self

    # -- results ------------------------------------------------------------------------
    def _full_index(self, step: int, inner: int, shape: Optional[Tuple[int, ...]]):
        if self.steps_axis is None:
            if shape is None:
                return (inner,)
            return _unravel(inner, shape)
        step_shape = self._step_shape or ()
        idx = list(_unravel(inner, step_shape))
        ax = _norm_axis(self.steps_axis, len(step_shape) + 1)
        idx.insert(ax, step)
        return tuple(idx)

    def result(self, shape: Optional[Sequence[int]] = None) -> Divergence:
        """The `Divergence` of everything folded so far. `shape`: the full array shape (needed
        with steps_axis=None to unravel argmax into an index of that shape)."""
        full = None if shape is None else tuple(int(n) for n in shape)
        if full is not None:
            if self.steps_axis is None:
                if math.prod(full) != self._inner:
                    raise ValueError(f"shape {full} holds {math.prod(full)} elements, but "
                                     f"{self._inner} were folded")
            elif self._step_shape is not None:
                expect = list(self._step_shape)
                ax = _norm_axis(self.steps_axis, len(expect) + 1)
                expect.insert(ax, self.steps)
                if tuple(expect) != full:
                    raise ValueError(f"shape {full} does not match the folded shape {tuple(expect)}")
        st = self._stats
        series = np.maximum(st.series, 0.0) if st.series.size else np.zeros(0)
        series_over = st.series_over.astype(np.int64, copy=False)
        if series.size < self.steps:  # nothing folded at all
            series = np.zeros(self.steps)
            series_over = np.zeros(self.steps, dtype=np.int64)
        compared = st.max_abs >= 0.0
        argmax = self._full_index(st.arg_step, st.arg_inner, full) if compared else None
        argmax_rel = self._full_index(st.rel_step, st.rel_inner, full) if compared else None
        step = (0 if self.steps_axis is None else int(st.arg_step)) if compared else None
        over = np.flatnonzero(series_over)
        names = self._names
        same_float = names is not None and names[0] == names[1] and names[0] in _FLOATS
        return Divergence(
            max_abs=float(st.max_abs) if compared else 0.0,
            argmax=argmax,
            step=step,
            max_rel=float(st.max_rel) if compared else 0.0,
            max_ulp=int(st.max_ulp) if same_float else None,
            count_over=int(st.count_over),
            nan_mismatch=int(st.nan_mismatch),
            nan_both=int(st.nan_both),
            inf_mismatch=int(st.inf_mismatch),
            size=int(st.size),
            onset=int(over[0]) if over.size else None,
            series=series,
            series_over=series_over,
            within=int(st.count_over) == 0,
            argmax_rel=argmax_rel,
        )

    # -- serialization ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        st = self._stats
        flags = (_F_ULP if self.ulp is not None else 0) | \
                (_F_AXIS_NONE if self.steps_axis is None else 0) | \
                (_F_STARTED if self._names is not None else 0)
        na, nb = (n.encode() for n in (self._names or ("", "")))
        step_shape = self._step_shape or ()
        series = np.ascontiguousarray(st.series, dtype="<f8")
        series_over = np.ascontiguousarray(st.series_over, dtype="<i8")
        parts = [
            _HEAD.pack(_MAGIC, _VERSION, flags, self.atol, self.rtol,
                       0 if self.ulp is None else min(self.ulp, _U64_MAX),
                       0 if self.steps_axis is None else self.steps_axis,
                       self.steps, self._inner, len(na), len(nb), len(step_shape)),
            na, nb, struct.pack(f"<{len(step_shape)}q", *step_shape),
            _STATS.pack(st.max_abs, st.arg_step, st.arg_inner, st.max_rel, st.rel_step,
                        st.rel_inner, st.max_ulp, st.count_over, st.nan_mismatch, st.nan_both,
                        st.inf_mismatch, st.size, st.step0, series.size),
            series.tobytes(), series_over.tobytes(),
        ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, threads: Optional[int] = None) -> "Accumulator":
        """Rebuild an accumulator from `to_bytes`; ValueError on anything malformed."""
        mv = memoryview(bytes(data))
        if len(mv) < _HEAD.size:
            raise ValueError("accumulator data is truncated (header)")
        (magic, version, flags, atol, rtol, ulp, axis, steps, inner, la, lb,
         ndim) = _HEAD.unpack_from(mv, 0)
        if magic != _MAGIC:
            raise ValueError("not accumulator data (bad magic)")
        if version != _VERSION:
            raise ValueError(f"unsupported accumulator data version {version} (this reads {_VERSION})")
        if flags & ~(_F_ULP | _F_AXIS_NONE | _F_STARTED):
            raise ValueError(f"accumulator data has unknown flags {flags:#x}")
        off = _HEAD.size
        need = off + la + lb + 8 * ndim + _STATS.size
        if len(mv) < need:
            raise ValueError("accumulator data is truncated (names, shape or statistics)")
        try:
            na = bytes(mv[off:off + la]).decode("ascii")
            nb = bytes(mv[off + la:off + la + lb]).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("accumulator data has malformed dtype names") from None
        off += la + lb
        step_shape = struct.unpack_from(f"<{ndim}q", mv, off)
        off += 8 * ndim
        fields = _STATS.unpack_from(mv, off)
        off += _STATS.size
        nser = fields[-1]
        if nser < 0 or len(mv) != off + 16 * nser:
            raise ValueError(f"accumulator data has {len(mv)} bytes, expected {off + 16 * max(nser, 0)}")
        started = bool(flags & _F_STARTED)
        if started and (na not in _CODES or nb not in _CODES):
            raise ValueError(f"accumulator data names unsupported dtypes {na!r}, {nb!r}")
        if not started and (la or lb):
            raise ValueError("accumulator data has dtype names but no data")
        if (steps < 0 or inner < 0 or any(n < 0 for n in step_shape)
                or any(v < 0 for v in fields[7:12]) or not atol >= 0 or not rtol >= 0):
            raise ValueError("accumulator data holds negative or invalid counts or bounds")
        acc = cls(atol=atol, rtol=rtol, ulp=ulp if flags & _F_ULP else None,
                  steps_axis=None if flags & _F_AXIS_NONE else axis, threads=threads)
        acc.steps, acc._inner = steps, inner
        if started:
            acc._names = (na, nb)
            if not flags & _F_AXIS_NONE:
                acc._step_shape = tuple(step_shape)
        st = acc._stats
        (st.max_abs, st.arg_step, st.arg_inner, st.max_rel, st.rel_step, st.rel_inner,
         st.max_ulp, st.count_over, st.nan_mismatch, st.nan_both, st.inf_mismatch, st.size,
         st.step0) = fields[:-1]
        st.series = np.frombuffer(mv, dtype="<f8", count=nser, offset=off)
        st.series_over = np.frombuffer(mv, dtype="<i8", count=nser, offset=off + 8 * nser)
        if nser > steps:
            raise ValueError("accumulator data has more series entries than steps")
        return acc


def divergence(a: Any, b: Any, *, atol: float = 0.0, rtol: float = 0.0, ulp: Optional[int] = None,
               steps_axis: Optional[int] = 0, threads: Optional[int] = None) -> Divergence:
    """Divergence of two arrays of the same shape (DESIGN.md "The numbers")."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 0:
        steps_axis = None
    elif steps_axis is not None:
        _norm_axis(steps_axis, a.ndim)
    acc = Accumulator(atol=atol, rtol=rtol, ulp=ulp, steps_axis=steps_axis, threads=threads)
    return acc.update(a, b).result(a.shape)


def _fmt_index(idx: Optional[Tuple[int, ...]]) -> str:
    return "none" if idx is None else "(" + ", ".join(str(i) for i in idx) + ")"


def assert_bounded(actual: Any, desired: Any, *, atol: float = 0.0, rtol: float = 0.0,
                   ulp: Optional[int] = None, steps_axis: Optional[int] = 0) -> None:
    """Raise AssertionError, with a numpy/torch-style report, unless every element of
    `actual` is inside the bound around `desired` (symmetric: neither is the reference)."""
    d = divergence(actual, desired, atol=atol, rtol=rtol, ulp=ulp, steps_axis=steps_axis)
    if d.within:
        return
    bounds = f"atol={atol:g}, rtol={rtol:g}" + ("" if ulp is None else f", ulp={ulp}")
    pct = 100.0 * d.count_over / d.size if d.size else 0.0
    lines = [
        f"Arrays are not within the bound ({bounds})",
        f"Mismatched elements: {d.count_over} / {d.size} ({pct:.3g}%)",
    ]
    if d.nan_mismatch or d.inf_mismatch:
        lines.append(f"  of which NaN mismatches: {d.nan_mismatch}, inf mismatches: {d.inf_mismatch}")
    lines.append(f"Greatest absolute difference: {d.max_abs!r} at index {_fmt_index(d.argmax)} "
                 f"(up to {atol:g} allowed)")
    lines.append(f"Greatest relative difference: {d.max_rel!r} at index {_fmt_index(d.argmax_rel)} "
                 f"(up to {rtol:g} allowed)")
    if d.max_ulp is not None:
        lines.append(f"Greatest ULP distance: {d.max_ulp}"
                     + ("" if ulp is None else f" (up to {ulp} allowed)"))
    lines.append(f"Onset step: {d.onset}" + ("" if steps_axis is None else f" (steps axis {steps_axis})"))
    raise AssertionError("\n".join(lines))
