"""`tolerance calibrate`: K replicated runs of a stem, then bounds from their envelope
(docs/calibrate.md).

Each replica is one ordinary replicated run, started through `tolerance launch` (the
same launch line, watch line and teardown), into a run directory the controller claims
(`runs/<stem>/<stamp>`), with `TOLERANCE_REPLICA=r` and, when perturbing,
`TOLERANCE_PERTURB=EPS` in the workload's environment (replica 0 runs as a plain run).
Every (box, replica) output is an ensemble member; `compare.calibration` turns them into
bounds. The controller reads the members where the boxes wrote them, so every box's root
must be reachable from here (local boxes, or roots on a shared filesystem).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tolerance._errors import ToleranceError
from tolerance.compare.calibration import FPR_WARN, EnsembleMember, KeyBounds, KeyEnvelope
from tolerance.config.bounds_file import bounds_document, envelope_path, workload_hash
from tolerance.io import write_json, write_npz, write_text
from tolerance.runner import claim_run_dir, utc_stamp

REPLICA_ENV, PERTURB_ENV = "TOLERANCE_REPLICA", "TOLERANCE_PERTURB"
CAL_SCHEMA = "tolerance.calibration/1"


@dataclass
class Calibration:
    stem: str
    replicas: int
    perturb: float
    factor: float
    boxes: list[str]
    members: list[EnsembleMember]
    envelopes: list[KeyEnvelope]
    bounds: list[KeyBounds]
    problems: list[str]
    run_dirs: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        out = list(self.problems)
        for b in self.bounds:
            if b.false_positive_rate is not None and b.false_positive_rate > FPR_WARN:
                out.append(f"key {b.key!r}: leave-one-out false-positive rate "
                           f"{b.false_positive_rate:.1%} is above {FPR_WARN:.0%} "
                           f"({b.held_out_failures} of {b.held_out_rows} held-out rows fail): "
                           f"more replicas, a larger --perturb or a larger --factor")
            if b.no_useful_bound_from is not None:
                out.append(f"key {b.key!r}: no useful bound from step {b.no_useful_bound_from}: "
                           f"the members part by the data's own range there (chaos); "
                           f"no bound is emitted for it")
        return out


def replica_env(r: int, perturb: float) -> dict[str, str]:
    """The workload variables of replica r (none for replica 0)."""
    if r == 0:
        return {}
    env = {REPLICA_ENV: str(r)}
    if perturb > 0:
        env[PERTURB_ENV] = repr(float(perturb))
    return env


def _members_of(run_dir: Path, boxes: Sequence, r: int, local_run_dir: Callable) -> list[EnsembleMember]:
    out = []
    for box in boxes:
        box_json = local_run_dir(box, run_dir) / box.name / "box.json"
        try:
            data = json.loads(box_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ToleranceError(f"{box_json}: replica {r}: box {box.name} left no box.json here "
                                 "(calibrate reads every box's outputs from this machine: "
                                 "local boxes or a shared filesystem)") from None
        except (OSError, ValueError) as exc:
            raise ToleranceError(f"{box_json}: replica {r}: unreadable: {exc}") from None
        chips = data.get("chips") or []
        bad = [c for c in chips if c.get("status") != "finished" or not c.get("output")]
        if data.get("status") != "finished" or bad or not chips:
            why = bad[0].get("reason") if bad else data.get("status")
            raise ToleranceError(f"{box_json}: replica {r}: box {box.name} did not finish: {why}")
        for c in chips:
            label_box = box.name if len(chips) == 1 else f"{box.name}:{c['chip']}"
            out.append(EnsembleMember(box=label_box, replica=r, path=str(c["output"])))
    return out


def run_replicas(stem: str, *, cluster, cluster_path: str | None, specs_dir: str | None,
                 replicas: int, perturb: float, launch_args: Sequence[str] = (),
                 say: Callable[[str], None] = lambda s: None,
                 ) -> tuple[list[Path], list[EnsembleMember], float]:
    """Run the K replicas through `tolerance launch`; the run dirs and the members."""
    from tolerance.collective.replicate import boxes_share_root, launch_into

    root = Path(cluster.boxes[0].root)
    local = boxes_share_root(cluster)

    def box_run_dir(box, run_dir: Path) -> Path:
        return run_dir if local else Path(box.root) / run_dir.relative_to(root)

    run_dirs: list[Path] = []
    members: list[EnsembleMember] = []
    t0 = time.monotonic()
    for r in range(replicas):
        claimed = claim_run_dir(root, stem)
        run = launch_into(stem, claimed, cluster=cluster, cluster_path=cluster_path,
                          specs_dir=specs_dir, env=replica_env(r, perturb),
                          launch_args=launch_args, root=root)
        if run.failed:
            raise ToleranceError(f"replica {r} ({claimed}): the run failed (exit "
                                 f"{run.exit_code}): {run.reason}")
        say(f"replica {r + 1}/{replicas}: {run.wall_s:.1f} s, exit {run.exit_code} ({claimed})")
        run_dirs.append(claimed)
        members += _members_of(claimed, cluster.boxes, r, box_run_dir)
    return run_dirs, members, time.monotonic() - t0


def calibrate_stem(stem: str, *, cluster, spec, cluster_path: str | None,
                   specs_dir: str | None, replicas: int, perturb: float, factor: float,
                   chunk_mb: float = 16.0, launch_args: Sequence[str] = (),
                   say: Callable[[str], None] = lambda s: None) -> Calibration:
    from tolerance.compare.calibration import calibrate

    if replicas < 1:
        raise ToleranceError(f"--replicas: {replicas} must be >= 1")
    if len(cluster.boxes) * replicas < 3:
        raise ToleranceError(f"--replicas: {len(cluster.boxes)} boxes x {replicas} replicas "
                             f"make {len(cluster.boxes) * replicas} members; leave-one-out "
                             "needs at least 3")
    run_dirs, members, t_runs = run_replicas(
        stem, cluster=cluster, cluster_path=cluster_path, specs_dir=specs_dir,
        replicas=replicas, perturb=perturb, launch_args=launch_args, say=say)
    t = time.monotonic()
    keys = list(spec.keys) if spec.keys else None
    envs, bounds, problems = calibrate(members, keys, factor=factor,
                                       steps_axis=spec.steps_axis,
                                       budget=int(chunk_mb * (1 << 20)))
    return Calibration(stem=stem, replicas=replicas, perturb=perturb, factor=factor,
                       boxes=[b.name for b in cluster.boxes], members=members, envelopes=envs,
                       bounds=bounds, problems=problems, run_dirs=[str(d) for d in run_dirs],
                       timings={"runs_s": round(t_runs, 3),
                                "envelope_s": round(time.monotonic() - t, 3)})


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def key_fields(b: KeyBounds, steps: int) -> dict:
    return {"atol": _num(b.atol), "rtol": _num(b.rtol), "per_step": b.per_step is not None,
            "steps": int(steps), "max_envelope": _num(b.max_envelope),
            "scale_variation": _num(b.scale_variation),
            "no_useful_bound_from": b.no_useful_bound_from,
            "false_positive_rate": _num(b.false_positive_rate),
            "held_out_rows": b.held_out_rows, "held_out_failures": b.held_out_failures,
            "rule": b.rule}


def envelope_arrays(cal: Calibration) -> dict[str, np.ndarray]:
    """The sibling .npz: per key its envelope, relative envelope, scale, spread and
    (where one exists) its per-step bound."""
    out: dict[str, np.ndarray] = {}
    for env, b in zip(cal.envelopes, cal.bounds):
        out[f"{env.key}__envelope"] = env.envelope
        out[f"{env.key}__envelope_rel"] = env.envelope_rel
        out[f"{env.key}__scale"] = env.scale
        out[f"{env.key}__spread"] = env.spread
        if b.per_step is not None:
            out[f"{env.key}__bound"] = b.per_step
    return out


def write_outputs(cal: Calibration, *, spec, code_commit: str | None, out: Path,
                  report_root: Path, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """The bounds file, its sibling .npz, and the calibration report directory."""
    import yaml

    npz = envelope_path(out)
    for p in (out, npz):
        if p.exists() and not overwrite:
            raise ToleranceError(f"{p}: exists; nothing is overwritten (pass --out FILE, "
                                 "or --overwrite to replace it)")
    created = utc_stamp()
    steps = {e.key: e.steps for e in cal.envelopes}
    doc = bounds_document(stem=cal.stem, workload=workload_hash(spec), code_commit=code_commit,
                          boxes=cal.boxes, replicas=cal.replicas, perturb=cal.perturb,
                          factor=cal.factor, steps_axis=spec.steps_axis,
                          envelope_name=npz.name,
                          keys={b.key: key_fields(b, steps[b.key]) for b in cal.bounds},
                          created=created)
    text = ("# calibrated bounds (tolerance calibrate): see docs/calibrate.md\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    arrays = envelope_arrays(cal)
    write_npz(npz, arrays, overwrite=overwrite)
    write_text(out, text, overwrite=overwrite)

    # the report: runs/<stem>/calibrate-<stamp>[-N] (claimed like a run directory)
    parent = report_root / "runs" / cal.stem
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        rdir = parent / (f"calibrate-{created}" + ("" if n == 1 else f"-{n}"))
        try:
            os.mkdir(rdir)
            break
        except FileExistsError:
            continue
    else:
        raise ToleranceError(f"{parent}: too many calibrations in one second")
    report = {"schema": CAL_SCHEMA, **{k: v for k, v in doc.items() if k != "schema"},
              "bounds_file": str(out), "members": [m.label for m in cal.members],
              "run_dirs": cal.run_dirs, "warnings": cal.warnings, "timings": cal.timings}
    write_json(rdir / "calibration.json", report)
    write_npz(rdir / "envelope.npz", arrays)
    plots = _plots(cal, rdir)
    write_text(rdir / "summary.md", summary_markdown(cal, out, plots))
    return out, npz, rdir


def _plots(cal: Calibration, rdir: Path) -> list[str]:
    """A plot of the envelope per key, when the plotting extra is installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    (rdir / "plots").mkdir(exist_ok=True)
    for env, b in zip(cal.envelopes, cal.bounds):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        steps = np.arange(env.steps)
        pos = np.where(env.envelope > 0, env.envelope, np.nan)
        ax.semilogy(steps, pos, label="envelope (max over member pairs)")
        if b.per_step is not None:
            ax.semilogy(steps, np.where(b.per_step > 0, b.per_step, np.nan), "--",
                        label=f"per-step bound ({cal.factor:g} x envelope)")
        reach = np.maximum(env.spread, env.scale)
        ax.semilogy(steps, np.where(reach > 0, reach, np.nan), ":", label="data range")
        if b.no_useful_bound_from is not None:
            ax.axvline(b.no_useful_bound_from, color="red",
                       label=f"no useful bound from step {b.no_useful_bound_from}")
        ax.set_xlabel("step")
        ax.set_ylabel("max |a-b|")
        ax.set_title(f"{cal.stem}: {env.key}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"plots/{env.key}.png"
        tmp = rdir / f"plots/.{env.key}.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        os.replace(tmp, rdir / name)
        names.append(name)
    return names


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def key_line(b: KeyBounds) -> str:
    if b.no_useful_bound_from is not None:
        bound = f"no useful bound from step {b.no_useful_bound_from}"
    elif b.rtol is not None:
        bound = f"rtol {_g(b.rtol)}"
    else:
        bound = f"atol {_g(b.atol)}"
    fpr = ("fpr -" if b.false_positive_rate is None else
           f"fpr {b.false_positive_rate:.1%} ({b.held_out_failures}/{b.held_out_rows} held-out rows)")
    return f"{b.key}: {bound}; envelope max {_g(b.max_envelope)}; {fpr}"


def summary_markdown(cal: Calibration, out: Path, plots: list[str]) -> str:
    lines = [f"# tolerance calibrate `{cal.stem}`", "",
             f"{len(cal.boxes)} boxes x {cal.replicas} replicas = {len(cal.members)} members, "
             f"perturbation {cal.perturb:g}, factor {cal.factor:g}. Bounds file: `{out}`.", "",
             "| key | atol | rtol | per-step | no useful bound from | false-positive rate | rule |",
             "|---|---|---|---|---|---|---|"]
    for b in cal.bounds:
        fpr = "-" if b.false_positive_rate is None else f"{b.false_positive_rate:.1%}"
        lines.append(f"| {b.key} | {_g(b.atol)} | {_g(b.rtol)} | "
                     f"{'yes' if b.per_step is not None else 'no'} | "
                     f"{'-' if b.no_useful_bound_from is None else b.no_useful_bound_from} | "
                     f"{fpr} | {b.rule} |")
    if cal.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in cal.warnings]
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


__all__ = ["Calibration", "calibrate_stem", "key_line", "replica_env", "write_outputs"]
