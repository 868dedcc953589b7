"""`tolerance calibrate STEM`: bounds from K replicated runs of the stem (docs/calibrate.md)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from tolerance.cli import _options


@click.command("calibrate")
@click.argument("stem")
@_options.cluster
@_options.specs
@click.option("--replicas", type=click.IntRange(min=1), default=5, show_default=True,
              help="Replicated runs of the stem on every box (every (box, replica) is a member).")
@click.option("--perturb", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Replicas r >= 1 get TOLERANCE_PERTURB=EPS (a round-off perturbation "
                   "the workload applies to its initial state).")
@click.option("--factor", type=click.FloatRange(min=0.0, min_open=True), default=2.0,
              show_default=True, help="Bounds are FACTOR x the envelope.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="The bounds file (default: specs/<STEM>.bounds.yaml beside the spec).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bounds file.")
@_options.as_json
@click.pass_context
def calibrate(ctx: click.Context, stem: str, cluster_path: str | None, specs_dir: str | None,
              replicas: int, perturb: float, factor: float, out_path: str | None,
              overwrite: bool, as_json: bool) -> None:
    """Calibrate STEM's bounds from its own runs: run it REPLICAS times on every box, take
    per key and step the largest divergence over all pairs of members (the envelope),
    and write bounds of FACTOR x the envelope with a leave-one-out false-positive rate.

    \b
    Exit codes: 0 bounds written (warnings say where none is useful), 2 error.
    """
    from tolerance.collective.calibrate import calibrate_stem, key_line, write_outputs
    from tolerance.collective.code_fingerprint import code_fingerprint
    from tolerance.config import load_default_cluster, load_spec

    cluster = load_default_cluster(cluster_path)
    sdir = Path(specs_dir) if specs_dir is not None else Path(cluster.specs_dir)
    spec = load_spec(stem, sdir)
    out = Path(out_path) if out_path else sdir / f"{stem}.bounds.yaml"
    if out.exists() and not overwrite:
        from tolerance._errors import ToleranceError
        raise ToleranceError(f"{out}: exists; nothing is overwritten (pass --out FILE, "
                             "or --overwrite to replace it)")
    say = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    cal = calibrate_stem(stem, cluster=cluster, spec=spec, cluster_path=cluster_path,
                         specs_dir=specs_dir, replicas=replicas, perturb=perturb,
                         factor=factor, say=say)
    commit = code_fingerprint(cluster.boxes[0].root).head
    out, npz, rdir = write_outputs(cal, spec=spec, code_commit=commit, out=out,
                                   report_root=Path(cluster.boxes[0].root), overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({"schema": "tolerance.calibration/1", "stem": stem,
                               "bounds_file": str(out), "envelope": str(npz),
                               "report": str(rdir), "members": len(cal.members),
                               "keys": {b.key: b.to_dict() for b in cal.bounds},
                               "warnings": cal.warnings, "timings": cal.timings},
                              allow_nan=False))
    else:
        for b in cal.bounds:
            click.echo(key_line(b))
        for w in cal.warnings:
            click.echo(f"(warn) {w}", err=True)
        click.echo(f"wrote {out} (+ {npz.name}); report {rdir}")
    ctx.exit(0)
