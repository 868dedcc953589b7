"""Every report of rows, built in one place: console lines, the `tolerance diff` JSON
document and series, and a run's report.json, series.npz and summary.md.

Rows come from the one pair engine (compare.engine) and carry their bound, so nothing here
looks a bound up again. The file formats are described in docs/formats.md.
"""
from __future__ import annotations

import math
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
    return "-" if x is None else f"{x:g}"


def describe_bounds(bound: Any) -> str:
    """`atol 1e-07 rtol 1e-09 ulp 4`, or `exact` when no bound is set."""
    parts = []
    if bound.atol is not None:  # an unset bound is not a zero bound: 0 is shown, None not
        parts.append(f"atol {bound.atol:g}")
    if bound.rtol is not None:
        parts.append(f"rtol {bound.rtol:g}")
    if bound.ulp is not None:
        parts.append(f"ulp {bound.ulp}")
    return " ".join(parts) if parts else "exact"


def run_head(row: Row) -> str:
    """The head of a `tolerance run` line: `max‖z_b[pc2] − z_b[mac]‖ =`."""
    return f"max‖{row.key}[{row.a}] − {row.key}[{row.b}]‖ ="


def format_row(row: Row, *, widths: tuple[int, int, int] = (0, 0, 0), steps: bool = True,
               head_width: int | None = None) -> str:
    """One aligned console line, e.g.
    `a.npz  b.npz  z_b  max|a-b| 3.2e-07 @ step 812  rel 4.1e-08  ulp 3  onset 790  FAIL (atol 1e-07)`
    With `head_width` (the `tolerance run` style) the line opens with `run_head(row)` padded
    to that width: `max‖z_b[pc2] − z_b[mac]‖ = 3.2e-07 @ step 812 ...`.
    """
    if head_width is not None:
        head, label = f"{run_head(row):<{head_width}} ", ""
    else:
        wa, wb, wk = widths
        head, label = f"{row.a:<{wa}}  {row.b:<{wb}}  {row.key:<{wk}}  ", "max|a-b| "
    if row.status == UNMEASURED:
        return head + f"{label}{'nan':<8}  (warn) unmeasured: {row.reason}"
    where = ""
    if row.argmax is not None and len(row.argmax) and row.max_abs != 0:
        where = (f"@ step {row.step}" if steps
                 else "@ [" + ",".join(str(i) for i in row.argmax) + "]")
    parts = [f"{label}{_g(row.max_abs):<8} {where:<13}", f"rel {_g(row.max_rel):<8}"]
    parts.append(f"ulp {row.max_ulp:<5}" if row.max_ulp is not None else " " * 9)
    parts.append(f"{'over ' + str(row.count_over) + '/' + str(row.size):<18}")
    if steps:
        parts.append(f"onset {'-' if row.onset is None else row.onset:<6}")
    parts.append(f"margin {'-' if row.margin is None else _g(row.margin):<8}")
    verdict = "pass" if row.status == PASS else f"FAIL ({describe_bounds(row.bound)})"
    extra = [f"{name} {getattr(row, attr)}" for name, attr in (
        ("NaN-mismatch", "nan_mismatch"), ("inf-mismatch", "inf_mismatch"),
        ("nan-both", "nan_both")) if getattr(row, attr)]
    if steps and row.growth is not None:
        extra.append(growth_text(row.growth))
    return head + " ".join(parts) + " " + "  ".join([verdict, *extra])


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

def diff_document(result: Any) -> dict[str, Any]:
    """The `tolerance.diff/1` document of a DiffResult (strict JSON)."""
    return {"schema": DIFF_SCHEMA, "inputs": result.inputs, "bounds": result.bound.to_dict(),
            "steps_axis": result.steps_axis, "rows": [r.to_json() for r in result.rows],
            "outliers": find_outliers(r.to_json() for r in result.rows),
            "exit_code": result.exit_code}


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
        lines.append(f"| {r['a']} | {r['b']} | {r['key']} | {_num(r['max_abs'])} | "
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
                paths: dict[str, Path]) -> tuple[list[str], str]:
    """A run's console lines (box warnings, one line per row) and its summary line."""
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
    width = max((len(run_head(r)) for r in rows), default=0)
    steps = outcome.spec.steps_axis is not None
    lines += [format_row(r, head_width=width, steps=steps) for r in rows]
    lines += outlier_lines(doc.get("outliers") or [])
    if doc.get("plots_note"):
        lines.append(f"(note) plots not drawn: {doc['plots_note']}")
    summary = (summarize(rows, len(outcome.participants), len(outcome.keys), code)
               + f"; data moved {doc['bytes_moved']} B; report {paths['report']}")
    return lines, summary


__all__ = ["FAIL", "PASS", "RUN_SCHEMA", "UNMEASURED", "describe_bounds", "diff_document",
           "format_row", "growth_text", "outlier_lines", "row_series", "run_console",
           "run_document", "run_exit_code", "run_head", "series_arrays", "summarize",
           "summary_markdown", "write_run_report"]
