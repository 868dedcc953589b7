"""The one canonical divergence kernel: `divergence`, `Divergence`, `Accumulator`,
`assert_bounded` (docs/numbers.md, docs/run.md "Memory").

The figures come from the native kernels (`tolerance._native.compute`); this module only
checks arguments, moves the steps axis to the front (a view: nothing is copied) and turns
the native statistics into a `Divergence`.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from tolerance import _native
from tolerance.compare import _wire

__all__ = ["Divergence", "divergence", "Accumulator", "EqualScan", "assert_bounded",
           "SUPPORTED_DTYPES"]

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


def _check_bound(name: str, v: Any) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number >= 0 or None, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0 or None, got {v!r}") from None
    if not f >= 0.0:
        raise ValueError(f"{name} must be >= 0 or None, got {f}")
    return f


def _check_params(atol: Any, rtol: Any, ulp: Optional[int], threads: Optional[int]):
    """Validated (atol, rtol, ulp, threads, atol_steps): atol may be one number, None, or a
    1-D sequence of per-step values (then atol is None and atol_steps holds them)."""
    atol_steps = None
    if atol is not None and np.ndim(atol) == 1:
        atol_steps = np.array(atol, dtype=np.float64)
        if not np.all(atol_steps >= 0.0):
            raise ValueError("per-step atol values must be >= 0")
        atol = None
    elif atol is not None and np.ndim(atol) > 1:
        raise ValueError(f"atol must be a number, None or one value per step, got {np.ndim(atol)}-d")
    atol, rtol = _check_bound("atol", atol), _check_bound("rtol", rtol)
    if ulp is not None:
        if isinstance(ulp, (bool, np.bool_)) or not isinstance(ulp, (int, np.integer)) or ulp < 0:
            raise ValueError(f"ulp must be an integer >= 0 or None, got {ulp!r}")
        ulp = int(ulp)
    if threads is None:
        threads = _default_threads()
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    return atol, rtol, ulp, int(threads), atol_steps


def _kernel_bound(atol: Optional[float], rtol: Optional[float], ulp: Optional[int],
                  has_steps: bool) -> Tuple[float, float, int]:
    """The bound as the kernel takes it (docs/numbers.md "The bound": an element is inside when it meets every
    bound that is set; none set: inside means equal). An unset atol/rtol counts as 0 in
    atol + rtol*max(|a|,|b|) when the other is set; with only ulp set that test is off
    (atol = +inf); with nothing set both are 0, so inside means |a-b| = 0, i.e. equal."""
    kulp = _U64_MAX if ulp is None else min(ulp, _U64_MAX)
    if atol is None and rtol is None and not has_steps:
        return (math.inf if ulp is not None else 0.0), 0.0, kulp
    return (atol or 0.0), (rtol or 0.0), kulp


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


def _fmt_float(x: float) -> str:
    return f"{x:.6g}"


@dataclass(frozen=True, repr=False)
class Divergence:
    """How far two arrays are apart (docs/numbers.md)."""

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
    #: how much of its bound the worst element uses: max over elements of |a-b| / allowed
    #: (allowed = atol + rtol*max(|a|,|b|)) and ULP distance / ulp; <= 1 passes; inf for
    #: a NaN or inf mismatch; None when no bound is set
    margin: Optional[float] = None
    #: the margin per step (None when no bound is set)
    series_margin: Optional[np.ndarray] = None

    def __repr__(self) -> str:
        where = "" if self.argmax is None else f" at {self.argmax}"
        parts = [f"max_abs={_fmt_float(self.max_abs)}{where}", f"max_rel={_fmt_float(self.max_rel)}"]
        if self.max_ulp is not None:
            parts.append(f"max_ulp={self.max_ulp}")
        parts.append(f"over={self.count_over}/{self.size}")
        if self.nan_mismatch or self.inf_mismatch:
            parts.append(f"nan_mismatch={self.nan_mismatch}, inf_mismatch={self.inf_mismatch}")
        if self.onset is not None:
            parts.append(f"onset={self.onset}")
        if self.margin is not None:
            parts.append(f"margin={_fmt_float(self.margin)}")
        parts.append(f"steps={self.series.size}, within={self.within}")
        return "Divergence(" + ", ".join(parts) + ")"

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
            "margin": None if self.margin is None else _json_float(self.margin),
            "series_margin": None if self.series_margin is None
            else [_json_float(float(x)) for x in self.series_margin],
        }


class EqualScan:
    """The statistics of one block folded against itself (`Accumulator.update_equal`), at
    offset 0, built from one pass that counts NaNs (csrc/kernels_equal.cpp).

    With the steps axis first (or none), the pass can go piece by piece: `add(lo, hi)` scans
    rows [lo, hi) of axis 0, in order, so a caller can scan each piece while it is still in
    cache (`io.digest.block_digest(block, each=scan.add)`); `stats()` scans what is left.
    Other steps axes are scanned whole by `stats()` (`add` does nothing then).
    """

    def __init__(self, block: np.ndarray, steps_axis: Optional[int], *,
                 threads: Optional[int] = None) -> None:
        self.block = block
        self.steps_axis = steps_axis
        # an unsupported dtype is refused by stats() (and by update_equal's checks first)
        name = block.dtype.newbyteorder("=").name if block.dtype.kind in "biuf" else None
        self._code = _CODES.get(name) if block.dtype.fields is None else None
        self._swap = _swapped(block.dtype)
        self._threads = _default_threads() if threads is None else int(threads)
        ax = None if steps_axis is None or block.ndim == 0 else _norm_axis(steps_axis, block.ndim)
        # pieces along axis 0 are whole steps (axis 0) or consecutive flat C-order elements
        # (no steps axis); for another axis the block is scanned whole, steps first
        self.by_pieces = self._code is not None and block.ndim > 0 and \
            (steps_axis is None or ax == 0)
        self._ax = ax
        self._row = math.prod(block.shape[1:]) if block.ndim > 0 else 1
        self._done = 0
        self._stats: Any = None
        self._one_thread = _native.Request(threads=1)  # each piece is one core's cache load

    def add(self, lo: int, hi: int) -> None:
        """Scan rows [lo, hi) of axis 0 (they follow the rows scanned so far)."""
        if not self.by_pieces or hi <= lo:
            return
        if lo != self._done:
            raise ValueError(f"pieces out of order: rows {lo}..{hi} after {self._done}")
        piece = self.block[lo:hi]
        if self.steps_axis is None:
            st = _native.compute_equal(piece[np.newaxis], self._code, self._swap,
                                       self._one_thread)
            shift = (0, lo * self._row)
        else:
            st = _native.compute_equal(piece, self._code, self._swap, self._one_thread)
            shift = (lo, 0)
        if self._stats is None:
            self._stats = _native.Stats()
        self._stats.merge(st, *shift)
        self._done = hi

    def stats(self) -> Any:
        """The statistics of the whole block (what is not scanned yet is scanned now)."""
        x = self.block
        if self._code is None:
            _dtype_name(x.dtype)  # TypeError naming the supported dtypes
        if self._stats is None:  # nothing scanned by pieces: the whole block in one call
            x2 = x[np.newaxis] if self.steps_axis is None or x.ndim == 0 \
                else np.moveaxis(x, self._ax, 0)
            self._stats = _native.compute_equal(x2, self._code, self._swap,
                                                _native.Request(threads=self._threads))
            self._done = x.shape[0] if x.ndim else 0
        elif self._done < x.shape[0]:
            self.add(self._done, x.shape[0])
        return self._stats


class Accumulator:
    """Folds chunk pairs, in order, into the statistics of the whole arrays.

    Bounds (each optional, None = unset; docs/numbers.md "The bound"): ``atol``, ``rtol``, ``ulp``.
    ``atol`` may also be a 1-D sequence with one value per step of the whole array
    (a per-step bound; needs a steps axis). With a steps axis, each `update` is a block of
    consecutive steps along it (``first_step``: the index in the whole array of the first step
    this accumulator folds, so that per-step atol values are looked up there; a part that
    merges after another starts where that one ends); with ``steps_axis=None`` each update is the next flat
    C-order piece of the one step. `merge` takes an accumulator covering what comes right
    after; `to_bytes`/`from_bytes` carry one across processes (compare/_wire.py).
    """

    def __init__(self, *, atol: Any = None, rtol: Optional[float] = None,
                 ulp: Optional[int] = None, steps_axis: Optional[int] = 0,
                 threads: Optional[int] = None, first_step: int = 0):
        self.atol, self.rtol, self.ulp, self.threads, self.atol_steps = \
            _check_params(atol, rtol, ulp, threads)
        if steps_axis is not None and (isinstance(steps_axis, bool)
                                       or not isinstance(steps_axis, (int, np.integer))):
            raise TypeError(f"steps_axis must be an integer or None, got {steps_axis!r}")
        if steps_axis is None and self.atol_steps is not None:
            raise ValueError("per-step atol values need a steps axis (steps_axis is None)")
        self.steps_axis = None if steps_axis is None else int(steps_axis)
        if isinstance(first_step, bool) or not isinstance(first_step, (int, np.integer)) \
                or first_step < 0:
            raise ValueError(f"first_step must be an integer >= 0, got {first_step!r}")
        self.first_step = int(first_step)
        self.steps = 0
        self._inner = 0  # elements folded into the one step (steps_axis=None)
        self._names: Optional[Tuple[str, str]] = None
        self._step_shape: Optional[Tuple[int, ...]] = None
        self._stats = _native.Stats()

    @property
    def bounded(self) -> bool:
        """Whether any bound is set (with none, inside means equal and margin is None)."""
        return not (self.atol is None and self.rtol is None and self.ulp is None
                    and self.atol_steps is None)

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

    def _request(self, a: np.ndarray, b: np.ndarray):
        """Checks a block pair; (a, b with the steps axis first, dtype names, request)."""
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
        katol, krtol, kulp = _kernel_bound(self.atol, self.rtol, self.ulp,
                                           self.atol_steps is not None)
        req = _native.Request(atol=katol, rtol=krtol, ulp=kulp,
                              ulp_margin=-1.0 if self.ulp is None else float(self.ulp),
                              want_ulp=names[0] == names[1] and names[0] in _FLOATS,
                              step_offset=step_offset, inner_offset=inner_offset,
                              threads=self.threads)
        if self.atol_steps is not None:
            n, at = a2.shape[0], self.first_step + self.steps
            if at + n > self.atol_steps.size:
                raise ValueError(f"per-step atol has {self.atol_steps.size} values, but step "
                                 f"{at + n - 1} was given")
            req.atol_steps = self.atol_steps[at:at + n]
        return a2, b2, names, req

    def _folded(self, st: Any, a: np.ndarray, steps: int, shifted: bool = False
                ) -> "Accumulator":
        """Merge the statistics of block `a` (`shifted`: computed at offset 0, so they move
        to where this accumulator ends; else computed there already)."""
        if not shifted and self.steps == 0 and self._inner == 0:
            # the first piece, fresh from compute (not shared, as an EqualScan's statistics
            # may be): taken as it is, since merging into empty statistics copies it
            self._stats = st
        elif self.steps_axis is None:
            self._stats.merge(st, 0, self._inner if shifted else 0)
        else:
            self._stats.merge(st, self.steps if shifted else 0, 0)
        if self.steps_axis is None:
            self._inner += a.size
            self.steps = 1
        else:
            self.steps += steps
        return self

    def update(self, a_chunk: Any, b_chunk: Any) -> "Accumulator":
        a, b = np.asarray(a_chunk), np.asarray(b_chunk)
        a2, b2, names, req = self._request(a, b)
        st = _native.compute(a2, _CODES[names[0]], _swapped(a.dtype), b2, _CODES[names[1]],
                             _swapped(b.dtype), req)
        return self._folded(st, a, a2.shape[0])

    def update_equal(self, chunk: Any, scan: "EqualScan | None" = None) -> "Accumulator":
        """Fold a block that is equal on both sides: exactly what ``update(chunk, chunk)``
        folds (every figure, every check), from one pass over the block that only counts its
        NaNs (integer and bool blocks are not read at all). `scan`: an `EqualScan` of this
        very block (e.g. built while the block was hashed), used instead of a new pass."""
        x = np.asarray(chunk) if scan is None else scan.block
        if scan is not None and (scan.block is not chunk or scan.steps_axis != self.steps_axis):
            raise ValueError("the scan is of another block or steps axis")
        x2, _, _, _ = self._request(x, x)  # every check update(x, x) makes
        if scan is None:
            scan = EqualScan(x, self.steps_axis, threads=self.threads)
        return self._folded(scan.stats(), x, x2.shape[0], shifted=True)

    def _settings(self):
        return (self.atol, self.rtol, self.ulp, self.steps_axis,
                None if self.atol_steps is None else self.atol_steps.tobytes())

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Fold `other`, which covers the steps (or flat pieces) right after self's; in place."""
        if not isinstance(other, Accumulator):
            raise TypeError(f"can only merge an Accumulator, got {type(other).__name__}")
        if self._settings() != other._settings():
            raise ValueError(f"cannot merge accumulators with different settings "
                             f"(atol, rtol, ulp, steps_axis, per-step atol): "
                             f"{self._settings()[:4]} vs {other._settings()[:4]}")
        if self.atol_steps is not None and other.first_step != self.first_step + self.steps:
            raise ValueError(f"the other accumulator starts at step {other.first_step}, but "
                             f"this one ends at step {self.first_step + self.steps}")
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
        return self._result(shape, last=False)

    def _result(self, shape: Optional[Sequence[int]], last: bool) -> Divergence:
        # last: nothing folds into this accumulator afterwards, so the series arrays move
        # into the result without a copy
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
        onset = int(st.onset)
        if last:
            series, series_over, series_margin = st._take_series()
        else:
            raw = st.series
            # -1 marks a step without a compared pair; a select, not a float max, so that a
            # process-wide DAZ cannot flush a subnormal figure here either
            series = np.where(raw < 0.0, 0.0, raw)
            series_over = st.series_over.astype(np.int64, copy=False)
            series_margin = st.series_margin
        compared = st.max_abs >= 0.0
        argmax = self._full_index(st.arg_step, st.arg_inner, full) if compared else None
        argmax_rel = self._full_index(st.rel_step, st.rel_inner, full) if compared else None
        step = (0 if self.steps_axis is None else int(st.arg_step)) if compared else None
        names = self._names
        same_float = names is not None and names[0] == names[1] and names[0] in _FLOATS
        bounded = self.bounded
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
            onset=onset if onset >= 0 else None,
            series=series,
            series_over=series_over,
            within=int(st.count_over) == 0,
            argmax_rel=argmax_rel,
            margin=float(st.margin) if bounded else None,
            series_margin=series_margin if bounded else None,
        )

    # -- serialization ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return _wire.encode(_wire.State(
            atol=self.atol, rtol=self.rtol, ulp=self.ulp, atol_steps=self.atol_steps,
            first_step=self.first_step,
            steps_axis=self.steps_axis, steps=self.steps, inner=self._inner, names=self._names,
            step_shape=self._step_shape, stats=self._stats))

    @classmethod
    def from_bytes(cls, data: bytes, *, threads: Optional[int] = None) -> "Accumulator":
        """Rebuild an accumulator from `to_bytes`; ValueError naming the field on anything
        malformed or inconsistent."""
        s = _wire.decode(data)
        acc = cls(atol=s.atol if s.atol_steps is None else s.atol_steps, rtol=s.rtol, ulp=s.ulp,
                  steps_axis=s.steps_axis, threads=threads, first_step=s.first_step)
        acc.steps, acc._inner = s.steps, s.inner
        acc._names, acc._step_shape = s.names, s.step_shape
        acc._stats = s.stats
        return acc


def divergence(a: Any, b: Any, *, atol: Any = None, rtol: Optional[float] = None,
               ulp: Optional[int] = None, steps_axis: Optional[int] = 0,
               threads: Optional[int] = None) -> Divergence:
    """Divergence of two arrays of the same shape (docs/numbers.md). Each bound is
    optional (None = unset): an element is inside when it meets every bound that is set
    (|a-b| <= atol + rtol*max(|a|,|b|) when atol or rtol is set, ULP distance <= ulp when
    ulp is set); with no bound set, inside means equal. `atol` may be one value per step."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 0:
        steps_axis = None
    elif steps_axis is not None:
        _norm_axis(steps_axis, a.ndim)
    acc = Accumulator(atol=atol, rtol=rtol, ulp=ulp, steps_axis=steps_axis, threads=threads)
    return acc.update(a, b)._result(a.shape, last=True)


def _fmt_index(idx: Optional[Tuple[int, ...]]) -> str:
    return "none" if idx is None else "(" + ", ".join(str(i) for i in idx) + ")"


def _describe(atol: Any, rtol: Optional[float], ulp: Optional[int]) -> str:
    parts = []
    if atol is not None:
        parts.append(f"atol={atol:g}" if np.ndim(atol) == 0 else "atol=<per step>")
    if rtol is not None:
        parts.append(f"rtol={rtol:g}")
    if ulp is not None:
        parts.append(f"ulp={ulp}")
    return ", ".join(parts) if parts else "no bound set: equal required"


def assert_bounded(actual: Any, desired: Any, *, atol: Any = None, rtol: Optional[float] = None,
                   ulp: Optional[int] = None, steps_axis: Optional[int] = 0) -> None:
    """Raise AssertionError, with a numpy/torch-style report, unless every element of
    `actual` is inside the bound around `desired` (symmetric: neither is the reference).
    Bounds as in `divergence` (None = unset; none set: equal required)."""
    __tracebackhide__ = True  # pytest shows the caller's line, not this function's frames
    a, b = np.asarray(actual), np.asarray(desired)
    if a.shape != b.shape:
        raise AssertionError(f"Arrays have different shapes: {a.shape} vs {b.shape}")
    d = divergence(a, b, atol=atol, rtol=rtol, ulp=ulp, steps_axis=steps_axis)
    if d.within:
        return
    pct = 100.0 * d.count_over / d.size if d.size else 0.0
    lines = [
        f"Arrays are not within the bound ({_describe(atol, rtol, ulp)})",
        f"Mismatched elements: {d.count_over} / {d.size} ({pct:.3g}%)",
    ]
    if d.nan_mismatch or d.inf_mismatch:
        lines.append(f"  of which NaN mismatches: {d.nan_mismatch} (NaN against a number), "
                     f"inf mismatches: {d.inf_mismatch} (inf against another value); "
                     f"these fail whatever the bound")
    if d.argmax is not None:
        x, y = a[d.argmax], b[d.argmax]
        if atol is None and rtol is None:
            allowed = "" if ulp is not None else " (equal required)"
        else:
            at = 0.0 if atol is None else (float(atol) if np.ndim(atol) == 0
                                           else float(np.asarray(atol)[d.step]))
            rt = 0.0 if rtol is None else float(rtol)
            mx = max(abs(float(x)), abs(float(y)))
            allowed = (f" (allowed there: {at + rt * mx:.6g} = atol {at:g} + rtol {rt:g} "
                       f"* max(|a|,|b|) {mx:.6g})")
        lines.append(f"Greatest absolute difference: {d.max_abs!r} at index "
                     f"{_fmt_index(d.argmax)}{allowed}; actual {x!r}, desired {y!r}")
        lines.append(f"Greatest relative difference: {d.max_rel!r} at index "
                     f"{_fmt_index(d.argmax_rel)}")
    else:
        lines.append("No element compared (every mismatch involves a NaN)")
    if d.max_ulp is not None:
        lines.append(f"Greatest ULP distance: {d.max_ulp}"
                     + ("" if ulp is None else f" (up to {ulp} allowed)"))
    if d.margin is not None:
        lines.append(f"Margin: {d.margin:.6g} (the share of the bound the worst element uses; "
                     f"<= 1 passes)")
    lines.append(f"Onset step: {d.onset}" + ("" if steps_axis is None else f" (steps axis {steps_axis})"))
    raise AssertionError("\n".join(lines))
