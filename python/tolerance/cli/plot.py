"""`tolerance plot RUN_OR_SERIES [--key K] [--out FILE]`: draw a stored run's figures again."""
from __future__ import annotations

from pathlib import Path

import click

from tolerance._errors import ToleranceError


@click.command("plot")
@click.argument("source", type=click.Path())
@click.option("--key", "key", default=None, help="Draw this key only (default: every key).")
@click.option("--out", "out", type=click.Path(), default=None,
              help="The PNG to write (one key: pass --key when the series holds several).")
@click.option("--force", is_flag=True, help="Replace figures that already exist.")
def plot(source: str, key: str | None, out: str | None, force: bool) -> None:
    """Draw every pair's per-step divergence of a run directory (its series.npz) or of a
    `tolerance diff --series` file: one PNG per key, by default `plots/<key>.png` beside
    the series file. Needs matplotlib: pip install 'tolerance-bound[plot]'.

    Exit codes: 0 drawn, 2 error (no matplotlib, unreadable series, unknown key, a figure
    that already exists without --force).
    """
    from tolerance.compare.plot import (PlotUnavailable, plot_keys, plot_name,
                                        plot_unavailable, key_figure, save_figure)
    from tolerance.compare.series import read_series

    hint = plot_unavailable()
    if hint:
        raise PlotUnavailable(hint)
    src = Path(source)
    series_path = src / "series.npz" if src.is_dir() else src
    if not series_path.exists():
        raise ToleranceError(f"{series_path}: no such file (give a run directory or a "
                             f"series .npz)")
    series = read_series(series_path)
    keys = series.keys()
    if key is not None:
        if key not in keys:
            raise ToleranceError(f"{series_path}: key {key!r} has no measured row (keys: "
                                 f"{', '.join(keys) or 'none'})")
        keys = [key]
    if not keys:
        raise ToleranceError(f"{series_path}: no measured rows to draw")
    if out is not None:
        if len(keys) > 1:
            raise click.UsageError(f"--out names one file, the series holds {len(keys)} "
                                   f"keys ({', '.join(keys)}): pass --key")
        path = save_figure(key_figure(series.rows, keys[0]), out, overwrite=force)
        click.echo(f"{keys[0]}: {path}")
        return
    out_dir = series_path.parent / "plots"
    for k in keys:
        target = out_dir / plot_name(k)
        if target.exists() and not force:
            raise ToleranceError(f"{target}: already exists (refusing to overwrite; pass "
                                 f"--force or --out FILE)")
    for k, path in plot_keys(series.rows, out_dir, keys=keys, overwrite=force).items():
        click.echo(f"{k}: {path}")
