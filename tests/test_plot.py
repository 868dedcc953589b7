"""Figures of the drift: the PNG's size, that each pair's curve is drawn where its data
are (plotted line data and pixels read back), the markers, and the `tolerance plot` command."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tolerance.cli import main
from tolerance.compare.drift import growth_fit
from tolerance.compare.series import RowSeries, series_arrays
from tolerance.io import write_npz

STEPS = np.arange(120)


def _rows(margin=True):
    """Three pairs at well separated levels: one grows and saturates, one flat, one zero
    at some steps."""
    grow = np.minimum(1e-7 * np.exp(0.15 * STEPS), 2.0)
    flat = np.full(STEPS.size, 3e-4)
    holes = np.full(STEPS.size, 1e-2)
    holes[::7] = 0.0
    atol = 1e-5
    rows = []
    for (a, b), d in zip((("haswell", "prescott"), ("haswell", "sandybridge"),
                          ("prescott", "sandybridge")), (grow, flat, holes)):
        over = (d > atol).astype(np.int64)
        onset = int(np.flatnonzero(over)[0]) if over.any() else None
        rows.append(RowSeries(a=a, b=b, key="z_b", bound={"atol": atol}, max_abs=d,
                              over=over, status="fail" if onset is not None else "pass",
                              onset=onset, margin=d / atol if margin else None))
    return rows


def _lines(ax):
    return {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}


def test_the_plotted_lines_hold_the_data():
    pytest.importorskip("matplotlib")
    from tolerance.compare.plot import key_figure

    rows = _rows()
    fig = key_figure(rows, "z_b")
    top, bottom = fig.axes[:2]
    assert top.get_yscale() == "log" and bottom.get_yscale() == "log"
    lines = _lines(top)
    for r in rows:
        ln = lines[f"{r.a}|{r.b}|max_abs"]
        assert np.array_equal(ln.get_xdata(), r.step)
        want = np.where(r.max_abs > 0, r.max_abs, np.nan)     # a log axis has no 0: a gap
        assert np.array_equal(ln.get_ydata(), want, equal_nan=True)
        m = _lines(bottom)[f"{r.a}|{r.b}|margin"]
        assert np.allclose(m.get_ydata(), np.where(r.margin > 0, r.margin, np.nan),
                           rtol=0, atol=0, equal_nan=True)
    assert np.all(np.asarray(lines["bound"].get_ydata()) == 1e-5)
    assert np.all(np.asarray(_lines(bottom)["margin=1"].get_ydata()) == 1.0)
    # onset and saturation markers sit on the growing pair's curve at the right steps
    g = growth_fit(rows[0].max_abs)
    assert g["saturates_at"] is not None
    grow_marks = [ln for ln in top.get_lines()
                  if ln.get_gid() in ("onset", "saturation") and ln.get_color() == "C0"]
    where = {ln.get_gid(): (ln.get_xdata()[0], ln.get_ydata()[0]) for ln in grow_marks}
    assert where["saturation"] == (g["saturates_at"], rows[0].max_abs[g["saturates_at"]])
    assert where["onset"] == (rows[0].onset, rows[0].max_abs[rows[0].onset])
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert any(t.startswith("haswell vs prescott") and "doubles every" in t for t in legend)
    assert any(t.startswith("prescott vs sandybridge") for t in legend)


def _near(img, x, y, rgb, radius=2, tol=0.12):
    """Whether a pixel within `radius` of display point (x, y) has colour rgb."""
    h, w = img.shape[:2]
    col, row = int(round(x)), int(round(h - y))
    patch = img[max(0, row - radius):row + radius + 1, max(0, col - radius):col + radius + 1, :3]
    return bool(np.any(np.all(np.abs(patch - np.asarray(rgb)) < tol, axis=-1)))


@pytest.mark.parametrize("margin", [True, False])
def test_pixels_read_back_where_the_data_put_them(tmp_path, margin):
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from tolerance.compare.plot import DPI, key_figure, save_figure

    rows = _rows(margin)
    fig = key_figure(rows, "z_b")
    FigureCanvasAgg(fig).draw()
    path = save_figure(fig, tmp_path / "z_b.png")
    img = imread(path)
    assert img.shape[:2] == ((810, 960) if margin else (540, 960))
    assert fig.dpi == DPI
    top = fig.axes[0]
    checked = 0
    for r, colour in zip(rows, ("C0", "C1", "C2")):
        rgb = to_rgb(colour)
        for t in range(3, STEPS.size - 3, 9):
            d = r.max_abs[t]
            if not (d > 0 and r.max_abs[t - 1] > 0 and r.max_abs[t + 1] > 0):
                continue
            g = growth_fit(r.max_abs)
            if t in (r.onset, g and g["saturates_at"]):   # markers cover the line there
                continue
            x, y = top.transData.transform((t, d))
            assert _near(img, x, y, rgb), (colour, t, d)
            # and not a decade and a half away from its data (the check can fail)
            off = d * 30 if d * 30 < top.get_ylim()[1] else d / 30
            x2, y2 = top.transData.transform((t, off))
            assert not _near(img, x2, y2, rgb), (colour, t, off)
            checked += 1
    assert checked > 20
    # the bound line, black and dashed, at atol
    bx, by = top.transData.transform((60, 1e-5))
    assert any(_near(img, bx + dx, by, (0, 0, 0), tol=0.3) for dx in range(0, 12))


def test_series_file_to_plots_with_the_command(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    rows = _rows()
    rows.append(RowSeries(a="haswell", b="prescott", key="omega/b", bound={"rtol": 1e-12},
                          max_abs=np.linspace(1e-6, 1.0, 50), over=np.ones(50)))
    series = tmp_path / "series.npz"
    write_npz(series, series_arrays(rows, steps_axis=0))
    res = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("z_b.png", "omega_b.png"):
        img = imread(tmp_path / "plots" / name)
        assert img.shape[1] == 960 and img.shape[0] in (540, 810)
    again = CliRunner().invoke(main, ["plot", str(series)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert CliRunner().invoke(main, ["plot", str(series), "--force"]).exit_code == 0
    out = tmp_path / "one.png"
    res = CliRunner().invoke(main, ["plot", str(series), "--key", "z_b", "--out", str(out)])
    assert res.exit_code == 0 and imread(out).shape[:2] == (810, 960)
    res = CliRunner().invoke(main, ["plot", str(series), "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "--key" in res.output
    res = CliRunner().invoke(main, ["plot", str(series), "--key", "nope"])
    assert res.exit_code == 2 and "'nope'" in res.output and "z_b" in res.output


def test_plot_refuses_bad_input_in_one_line(tmp_path):
    res = CliRunner().invoke(main, ["plot", str(tmp_path / "missing.npz")])
    assert res.exit_code == 2 and "missing.npz" in res.output
    old = tmp_path / "old.npz"
    write_npz(old, {"a__b__z_b__max_abs": np.zeros(3)})
    res = CliRunner().invoke(main, ["plot", str(old)])
    if res.exit_code == 2 and "matplotlib" in res.output:
        pytest.skip("no matplotlib here")
    assert res.exit_code == 2 and "tolerance.series/1" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_without_matplotlib_plot_says_how_to_install(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    from tolerance.compare.plot import INSTALL_HINT, PlotUnavailable, key_figure, plot_unavailable

    assert plot_unavailable() == INSTALL_HINT
    with pytest.raises(PlotUnavailable):
        key_figure(_rows(), "z_b")
    series = tmp_path / "series.npz"
    write_npz(series, series_arrays(_rows(), steps_axis=0))
    res = CliRunner().invoke(main, ["plot", str(series)])
    assert res.exit_code == 2
    assert res.output.strip() == f"tolerance: error: {INSTALL_HINT}"
    assert not (tmp_path / "plots").exists()
