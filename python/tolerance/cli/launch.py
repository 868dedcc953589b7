"""`tolerance launch STEM`: build the mpiexec line for the registry, print it, run it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from tolerance.cli import _options


@click.command("launch", context_settings={"ignore_unknown_options": True})
@click.argument("stem")
@_options.cluster
@_options.specs
@click.option("--dry-run", is_flag=True,
              help="Print the command and validate cluster and spec; start nothing.")
@click.option("--mpiexec", "mpiexec_path", default=None,
              help="The MPI launcher (default: the one beside this Python, else on PATH).")
@_options.bounds_file
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def launch(ctx: click.Context, stem: str, cluster_path: str | None, specs_dir: str | None,
           dry_run: bool, mpiexec_path: str | None, bounds_path: str | None,
           extra: tuple[str, ...]) -> None:
    """Run STEM on every box of the registry: one MPI rank per box.

    Arguments after `--` are passed to every rank's `tolerance run` (e.g. `-- --no-sync`).
    """
    from tolerance.collective.handshake import LOCAL_HOSTS, this_host
    from tolerance.collective.launch import build_plan, find_mpiexec, mpiexec_flavor, run_plan
    from tolerance.collective.watch import DeathWatch
    from tolerance.config import load_default_cluster, load_spec

    cluster = load_default_cluster(cluster_path)
    if bounds_path is not None:  # checked here, handed to every rank as an absolute path
        from tolerance.config.bounds_file import load_bounds_file

        load_bounds_file(bounds_path)
        extra = ("--bounds", str(Path(bounds_path).resolve())) + tuple(extra)
    # validate the spec before starting anything
    load_spec(stem, specs_dir if specs_dir is not None else cluster.specs_dir)
    # The ranks resolve the registry as this process did: pass --cluster on only when the
    # user named one or ./cluster.yaml exists (the shipped default takes cwd as its root).
    path = (str(Path(cluster.path).resolve())
            if cluster_path is not None or Path("cluster.yaml").is_file() else None)
    if len(cluster.boxes) < 2:
        from tolerance._errors import ToleranceError
        raise ToleranceError(f"{cluster.path}: boxes: a run needs at least 2 boxes, "
                             f"found {len(cluster.boxes)}")
    mpiexec = find_mpiexec(mpiexec_path)
    flavor = mpiexec_flavor(mpiexec)
    specs_abs = str(Path(specs_dir).resolve()) if specs_dir else None
    if dry_run:
        plan = build_plan(cluster, stem, mpiexec=mpiexec, flavor=flavor, cluster_path=path,
                          specs_dir=specs_abs, extra=extra)
        if plan.hostfile:
            click.echo("# hostfile:\n" + "".join(f"#   {ln}\n" for ln in plan.hostfile.splitlines()),
                       nl=False)
        click.echo(plan.shell())
        ctx.exit(0)
    remote = any(b.host not in LOCAL_HOSTS for b in cluster.boxes)
    watch = DeathWatch("0.0.0.0", this_host()) if remote else DeathWatch()
    hostfile = None
    try:
        plan = build_plan(cluster, stem, mpiexec=mpiexec, flavor=flavor, cluster_path=path,
                          specs_dir=specs_abs, extra=extra, watch=watch.address)
        if plan.hostfile:
            fd, hostfile = tempfile.mkstemp(prefix="tolerance-hosts-")
            with os.fdopen(fd, "w") as f:
                f.write(plan.hostfile)
            plan = build_plan(cluster, stem, mpiexec=mpiexec, flavor=flavor, cluster_path=path,
                              specs_dir=specs_abs, extra=extra, watch=watch.address,
                              hostfile_path=hostfile)
        click.echo(f"+ {plan.shell()}", err=True)
        code = run_plan(plan, watch)
    finally:
        watch.close()
        if hostfile:
            os.unlink(hostfile)
    ctx.exit(code)
