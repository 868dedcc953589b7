"""The row: one (a, b, key) verdict, typed, carrying its bound and, when unmeasured, a
reason code plus a message. Built here only; `tolerance diff` and `tolerance run` both get
their rows from the one pair engine (compare.engine) through `measured_row` and
`unmeasured_row`.

The row's JSON form (`Row.to_json`, the `tolerance.diff/1` row) has the fields of
ROW_FIELDS in that order; non-finite numbers become the strings "nan", "inf", "-inf" so
the document is strict JSON. Callers decide on a row by its `code` (REASON_CODES), never
by its message text; no message names a command-line flag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from tolerance._errors import EXIT_EXCEEDED, EXIT_OK, EXIT_UNMEASURED, combine_exit_codes
from tolerance.compare.drift import growth_fit
from tolerance.config.spec import Bounds

SCHEMA = "tolerance.diff/1"

#: the fields of a row's JSON form, in order
ROW_FIELDS = ("a", "b", "key", "status", "code", "reason", "bound", "max_abs", "argmax",
              "step", "max_rel", "max_ulp", "count_over", "size", "nan_mismatch", "nan_both",
              "inf_mismatch", "onset", "margin", "growth")

PASS, FAIL, UNMEASURED = "pass", "fail", "unmeasured"

# Reason codes of unmeasured rows (the `code` field; `reason` is the message for people).
MISSING_KEY = "missing_key"              # a side has no such key
KEY_NOT_EVERYWHERE = "key_not_everywhere"  # diff: the key is not in every input
SHAPE_MISMATCH = "shape_mismatch"
DTYPE_MISMATCH = "dtype_mismatch"        # different kinds (float vs int, ...)
UNSUPPORTED_DTYPE = "unsupported_dtype"
ULP_NEEDS_SAME_FLOAT = "ulp_needs_same_float"
STEPS_AXIS_OUT_OF_RANGE = "steps_axis_out_of_range"
NO_OUTPUT = "no_output"                  # run: the box/chip failed, or its output is unreadable
MISSING_BOX = "missing_box"              # diff of stored runs: the box is not in one of the runs
KERNEL_REFUSED = "kernel_refused"        # the kernel raised on this pair's data
DIGESTS_DIFFER = "digests_differ"        # verify: a digests-only reference, bytes differ
REASON_CODES = (MISSING_KEY, KEY_NOT_EVERYWHERE, SHAPE_MISMATCH, DTYPE_MISMATCH,
                UNSUPPORTED_DTYPE, ULP_NEEDS_SAME_FLOAT, STEPS_AXIS_OUT_OF_RANGE, NO_OUTPUT,
                MISSING_BOX, KERNEL_REFUSED, DIGESTS_DIFFER)

# dtype classes that compare with each other (the kernel's supported set)
_CLASS = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def as_bound(b: Any) -> Bounds:
    """Any object with atol, rtol, ulp as a Bounds."""
    if isinstance(b, Bounds):
        return b
    return Bounds(atol=b.atol, rtol=b.rtol, ulp=b.ulp)


@dataclass(frozen=True)
class Problem:
    """Why something cannot be compared: a code from REASON_CODES and a message."""

    code: str
    message: str


@dataclass
class Row:
    """One (a, b, key) verdict. Unmeasured rows have nan floats, None ints, and code+reason."""

    a: str
    b: str
    key: str
    status: str
    bound: Bounds
    code: str | None = None
    reason: str | None = None
    max_abs: float = math.nan
    argmax: list[int] | None = None
    step: int | None = None
    max_rel: float = math.nan
    max_ulp: int | None = None
    count_over: int | None = None
    size: int | None = None
    nan_mismatch: int | None = None
    nan_both: int | None = None
    inf_mismatch: int | None = None
    onset: int | None = None
    #: how much of its bound the row uses (the kernel's; <= 1 passes); None: no bound set
    margin: float | None = None
    #: the growth fit of the per-step series (compare.drift.growth_fit), None: no growth
    growth: dict[str, Any] | None = None
    #: per-step max |a-b| (float64), count over the bound (int64) and margin (float64, when
    #: a bound is set); measured rows only
    series: np.ndarray | None = field(default=None, repr=False, compare=False)
    series_over: np.ndarray | None = field(default=None, repr=False, compare=False)
    series_margin: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        return {PASS: EXIT_OK, FAIL: EXIT_EXCEEDED, UNMEASURED: EXIT_UNMEASURED}[self.status]

    def to_json(self) -> dict[str, Any]:
        """The `tolerance.diff/1` row (strict JSON)."""
        out: dict[str, Any] = {}
        for f in ROW_FIELDS:
            v = getattr(self, f)
            out[f] = v.to_dict() if f == "bound" else \
                dict(v) if f == "growth" and v is not None else json_number(v)
        return out


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def measured_row(a: str, b: str, key: str, div: Any, bound: Any) -> Row:
    """A measured row from a `tolerance.Divergence`: status pass when within, else fail;
    its margin as the kernel measured it, its growth fitted to the per-step series."""
    series = np.asarray(div.series, dtype=np.float64)
    return Row(
        a=a, b=b, key=key, status=PASS if div.within else FAIL, bound=as_bound(bound),
        max_abs=float(div.max_abs),
        argmax=None if div.argmax is None else [int(i) for i in div.argmax],
        step=_opt_int(div.step), max_rel=float(div.max_rel), max_ulp=_opt_int(div.max_ulp),
        count_over=int(div.count_over), size=int(div.size),
        nan_mismatch=int(div.nan_mismatch), nan_both=int(div.nan_both),
        inf_mismatch=int(div.inf_mismatch), onset=_opt_int(div.onset),
        margin=None if div.margin is None else float(div.margin),
        growth=growth_fit(series),
        series=series, series_over=np.asarray(div.series_over, dtype=np.int64),
        series_margin=None if div.series_margin is None
        else np.asarray(div.series_margin, dtype=np.float64))


def unmeasured_row(a: str, b: str, key: str, problem: Problem, bound: Any) -> Row:
    """A row that could not be compared: numbers nan, ints None, and why (code + message)."""
    return Row(a=a, b=b, key=key, status=UNMEASURED, bound=as_bound(bound),
               code=problem.code, reason=problem.message)


def json_number(x: Any) -> Any:
    """A float as strict JSON: non-finite values become "nan", "inf", "-inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def rows_exit_code(rows: Iterable[Row], *extra: int) -> int:
    """The exit code of a set of rows (plus other parts' codes), by the documented
    precedence (docs/numbers.md "Exit codes")."""
    return combine_exit_codes(*(r.exit_code for r in rows), *extra)


def dtype_class(dtype: Any) -> str | None:
    """'float', 'int' (signed and unsigned) or 'bool'; None for what the kernel refuses."""
    return _CLASS.get(getattr(dtype, "kind", ""))


def incompatibility(shape_a: tuple[int, ...], dtype_a: Any, shape_b: tuple[int, ...],
                    dtype_b: Any, *, ulp: int | None = None,
                    steps_axis: int | None = 0) -> Problem | None:
    """Why two arrays cannot be compared (the problem of an unmeasured row), or None.

    Checked before any data moves: shape, dtype kind, unsupported dtypes, a ULP bound on
    anything but the same float type, and a steps axis that the shape does not have.
    """
    if tuple(shape_a) != tuple(shape_b):
        return Problem(SHAPE_MISMATCH, f"shape mismatch {tuple(shape_a)} vs {tuple(shape_b)}")
    ca, cb = dtype_class(dtype_a), dtype_class(dtype_b)
    for c, dt in ((ca, dtype_a), (cb, dtype_b)):
        if c is None:
            return Problem(UNSUPPORTED_DTYPE,
                           f"unsupported dtype {dt} (supported: bool, int, uint, float)")
    if ca != cb:
        return Problem(DTYPE_MISMATCH, f"dtype kind mismatch {dtype_a} vs {dtype_b}")
    if ulp is not None and (ca != "float" or dtype_a != dtype_b):
        return Problem(ULP_NEEDS_SAME_FLOAT, f"a ULP bound needs the same float type on both "
                                             f"sides ({dtype_a} vs {dtype_b})")
    nd = len(shape_a)
    if steps_axis is not None and nd and not -nd <= steps_axis < nd:
        return Problem(STEPS_AXIS_OUT_OF_RANGE,
                       f"steps axis {steps_axis} is out of range for shape {tuple(shape_a)}")
    return None


_TEXT_FIELDS = ("a", "b", "key", "status", "code", "reason")


def _from_json_number(x: Any) -> Any:
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    return x


def row_from_json(d: dict[str, Any]) -> Row:
    """A Row back from its JSON form (`Row.to_json`, e.g. a stored report.json row)."""
    b = d.get("bound") or {}
    # only figures are non-finite strings: a key (or label) may well be named "nan" or "inf"
    vals = {f: d.get(f) if f in _TEXT_FIELDS else _from_json_number(d.get(f))
            for f in ROW_FIELDS if f != "bound"}
    for f in ("max_abs", "max_rel"):
        vals[f] = math.nan if vals[f] is None else float(vals[f])
    return Row(bound=Bounds(atol=b.get("atol"), rtol=b.get("rtol"), ulp=b.get("ulp")), **vals)
