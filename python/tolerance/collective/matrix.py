"""`tolerance matrix RECIPE`: which knob makes the boxes agree, and at what cost
(docs/matrix.md).

Every cell of a recipe is the stem run on every box under the cell's env, `trials` times;
each cell-trial is one ordinary replicated run (through `tolerance launch`) in its own
directory `runs/matrix/<name>/<stamp>/cells/<cell>/trial-<k>/`. The recipe and the spec are
snapshotted into the matrix directory first and every cell-trial reads the snapshot.
`journal.jsonl` records each cell-trial's state changes by identity; `--resume` skips
the ones the journal says are done and whose outputs still load, and runs the rest.
When the last cell ends, the roster is reconciled against the disk and every output is
loaded again; then the cells are classified against the baseline and matrix.md,
matrix.json and recipe.resolved.yaml are written.
"""
from __future__ import annotations

import json
import os

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tolerance._errors import ToleranceError
from tolerance.config.recipe import Recipe, cell_trial_identity, load_recipe

SCHEMA = "tolerance.matrix/1"
SNAPSHOT = "snapshot"
JOURNAL = "journal.jsonl"
RESOLVED = "recipe.resolved.yaml"
#: the p90 of wall times is the nearest-rank one (no interpolation: it is a real trial)
P90 = 0.9


# -- layout -------------------------------------------------------------------------------

def cell_trial_dir(matrix_dir: Path, cell: str, trial: int) -> Path:
    return matrix_dir / "cells" / cell / f"trial-{trial}"


def path_map(recipe: Recipe, matrix_dir: Path) -> dict[tuple[str, int], Path]:
    """Every cell-trial's directory; refused unless one-to-one (also case-folded)."""
    paths = {(c.name, k): cell_trial_dir(matrix_dir, c.name, k)
             for c in recipe.cells for k in range(1, recipe.trials + 1)}
    seen: dict[str, tuple[str, int]] = {}
    for ct, p in paths.items():
        key = str(p).casefold()
        if key in seen:
            raise ToleranceError(f"{recipe.path}: cells: {seen[key][0]!r} and {ct[0]!r} map to one "
                                 f"directory ({p}); nothing was started")
        seen[key] = ct
    return paths


def claim_matrix_dir(root: Path, name: str) -> Path:
    from tolerance.runner import utc_stamp

    parent = root / "runs" / "matrix" / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    for n in range(1, 10_000):
        cand = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(cand)
            return cand
        except FileExistsError:
            continue
    raise ToleranceError(f"{parent}: too many matrices in one second")


# -- journal ------------------------------------------------------------------------------

def journal_append(matrix_dir: Path, entry: dict[str, Any]) -> None:
    """One line, appended and synced (the journal is never rewritten)."""
    line = (json.dumps(entry, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(matrix_dir / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def journal_states(matrix_dir: Path) -> dict[str, dict[str, Any]]:
    """identity -> its last journal entry (a torn last line, from a kill, is ignored)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        text = (matrix_dir / JOURNAL).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("identity"), str):
            out[e["identity"]] = e
    return out


# -- loading a cell-trial's outputs (the re-verify by load) ---------------------------------

def load_trial(trial_dir: Path) -> tuple[dict | None, str | None]:
    """(report, None) when the trial's report.json parses and its series.npz reads through
    the safe reader; else (None, why)."""
    from tolerance.io import Archive

    report = trial_dir / "report.json"
    if not report.is_file():
        return None, "missing (no report.json)"
    if report.stat().st_size == 0:
        return None, "zero-byte report.json"
    try:
        doc = json.loads(report.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise ValueError("not a tolerance.run report")
    except (OSError, ValueError) as exc:
        return None, f"unreadable report.json: {exc}"
    series = trial_dir / "series.npz"
    if series.exists():
        if series.stat().st_size == 0:
            return None, "zero-byte series.npz"
        try:
            with Archive(series) as arc:
                for key in arc.keys():
                    for _ in arc[key].chunks(None):
                        pass
        except Exception as exc:  # noqa: BLE001 - any read failure is "unreadable"
            return None, f"unreadable series.npz: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return doc, None


# -- the plan -----------------------------------------------------------------------------

@dataclass
class CellTrial:
    cell: str
    trial: int
    env: dict[str, str]
    identity: str
    path: Path
    state: str = "pending"           # pending | done | error | skipped (resumed, still good)
    exit_code: int | None = None
    wall_s: float | None = None
    reason: str | None = None
    report: dict | None = None


@dataclass
class Matrix:
    recipe: Recipe
    matrix_dir: Path
    spec_content: dict[str, Any]
    code_commit: str | None
    trials: list[CellTrial] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)


def plan(recipe: Recipe, spec, matrix_dir: Path, code_commit: str | None) -> Matrix:
    content = spec.normalized()
    m = Matrix(recipe=recipe, matrix_dir=matrix_dir, spec_content=content,
               code_commit=code_commit)
    paths = path_map(recipe, matrix_dir)
    for c in recipe.cells:
        for k in range(1, recipe.trials + 1):
            ident = cell_trial_identity(stem=recipe.stem, spec_content=content, env=c.env,
                                        trial=k, code_commit=code_commit)
            m.trials.append(CellTrial(cell=c.name, trial=k, env=dict(c.env), identity=ident,
                                      path=paths[c.name, k]))
    return m


def snapshot(recipe: Recipe, spec, matrix_dir: Path) -> Path:
    """Copy the recipe and the spec into the matrix directory; the specs folder every
    cell-trial reads."""
    from tolerance.io import write_bytes

    snap = matrix_dir / SNAPSHOT
    (snap / "specs").mkdir(parents=True)
    write_bytes(snap / "recipe.yaml", Path(recipe.path).read_bytes())
    write_bytes(snap / "specs" / f"{recipe.stem}.yaml", Path(spec.path).read_bytes())
    return snap / "specs"


# -- running ------------------------------------------------------------------------------

def run_matrix(m: Matrix, *, cluster, cluster_path: str | None, specs_dir: Path,
               say: Callable[[str], None] = lambda s: None, resume: bool = False) -> None:
    """Run every pending cell-trial (in recipe order); a failing one is an error row."""
    from tolerance.collective.replicate import launch_into

    states = journal_states(m.matrix_dir) if resume else {}
    n = len(m.trials)
    t0 = time.monotonic()
    for i, ct in enumerate(m.trials, 1):
        last = states.get(ct.identity)
        if last is not None and last.get("state") == "done":
            report, why = load_trial(ct.path)
            if report is not None:
                ct.state, ct.report = "skipped", report
                ct.exit_code, ct.wall_s = last.get("exit_code"), last.get("wall_s")
                say(f"cell {i}/{n} {ct.cell} trial {ct.trial}: done before, outputs load: skipped")
                continue
            say(f"cell {i}/{n} {ct.cell} trial {ct.trial}: done before but {why}: run again")
        if ct.path.exists():  # an unfinished or broken attempt: kept aside, never reused
            aside = ct.path.parent / f".attempt-{ct.trial}-{int(time.time() * 1000)}"
            os.replace(ct.path, aside)
        ct.path.mkdir(parents=True)
        journal_append(m.matrix_dir, {"identity": ct.identity, "cell": ct.cell,
                                      "trial": ct.trial, "state": "started",
                                      "time": time.time()})
        say(f"cell {i}/{n} {ct.cell} trial {ct.trial}/{m.recipe.trials}: running "
            f"({time.monotonic() - t0:.0f} s elapsed)")
        run = launch_into(m.recipe.stem, ct.path, cluster=cluster, cluster_path=cluster_path,
                          specs_dir=str(specs_dir), env=ct.env)
        ct.exit_code, ct.wall_s = run.exit_code, round(run.wall_s, 3)
        report, why = (None, run.reason) if run.failed else load_trial(ct.path)
        if report is None:
            ct.state, ct.reason = "error", why
        else:
            ct.state, ct.report = "done", report
        journal_append(m.matrix_dir, {"identity": ct.identity, "cell": ct.cell,
                                      "trial": ct.trial, "state": ct.state,
                                      "exit_code": ct.exit_code, "wall_s": ct.wall_s,
                                      "reason": ct.reason, "time": time.time()})
        say(f"cell {i}/{n} {ct.cell} trial {ct.trial}: {ct.state}, exit {ct.exit_code}, "
            f"{ct.wall_s:.1f} s" + (f": {ct.reason}" if ct.reason else ""))


def reconcile(m: Matrix) -> list[str]:
    """Roster vs disk: missing, zero-byte, unreadable, duplicated (re-verified by load)."""
    deltas: list[str] = []
    roster = {(ct.cell, ct.trial) for ct in m.trials}
    for ct in m.trials:
        report, why = load_trial(ct.path)
        if report is None:
            deltas.append(f"{ct.cell} trial {ct.trial}: {why} ({ct.path})")
            if ct.state in ("done", "skipped"):
                ct.state, ct.reason, ct.report = "error", why, None
        else:
            ct.report = report
    cells_dir = m.matrix_dir / "cells"
    for d in sorted(cells_dir.glob("*/trial-*")) if cells_dir.is_dir() else []:
        try:
            k = int(d.name.removeprefix("trial-"))
        except ValueError:
            k = -1
        if (d.parent.name, k) not in roster:
            deltas.append(f"{d.parent.name}/{d.name}: not in the roster (duplicated or left over)")
    done: dict[str, int] = {}
    for ct in m.trials:
        done[ct.identity] = done.get(ct.identity, 0) + 1
    for ident, count in done.items():
        if count > 1:
            deltas.append(f"identity {ident[:12]}: {count} cell-trials run the same thing (duplicated)")
    m.deltas = deltas
    return deltas


# -- classify -----------------------------------------------------------------------------

def _p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-P90 * len(s) // 1)) - 1))]


def _trial_outputs(report: dict) -> dict[str, str]:
    """box -> its output file, from a trial's report."""
    out = {}
    for b in report.get("boxes", []):
        for c in b.get("chips") or []:
            if c.get("output"):
                out[b["name"] if len(b["chips"]) == 1 else f"{b['name']}:{c['chip']}"] = c["output"]
    return out


def trials_agree(trials: list[CellTrial], keys) -> bool | None:
    """Run-to-run determinism: every box's output identical across the cell's trials
    (compared with the canonical kernel, no bound: inside means equal). None: < 2 trials."""
    from tolerance.compare.engine import diff_inputs, open_inputs
    from tolerance.config.spec import Bounds

    reports = [t.report for t in trials if t.report is not None]
    if len(reports) < 2:
        return None
    outputs = [_trial_outputs(r) for r in reports]
    for box in outputs[0]:
        paths = [o.get(box) for o in outputs]
        if any(p is None for p in paths):
            return False
        inputs = open_inputs(paths, [f"trial-{k}" for k in range(1, len(paths) + 1)])
        try:
            res = diff_inputs(inputs, keys=keys, bound=Bounds())  # no bound: equal
        finally:
            for d in inputs:
                d.archive.close()
        if res.exit_code != 0:
            return False
    return True


def _row_get(row, name):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def classify(m: Matrix) -> dict[str, Any]:
    """Per cell: verdict, per key worst divergence and earliest onset, trial agreement,
    wall times, slowdown vs the baseline, the speed flag."""
    by_cell: dict[str, list[CellTrial]] = {}
    for ct in m.trials:
        by_cell.setdefault(ct.cell, []).append(ct)
    keys = list(m.spec_content.get("keys") or []) or None
    cells: dict[str, Any] = {}
    for name, trials in by_cell.items():
        errors = [t for t in trials if t.state == "error" or t.report is None]
        statuses = [str(_row_get(r, "status")) for t in trials if t.report
                    for r in t.report["rows"]]
        if errors:
            verdict = "error"
        elif "fail" in statuses:
            verdict = "fail"
        elif "unmeasured" in statuses:
            verdict = "unmeasured"
        else:
            verdict = "pass"
        per_key: dict[str, dict[str, Any]] = {}
        for t in trials:
            for r in (t.report or {}).get("rows", []):
                k = per_key.setdefault(r["key"], {"worst": None, "onset": None})
                v = r.get("max_abs")
                if isinstance(v, (int, float)) and (k["worst"] is None or v > k["worst"]):
                    k["worst"] = float(v)
                on = r.get("onset")
                if isinstance(on, int) and (k["onset"] is None or on < k["onset"]):
                    k["onset"] = on
        walls = [t.wall_s for t in trials if t.wall_s is not None and t.report is not None]
        cells[name] = {
            "env": dict(m.recipe.cell(name).env), "verdict": verdict,
            "trials": [{"trial": t.trial, "state": t.state, "exit_code": t.exit_code,
                        "wall_s": t.wall_s, "reason": t.reason, "identity": t.identity,
                        "dir": str(t.path)} for t in trials],
            "keys": per_key,
            "trials_agree": trials_agree(trials, keys) if not errors else None,
            "wall_s": ({"median": statistics.median(walls), "p90": _p90(walls),
                        "min": min(walls), "max": max(walls)} if walls else None),
        }
    base = cells.get(m.recipe.baseline, {}).get("wall_s")
    for name, c in cells.items():
        if base and c["wall_s"]:
            slow = c["wall_s"]["median"] / base["median"]
            c["slowdown"] = round(slow, 4)
            c["speed"] = slow > m.recipe.threshold
        else:
            c["slowdown"], c["speed"] = None, False
    return cells


# -- outputs ------------------------------------------------------------------------------

def matrix_document(m: Matrix, cells: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "name": m.recipe.name, "stem": m.recipe.stem,
            "dir": str(m.matrix_dir), "baseline": m.recipe.baseline,
            "baseline_rule": m.recipe.baseline_rule,
            "confound_threshold": m.recipe.threshold, "trials": m.recipe.trials,
            "code_commit": m.code_commit, "complete": not m.deltas, "deltas": m.deltas,
            "cells": cells, "exit_code": 2 if m.deltas else 0}


def _g(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def matrix_markdown(doc: dict[str, Any]) -> str:
    lines = [f"# tolerance matrix `{doc['name']}` — stem `{doc['stem']}`", "",
             f"baseline: `{doc['baseline']}` ({doc['baseline_rule']}); {doc['trials']} "
             f"trial(s) per cell; `speed` above {doc['confound_threshold']:g}x the baseline's "
             "median wall time.", "",
             "| cell | env | verdict | trials agree | worst (key: max abs @ onset) | median s | slowdown | flag |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in doc["cells"].items():
        env = ", ".join(f"{k}={v}" for k, v in c["env"].items()) or "-"
        worst = "; ".join(f"{k}: {_g(v['worst'])} @ {'-' if v['onset'] is None else v['onset']}"
                          for k, v in c["keys"].items()) or "-"
        agree = {True: "yes", False: "no", None: "-"}[c["trials_agree"]]
        med = "-" if not c["wall_s"] else f"{c['wall_s']['median']:.2f}"
        slow = "-" if c["slowdown"] is None else f"{c['slowdown']:.2f}x"
        lines.append(f"| {name} | {env} | {c['verdict']} | {agree} | {worst} | {med} | {slow} | "
                     f"{'speed' if c['speed'] else ''} |")
    lines += ["", "## Reconciliation", ""]
    if doc["deltas"]:
        lines += [f"- {d}" for d in doc["deltas"]] + ["", "**Incomplete**: exit 2 until every "
                                                      "cell-trial reconciles (`--resume`)."]
    else:
        lines.append("Every cell-trial of the roster is on disk and loads: complete.")
    return "\n".join(lines) + "\n"


def write_outputs(m: Matrix, doc: dict[str, Any]) -> None:
    import yaml

    from tolerance.io import write_json, write_text

    write_json(m.matrix_dir / "matrix.json", doc, overwrite=True)
    write_text(m.matrix_dir / "matrix.md", matrix_markdown(doc), overwrite=True)
    write_text(m.matrix_dir / RESOLVED,
               "# resolved recipe (tolerance matrix): loads back to the same cells\n"
               + yaml.safe_dump(m.recipe.resolved(), sort_keys=False), overwrite=True)


def resume_recipe(matrix_dir: Path) -> Path:
    """The recipe a resumed matrix reads: its snapshot, never the file as edited since."""
    p = matrix_dir / SNAPSHOT / "recipe.yaml"
    if not p.is_file():
        raise ToleranceError(f"{matrix_dir}: not a matrix directory (no {SNAPSHOT}/recipe.yaml)")
    return p


__all__ = ["Matrix", "classify", "claim_matrix_dir", "load_recipe", "matrix_document",
           "plan", "reconcile", "resume_recipe", "run_matrix", "snapshot", "write_outputs"]
