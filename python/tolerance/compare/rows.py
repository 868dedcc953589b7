"""The `tolerance.diff/1` row: built in one place, reused by `tolerance diff` and the MPI layer.

A row is a plain dict with the contract's fields, in the contract's order. Inside Python,
non-finite numbers are floats (nan, inf); `row_to_json` turns them into the strings
"nan", "inf", "-inf" so the document is strict JSON.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from tolerance._errors import EXIT_EXCEEDED, EXIT_OK, EXIT_UNMEASURED, combine_exit_codes

SCHEMA = "tolerance.diff/1"

#: the fields of a row, in order
ROW_FIELDS = ("a", "b", "key", "status", "reason", "max_abs", "argmax", "step", "max_rel",
              "max_ulp", "count_over", "size", "nan_mismatch", "nan_both", "inf_mismatch",
              "onset")
_FLOAT_FIELDS = ("max_abs", "max_rel")
_INT_FIELDS = ("argmax", "step", "max_ulp", "count_over", "size", "nan_mismatch", "nan_both",
               "inf_mismatch", "onset")

PASS, FAIL, UNMEASURED = "pass", "fail", "unmeasured"

# dtype classes that compare with each other (the kernel's supported set)
_CLASS = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def row_from_divergence(a: str, b: str, key: str, div: Any) -> dict[str, Any]:
    """A measured row from a `tolerance.Divergence`: status pass when within, else fail."""
    return {
        "a": a, "b": b, "key": key,
        "status": PASS if div.within else FAIL,
        "reason": None,
        "max_abs": float(div.max_abs),
        "argmax": None if div.argmax is None else [int(i) for i in div.argmax],
        "step": _opt_int(div.step),
        "max_rel": float(div.max_rel),
        "max_ulp": _opt_int(div.max_ulp),
        "count_over": int(div.count_over),
        "size": int(div.size),
        "nan_mismatch": int(div.nan_mismatch),
        "nan_both": int(div.nan_both),
        "inf_mismatch": int(div.inf_mismatch),
        "onset": _opt_int(div.onset),
    }


def unmeasured_row(a: str, b: str, key: str, reason: str) -> dict[str, Any]:
    """A row that could not be compared: numbers nan, ints None, and why."""
    row: dict[str, Any] = {"a": a, "b": b, "key": key, "status": UNMEASURED, "reason": reason}
    for f in ROW_FIELDS[5:]:
        row[f] = math.nan if f in _FLOAT_FIELDS else None
    return row


def json_number(x: Any) -> Any:
    """A float as strict JSON: non-finite values become "nan", "inf", "-inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def row_to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every non-finite float as a string (strict JSON)."""
    return {k: json_number(row[k]) for k in ROW_FIELDS}


def row_exit_code(row: Mapping[str, Any]) -> int:
    return {PASS: EXIT_OK, FAIL: EXIT_EXCEEDED, UNMEASURED: EXIT_UNMEASURED}[row["status"]]


def rows_exit_code(rows: Iterable[Mapping[str, Any]], *extra: int) -> int:
    """The exit code of a set of rows (plus other parts' codes), by DESIGN.md precedence."""
    return combine_exit_codes(*(row_exit_code(r) for r in rows), *extra)


def dtype_class(dtype: Any) -> str | None:
    """'float', 'int' (signed and unsigned) or 'bool'; None for what the kernel refuses."""
    return _CLASS.get(getattr(dtype, "kind", ""))


def incompatibility(shape_a: tuple[int, ...], dtype_a: Any, shape_b: tuple[int, ...],
                    dtype_b: Any, *, ulp: int | None = None,
                    steps_axis: int | None = 0) -> str | None:
    """Why two arrays cannot be compared (the reason of an unmeasured row), or None.

    Checked before any data moves: shape, dtype kind, unsupported dtypes, a ULP bound on
    anything but the same float type, and a steps axis that the shape does not have.
    """
    if tuple(shape_a) != tuple(shape_b):
        return f"shape mismatch {tuple(shape_a)} vs {tuple(shape_b)}"
    ca, cb = dtype_class(dtype_a), dtype_class(dtype_b)
    for c, dt in ((ca, dtype_a), (cb, dtype_b)):
        if c is None:
            return f"unsupported dtype {dt} (supported: bool, int, uint, float)"
    if ca != cb:
        return f"dtype kind mismatch {dtype_a} vs {dtype_b}"
    if ulp is not None and (ca != "float" or dtype_a != dtype_b):
        return f"--ulp needs the same float type on both sides ({dtype_a} vs {dtype_b})"
    nd = len(shape_a)
    if steps_axis is not None and nd and not -nd <= steps_axis < nd:
        return f"steps axis {steps_axis} is out of range for shape {tuple(shape_a)}"
    return None


# --- console ---------------------------------------------------------------------------

def _g(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.2g}"


def describe_bounds(atol: float | None = None, rtol: float | None = None,
                    ulp: int | None = None) -> str:
    parts = []
    if atol is not None:
        parts.append(f"atol {atol:g}")
    if rtol is not None:
        parts.append(f"rtol {rtol:g}")
    if ulp is not None:
        parts.append(f"ulp {ulp}")
    return " ".join(parts) if parts else "exact"


def run_head(row: Mapping[str, Any]) -> str:
    """The head of a `tolerance run` line: `max‖z_b[pc2] − z_b[mac]‖ =`."""
    return f"max‖{row['key']}[{row['a']}] − {row['key']}[{row['b']}]‖ ="


def format_row(row: Mapping[str, Any], *, widths: tuple[int, int, int] = (0, 0, 0),
               bounds: str = "exact", steps: bool = True, head_width: int | None = None) -> str:
    """One aligned console line, e.g.
    `a.npz  b.npz  z_b  max|a-b| 3.2e-07 @ step 812  rel 4.1e-08  ulp 3  onset 790  FAIL (atol 1e-07)`
    With `head_width` (the `tolerance run` style) the line opens with `run_head(row)` padded
    to that width: `max‖z_b[pc2] − z_b[mac]‖ = 3.2e-07 @ step 812 ...`.
    """
    if head_width is not None:
        head, label = f"{run_head(row):<{head_width}} ", ""
    else:
        wa, wb, wk = widths
        head, label = f"{row['a']:<{wa}}  {row['b']:<{wb}}  {row['key']:<{wk}}  ", "max|a-b| "
    if row["status"] == UNMEASURED:
        return head + f"{label}{'nan':<8}  (warn) unmeasured: {row['reason']}"
    where = ""
    if row["argmax"] is not None and len(row["argmax"]) and row["max_abs"] != 0:
        where = (f"@ step {row['step']}" if steps
                 else "@ [" + ",".join(str(i) for i in row["argmax"]) + "]")
    parts = [f"{label}{_g(row['max_abs']):<8} {where:<13}", f"rel {_g(row['max_rel']):<8}"]
    parts.append(f"ulp {row['max_ulp']:<5}" if row["max_ulp"] is not None else " " * 9)
    parts.append(f"{'over ' + str(row['count_over']) + '/' + str(row['size']):<18}")
    if steps:
        parts.append(f"onset {'-' if row['onset'] is None else row['onset']:<6}")
    verdict = "pass" if row["status"] == PASS else f"FAIL ({bounds})"
    extra = [f"{name} {row[field]}" for name, field in (
        ("NaN-mismatch", "nan_mismatch"), ("inf-mismatch", "inf_mismatch"),
        ("nan-both", "nan_both")) if row[field]]
    return head + " ".join(parts) + " " + "  ".join([verdict, *extra])


def summarize(rows: Iterable[Mapping[str, Any]], n_inputs: int, n_keys: int,
              exit_code: int) -> str:
    rows = list(rows)
    n = {s: sum(1 for r in rows if r["status"] == s) for s in (PASS, FAIL, UNMEASURED)}
    return (f"{n_inputs} inputs, {n_keys} keys, {len(rows)} rows: {n[PASS]} pass, "
            f"{n[FAIL]} fail, {n[UNMEASURED]} unmeasured -> exit {exit_code}")


def series_key(a: str, b: str, key: str, kind: str) -> str:
    """The name of a row's per-step series in a series .npz (`kind`: max_abs | over)."""
    return f"{a}__{b}__{key}__{kind}"
