"""`tolerance verify STEM --against DIR [--box NAME] [--bounds FILE]`: run STEM on this box
and compare its fresh output with a published reference."""
from __future__ import annotations

import json
from pathlib import Path

import click

from tolerance._errors import ConfigError, ToleranceError
from tolerance.cli import _options


@click.command("verify", epilog="Exit codes: 0 every key within its bound, 1 a bound exceeded (or a NaN/inf mismatch), 2 error (a bad or different reference, the box failed), 3 cannot verify (digests only and bytes differ, a key the reference lacks).")
@click.argument("stem")
@click.option("--against", "against", required=True, type=click.Path(),
              help="The reference directory (from tolerance publish).")
@click.option("--box", "box_name", default=None,
              help="The box of cluster.yaml to run as (default: the only box).")
@click.option("--bounds", "bounds_path", default=None, type=click.Path(dir_okay=False),
              help="Bounds to use instead of the reference's: a YAML file 'bounds: "
                   "{default: {...}, KEY: {...}}', or a calibrated bounds file.")
@_options.cluster
@_options.specs
@_options.threads
@_options.as_json
@_options.no_legend
@click.pass_context
def verify(ctx: click.Context, stem: str, against: str, box_name: str | None,
           bounds_path: str | None, cluster_path: str | None, specs_dir: str | None,
           threads: int | None, as_json: bool, no_legend: bool) -> None:
    """Run STEM on this box (as run-box does, no MPI) and compare with the reference.

    Exit 0 every key within its bound; 1 a bound exceeded (rows as in diff, with onset);
    2 error: the reference is tampered with, malformed or made from a different spec, or
    the box failed to run; 3 cannot verify (a digests-only reference and bytes that
    differ, a key the reference lacks), with a warning saying why.
    """
    from tolerance.compare.reference import verify_output
    from tolerance.compare.report import legend_lines, row_lines, summarize
    from tolerance.compare.rows import rows_exit_code
    from tolerance.config import load_default_cluster, load_spec
    from tolerance.config.spec import load_bounds, spec_differences
    from tolerance.io.atomic import write_json
    from tolerance.io.npz import Archive
    from tolerance.io.reference import read_reference
    from tolerance.runner import claim_run_dir, run_on_box

    # everything is checked before anything runs
    ref = read_reference(against)
    cluster = load_default_cluster(cluster_path)
    if box_name is None:
        if len(cluster.boxes) != 1:
            raise ConfigError(f"{cluster.path}: {len(cluster.boxes)} boxes "
                              f"({', '.join(cluster.names)}): say which this is with --box")
        box = cluster.boxes[0]
    else:
        box = cluster.box(box_name)
    spec = load_spec(stem, Path(specs_dir) if specs_dir is not None else cluster.specs_dir)
    if spec.stem != ref.stem:
        raise ToleranceError(f"{against}: a reference of stem {ref.stem!r}, not {spec.stem!r}")
    differ = spec_differences(spec.published(), ref.spec)
    if differ:
        raise ToleranceError(f"{against}: made from a different spec than {spec.path}: "
                             f"{', '.join(differ)} differ")
    bounds = load_bounds(bounds_path, spec.keys if spec.keys is not None
                         else tuple(ref.keys), spec) if bounds_path is not None else None

    run_dir = claim_run_dir(Path(box.root), spec.stem)
    result = run_on_box(spec, box, run_dir)
    if result.status != "finished":
        bad = [f"{c.chip} {c.status}: {c.reason}" for c in result.chips if c.status != "finished"]
        raise ToleranceError(f"box {box.name}: {spec.stem} did not finish ({'; '.join(bad)}); "
                             f"see {result.run_dir}")

    rows, warnings = [], []
    multi = len(result.chips) > 1
    for c in result.chips:
        label = f"{box.name}/{Path(c.dir or '').name}" if multi else box.name
        with Archive(c.output) as fresh:  # type: ignore[arg-type]
            v = verify_output(ref, fresh, label, keys=spec.keys,
                              bounds_for=None if bounds is None else
                              (lambda k: bounds.get(k) or ref.bounds.get(k, {})),
                              threads=threads)
        rows.extend(v.rows)
        warnings.extend(v.warnings)
    code = rows_exit_code(rows)
    doc = {"schema": "tolerance.verify/1", "stem": spec.stem, "box": box.name,
           "reference": {"path": str(against), "box": ref.doc["box"],
                         "run_id": ref.doc["run_id"], "code": ref.doc["code"],
                         "digests_only": ref.digests_only,
                         "self_sha256": ref.doc["self_sha256"]},
           "bounds": "file" if bounds is not None else "reference",
           "run_dir": result.run_dir, "warnings": warnings,
           "rows": [r.to_json() for r in rows], "exit_code": code}
    try:
        write_json(Path(result.run_dir or run_dir) / "verify.json", doc)
    except (OSError, ToleranceError) as exc:
        warnings.append(f"could not write verify.json: {exc}")
    if as_json:
        click.echo(json.dumps(doc, allow_nan=False))
    else:
        src = "digests" if ref.digests_only else "arrays"
        click.echo(f"tolerance verify {spec.stem} on {box.name} against {against} "
                   f"(box {ref.doc['box']}, run {ref.doc['run_id']}, "
                   f"commit {str(ref.doc['code'].get('head') or '-')[:12]}, {src})")
        steps = ref.steps_axis is not None
        for line in row_lines(rows, steps=steps):  # each row carries its bound
            click.echo(line)
        if not no_legend:
            for line in legend_lines(rows, steps=steps):
                click.echo(line)
        click.echo(summarize(rows, 1 + len(result.chips), len({r.key for r in rows}), code)
                   + f"; run {result.run_dir}")
    for w in warnings:
        click.echo(f"tolerance: warning: {w}", err=True)
    if code:
        ctx.exit(code)
