"""`tolerance diff PATH PATH [PATH ...]`: every pair of inputs, every key, streamed."""
from __future__ import annotations

import json

import click

from tolerance.cli import _options as opt
from tolerance.compare.rows import describe_bounds, format_row, summarize
from tolerance.io.npz import DEFAULT_CHUNK_BYTES


@click.command("diff")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@opt.keys
@opt.bounds
@opt.steps_axis
@opt.threads
@opt.as_json
@opt.series
@opt.quiet
@click.option("--chunk-bytes", type=click.IntRange(min=1), default=DEFAULT_CHUNK_BYTES,
              hidden=True, help="Byte budget of one chunk per input.")
def diff(paths, keys, atol, rtol, ulp, steps_axis, threads, as_json, series_path, quiet,
         chunk_bytes):
    """Compare .npz/.npy files pairwise: max |a-b| per key and per step.

    A directory stands for the newest .npz under it (by modification time). Exit codes:
    0 every row within bounds, 1 a bound exceeded (or a NaN/inf mismatch), 2 error,
    3 some row unmeasured (missing key, shape or dtype mismatch) and none exceeded.
    """
    from tolerance.compare.engine import diff_inputs, open_inputs
    from tolerance.io.atomic import write_npz

    if len(paths) < 2:
        raise click.UsageError("give at least two inputs")
    inputs = open_inputs(paths)
    try:
        labels = [d.label for d in inputs]
        wa = max(len(lab) for lab in labels[:-1])
        wb = max(len(lab) for lab in labels[1:])
        names = keys if keys is not None else \
            {k for d in inputs for k in d.archive.keys()}
        wk = max((len(k) for k in names), default=0)
        bound = describe_bounds(atol, rtol, ulp)
        show = not as_json and not quiet

        def on_rows(rows):
            if show:
                for r in rows:
                    if r["status"] == "unmeasured" and keys is None and r["reason"].startswith(
                            ("missing key", "key not in every input")):
                        continue  # said once by the key's (warn) line
                    click.echo(format_row(r, widths=(wa, wb, wk), bounds=bound,
                                          steps=steps_axis is not None))

        def on_warning(msg):
            if not quiet:
                click.echo(msg, err=as_json)

        result = diff_inputs(inputs, keys=keys, atol=atol, rtol=rtol, ulp=ulp,
                             steps_axis=steps_axis, threads=threads, budget=chunk_bytes,
                             on_rows=on_rows, on_warning=on_warning)
    finally:
        for d in inputs:
            d.archive.close()
    code = result.exit_code
    if series_path is not None:
        write_npz(series_path, result.series_arrays(), overwrite=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), allow_nan=False))
    else:
        click.echo(summarize(result.rows, len(inputs), len(result.keys), code))
    if code:
        click.get_current_context().exit(code)
