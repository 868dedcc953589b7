"""`tolerance publish RUN [--box NAME] [--digests-only] --out DIR`: a reference from a run."""
from __future__ import annotations

from pathlib import Path

import click

from tolerance._errors import ToleranceError
from tolerance.cli import _options


@click.command("publish", epilog="Exit codes: 0 published, 2 error (no such run or box, a changed spec, a missing key, an existing --out).")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--box", "box_name", default=None,
              help="The box of the run to publish (needed when the run holds several).")
@click.option("--digests-only", is_flag=True,
              help="Publish per-block digests but not the arrays (a verifier can then tell "
                   "equal bytes, not by how much they differ).")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="The new reference directory (never overwritten).")
@_options.cluster
@_options.specs
def publish(run_dir: str, box_name: str | None, digests_only: bool, out_dir: str,
            cluster_path: str | None, specs_dir: str | None) -> None:
    """Publish one box's output of a stored run RUN (runs/STEM/RUN_ID) as a reference.

    Writes DIR/reference.json (the stem, the spec without box-local knobs, the bounds,
    the code commit, the box's environment fingerprint, per key shape, dtype and block
    digests, the sha256 of every file) and DIR/arrays.npz. Exit 0, or 2 on any error.
    """
    from tolerance.collective.code_fingerprint import code_fingerprint
    from tolerance.config import load_default_cluster, load_spec
    from tolerance.io.npz import Archive
    from tolerance.io.reference import write_reference
    from tolerance.runner.env_fingerprint import publishable_fingerprint
    from tolerance.runner.stored import load_stored_box

    stored = load_stored_box(run_dir, box_name)
    result = stored.result
    cluster = load_default_cluster(cluster_path)
    spec = load_spec(result.stem or "",
                     Path(specs_dir) if specs_dir is not None else cluster.specs_dir)
    if spec.identity_hash() != result.spec_hash:
        raise ToleranceError(f"{spec.path}: the spec changed since run {stored.run_id} "
                             "(its identity hash differs from the run's): rerun, then publish")
    chip, output = stored.outputs[0]
    if len(stored.outputs) > 1:
        click.echo(f"note: box {result.box!r} ran {len(stored.outputs)} chips; publishing "
                   f"the output of the first ({chip})", err=True)
    code = stored.code
    if code is None:  # a run-box run records no code: fingerprint the box root now
        root = next((b.root for b in cluster.boxes if b.name == result.box), None)
        code = code_fingerprint(root if root is not None else Path.cwd()).to_dict()
    code = {"head": code.get("head"), "digest": code.get("digest"),
            "dirty": bool(code.get("files"))}
    with Archive(output, verify_crc=True) as arc:
        keys = list(spec.keys) if spec.keys is not None else list(arc.keys())  # none listed: all
        missing = [k for k in keys if k not in arc]
        if missing:
            raise ToleranceError(f"{output}: lacks key {missing[0]!r} of spec "
                                 f"{spec.stem!r}: nothing published")
        fields = {"stem": spec.stem, "box": result.box, "run_id": stored.run_id,
                  "spec": spec.published(),
                  "bounds": {k: spec.bounds_for(k).to_dict() for k in keys},
                  "steps_axis": spec.steps_axis, "code": code,
                  "environment": publishable_fingerprint(result.env_fingerprint)}
        dest = write_reference(out_dir, fields, [arc[k] for k in keys],
                               digests_only=digests_only)
    what = "digests only" if digests_only else "arrays and digests"
    click.echo(f"published {spec.stem} from box {result.box} (run {stored.run_id}, "
               f"{len(keys)} keys, {what}) -> {dest}")
