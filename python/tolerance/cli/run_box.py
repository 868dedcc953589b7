"""`tolerance run-box STEM --box NAME`: run one stem on one box, here, without MPI."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import click

from tolerance._errors import EXIT_ERROR, EXIT_OK
from tolerance.cli import _options
from tolerance.config import load_default_cluster, load_spec
from tolerance.runner import claim_run_dir, open_run_dir, run_on_box

_LOCAL = {"localhost", "127.0.0.1", "::1"}


@click.command("run-box", epilog="Exit codes: 0 every chip finished with an output, 2 otherwise.")
@click.argument("stem")
@click.option("--box", "box_name", required=True, help="The box of cluster.yaml to run as.")
@click.option("--run-id", default=None,
              help="Use runs/STEM/RUN_ID (claimed elsewhere) instead of claiming a new one.")
@_options.cluster
@_options.specs
@_options.as_json
@click.pass_context
def run_box_command(ctx: click.Context, stem: str, box_name: str, run_id: str | None,
                    cluster_path: str | None, specs_dir: str | None, as_json: bool) -> None:
    """Run STEM on every chip of box NAME here; print each chip's status and output.

    Exit 0 when every chip finished with an output, 2 otherwise.
    """
    cluster = load_default_cluster(cluster_path)
    box = cluster.box(box_name)
    spec = load_spec(stem, Path(specs_dir) if specs_dir is not None else cluster.specs_dir)
    here = socket.gethostname()
    if box.host not in _LOCAL and box.host not in (here, socket.getfqdn()) and not as_json:
        click.echo(f"note: box {box.name!r} is registered on host {box.host!r}; "
                   f"running it here on {here!r}", err=True)
    root = Path(box.root)
    run_dir = (open_run_dir(root, spec.stem, run_id) if run_id is not None
               else claim_run_dir(root, spec.stem))
    result = run_on_box(spec, box, run_dir)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(f"{spec.stem} on {box.name}: {result.status} ({result.run_dir})")
        width = max(len(c.chip) for c in result.chips)
        for c in result.chips:
            secs = f"{c.seconds:.2f} s" if c.seconds is not None else "-"
            click.echo(f"  {c.chip.ljust(width)}  {c.status:<8}  {secs:>8}  "
                       f"{c.output if c.output else c.reason}")
            if c.status != "finished":
                for line in c.stderr_tail[-5:]:
                    click.echo(f"    | {line}", err=True)
    ctx.exit(EXIT_OK if result.status == "finished" else EXIT_ERROR)
