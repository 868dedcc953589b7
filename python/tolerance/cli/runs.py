"""`tolerance runs [STEM]`: the stored runs, and `--prune --keep N` to remove old ones."""
from __future__ import annotations

import json
from pathlib import Path

import click

from tolerance._errors import ConfigError, ToleranceError
from tolerance.cli import _options

EXIT_CODES_HELP = "Exit codes: 0 listed (or pruned), 2 error (bad stem, unreadable run, no answer)."


def run_roots(roots: tuple[str, ...], cluster_path: str | None) -> list[Path]:
    """Where stored runs are looked for: the --root directories, else every box root of
    the registry that exists on this machine, else the current directory."""
    if roots:
        return [Path(r) for r in roots]
    from tolerance.config import load_default_cluster

    try:
        cluster = load_default_cluster(cluster_path)
    except ConfigError:
        if cluster_path is not None:
            raise
        return [Path(".")]
    out: list[Path] = []
    for b in cluster.boxes:
        p = Path(b.root)
        if p.is_dir() and p.resolve() not in [q.resolve() for q in out]:
            out.append(p)
    return out or [Path(".")]


root_option = click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False),
                           help="Look for runs/ under this directory (repeatable; default: "
                                "the box roots of the registry that exist here).")


def _boxes_text(boxes: dict[str, str | None]) -> str:
    return " ".join(n if s == "finished" else f"{n}({s or '?'})" for n, s in boxes.items()) or "-"


@click.command("runs", epilog=EXIT_CODES_HELP)
@click.argument("stem", required=False)
@root_option
@_options.cluster
@click.option("--prune", is_flag=True, help="Remove older runs, keeping the --keep newest per stem.")
@click.option("--keep", type=click.IntRange(min=0), default=None, metavar="N",
              help="With --prune: how many of the newest runs of each stem to keep.")
@click.option("--yes", "-y", is_flag=True, help="With --prune: remove without asking.")
@_options.as_json
@click.pass_context
def runs(ctx: click.Context, stem: str | None, roots: tuple[str, ...], cluster_path: str | None,
         prune: bool, keep: int | None, yes: bool, as_json: bool) -> None:
    """List the stored runs (of STEM, or of every stem): stamp, boxes and their statuses,
    pass/fail/unmeasured row counts and the run's exit code.

    A run that has no report.json here (a `run-box` run, or a box whose rank was not 0)
    shows '-' for its counts and exit code.
    """
    from tolerance.runner.stored import list_runs, remove_run, runs_to_prune

    if prune != (keep is not None):
        raise click.UsageError("--prune and --keep N go together")
    found = list_runs(run_roots(roots, cluster_path), stem)
    removed: list[str] = []
    if prune:
        doomed = runs_to_prune(found, keep)  # type: ignore[arg-type]
        if doomed and not yes:
            if as_json:
                raise ToleranceError("--prune --json needs --yes (a JSON caller cannot answer)")
            for r in doomed:
                click.echo(f"would remove {r.path}", err=True)
            try:
                ok = click.confirm(f"Remove {len(doomed)} run{'s' if len(doomed) != 1 else ''}?",
                                   default=False, err=True)
            except click.exceptions.Abort:
                raise ToleranceError("no answer on stdin: pass --yes to prune without "
                                     "asking") from None
            if not ok:
                click.echo("nothing removed", err=True)
                doomed = []
        for r in doomed:
            remove_run(r)
            removed.append(str(r.path))
            if not as_json:
                click.echo(f"removed {r.path}")
        found = [r for r in found if str(r.path) not in removed]
    if as_json:
        click.echo(json.dumps({"schema": "tolerance.runs/1", "runs": [r.to_dict() for r in found],
                               "removed": removed}, indent=2))
        return
    if prune:
        click.echo(f"{len(removed)} run{'s' if len(removed) != 1 else ''} removed, "
                   f"{len(found)} kept")
        return
    header = ("STEM", "RUN", "PASS", "FAIL", "UNMEAS", "EXIT", "BOXES")
    table = [header]
    for r in found:
        n = r.counts
        table.append((r.stem, r.run_id,
                      *(str(n[s]) if n else "-" for s in ("pass", "fail", "unmeasured")),
                      str(r.exit_code) if r.exit_code is not None else "-",
                      _boxes_text(r.boxes) + (f"  ({r.problem})" if r.problem else "")))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    click.echo(f"{len(found)} run{'s' if len(found) != 1 else ''}")
