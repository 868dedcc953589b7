"""`tolerance report RUN`: re-print a stored run's lines and summary from its report.json."""
from __future__ import annotations

import json

import click

from tolerance._errors import FormatError
from tolerance.cli import _options
from tolerance.cli.runs import root_option, run_roots

EXIT_CODES_HELP = ("Exit codes: the stored run's own (0 every row within bound, 1 a bound "
                   "exceeded, 2 error, 3 some row unmeasured); 2 when RUN is not found or "
                   "its report.json is unreadable.")


@click.command("report", epilog=EXIT_CODES_HELP)
@click.argument("run")
@root_option
@_options.cluster
@_options.as_json
@_options.no_legend
@click.pass_context
def report(ctx: click.Context, run: str, roots: tuple[str, ...], cluster_path: str | None,
           as_json: bool, no_legend: bool) -> None:
    """Re-print stored run RUN (a run directory, STEM/RUN_ID, or STEM for its newest run)
    from its report.json, and exit with its exit code."""
    from tolerance.compare.report import legend_lines, outlier_lines, row_lines, summarize
    from tolerance.compare.rows import row_from_json
    from tolerance.runner.stored import REPORT_FILE, _read_object, find_run

    path = find_run(run, run_roots(roots, cluster_path))
    doc = _read_object(path / REPORT_FILE)
    if doc is None:
        raise FormatError(f"{path}: no {REPORT_FILE} (a run-box run, or not rank 0's box: "
                          "compare its boxes with `tolerance diff`)")
    try:
        rows = [row_from_json(r) for r in doc["rows"]]
        code = int(doc["exit_code"])
        boxes = [b["name"] for b in doc["boxes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path / REPORT_FILE}: not a tolerance.run/1 report ({exc})") from None
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        ctx.exit(code)
    click.echo(f"tolerance run {doc.get('stem')}  run {doc.get('run_id')}  "
               f"{len(boxes)} boxes: " + " ".join(boxes))
    steps = doc.get("steps_axis") is not None
    for line in row_lines(rows, steps=steps, run_style=True):
        click.echo(line)
    for line in outlier_lines(doc.get("outliers") or []):
        click.echo(line)
    if not no_legend:
        for line in legend_lines(rows, steps=steps, run_style=True):
            click.echo(line)
    keys = doc.get("keys") or list(dict.fromkeys(r.key for r in rows))
    n_inputs = len({x for r in rows for x in (r.a, r.b)}) or len(boxes)
    click.echo(summarize(rows, n_inputs, len(keys), code) + f"; report {path / REPORT_FILE}")
    ctx.exit(code)
