"""Rank 0's report of a run: rows, exit code, and the three files under the run directory.

`report.json` (schema `tolerance.run/1`, rows in the `tolerance.diff/1` row format),
`series.npz` (per-step series of every measured row) and `summary.md`, each written to a
temp name and renamed into place by the io layer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tolerance._errors import EXIT_ERROR, EXIT_OK
from tolerance.compare.rows import (row_from_divergence, row_to_json, rows_exit_code, series_key,
                                    unmeasured_row)
from tolerance.io import write_json, write_npz, write_text

SCHEMA = "tolerance.run/1"


def build_rows(outcome) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows in the diff row format, and the series arrays keyed like `tolerance diff --series`."""
    labels = [p.label for p in outcome.participants]
    rows, series = [], {}
    for o, div in outcome.outcomes:
        a, b = labels[o.a], labels[o.b]
        if div is None:
            rows.append(unmeasured_row(a, b, o.key, o.reason))
            continue
        rows.append(row_from_divergence(a, b, o.key, div))
        series[series_key(a, b, o.key, "max_abs")] = div.series
        series[series_key(a, b, o.key, "over")] = div.series_over
    return rows, series


def exit_code_of(rows: list[dict], boxes: list[dict], participants=()) -> int:
    """DESIGN.md precedence over the rows, plus 2 for a box that failed to run (or wrote
    an output that could not be read)."""
    failed = any(b.get("status") != "finished" for b in boxes) or any(p.failed for p in participants)
    return rows_exit_code(rows, EXIT_ERROR if failed else EXIT_OK)


def report_document(outcome, rows: list[dict], exit_code: int) -> dict:
    spec = outcome.spec
    stats = outcome.stats
    by_box = {b.get("box"): b for b in outcome.boxes}
    boxes = []
    for info in outcome.infos:
        b = by_box.get(info["box"], {})
        boxes.append({"name": info["box"], "rank": info["rank"], "host": info["hostname"],
                      "pid": info["pid"], "arch": info["arch"], "versions": info["versions"],
                      "code": info["code"], "status": b.get("status"),
                      "env_fingerprint": b.get("env_fingerprint"), "chips": b.get("chips", [])})
    keys = list(outcome.keys)
    return {
        "schema": SCHEMA,
        "run_id": outcome.run_id,
        "stem": outcome.stem,
        "spec_hash": spec.identity_hash(),
        "sync": "verify" if outcome.sync else "off",
        "run_dir": str(outcome.run_dir),
        "steps_axis": spec.steps_axis,
        "keys": keys,
        "keys_listed": spec.keys is not None,
        "bounds": {k: _bounds_dict(spec.bounds_for(k)) for k in keys},
        "boxes": boxes,
        "rows": [row_to_json(r) for r in rows],
        "bytes_moved": stats.bytes_sent if stats else 0,
        "blocks": {"hashed": stats.blocks if stats else 0,
                   "equal_folds": stats.blocks_equal if stats else 0},
        "timings": {k: round(v, 6) for k, v in outcome.timings.items()},
        "exit_code": exit_code,
    }


def _bounds_dict(b) -> dict:
    return {"atol": b.atol, "rtol": b.rtol, "ulp": b.ulp}


def summary_markdown(doc: dict) -> str:
    lines = [f"# tolerance run `{doc['stem']}` — {doc['run_id']}", ""]
    if doc["sync"] == "off":
        lines += ["> **WARNING: --no-sync: the boxes' code was not checked to be the same.**", ""]
    lines += ["| box | host | status | git HEAD | code |", "|---|---|---|---|---|"]
    for b in doc["boxes"]:
        code = b.get("code") or {}
        lines.append(f"| {b['name']} | {b['host']} | {b['status']} | "
                     f"{(code.get('head') or '-')[:12]} | {str(code.get('digest', ''))[:12]} |")
    lines += ["", "| a | b | key | max abs | step | max rel | ulp | onset | over | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        verdict = r["status"].upper() + (f" ({r['reason']})" if r.get("reason") else "")
        lines.append(f"| {r['a']} | {r['b']} | {r['key']} | {_num(r['max_abs'])} | "
                     f"{_opt(r['step'])} | {_num(r['max_rel'])} | {_opt(r['max_ulp'])} | "
                     f"{_opt(r['onset'])} | {_opt(r['count_over'])} | {verdict} |")
    lines += ["", "Bounds: " + "; ".join(
        f"`{k}` atol {v['atol']:g} rtol {v['rtol']:g} ulp {v['ulp'] if v['ulp'] is not None else '-'}"
        for k, v in doc["bounds"].items()),
        f"Data bytes moved between boxes: {doc['bytes_moved']}",
        f"Exit code: {doc['exit_code']}", ""]
    if doc["sync"] == "off":
        lines += ["> **WARNING: --no-sync: the boxes' code was not checked to be the same.**", ""]
    return "\n".join(lines)


def _num(x) -> str:
    if isinstance(x, str):
        return x
    return "-" if x is None else f"{x:.3g}"


def _opt(x) -> str:
    return "-" if x is None else str(x)


def write_report(run_dir: Path, doc: dict, series: dict[str, np.ndarray]) -> dict[str, Path]:
    paths = {"report": run_dir / "report.json", "series": run_dir / "series.npz",
             "summary": run_dir / "summary.md"}
    write_json(paths["report"], doc)
    write_npz(paths["series"], series)
    write_text(paths["summary"], summary_markdown(doc))
    return paths
