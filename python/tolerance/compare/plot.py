"""Pictures of the drift: one PNG per key, every pair's per-step divergence on a log axis.

Drawn with matplotlib's Agg backend (no display), from the optional extra
`pip install 'tolerance-bound[plot]'`; without it everything else still works and
`plot_unavailable()` says in one line how to install it. The figure of a key:

- top panel: `max_i |a[t,i] − b[t,i]|` per step of every pair (one colour per pair, the
  boxes named in the legend, with the pair's doubling time when it grows); the bound as a
  horizontal line where it is one number (an `atol` with no `rtol`/`ulp`); steps where a
  pair is identical (0) leave a gap (a log axis has no 0);
- bottom panel, when the rows carry a per-step margin: the margin per step and the
  `margin = 1` line (above it, the step fails);
- on every curve: the onset (first step outside the bound, a triangle) and the
  saturation step of the growth fit (a square; see docs/drift.md).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tolerance._errors import ToleranceError
from tolerance.compare.drift import growth_fit

INSTALL_HINT = "plotting needs matplotlib: pip install 'tolerance-bound[plot]'"
#: figure size in inches and resolution: 960 x 540 px (one panel), 960 x 810 (two)
WIDTH_IN, PANEL_IN, DPI = 9.6, 5.4, 100


class PlotUnavailable(ToleranceError):
    """matplotlib is not installed."""


def plot_unavailable() -> str | None:
    """None when plots can be drawn, else the one-line install hint."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None


def _pyplot():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    # the object API renders through Agg without touching pyplot's global backend
    from matplotlib.figure import Figure
    return Figure


def plot_name(key: str) -> str:
    """The file name of a key's figure: `<key>.png`, characters outside [A-Za-z0-9_.-]
    replaced by `_` (a key is any .npz member name)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key).lstrip(".") or "_"
    return f"{safe}.png"


def _line_bound(bound: dict[str, Any]) -> float | None:
    atol = bound.get("atol")
    if atol and not bound.get("rtol") and bound.get("ulp") is None:
        return float(atol)
    return None


def _describe(bound: dict[str, Any]) -> str:
    parts = [f"{n} {bound[n]:g}" for n in ("atol", "rtol") if bound.get(n)]
    if bound.get("ulp") is not None:
        parts.append(f"ulp {bound['ulp']}")
    return " ".join(parts) or "exact (no bound set)"


def _positive(y: np.ndarray) -> np.ndarray:
    """y with the values a log axis cannot show (<= 0, nan) as nan (a gap)."""
    y = np.asarray(y, dtype=np.float64).copy()
    y[~(y > 0)] = np.nan
    return y


def key_figure(rows: Sequence[Any], key: str):
    """The matplotlib Figure of one key's rows (`compare.series.RowSeries`), not saved."""
    Figure = _pyplot()
    rows = [r for r in rows if r.key == key]
    if not rows:
        raise ToleranceError(f"no measured rows for key {key!r}")
    margins = any(r.margin is not None for r in rows)
    n_panels = 2 if margins else 1
    fig = Figure(figsize=(WIDTH_IN, PANEL_IN * (1 + 0.5 * (n_panels - 1))), dpi=DPI)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    top = axes[0]
    colours = [f"C{i % 10}" for i in range(len(rows))]
    bound = rows[0].bound
    for r, colour in zip(rows, colours):
        g = growth_fit(r.max_abs, r.step)
        label = f"{r.a} vs {r.b}"
        if g is not None:
            label += f"  (doubles every {g['doubling_steps']:.3g} steps)"
        elif not np.any(r.max_abs > 0):
            label += "  (identical)"
        y = _positive(r.max_abs)
        top.plot(r.step, y, color=colour, lw=1.5, label=label, gid=f"{r.a}|{r.b}|max_abs")
        panels = [(top, y)]
        if margins and r.margin is not None:
            ym = _positive(r.margin)
            axes[1].plot(r.step, ym, color=colour, lw=1.5, gid=f"{r.a}|{r.b}|margin")
            panels.append((axes[1], ym))
        for ax, yy in panels:
            _mark(ax, r.step, yy, r.onset, "v", colour)
            _mark(ax, r.step, yy, None if g is None else g["saturates_at"], "s", colour)
    line = _line_bound(bound)
    if line is not None:
        top.axhline(line, color="black", ls="--", lw=1, label=f"bound (atol {line:g})",
                    gid="bound")
    top.set_yscale("log")
    top.set_ylabel("max |a − b| per step")
    top.set_title(f"{key}: per-step divergence, bound {_describe(bound)}")
    # legend proxies for the markers
    top.plot([], [], "v", color="grey", label="onset (first step outside the bound)")
    top.plot([], [], "s", color="grey", label="saturation (growth stops)")
    top.legend(loc="best", fontsize="small")
    if margins:
        ax = axes[1]
        ax.axhline(1.0, color="black", ls="--", lw=1, label="margin = 1 (the bound)",
                   gid="margin=1")
        ax.set_yscale("log")
        ax.set_ylabel("margin per step")
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def _mark(ax, steps: np.ndarray, y: np.ndarray, at: int | None, marker: str, colour: str):
    if at is None:
        return
    idx = np.flatnonzero(steps == at)
    if idx.size and np.isfinite(y[idx[0]]):
        ax.plot([at], [y[idx[0]]], marker, color=colour, ms=7, mec="black", mew=0.6,
                gid=f"{'onset' if marker == 'v' else 'saturation'}")


def save_figure(fig, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a figure as PNG under a temp name and rename it into place."""
    from tolerance.io.atomic import atomic_writer

    path = Path(path)
    with atomic_writer(path, "wb", overwrite=overwrite) as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return path


def plot_keys(rows: Sequence[Any], out_dir: str | os.PathLike[str], *,
              keys: Sequence[str] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """`<out_dir>/<key>.png` for every key (default: every key with a measured row)."""
    keys = list(dict.fromkeys(r.key for r in rows)) if keys is None else list(keys)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key in keys:
        fig = key_figure(rows, key)
        paths[key] = save_figure(fig, out / plot_name(key), overwrite=overwrite)
    return paths
