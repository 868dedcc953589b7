"""`tolerance run STEM`: one rank of a replicated run (start it under mpirun/mpiexec).

    mpirun -n N python -m tolerance run STEM

Every rank runs its box; rank 0 prints one line per (box_a, box_b, key), a summary, and
writes report.json, series.npz and summary.md under the run directory. Every rank exits
with the same code (docs/numbers.md "Exit codes").
"""
from __future__ import annotations

import sys

import click

from tolerance._errors import ToleranceError
from tolerance.cli import _options
from tolerance.cli._progress import Progress

_NO_SYNC_WARNING = ("WARNING: --no-sync: the boxes ran without the same-code check "
                    "(their fingerprints are in report.json)")


@click.command("run", epilog="Exit codes: 0 every row within bound, 1 a bound exceeded (or a NaN/inf mismatch), 2 error (config, sync refusal, a box failed), 3 some row unmeasured (missing key, shape or dtype mismatch).")
@click.argument("stem")
@_options.cluster
@_options.specs
@click.option("--sync", "sync_mode", type=click.Choice(["verify", "push", "off"]), default="verify",
              show_default=True,
              help="verify: refuse unless every box runs the same code; push: first check "
                   "rank 0's (the launcher's) commit out on every clean box; off: run anyway.")
@click.option("--no-sync", "no_sync", is_flag=True,
              help="Same as --sync off: run without the same-code check (warned loudly).")
@_options.chunk_mb
@_options.threads
@_options.bounds_file
@_options.run_env
@_options.run_dir
@click.option("-q", "--quiet", is_flag=True,
              help="No progress lines while the boxes run, no legend after the rows.")
@_options.no_legend
@click.option("--json", "as_json", is_flag=True,
              help="Rank 0 prints exactly one JSON document on stdout: the run's report "
                   "(tolerance.run/1, as report.json), or {\"error\": ...}.")
@click.pass_context
def run(ctx: click.Context, stem: str, cluster_path: str | None, specs_dir: str | None,
        sync_mode: str, no_sync: bool, chunk_mb: float, threads: int | None,
        bounds_path: str | None, run_env: dict[str, str], run_dir: str | None,
        quiet: bool, no_legend: bool, as_json: bool) -> None:
    """Run STEM on every box at once (one MPI rank per box) and compare the outputs."""
    from tolerance.collective.job import run_stem
    from tolerance.collective.mpi import world

    sync = sync_mode in ("verify", "push") and not no_sync
    push = sync_mode == "push" and not no_sync
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    progress = Progress(sys.stderr)

    def error(code: int, message: str, detail=()) -> int:
        click.echo(f"tolerance: error: {message}", err=True)
        for line in detail:
            click.echo(line, err=True)
        if as_json:
            _options.echo_error_json(code, message,
                                     **({"detail": list(detail)} if detail else {}))
        return code

    def finish(outcome) -> int:
        """Rank 0, inside the job's abort guard: the error line, or the rows and the report
        files; the job's exit code (every rank exits with it)."""
        progress.clear()
        if outcome.error:
            return error(outcome.exit_code, outcome.error, outcome.detail)
        try:
            return _report(outcome, legend=not (quiet or no_legend), as_json=as_json)
        except ToleranceError as exc:  # a report file the disk refuses: one line, exit 2
            return error(exc.exit_code, str(exc))

    outcome = run_stem(stem, cluster_path=cluster_path, specs_dir=specs_dir, sync=sync, push=push,
                       chunk_mb=chunk_mb, threads=threads, debug=debug,
                       # rank 0 only, decided when called: MPI must not start before the
                       # rank's hello to its launcher (run_stem starts it)
                       progress=None if quiet else
                       (lambda *a, **k: progress.update(*a, **k) if world().Get_rank() == 0 else None),
                       run_dir=run_dir, env=run_env, bounds_path=bounds_path, finish=finish)
    progress.clear()
    outcome.close_line()
    ctx.exit(outcome.exit_code)


def _report(outcome, *, legend: bool = True, as_json: bool = False) -> int:
    """Rank 0: print the rows and the summary (or, `as_json`, the report document), write
    the report files; the exit code."""
    from tolerance.compare.report import (run_console, run_document, run_exit_code,
                                          write_run_report)

    if not outcome.sync:
        click.echo(_NO_SYNC_WARNING, err=True)
    rows = outcome.rows
    code = run_exit_code(rows, outcome.boxes, outcome.participants)
    doc = run_document(outcome, rows, code)
    paths = write_run_report(outcome.run_dir, doc, rows)
    if as_json:
        import json

        click.echo(json.dumps(doc, allow_nan=False))
        click.echo(f"tolerance: report {paths['report']}", err=True)
    else:
        lines, summary = run_console(outcome, rows, code, doc, paths, legend=legend)
        for line in lines:
            click.echo(line)
        click.echo(summary)
    if not outcome.sync:
        click.echo(_NO_SYNC_WARNING, err=True)
    return code
