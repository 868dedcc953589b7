"""Every report of rows, built in one place: console lines, the `tolerance diff` JSON
document and series, and a run's report.json, series.npz and summary.md.

Rows come from the one pair engine (compare.engine) and carry their bound, so nothing here
looks a bound up again. The file formats are described in docs/formats.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tolerance._errors import EXIT_ERROR, EXIT_OK
from tolerance.compare.drift import find_outliers
from tolerance.compare.rows import PASS, FAIL, SCHEMA as DIFF_SCHEMA, UNMEASURED, Row, rows_exit_code
from tolerance.compare.series import RowSeries, series_arrays as _series_layout
from tolerance.io import write_json, write_npz, write_text

RUN_SCHEMA = "tolerance.run/1"


# --------------------------------------------------------------------------- console

def _g(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.2g}"


def _opt_g(x: Any) -> str:  # an unset bound is shown as "-", not as 0
    if isinstance(x, (list, tuple)):  # a per-step bound (a calibrated bounds file)
        return f"per-step (max {max(x, default=0.0):g})"
    return "-" if x is None else f"{x:g}"


def describe_bounds(bound: Any) -> str:
    """`atol 1e-07 rtol 1e-09 ulp 4`, or `exact` when no bound is set."""
    parts = []
    if bound.atol is not None:  # an unset bound is not a zero bound: 0 is shown, None not
        parts.append(f"atol {_opt_g(bound.atol)}")
    if bound.rtol is not None:
        parts.append(f"rtol {bound.rtol:g}")
    if bound.ulp is not None:
        parts.append(f"ulp {bound.ulp}")
    return " ".join(parts) if parts else "exact"


def run_head(row: Row) -> str:
    """The head of a `tolerance run` line: `max‖z_b[pc2] − z_b[mac]‖ =`."""
    return f"max‖{row.key}[{row.a}] − {row.key}[{row.b}]‖ ="


#: ULP distances of more digits (float64 only: float32 ones have at most 10) are shown
#: with 2 significant digits, like every other console figure (report.json and --json
#: keep the exact integer)
_ULP_DIGITS = 10
#: the widest `.2g` text of a non-negative float ("1.2e+300", "4.9e-324") and of a ULP
_FLOAT_W = 8
_ULP_W = _ULP_DIGITS


def ulp_text(u: int | None) -> str:
    """A ULP distance for the console: exact up to 10 digits, else `9.2e+18`."""
    if u is None:
        return ""
    return str(u) if u < 10 ** _ULP_DIGITS else f"{u:.1e}"


def value_text(row: Row) -> str:
    """The value column: max |a-b|, or `NaN≠` / `inf≠` when a NaN or an inf meets a value
    it does not equal (such a row fails whatever the bound, and its max is not the story)."""
    if row.nan_mismatch:
        return "NaN≠"
    if row.inf_mismatch:
        return "inf≠"
    return _g(row.max_abs)


def _where(row: Row, steps: bool) -> str:
    if row.nan_mismatch or row.argmax is None or not len(row.argmax) or row.max_abs == 0:
        return ""  # a NaN row's argmax is that of the other elements: said in the tail
    return f"@ step {row.step}" if steps else "@ [" + ",".join(str(i) for i in row.argmax) + "]"


def _over(row: Row) -> str:
    return f"{row.count_over}/{row.size}"


def _onset(row: Row) -> str:
    return "-" if row.onset is None else str(row.onset)


@dataclass(frozen=True)
class Columns:
    """The widths of a listing's columns, so that every line of it aligns whatever the
    figures: from the rows themselves (`columns_for`) or, for rows printed as they come,
    from the largest figures the inputs' shapes allow (`columns_for_shapes`)."""

    a: int = 0
    b: int = 0
    key: int = 0
    #: the `tolerance run` style: the line opens with run_head(row) padded to this width
    head: int | None = None
    where: int = 0
    ulp: int = 0
    over: int = 0
    onset: int = 1
    verdict: int = 0

    def fit(self, rows: Iterable[Row], *, steps: bool = True) -> "Columns":
        """These widths, grown to hold every cell of `rows`."""
        c = self
        for r in rows:
            c = replace(c, a=max(c.a, len(r.a)), b=max(c.b, len(r.b)),
                        key=max(c.key, len(r.key)),
                        head=None if c.head is None else max(c.head, len(run_head(r))))
            if r.status != UNMEASURED:
                c = replace(c, where=max(c.where, len(_where(r, steps))),
                            ulp=max(c.ulp, len(ulp_text(r.max_ulp))),
                            over=max(c.over, len(_over(r))), onset=max(c.onset, len(_onset(r))),
                            verdict=max(c.verdict, len(verdict_text(r))))
        return c


def columns_for(rows: Sequence[Row], *, steps: bool = True, run_style: bool = False
                ) -> Columns:
    """Widths that hold every row of `rows` (`run_style`: the `tolerance run` head)."""
    return Columns(head=0 if run_style else None).fit(rows, steps=steps)


def verdict_text(row: Row) -> str:
    """`pass`, or `FAIL (the bound)`."""
    return "pass" if row.status == PASS else f"FAIL ({describe_bounds(row.bound)})"


def columns_for_shapes(labels: Sequence[str], shapes: dict[str, Sequence[tuple[int, ...]]],
                       steps_axis: int | None, *, floats: bool = True,
                       bounds: Iterable[Any] = ()) -> Columns:
    """Widths that hold any row of inputs `labels` (rows pair an earlier input with a later
    one) over keys whose arrays have `shapes` (key -> the shapes it has in the inputs):
    the largest step, index and element count each shape allows; a ULP column only when
    some key is a float (`floats`); the verdict as wide as the widest of `bounds`."""
    where = over = onset = 0
    for shp in (s for ss in shapes.values() for s in ss):
        size = int(np.prod(shp)) if len(shp) else 1
        over = max(over, len(f"{size}/{size}"))
        if steps_axis is not None and len(shp) and -len(shp) <= steps_axis < len(shp):
            last = max(shp[steps_axis] - 1, 0)
            where, onset = max(where, len(f"@ step {last}")), max(onset, len(str(last)))
        elif len(shp):
            where = max(where, len("@ [" + ",".join(str(max(n - 1, 0)) for n in shp) + "]"))
    return Columns(a=max((len(x) for x in labels[:-1]), default=0),
                   b=max((len(x) for x in labels[1:]), default=0),
                   key=max((len(k) for k in shapes), default=0),
                   where=where, ulp=_ULP_W if floats else 0, over=over, onset=max(onset, 1),
                   verdict=max([len("pass")] + [len(f"FAIL ({describe_bounds(b)})")
                                                for b in bounds]))


def columns_for_inputs(inputs: Sequence[Any], keys: Iterable[str],
                       steps_axis: int | None, bounds: Iterable[Any] = ()) -> Columns:
    """columns_for_shapes for opened inputs (each with `.label` and `.archive`), over
    `keys`, held to `bounds`: widths fixed before any row is measured, so rows can print
    as they come."""
    members = {k: [d.archive[k] for d in inputs if k in d.archive] for k in keys}
    return columns_for_shapes([d.label for d in inputs],
                              {k: [m.shape for m in ms] for k, ms in members.items()},
                              steps_axis, floats=any(m.dtype.kind == "f"
                                                     for ms in members.values() for m in ms),
                              bounds=bounds)


def format_row(row: Row, *, columns: Columns | None = None,
               widths: tuple[int, int, int] = (0, 0, 0), steps: bool = True,
               head_width: int | None = None) -> str:
    """One aligned console line, e.g.
    `a.npz  b.npz  z_b  max|a-b| 3.2e-07  @ step 812  rel 4.1e-08  ulp 3  over 17/4096  onset 790  margin 3.2  FAIL (atol 1e-07)`
    With a run-style `columns` (or `head_width`) the line opens with `run_head(row)`
    padded to that width: `max‖z_b[pc2] − z_b[mac]‖ = 3.2e-07 @ step 812 ...`. Every line
    formatted with the same `columns` aligns, whatever its figures.
    """
    c = columns or Columns(a=widths[0], b=widths[1], key=widths[2], head=head_width,
                           ulp=_ULP_W).fit([row], steps=steps)
    if c.head is not None:
        head, label = f"{run_head(row):<{c.head}} ", ""
    else:
        head, label = f"{row.a:<{c.a}}  {row.b:<{c.b}}  {row.key:<{c.key}}  ", "max|a-b| "
    if row.status == UNMEASURED:
        return head + f"{label}{'nan':<{_FLOAT_W}}  (warn) unmeasured: {row.reason}"
    ulp = ulp_text(row.max_ulp)
    parts = [f"{label}{value_text(row):<{_FLOAT_W}}"]
    if c.where:
        parts.append(f"{_where(row, steps):<{c.where}}")
    parts.append(f"rel {_g(row.max_rel):<{_FLOAT_W}}")
    if c.ulp:  # no column when no row has a ULP distance (integers, bool)
        parts.append(f"ulp {ulp:<{c.ulp}}" if ulp else " " * (4 + c.ulp))
    parts.append(f"over {_over(row):<{c.over}}")
    if steps:
        parts.append(f"onset {_onset(row):<{c.onset}}")
    parts.append(f"margin {'-' if row.margin is None else _g(row.margin):<{_FLOAT_W}}")
    verdict = verdict_text(row)
    extra = [f"{name} {getattr(row, attr)}" for name, attr in (
        ("NaN-mismatch", "nan_mismatch"), ("inf-mismatch", "inf_mismatch"),
        ("nan-both", "nan_both")) if getattr(row, attr)]
    if row.nan_mismatch and row.max_abs != 0 and not math.isnan(row.max_abs) \
            and row.argmax is not None:
        rest = (f"@ step {row.step}" if steps and row.step is not None
                else "@ [" + ",".join(str(i) for i in row.argmax) + "]")
        extra.append(f"(elsewhere max|a-b| {_g(row.max_abs)} {rest})")
    if steps and row.growth is not None:
        extra.append(growth_text(row.growth))
    if extra:  # what follows the verdict starts at one place too
        verdict = f"{verdict:<{c.verdict}}"
    return head + "  ".join([*parts, verdict, *extra])


#: the legend's entries: (term, meaning, which rows call for it)
_LEGEND = (
    ("max|a-b|", "largest |a-b| over every element and step; @ step: where it occurs",
     lambda r, s: True),
    ("rel", "largest |a-b| / max(|a|,|b|)", lambda r, s: True),
    ("ulp", "largest distance in units in the last place", lambda r, s: r.max_ulp is not None),
    ("over", "elements outside the bound / elements compared", lambda r, s: True),
    ("onset", "first step with an element outside the bound (-: none)", lambda r, s: s),
    ("margin", "share of the bound used, <= 1 passes (-: no bound, equal required)",
     lambda r, s: True),
    ("NaN≠", "NaN against a number (NaN-mismatch n): fails whatever the bound",
     lambda r, s: bool(r.nan_mismatch)),
    ("inf≠", "inf against another value (inf-mismatch n): fails whatever the bound",
     lambda r, s: bool(r.inf_mismatch) and not r.nan_mismatch),
    ("nan-both", "NaN on both sides at one index: counted equal", lambda r, s: bool(r.nan_both)),
    ("doubles every", "growth fit of the per-step max |a-b|", lambda r, s: s and r.growth is not None),
)


def legend_lines(rows: Iterable[Row], *, steps: bool = True, run_style: bool = False
                 ) -> list[str]:
    """A short legend of the columns `rows` show, printed once after them (nothing when no
    row was measured). Figures are rounded to 2 significant digits; --json and
    report.json hold them exact."""
    measured = [r for r in rows if r.status != UNMEASURED]
    if not measured:
        return []
    terms = [(t, m) for t, m, needed in _LEGEND if any(needed(r, steps) for r in measured)]
    if not steps:
        terms[0] = (terms[0][0], "largest |a-b| over every element; @ [i,j]: where it occurs")
    if run_style:
        terms[0] = ("max‖…‖ =", terms[0][1])
    w = max(len(t) for t, _ in terms)
    return (["legend (--no-legend hides it; --json has every figure exact):"]
            + [f"  {t:<{w}}  {m}" for t, m in terms])


def row_lines(rows: Sequence[Row], *, steps: bool = True, run_style: bool = False
              ) -> list[str]:
    """Every row's line, aligned on widths computed from the rows themselves."""
    cols = columns_for(rows, steps=steps, run_style=run_style)
    return [format_row(r, columns=cols, steps=steps) for r in rows]


def growth_text(g: dict[str, Any]) -> str:
    """`doubles every 4.6 steps, saturates at step 91` (or `..., still growing at step N`)."""
    end = (f"saturates at step {g['saturates_at']}" if g["saturates_at"] is not None
           else f"still growing at step {g['to_step']}")
    return f"doubles every {g['doubling_steps']:.2g} steps from step {g['from_step']}, {end}"


def outlier_lines(outliers: Iterable[dict[str, Any]]) -> list[str]:
    """One console line per odd box out."""
    return [f"odd box out: {o['box']} on {o['key']} ({o['why']})" for o in outliers]


def summarize(rows: Iterable[Row], n_inputs: int, n_keys: int, exit_code: int) -> str:
    rows = list(rows)
    n = {s: sum(1 for r in rows if r.status == s) for s in (PASS, FAIL, UNMEASURED)}
    return (f"{n_inputs} inputs, {n_keys} keys, {len(rows)} rows: {n[PASS]} pass, "
            f"{n[FAIL]} fail, {n[UNMEASURED]} unmeasured -> exit {exit_code}")


# --------------------------------------------------------------------------- series

def row_series(rows: Iterable[Row]) -> list[RowSeries]:
    """The per-step series of every measured row, with its identity and bound."""
    return [RowSeries(a=r.a, b=r.b, key=r.key, bound=r.bound.to_dict(), max_abs=r.series,
                      over=r.series_over, status=r.status, onset=r.onset,
                      margin=r.series_margin)
            for r in rows if r.series is not None]


def series_arrays(rows: Iterable[Row], steps_axis: int | None = 0) -> dict[str, np.ndarray]:
    """The members of a `tolerance.series/1` .npz (compare.series) of every measured row."""
    return _series_layout(row_series(rows), steps_axis=steps_axis)


# --------------------------------------------------------------------------- diff

def diff_document(result: Any, series: str | None = None) -> dict[str, Any]:
    """The `tolerance.diff/1` document of a DiffResult (strict JSON); `series`: the path
    the per-step series were written to (--series), else null."""
    return {"schema": DIFF_SCHEMA, "inputs": result.inputs, "bounds": result.bound.to_dict(),
            "steps_axis": result.steps_axis, "rows": [r.to_json() for r in result.rows],
            "outliers": find_outliers(r.to_json() for r in result.rows),
            "series": series, "exit_code": result.exit_code}


# --------------------------------------------------------------------------- run

def run_exit_code(rows: Sequence[Row], boxes: Sequence[dict], participants: Sequence[Any] = ()
                  ) -> int:
    """The documented precedence over the rows, plus 2 for a box that failed to run (or
    wrote an output that could not be read)."""
    failed = any(b.get("status") != "finished" for b in boxes) or \
        any(p.failed for p in participants)
    return rows_exit_code(rows, EXIT_ERROR if failed else EXIT_OK)


def run_document(outcome: Any, rows: Sequence[Row], exit_code: int) -> dict[str, Any]:
    """The `tolerance.run/1` document (report.json) of a run's outcome."""
    spec = outcome.spec
    stats = outcome.stats
    by_box = {b.get("box"): b for b in outcome.boxes}
    boxes = []
    for info in outcome.infos:
        b = by_box.get(info["box"], {})
        boxes.append({"name": info["box"], "rank": info["rank"], "host": info["hostname"],
                      "pid": info["pid"], "arch": info["arch"], "versions": info["versions"],
                      "code": info["code"], "commit": (info["code"] or {}).get("head"),
                      "status": b.get("status"),
                      "env_fingerprint": b.get("env_fingerprint"), "chips": b.get("chips", [])})
    return {
        "schema": RUN_SCHEMA,
        "run_id": outcome.run_id,
        "stem": outcome.stem,
        "spec_hash": spec.identity_hash(),
        "sync": ("push" if getattr(outcome, "push", False) else "verify") if outcome.sync
                else "off",
        "run_dir": str(outcome.run_dir),
        "steps_axis": spec.steps_axis,
        "keys": list(outcome.keys),
        "keys_listed": spec.keys is not None,
        "bounds": {k: spec.bounds_for(k).to_dict() for k in outcome.keys},
        "boxes": boxes,
        "rows": [r.to_json() for r in rows],
        "outliers": find_outliers(r.to_json() for r in rows),
        "plots": None,  # key -> PNG path relative to the run directory (write_run_report)
        "bytes_moved": stats.bytes_sent if stats else 0,
        "blocks": {"hashed": stats.blocks if stats else 0,
                   "equal_folds": stats.blocks_equal if stats else 0},
        "timings": {k: round(v, 6) for k, v in outcome.timings.items()},
        "exit_code": exit_code,
    }


def summary_markdown(doc: dict) -> str:
    lines = [f"# tolerance run `{doc['stem']}` — {doc['run_id']}", ""]
    if doc["sync"] == "off":
        lines += ["> **WARNING: --no-sync: the boxes' code was not checked to be the same.**", ""]
    lines += ["| box | host | status | git HEAD | code |", "|---|---|---|---|---|"]
    for b in doc["boxes"]:
        code = b.get("code") or {}
        lines.append(f"| {b['name']} | {b['host']} | {b['status']} | "
                     f"{(code.get('head') or '-')[:12]} | {str(code.get('digest', ''))[:12]} |")
    lines += ["", "| a | b | key | max abs | step | max rel | ulp | onset | over | margin "
              "| doubling (steps) | saturates at | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        verdict = r["status"].upper() + (f" ({r['reason']})" if r.get("reason") else "")
        g = r.get("growth")
        lines.append(f"| {r['a']} | {r['b']} | {r['key']} | {_md_value(r)} | "
                     f"{_opt(r['step'])} | {_num(r['max_rel'])} | {_opt(r['max_ulp'])} | "
                     f"{_opt(r['onset'])} | {_opt(r['count_over'])} | {_num(r.get('margin'))} | "
                     f"{'-' if g is None else format(g['doubling_steps'], '.3g')} | "
                     f"{'-' if g is None else _opt(g['saturates_at'])} | {verdict} |")
    if doc.get("outliers"):
        lines += ["", "Odd box out:"]
        lines += [f"- **{o['box']}** on `{o['key']}`: {o['why']}" for o in doc["outliers"]]
    lines += ["", "Bounds: " + "; ".join(
        f"`{k}` atol {_opt_g(v['atol'])} rtol {_opt_g(v['rtol'])} ulp {v['ulp'] if v['ulp'] is not None else '-'}"
        for k, v in doc["bounds"].items()),
        f"Data bytes moved between boxes: {doc['bytes_moved']}",
        f"Exit code: {doc['exit_code']}", ""]
    if doc.get("plots"):
        for key, rel in doc["plots"].items():
            lines += [f"## `{key}`", "", f"![{key}: per-step divergence of every pair]({rel})", ""]
    elif doc.get("plots_note"):
        lines += [f"Plots: not drawn ({doc['plots_note']}).", ""]
    if doc["sync"] == "off":
        lines += ["> **WARNING: --no-sync: the boxes' code was not checked to be the same.**", ""]
    return "\n".join(lines)


def _md_value(r: dict) -> str:
    """The max-abs cell of summary.md: `NaN≠ (n)` / `inf≠ (n)` for a NaN/inf mismatch."""
    if r.get("nan_mismatch"):
        return f"NaN≠ ({r['nan_mismatch']})"
    if r.get("inf_mismatch"):
        return f"inf≠ ({r['inf_mismatch']})"
    return _num(r["max_abs"])


def _num(x) -> str:
    if isinstance(x, str):
        return x
    return "-" if x is None else f"{x:.3g}"


def _opt(x) -> str:
    return "-" if x is None else str(x)


def write_run_report(run_dir: Path, doc: dict, rows: Sequence[Row]) -> dict[str, Path]:
    """report.json, series.npz and summary.md under the run directory (temp + rename)."""
    paths = {"report": run_dir / "report.json", "series": run_dir / "series.npz",
             "summary": run_dir / "summary.md"}
    series = row_series(rows)
    write_npz(paths["series"], _series_layout(series, steps_axis=doc.get("steps_axis")))
    if doc.get("steps_axis") is not None and series:
        _draw_plots(run_dir, doc, series)
    write_json(paths["report"], doc)
    write_text(paths["summary"], summary_markdown(doc))
    return paths


def _draw_plots(run_dir: Path, doc: dict, series: list[RowSeries]) -> None:
    """plots/<key>.png under the run directory when matplotlib is there; else (or when a
    figure cannot be drawn) `plots_note` says why, and the run's report goes on."""
    from tolerance.compare.plot import plot_keys, plot_unavailable

    hint = plot_unavailable()
    if hint:
        doc["plots_note"] = hint
        return
    try:
        paths = plot_keys(series, run_dir / "plots")
    except Exception as exc:  # noqa: BLE001 - a figure must not cost the run its report
        doc["plots_note"] = f"drawing failed: {type(exc).__name__}: {exc}"
        return
    doc["plots"] = {k: str(p.relative_to(run_dir)) for k, p in paths.items()}


def run_console(outcome: Any, rows: Sequence[Row], code: int, doc: dict,
                paths: dict[str, Path], *, legend: bool = True) -> tuple[list[str], str]:
    """A run's console lines (box warnings, one line per row, the legend unless `legend`
    is false) and its summary line."""
    lines = [f"tolerance run {outcome.stem}  run {outcome.run_id}  "
             f"{len(outcome.infos)} boxes: " + " ".join(i["box"] for i in outcome.infos)]
    for b in outcome.boxes:
        for c in b.get("chips", []):
            if c.get("status") != "finished":
                tail = [ln for ln in (c.get("stderr_tail") or []) if ln.strip()][-1:]
                lines.append(f"(warn) box {b.get('box')} chip {c.get('chip')}: {c.get('status')}"
                             f"{': ' + c['reason'] if c.get('reason') else ''}"
                             f"{'  | ' + tail[0].strip() if tail else ''}")
    lines += list(outcome.notes)
    steps = outcome.spec.steps_axis is not None
    lines += row_lines(rows, steps=steps, run_style=True)
    lines += outlier_lines(doc.get("outliers") or [])
    if doc.get("plots_note"):
        lines.append(f"(note) plots not drawn: {doc['plots_note']}")
    if legend:
        lines += legend_lines(rows, steps=steps, run_style=True)
    summary = (summarize(rows, len(outcome.participants), len(outcome.keys), code)
               + f"; data moved {doc['bytes_moved']} B; report {paths['report']}")
    return lines, summary


__all__ = ["Columns", "FAIL", "PASS", "RUN_SCHEMA", "UNMEASURED", "columns_for",
           "columns_for_inputs", "columns_for_shapes", "describe_bounds", "diff_document",
           "format_row", "growth_text", "legend_lines", "outlier_lines", "row_lines", "row_series",
           "run_console", "run_document", "run_exit_code", "run_head", "series_arrays",
           "summarize", "summary_markdown", "ulp_text", "value_text", "write_run_report"]
