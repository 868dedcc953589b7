"""Stored runs as `tolerance diff` inputs: which outputs a run stands for, which pairs of
them are compared, and the bounds a run recorded. Every figure comes from the one pair
engine (compare.engine.diff_inputs); this module only chooses inputs, labels and pairs.

- One run: every pair of its boxes' outputs (what the run itself compared).
- Two or more runs: the same box (and chip) across the runs, every pair of runs
  (`same_box`); or, with `all_pairs`, every (box of run A, box of run B) pair for every
  pair of runs, never two boxes of one run.
- A box (or chip) that is in only some of the runs, or that did not finish, or whose
  output is gone, gives unmeasured rows (codes `missing_box` and `no_output`) for every
  key the other side has: nothing is silently dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tolerance._errors import FormatError, ToleranceError
from tolerance.compare.rows import MISSING_BOX, NO_OUTPUT, Problem, Row, as_bound, unmeasured_row
from tolerance.io.npz import DEFAULT_CHUNK_BYTES
from tolerance.runner.stored import (REPORT_FILE, StoredRun, participant_label, read_run)

SAME_BOX, ALL_PAIRS, WITHIN = "same_box", "all_pairs", "within"


@dataclass
class RunOutput:
    """One chip's output standing for its box in a stored run (path None: there is none)."""

    run: int              # index of its run in the diff's runs
    box: str
    chip: str
    path: Path | None
    code: str | None = None     # why there is no output: NO_OUTPUT or MISSING_BOX
    why: str | None = None
    label: str = ""

    @property
    def ident(self) -> tuple[str, str]:
        return self.box, self.chip


@dataclass
class RunInput:
    """One stored run given to diff: its directory, record and outputs."""

    path: Path
    run: StoredRun
    outputs: list[RunOutput]
    label: str = ""

    @property
    def report(self) -> dict[str, Any] | None:
        return self.run.report

    @property
    def stem(self) -> str:
        stem = (self.report or {}).get("stem")
        return stem if isinstance(stem, str) else self.run.stem

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "path": str(self.path), "run_id": self.run.run_id,
                "stem": self.stem, "report": str(self.path / REPORT_FILE)
                if self.report is not None else None,
                "boxes": dict(self.run.boxes)}


def open_run(path: str | os.PathLike, index: int = 0) -> RunInput:
    """A run directory as diff input: one RunOutput per chip of every box recorded in it
    (from each `<box>/box.json`; a box that report.json names but whose directory is not
    here stands as a box without output). One line (ToleranceError) when it holds no box."""
    p = Path(path)
    run = read_run(p)
    if run.problem is not None and not run.chips:
        raise FormatError(run.problem)
    if not run.chips:
        where = f" (report.json names {', '.join(run.boxes)}: their directories are not here)" \
            if run.boxes else ""
        raise FormatError(f"{p}: a run with no box outputs here: no <box>/box.json with a "
                          f"chip{where}")
    outputs: list[RunOutput] = []
    for c in run.chips:
        if c.status != "finished":
            outputs.append(RunOutput(index, c.box, c.chip, None, NO_OUTPUT,
                                     f"box {c.box} chip {c.chip} did not finish in run "
                                     f"{run.run_id} ({c.status})"))
        elif c.output is None or not Path(c.output).is_file():
            outputs.append(RunOutput(index, c.box, c.chip, None, NO_OUTPUT,
                                     f"the output of box {c.box} chip {c.chip} in run "
                                     f"{run.run_id} is gone ({c.output or 'none recorded'})"))
        else:
            outputs.append(RunOutput(index, c.box, c.chip, Path(c.output)))
    order = {b: k for k, b in enumerate(run.boxes)}  # report.json's order (the run's)
    outputs.sort(key=lambda o: order.get(o.box, len(order)))
    have = {o.box for o in outputs}
    for box, status in run.boxes.items():
        if box not in have:  # named by report.json, ran under another root
            outputs.append(RunOutput(index, box, "*", None, NO_OUTPUT,
                                     f"box {box} of run {run.run_id} has no directory here "
                                     f"({p}/{box})"))
    return RunInput(p, run, outputs)


def label_runs(runs: Sequence[RunInput]) -> None:
    """Run labels (the run id; `stem/run id` where ids repeat) and output labels: box (or
    `box/chip` for a box of several chips), prefixed by the run's label when several runs
    are compared. The same run directory twice is refused."""
    seen: dict[Path, Path] = {}
    for r in runs:
        real = r.path.resolve()
        if real in seen:
            raise ToleranceError(f"{r.path}: the same run is given twice")
        seen[real] = r.path
    ids = [r.run.run_id for r in runs]
    for r in runs:
        r.label = r.run.run_id if ids.count(r.run.run_id) == 1 else f"{r.stem}/{r.run.run_id}"
    if len({r.label for r in runs}) != len(runs):
        for r in runs:
            r.label = str(r.path)
    for r in runs:
        for o in r.outputs:
            o.label = output_label(runs, r, o.box, o.chip)


def output_label(runs: Sequence[RunInput], run: RunInput, box: str, chip: str) -> str:
    """`box`, or `box/chip` where the box has several chips in one of the runs; prefixed by
    the run's label when several runs are compared."""
    multi = any(sum(1 for o in r.outputs if o.box == box) > 1 for r in runs)
    lab = participant_label(box, chip, multi)
    return lab if len(runs) == 1 else f"{run.label}/{lab}"


def plan_groups(runs: Sequence[RunInput], all_pairs: bool = False) -> tuple[str, list[list[RunOutput]]]:
    """The pairing and its groups: each group is a list of outputs of which every pair is
    compared (one engine call over those with a path)."""
    if len(runs) == 1:
        return WITHIN, [list(runs[0].outputs)]
    if all_pairs:
        groups = []
        for ra, rb in combinations(runs, 2):
            for a in ra.outputs:
                for b in rb.outputs:
                    groups.append([a, b])
        return ALL_PAIRS, groups
    idents: list[tuple[str, str]] = []
    for r in runs:
        for o in r.outputs:
            if o.ident not in idents:
                idents.append(o.ident)
    groups = []
    for ident in idents:
        group = []
        for k, r in enumerate(runs):
            found = [o for o in r.outputs if o.ident == ident]
            if found:
                group.append(found[0])
            else:
                multi = any(sum(1 for o in x.outputs if o.box == ident[0]) > 1 for x in runs)
                chip = f" chip {ident[1]}" if multi else ""
                group.append(RunOutput(k, ident[0], ident[1], None, MISSING_BOX,
                                       f"box {ident[0]}{chip} is not in run {r.label}",
                                       label=output_label(runs, r, *ident)))
        groups.append(group)
    return SAME_BOX, groups


def recorded_terms(runs: Sequence[RunInput]) -> tuple[dict[str, Any] | None, list[str]]:
    """What the runs' report.json files recorded, as diff's defaults: {"run": label, "stem",
    "bounds": {key: Bounds}, "steps_axis", "keys" (None: every common key)} from the first
    run that has a report, and one warning line per way another run's record differs."""
    from tolerance.config.spec import Bounds

    recs = []
    for r in runs:
        doc = r.report
        if not isinstance(doc, dict) or not isinstance(doc.get("bounds"), dict):
            continue
        bounds = {}
        for k, b in doc["bounds"].items():
            if isinstance(b, dict):
                bounds[k] = Bounds(atol=b.get("atol"), rtol=b.get("rtol"), ulp=b.get("ulp"))
        keys = doc.get("keys") if doc.get("keys_listed") and isinstance(doc.get("keys"), list) \
            else None
        axis = doc.get("steps_axis")
        recs.append((r, {"run": r.label, "stem": r.stem, "bounds": bounds,
                         "steps_axis": axis if isinstance(axis, int) else None, "keys": keys}))
    if not recs:
        return None, []
    first_run, first = recs[0]
    warnings = []
    for r, rec in recs[1:]:
        if rec["stem"] != first["stem"]:
            warnings.append(f"run {r.label} is of stem {rec['stem']!r}, run {first_run.label} "
                            f"of {first['stem']!r}")
        differ = sorted(k for k in set(rec["bounds"]) & set(first["bounds"])
                        if rec["bounds"][k] != first["bounds"][k])
        if differ:
            warnings.append(f"run {r.label} used other bounds on {', '.join(differ)} than run "
                            f"{first_run.label}: the bounds of run {first_run.label} are used")
        if rec["steps_axis"] != first["steps_axis"]:
            warnings.append(f"run {r.label} used steps axis {rec['steps_axis']}, run "
                            f"{first_run.label} {first['steps_axis']}: "
                            f"{first['steps_axis']} is used")
    return first, warnings


def keys_of(path: Path) -> list[str]:
    """The keys of an output file, in file order (only its directory is read)."""
    from tolerance.io.npz import Archive

    arch = Archive(path)
    try:
        return list(arch.keys())
    finally:
        arch.close()


def output_metas(outputs: Sequence[RunOutput]) -> dict[str, list[tuple[tuple[int, ...], str]]]:
    """key -> [(shape, dtype kind)] over the outputs that have a path, keys in first-seen
    order (only each file's directory and array headers are read)."""
    from tolerance.io.npz import Archive

    out: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for o in outputs:
        if o.path is None:
            continue
        arch = Archive(o.path)
        try:
            for k, m in arch.members.items():
                out.setdefault(k, []).append((tuple(m.shape), m.dtype.kind))
        finally:
            arch.close()
    return out


@dataclass
class GroupResult:
    rows: list[Row] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    stats: Any = None


def compare_group(group: Sequence[RunOutput], *, keys: Sequence[str] | None, bound: Any,
                  key_bounds: Mapping[str, Any] | None, steps_axis: int | None,
                  threads: int | None = None, budget: int = DEFAULT_CHUNK_BYTES,
                  on_notice: Callable[[Any], None] | None = None) -> GroupResult:
    """Every pair of the group: the outputs that have a path through the one engine, and
    an unmeasured row per key for each pair with a side that has none; rows in (key, i, j)
    order of the group."""
    from tolerance.compare.engine import diff_inputs, open_inputs

    bound = as_bound(bound)
    per_key = {k: as_bound(b) for k, b in (key_bounds or {}).items()}
    present = [o for o in group if o.path is not None]
    out = GroupResult()
    measured: list[Row] = []
    if len(present) >= 2:
        inputs = open_inputs([o.path for o in present], labels=[o.label for o in present])
        try:
            res = diff_inputs(inputs, keys=keys, bound=bound, steps_axis=steps_axis,
                              threads=threads, budget=budget, on_notice=on_notice,
                              key_bounds=key_bounds)
        finally:
            for d in inputs:
                d.archive.close()
        measured, out.inputs, out.keys, out.stats = res.rows, res.inputs, list(res.keys), res.stats
    elif keys is not None:
        out.keys = list(dict.fromkeys(keys))
    elif present:
        out.keys = keys_of(present[0].path)
    lacking = [o for o in group if o.path is None]
    if lacking and not out.keys and keys is None:
        out.keys = ["*"]  # no side has an output to name its keys: one row says why
    pos = {id(o): k for k, o in enumerate(group)}
    order = {k: q for q, k in enumerate(out.keys)}
    extra: list[Row] = []
    for i, j in combinations(range(len(group)), 2):
        a, b = group[i], group[j]
        gone = [o for o in (a, b) if o.path is None]
        if not gone:
            continue
        code = MISSING_BOX if any(o.code == MISSING_BOX for o in gone) else NO_OUTPUT
        why = "; ".join(o.why or "" for o in gone)
        for key in out.keys:
            extra.append(unmeasured_row(a.label, b.label, key, Problem(code, why),
                                        per_key.get(key, bound)))
    label_pos = {o.label: pos[id(o)] for o in group}
    out.rows = sorted(measured + extra, key=lambda r: (order.get(r.key, len(order)),
                                                       label_pos.get(r.a, 0),
                                                       label_pos.get(r.b, 0)))
    return out


__all__ = ["ALL_PAIRS", "SAME_BOX", "WITHIN", "GroupResult", "RunInput", "RunOutput",
           "compare_group", "keys_of", "label_runs", "open_run", "output_label", "output_metas", "plan_groups", "recorded_terms"]
