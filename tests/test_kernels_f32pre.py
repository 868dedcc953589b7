"""The float32 pre-filter of the AVX2 kernel (kernels_isa.hpp, pre_block_f32): blocks are
decided in float32 with error margins and refolded in float64 only near a bound or a
maximum. These cases put lanes right at, just inside and just outside the bound, make
float32 and float64 |a-b| disagree (inexact float32 subtractions), and tie or barely raise
the running maxima, then check every figure against the oracle and against the scalar
kernel, bit for bit."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _oracle import check_every_path


SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
F32 = np.float32


def d64(a, b):
    return np.abs(a.astype(np.float64) - b.astype(np.float64))


check_all = check_every_path


def pairs(seed, mode, n):
    rng = np.random.default_rng(seed)
    if mode == "ulp-steps":  # b = a + k ulp, k in -3..3
        a = rng.standard_normal(n).astype(F32)
        b = a.copy()
        k = rng.integers(-3, 4, n)
        for _ in range(3):
            up, dn = k > 0, k < 0
            b[up] = np.nextafter(b[up], F32(np.inf))
            b[dn] = np.nextafter(b[dn], F32(-np.inf))
            k = k - np.sign(k)
    elif mode == "inexact":  # float32 a-b rounds: d32 != d64 on most lanes
        a = (1.0 + rng.integers(0, 64, n) * 2.0**-23).astype(F32)
        b = (rng.standard_normal(n) * 2.0**-30).astype(F32)
        b[rng.random(n) < 0.3] *= F32(-1)
    elif mode == "mixed-scales":
        e = rng.integers(-30, 30, n).astype(np.float64)
        a = (rng.standard_normal(n) * 2.0**e).astype(F32)
        b = (a.astype(np.float64) * (1 + rng.standard_normal(n) * 1e-6)).astype(F32)
        b[::11] = (rng.standard_normal(n)[::11] * 2.0 ** e[::11] * 2.0**-25).astype(F32)
    elif mode == "tiny":  # subnormal and near-subnormal float32 values
        a = (rng.standard_normal(n) * 2.0**-130).astype(F32)
        b = (a.astype(np.float64) + rng.standard_normal(n) * 2.0**-140).astype(F32)
        a[::9] = 0.0
        b[::9] = 0.0
    else:  # "noise": the benchmark's shape of data
        a = rng.standard_normal(n).astype(F32)
        b = a + (rng.standard_normal(n) * 1e-6).astype(F32)
    return a, b


MODES = ["ulp-steps", "inexact", "mixed-scales", "tiny", "noise"]


@SETTINGS
@given(seed=st.integers(0, 2**31), mode=st.sampled_from(MODES),
       which=st.sampled_from(["atol", "rtol", "both"]),
       nudge=st.sampled_from([-1, 0, 1]), ulp=st.sampled_from([None, 0, 2, 40]),
       steps=st.sampled_from([1, 2, 3]))
def test_bound_right_at_a_lane(seed, mode, which, nudge, ulp, steps):
    """atol / rtol chosen so that lanes sit exactly at the float64 bound, or one float64
    ulp of the bound away on either side (the pre-filter must refold those blocks)."""
    n = (2048 + 37) * steps
    a, b = pairs(seed, mode, n)
    rng = np.random.default_rng(seed + 1)
    i = int(rng.integers(0, n))
    d = float(d64(a[i:i + 1], b[i:i + 1])[0])
    mx = float(max(abs(float(a[i])), abs(float(b[i]))))
    if which == "atol":
        atol, rtol = d, 0.0
    elif which == "rtol":
        atol, rtol = 0.0, (d / mx if mx > 0 else 0.0)
    else:
        atol = d / 2
        rtol = (d - atol) / mx if mx > 0 else 0.0
    if nudge and atol:
        atol = float(np.nextafter(atol, np.inf * nudge))
    elif nudge and rtol:
        rtol = float(np.nextafter(rtol, np.inf * nudge))
    # a few more lanes with exactly the same difference and scale
    for j in rng.integers(0, n, 5):
        a[j], b[j] = a[i], b[i]
    check_all(a.reshape(steps, -1), b.reshape(steps, -1), atol=atol, rtol=rtol, ulp=ulp)


@SETTINGS
@given(seed=st.integers(0, 2**31), mode=st.sampled_from(MODES),
       blocks=st.integers(2, 6), tie=st.sampled_from(["equal", "above", "below", "same-d32"]),
       axis=st.sampled_from([0, None]))
def test_max_tied_or_barely_raised(seed, mode, blocks, tie, axis):
    """A later block holds a value whose |a-b| ties the running maximum, or beats or misses
    it by one float64 ulp, or has the same float32 |a-b| but another float64 one."""
    n = 1024 * blocks
    a, b = pairs(seed, mode, n)
    rng = np.random.default_rng(seed + 2)
    i = int(np.argmax(d64(a, b)))
    j = int(rng.integers(0, n))
    if tie == "equal":
        a[j], b[j] = a[i], b[i]
    elif tie in ("above", "below"):
        a[j] = a[i]
        b[j] = np.nextafter(b[i], F32(np.inf) if (b[i] > a[i]) == (tie == "above") else F32(-np.inf))
    else:  # same float32 difference, different float64 one: large a, small b
        a[i], b[i] = F32(1.0), F32(2.0**-30)
        a[j], b[j] = F32(1.0), F32(2.0**-30 + 2.0**-52)
        if rng.random() < 0.5:
            i, j = j, i
    shape = (blocks, 1024) if axis == 0 else (n,)
    for kw in (dict(), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(rtol=1e-3)):
        check_all(a.reshape(shape), b.reshape(shape), steps_axis=axis, **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bounds", [dict(), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(rtol=1e-5),
                                    dict(atol=2.0**-100), dict(atol=2.0**100, rtol=2.0**20),
                                    dict(atol=1e-30, rtol=1e-30), dict(atol=1e-35),
                                    dict(atol=1e300), dict(rtol=2.0**21)])
def test_modes_and_parameter_ranges(mode, bounds):
    """Parameters inside, at the edges of and outside the range the margins are proven for."""
    a, b = pairs(7, mode, 3 * 2048 + 5)
    check_all(a, b, steps_axis=None, **bounds)
    check_all(a[:6144].reshape(6, 1024), b[:6144].reshape(6, 1024), **bounds)


def test_relative_maximum_near_the_running_one():
    """Lanes whose relative difference equals or barely beats the running max_rel."""
    rng = np.random.default_rng(3)
    n = 8192
    a = rng.standard_normal(n).astype(F32)
    b = a * F32(1 + 2.0**-20)
    for k, j in enumerate(rng.integers(0, n, 40)):
        s = F32(1 + 2.0**-20 + (k % 3) * 2.0**-23)
        b[j] = a[j] * s
    for kw in (dict(), dict(rtol=2.0**-20)):
        check_all(a, b, steps_axis=None, **kw)
        check_all(a.reshape(8, -1), b.reshape(8, -1), **kw)


def test_large_values_and_overflowing_float32_differences():
    a = np.full(4096, np.finfo(F32).max, F32)
    b = a.copy()
    b[::3] = -a[::3]
    b[1::7] = F32(2.0**100)
    b[2::5] = np.nextafter(a[2::5], F32(0))
    for kw in (dict(), dict(rtol=1.0), dict(atol=1e38, rtol=1e-3, ulp=3)):
        check_all(a, b, steps_axis=None, **kw)


# the lanes that reach a block's largest float32 |a-b| = 1.0: exact (3 - 2), or inexact with
# a float64 |a-b| just below (1 - 2^-30) or just above (1 + 2^-30) it
TIE_LANES = {"exact": (3.0, 2.0), "below": (1.0, 2.0**-30), "above": (1.0, -(2.0**-30))}


@pytest.mark.parametrize("order", [("below", "exact"), ("above", "exact"), ("exact", "exact"),
                                   ("exact", "below", "above"), ("exact", "above", "exact"),
                                   ("below", "below", "exact"), ("exact+below", "exact"),
                                   ("below+exact", "exact", "above")])
@pytest.mark.parametrize("axis", [0, None])
def test_tied_block_maxima_exact_and_inexact_in_turn(order, axis):
    """Blocks whose largest float32 |a-b| ties the running one: an exact tie (Sterbenz) is
    folded at once, an inexact one waits for its float64 rescan, and the first index of the
    float64 maximum is the same either way (the earlier remembered blocks first: a waiting
    block may hold an exact lane of the same value at an earlier index)."""
    rng = np.random.default_rng(11)
    n = 1024 * 6
    a = rng.standard_normal(n).astype(F32)
    b = a + (rng.standard_normal(n) * 1e-6).astype(F32)
    for k, kind in enumerate(order):
        j = 1024 * (2 * k) + 100 + k
        for m, part in enumerate(kind.split("+")):  # a block may hold two tied lanes
            a[j + 7 * m], b[j + 7 * m] = (F32(v) for v in TIE_LANES[part])
    shape = (6, 1024) if axis == 0 else (n,)
    for kw in (dict(), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(rtol=1e-3)):
        check_all(a.reshape(shape), b.reshape(shape), steps_axis=axis, **kw)


@pytest.mark.parametrize("data", ["identical", "identical-zeros", "repeated", "shift-every-7th",
                                  "same-d32-many"])
def test_blocks_whose_maxima_tie_everywhere(data):
    """Data where most blocks' largest float32 |a-b| ties the running maximum (identical
    runs, a few repeated values): every figure as the oracle's, on every path."""
    rng = np.random.default_rng(12)
    n = 1024 * 8 + 64
    a = rng.standard_normal(n).astype(F32)
    if data == "identical":
        b = a.copy()
    elif data == "identical-zeros":
        a[:] = 0.0
        a[::5] = F32(-0.0)
        b = a.copy()
        b[::3] = F32(-0.0)
    elif data == "repeated":
        a = rng.choice(np.array([1.0, 1.5, 2.0, -3.0], F32), n)
        b = a + rng.choice(np.array([0.0, 0.25, -0.5], F32), n)
    elif data == "shift-every-7th":
        b = a.copy()
        b[::7] += F32(1e-3)
    else:  # many lanes with one float32 |a-b| and different float64 ones, and exact ones
        b = a.copy()
        k = rng.integers(0, 3, n)
        for kind, v in zip(("exact", "below", "above"), range(3)):
            sel = (k == v) & (rng.random(n) < 0.05)
            a[sel], b[sel] = (F32(x) for x in TIE_LANES[kind])
    for shape, axis in (((n,), None), ((n // 32, 32), 0)):
        for kw in (dict(), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(rtol=1e-3)):
            check_all(a.reshape(shape), b.reshape(shape), steps_axis=axis, **kw)
