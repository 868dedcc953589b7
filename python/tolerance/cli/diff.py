"""`tolerance diff PATH PATH [PATH ...]`: every pair of inputs, every key, streamed."""
from __future__ import annotations

import json
import os

import click

from tolerance.cli import _options as opt


@click.command("diff", epilog="Exit codes: 0 every row within bound, 1 a bound exceeded (or a NaN/inf mismatch), 2 error (unreadable or malformed input), 3 some row unmeasured (missing key, shape or dtype mismatch).")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@opt.keys
@opt.bounds
@opt.steps_axis
@opt.chunk_mb
@opt.threads
@opt.as_json
@opt.series
@opt.quiet
@opt.no_legend
@opt.bounds_file
def diff(paths, keys, atol, rtol, ulp, steps_axis, chunk_mb, threads, as_json, series_path,
         quiet, no_legend, bounds_path):
    """Compare .npz/.npy files pairwise: max |a-b| per key and per step.

    A directory stands for the newest .npz under it (by modification time). Exit codes:
    0 every row within bounds, 1 a bound exceeded (or a NaN/inf mismatch), 2 error,
    3 some row unmeasured (missing key, shape or dtype mismatch) and none exceeded.
    """
    from tolerance.compare.engine import PartialKey, diff_inputs, open_inputs
    from tolerance.compare.report import (columns_for_inputs, diff_document, format_row,
                                          legend_lines, outlier_lines, series_arrays,
                                          summarize)
    from tolerance.compare.rows import KEY_NOT_EVERYWHERE, MISSING_KEY, UNMEASURED
    from tolerance.config.spec import Bounds
    from tolerance.io.atomic import write_npz

    if len(paths) < 2:
        raise click.UsageError("give at least two inputs")
    key_bounds = None
    if bounds_path is not None:  # a calibrated bounds file: its bound on every key it bounds
        from tolerance.config.bounds_file import file_key_bounds, load_bounds_file

        key_bounds = file_key_bounds(load_bounds_file(bounds_path))
    inputs = open_inputs(paths)
    try:
        labels = [d.label for d in inputs]
        names = keys if keys is not None else \
            {k for d in inputs for k in d.archive.keys()}
        cols = columns_for_inputs(inputs, names, steps_axis,  # rows print as keys finish
                                  [Bounds(atol=atol, rtol=rtol, ulp=ulp),
                                   *(key_bounds or {}).values()])
        show = not as_json and not quiet
        shown = []

        def on_rows(rows):
            if show:
                for r in rows:
                    if r.status == UNMEASURED and keys is None and \
                            r.code in (MISSING_KEY, KEY_NOT_EVERYWHERE):
                        continue  # said once by the key's (warn) line
                    click.echo(format_row(r, columns=cols, steps=steps_axis is not None))
                    shown.append(r)

        def on_notice(n):
            if quiet:
                return
            if isinstance(n, PartialKey):
                click.echo(f"(warn) key {n.key!r} is only in {', '.join(n.have)} (missing in "
                           f"{', '.join(n.lack)}): not compared (pass --keys to compare the "
                           f"inputs that have it)", err=as_json)
            else:
                click.echo(f"(warn) key {n.key!r} is missing in {', '.join(n.lack)}", err=as_json)

        result = diff_inputs(inputs, keys=keys, bound=Bounds(atol=atol, rtol=rtol, ulp=ulp),
                             steps_axis=steps_axis, threads=threads,
                             budget=int(chunk_mb * (1 << 20)), on_rows=on_rows,
                             on_notice=on_notice, key_bounds=key_bounds)
    finally:
        for d in inputs:
            d.archive.close()
    code = result.exit_code
    written = None
    if series_path is not None:
        write_npz(series_path, series_arrays(result.rows, steps_axis), overwrite=True)
        written = os.path.abspath(series_path)
    doc = diff_document(result, series=written)
    if as_json:
        click.echo(json.dumps(doc, allow_nan=False))
    else:
        for line in outlier_lines(doc["outliers"]):
            click.echo(line)
        if show and not no_legend:
            for line in legend_lines(shown, steps=steps_axis is not None):
                click.echo(line)
    if written is not None:  # where it wrote: stdout with the rows, else beside the JSON
        click.echo(f"series: {written}", err=as_json or quiet)
    if not as_json:
        click.echo(summarize(result.rows, len(inputs), len(result.keys), code))
    if code:
        click.get_current_context().exit(code)
