"""`tolerance run STEM`: one rank of a replicated run (start it under mpirun/mpiexec).

    mpirun -n N python -m tolerance run STEM

Every rank runs its box; rank 0 prints one line per (box_a, box_b, key), a summary, and
writes report.json, series.npz and summary.md under the run directory. Every rank exits
with the same code (DESIGN.md "Exit codes").
"""
from __future__ import annotations

import sys

import click

from tolerance.cli import _options
from tolerance.cli._progress import Progress

_NO_SYNC_WARNING = "WARNING: --no-sync: the boxes' code was NOT checked to be the same"


@click.command("run")
@click.argument("stem")
@_options.cluster
@_options.specs
@click.option("--sync", "sync_mode", type=click.Choice(["verify", "off"]), default="verify",
              show_default=True, help="Refuse to run unless every box runs the same code.")
@click.option("--no-sync", "no_sync", is_flag=True,
              help="Same as --sync off: run even if the boxes' code differs (warned loudly).")
@click.option("--chunk-mb", type=click.FloatRange(min=0.0625, max=1024), default=16.0,
              show_default=True, help="Byte budget of one block of steps sent between boxes.")
@_options.threads
@_options.bounds_file
@_options.run_env
@_options.run_dir
@click.pass_context
def run(ctx: click.Context, stem: str, cluster_path: str | None, specs_dir: str | None,
        sync_mode: str, no_sync: bool, chunk_mb: float, threads: int | None,
        bounds_path: str | None, run_env: dict[str, str], run_dir: str | None) -> None:
    """Run STEM on every box at once (one MPI rank per box) and compare the outputs."""
    from tolerance.collective.job import run_stem
    from tolerance.collective.mpi import world

    sync = sync_mode == "verify" and not no_sync
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    progress = Progress(sys.stderr)
    outcome = run_stem(stem, cluster_path=cluster_path, specs_dir=specs_dir, sync=sync,
                       chunk_mb=chunk_mb, threads=threads, debug=debug,
                       progress=progress.update if progress.live else None,
                       run_dir=run_dir, env=run_env, bounds_path=bounds_path)
    progress.clear()
    comm = world()
    code = outcome.exit_code
    if comm.Get_rank() == 0:
        if outcome.error:
            click.echo(f"tolerance: error: {outcome.error}", err=True)
            for line in outcome.detail:
                click.echo(line, err=True)
        else:
            code = _report(outcome)
    ctx.exit(comm.bcast(code, root=0))


def _report(outcome) -> int:
    """Rank 0: print the rows and the summary, write the report files; the exit code."""
    from tolerance.collective.report import (build_rows, exit_code_of, report_document,
                                             write_report)
    from tolerance.compare.rows import describe_bounds, format_row, run_head, summarize

    if not outcome.sync:
        click.echo(_NO_SYNC_WARNING, err=True)
    click.echo(f"tolerance run {outcome.stem}  run {outcome.run_id}  "
               f"{len(outcome.infos)} boxes: " + " ".join(i["box"] for i in outcome.infos))
    for b in outcome.boxes:
        for c in b.get("chips", []):
            if c.get("status") != "finished":
                tail = [ln for ln in (c.get("stderr_tail") or []) if ln.strip()][-1:]
                click.echo(f"(warn) box {b.get('box')} chip {c.get('chip')}: {c.get('status')}"
                           f"{': ' + c['reason'] if c.get('reason') else ''}"
                           f"{'  | ' + tail[0].strip() if tail else ''}")
    rows, series = build_rows(outcome)
    code = exit_code_of(rows, outcome.boxes, outcome.participants)
    doc = report_document(outcome, rows, code)
    width = max((len(run_head(r)) for r in rows), default=0)
    steps = outcome.spec.steps_axis is not None
    for r in rows:
        b = outcome.spec.bounds_for(r["key"])
        click.echo(format_row(r, head_width=width, steps=steps,
                              bounds=describe_bounds(b.atol, b.rtol, b.ulp)))
    paths = write_report(outcome.run_dir, doc, series)
    click.echo(summarize(rows, len(outcome.participants), len(outcome.spec.keys), code)
               + f"; data moved {doc['bytes_moved']} B; report {paths['report']}")
    if not outcome.sync:
        click.echo(_NO_SYNC_WARNING, err=True)
    return code
