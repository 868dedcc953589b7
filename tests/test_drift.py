"""The growth fit and the odd-box-out rule (compare.drift), against NumPy computations."""
from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from itertools import combinations

import numpy as np
import pytest

from tolerance.compare.drift import (MIN_POINTS, OUTLIER_RATIO, PLATEAU_GAIN, SCATTER_RISE,
                                     find_outliers, growth_fit)


# --- an independent oracle of the growth fit: one np.polyfit per candidate plateau -----

def oracle_growth(d, steps=None):
    d = np.asarray(d, dtype=np.float64)
    t = np.arange(d.size) if steps is None else np.asarray(steps)
    keep = np.isfinite(d) & (d > 0)
    t, y = t[keep].astype(np.float64), np.log(d[keep])
    n = y.size
    if n < MIN_POINTS:
        return None

    def fit(k):
        x = np.minimum(t, t[k])
        r, c = np.polyfit(x, y, 1)
        res = y - (c + r * x)
        return r, float(res @ res)

    r_line, sse_line = fit(n - 1)
    best = None
    for k in range(MIN_POINTS - 1, n - MIN_POINTS):
        r, sse = fit(k)
        if best is None or sse < best[2] - 1e-9 * max(1.0, sse_line):
            best = (k, r, sse)
    k, r, sse = n - 1, r_line, sse_line
    if best is not None and best[1] > 0 and best[2] < PLATEAU_GAIN * sse_line:
        k, r, sse = best
    rise = r * (t[k] - t[0])
    if not r > 0 or rise < math.log(2) or rise < SCATTER_RISE * math.sqrt(sse / n):
        return None
    return {"rate": r, "doubling_steps": math.log(2) / r, "from_step": int(t[0]),
            "to_step": int(t[k]), "saturates_at": int(t[k]) if k < n - 1 else None}


def assert_same_growth(got, want):
    if want is None:
        assert got is None
        return
    assert got is not None
    for f in ("from_step", "to_step", "saturates_at"):
        assert got[f] == want[f], (f, got, want)
    assert got["rate"] == pytest.approx(want["rate"], rel=1e-9)
    assert got["doubling_steps"] == pytest.approx(want["doubling_steps"], rel=1e-9)


def test_pure_exponential_has_the_exact_rate_and_no_plateau():
    t = np.arange(60)
    d = 1e-7 * 2.0 ** (t / 5.0)              # doubles every 5 steps
    g = growth_fit(d)
    assert g["doubling_steps"] == pytest.approx(5.0, rel=1e-9)
    assert g["rate"] == pytest.approx(math.log(2) / 5.0, rel=1e-9)
    assert (g["from_step"], g["to_step"], g["saturates_at"]) == (0, 59, None)
    assert_same_growth(g, oracle_growth(d))


def test_exponential_then_plateau_saturates_where_it_stops():
    t = np.arange(200)
    d = np.minimum(1e-6 * np.exp(0.2 * t), 2.0)   # reaches 2 at t = ln(2e6)/0.2 = 72.5
    g = growth_fit(d)
    assert g["saturates_at"] in (72, 73)
    assert g["to_step"] == g["saturates_at"]
    assert g["rate"] == pytest.approx(0.2, rel=0.02)
    assert_same_growth(g, oracle_growth(d))


def test_noisy_growth_against_the_oracle():
    rng = np.random.default_rng(7)
    for seed in range(20):
        n = int(rng.integers(10, 150))
        t = np.arange(n)
        knee = int(rng.integers(3, n))
        rate = float(rng.uniform(-0.1, 0.5))
        y = -14 + rate * np.minimum(t, knee) + rng.normal(0, rng.uniform(0.01, 1.5), n)
        d = np.exp(y)
        d[rng.random(n) < 0.05] = 0.0          # identical steps are left out of the fit
        assert_same_growth(growth_fit(d), oracle_growth(d))


def test_first_nonzero_step_and_holes():
    d = np.zeros(40)
    d[5:] = 1e-8 * 3.0 ** np.arange(35)
    d[[10, 20]] = 0.0
    d[15] = np.nan
    d[25] = np.inf
    g = growth_fit(d)
    assert g["from_step"] == 5 and g["to_step"] == 39
    assert g["rate"] == pytest.approx(math.log(3.0), rel=1e-9)
    assert_same_growth(g, oracle_growth(d))


def test_given_steps_index_the_window():
    steps = np.arange(100, 160, 2)
    d = 2.0 ** (np.arange(steps.size) / 3.0)
    g = growth_fit(d, steps)
    assert (g["from_step"], g["to_step"]) == (100, 158)
    assert g["doubling_steps"] == pytest.approx(6.0, rel=1e-9)   # 3 points x 2 steps each


@pytest.mark.parametrize("d", [
    np.zeros(50),                                   # identical
    np.full(50, 3e-7),                              # flat at rounding level
    3e-7 * np.exp(-0.05 * np.arange(50)),           # decays
    np.array([1e-7, 2e-7]),                         # too short to fit
    1e-7 * (1 + 0.001 * np.arange(50)),             # rises, but not twofold
])
def test_series_that_never_grow_are_null(d):
    assert growth_fit(d) is None
    assert oracle_growth(d) is None


def test_noise_without_a_trend_is_null():
    rng = np.random.default_rng(3)
    d = np.exp(-14 + rng.normal(0, 1.0, 200) + 0.004 * np.arange(200))  # rise 0.8 < 2 x 1.0
    assert growth_fit(d) is None


def test_steps_of_a_different_length_are_refused():
    with pytest.raises(ValueError, match="steps"):
        growth_fit(np.ones(4), np.arange(3))


# --- the odd box out ---------------------------------------------------------------------

def rows_of(arrays: dict[str, np.ndarray], atol: float, key="z_b"):
    """Rows of every pair, figured with NumPy (the rule only needs status and max_abs)."""
    rows = []
    for a, b in combinations(arrays, 2):
        d = float(np.max(np.abs(arrays[a].astype(np.float64) - arrays[b].astype(np.float64))))
        rows.append({"a": a, "b": b, "key": key, "status": "pass" if d <= atol else "fail",
                     "max_abs": d})
    return rows


def test_three_identical_and_one_failing_names_the_one():
    x = np.linspace(0, 1, 100)
    odd = x + 1e-3
    rows = rows_of({"p1": x, "p2": x.copy(), "odd": odd, "p3": x.copy()}, atol=1e-6)
    (o,) = find_outliers(rows)
    assert (o["box"], o["key"]) == ("odd", "z_b")
    assert "3 pairs fail" in o["why"] and "3 pairs among the others pass" in o["why"]


def test_passing_box_ten_times_further_is_named():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(50)
    boxes = {"a": x, "b": x + 1e-9, "c": x - 1e-9, "far": x + 2e-7}
    rows = rows_of(boxes, atol=1e-5)
    assert all(r["status"] == "pass" for r in rows)
    (o,) = find_outliers(rows)
    assert o["box"] == "far" and f"{OUTLIER_RATIO:g}x" in o["why"]
    boxes["far"] = x + 1.5e-8                         # 7.5x the others: not named
    assert find_outliers(rows_of(boxes, atol=1e-5)) == []


@pytest.mark.parametrize("boxes", [
    {"a": [0.0], "b": [1.0], "c": [2.0]},                       # all different, all fail
    {"a": [0.0], "b": [0.0], "c": [1.0], "d": [1.0]},           # two camps
    {"a": [0.0], "b": [1.0]},                                   # two boxes: no rule
])
def test_no_odd_box(boxes):
    rows = rows_of({k: np.array(v) for k, v in boxes.items()}, atol=1e-3)
    assert find_outliers(rows) == []


def test_unmeasured_pairs_name_nobody():
    x = np.zeros(4)
    rows = rows_of({"a": x, "b": x, "c": x, "odd": x + 1}, atol=0.1)
    rows[0] = dict(rows[0], status="unmeasured", max_abs=math.nan)
    assert find_outliers(rows) == []


def test_keys_are_judged_apart():
    x = np.zeros(4)
    rows = rows_of({"a": x, "b": x, "c": x, "odd": x + 1}, atol=0.1, key="z_b")
    rows += rows_of({"a": x, "b": x + 1, "c": x + 2, "odd": x + 3}, atol=0.1, key="omega_b")
    assert [(o["box"], o["key"]) for o in find_outliers(rows)] == [("odd", "z_b")]


# --- the shipped workloads, on real GEMM kernels ------------------------------------------

def _openblas() -> bool:
    try:
        return "openblas" in str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]
                                 ["name"]).lower()
    except Exception:  # noqa: BLE001
        return False


needs_kernels = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not _openblas(),
    reason="OPENBLAS_CORETYPE Haswell/SandyBridge/Prescott need x86-64 and NumPy's OpenBLAS")


@pytest.fixture(scope="module")
def workloads(tmp_path_factory):
    """stem -> box -> {key: array}: lorenz and stable under three GEMM kernels, plus
    Haswell twice more (three identical boxes)."""
    root = tmp_path_factory.mktemp("drift")
    jobs = [(s, box, core) for s in ("lorenz", "stable") for box, core in
            (("haswell", "Haswell"), ("sandybridge", "SandyBridge"), ("prescott", "Prescott"))]
    jobs += [("lorenz", "haswell2", "Haswell"), ("lorenz", "haswell3", "Haswell")]
    procs = []
    for stem, box, core in jobs:
        env = dict(os.environ, OPENBLAS_CORETYPE=core, OPENBLAS_NUM_THREADS="1",
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", f"tolerance.examples.{stem}", "--out", str(root / stem / box)],
            env=env, stdout=subprocess.DEVNULL))
    for p in procs:
        assert p.wait(timeout=120) == 0
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for stem, box, _ in jobs:
        with np.load(root / stem / box / f"{stem}.npz") as f:
            out.setdefault(stem, {})[box] = {k: f[k] for k in ("z_b", "omega_b")}
    return out


def _per_step(a, b):
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return d.reshape(d.shape[0], -1).max(axis=1)


@needs_kernels
def test_lorenz_doubles_fast_and_saturates(workloads):
    boxes = workloads["lorenz"]
    for a, b in combinations(("haswell", "sandybridge", "prescott"), 2):
        for key in ("z_b", "omega_b"):
            d = _per_step(boxes[a][key], boxes[b][key])
            g = growth_fit(d)
            assert_same_growth(g, oracle_growth(d))
            assert g["from_step"] == 0
            assert 2 < g["doubling_steps"] < 10, (a, b, key, g)   # measured ~4.5
            assert 60 <= g["saturates_at"] <= 130, (a, b, key, g)  # measured 91-92


@needs_kernels
def test_stable_never_grows(workloads):
    boxes = workloads["stable"]
    for a, b in combinations(boxes, 2):
        for key in ("z_b", "omega_b"):
            d = _per_step(boxes[a][key], boxes[b][key])
            assert growth_fit(d) is None, (a, b, key)
            assert oracle_growth(d) is None


@needs_kernels
def test_lorenz_three_identical_boxes_and_one_other_kernel(workloads):
    lz = workloads["lorenz"]
    four = {b: lz[b]["z_b"] for b in ("haswell", "haswell2", "prescott", "haswell3")}
    rows = rows_of(four, atol=1e-7)
    assert [(o["box"], o["key"]) for o in find_outliers(rows)] == [("prescott", "z_b")]
    three = {b: lz[b]["z_b"] for b in ("haswell", "sandybridge", "prescott")}
    assert find_outliers(rows_of(three, atol=1e-7)) == []
    st = workloads["stable"]
    for key, atol in (("z_b", 1e-5), ("omega_b", 1e-6 * 3e3)):
        assert find_outliers(rows_of({b: st[b][key] for b in st}, atol, key)) == []


@needs_kernels
def test_diff_names_the_odd_box_of_four_and_reports_margin_and_growth(workloads, tmp_path):
    import json

    from click.testing import CliRunner

    from tolerance.cli import main

    lz = workloads["lorenz"]
    paths = []
    for box in ("haswell", "haswell2", "prescott", "haswell3"):
        p = tmp_path / f"{box}.npz"
        np.savez(p, **lz[box])
        paths.append(str(p))
    res = CliRunner().invoke(main, ["diff", *paths, "--keys", "z_b", "--atol", "1e-7", "--json"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert [(o["box"], o["key"]) for o in doc["outliers"]] == [("prescott.npz", "z_b")]
    for r in doc["rows"]:
        a, b = (lz[x.removesuffix(".npz")]["z_b"] for x in (r["a"], r["b"]))
        d = _per_step(a, b)
        assert r["margin"] == pytest.approx(d.max() / 1e-7, rel=1e-12)
        want = oracle_growth(d)
        if want is None:
            assert r["growth"] is None and d.max() == 0     # identical boxes
        else:
            assert_same_growth(r["growth"], want)
    console = CliRunner().invoke(main, ["diff", *paths, "--keys", "z_b", "--atol", "1e-7"])
    assert "odd box out: prescott.npz on z_b (its 3 pairs fail" in console.output
