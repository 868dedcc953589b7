"""The quick blocks (kernels_isa.hpp: quick_f64, the float32 pre-filter, the group tests and
the block-maximum records) on every kernel path: each case aims at one way a quick block
must give up or take its slow branch, and checks every figure against the oracle and
against the other paths, bit for bit, on one and two threads."""
from __future__ import annotations

import numpy as np
import pytest

from _oracle import check_against_oracle, check_every_path, kernel, oracle
from tolerance import divergence
from tolerance import _native

KERNELS = _native._available_kernels()
BOUNDS = [dict(), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(rtol=1e-3), dict(ulp=4),
          dict(atol=0.5), dict(ulp=0)]


check_all = check_every_path


def noise(n, dtype, seed=7):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n).astype(dtype)
    b = a + (rng.standard_normal(n) * 1e-6).astype(dtype)
    return a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [15, 16, 31, 32, 63, 64, 65, 127, 129, 1023, 1024, 1025, 4097])
def test_lengths_around_groups_and_blocks(dtype, n):
    """Runs that end inside a group, on a group edge and past a block (every lane width)."""
    a, b = noise(2 * n, dtype)
    for kw in BOUNDS[:3]:
        check_all(a.reshape(2, n), b.reshape(2, n), **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_in_every_group(dtype):
    """The same largest |a-b| in every group (more groups reach the block maximum than a
    block remembers), and equal arrays (zero differences: no group divides)."""
    a = np.arange(8192, dtype=dtype) % 97
    check_all(a.reshape(4, -1), (a + 1).reshape(4, -1), atol=0.5)
    check_all(a.reshape(4, -1), (a + 1).reshape(4, -1))
    check_all(a.reshape(-1), (a + 1).reshape(-1), steps_axis=None)
    check_all(a.reshape(4, -1), a.copy().reshape(4, -1), rtol=1e-3, ulp=2)
    z = np.zeros(4096, dtype=dtype)
    check_all(z.reshape(2, -1), z.copy().reshape(2, -1), atol=1.0, rtol=1.0, ulp=1)


@pytest.mark.parametrize("late", [True, False])
def test_float32_ties_with_another_float64_maximum(late):
    """float32: every group holds the block's largest float32 |a-b| (1 - 2^-30 rounds to 1),
    and one group, past the first eight, holds a larger float64 one (1 - 2^-31): the block
    maximum must come from that group, wherever it is."""
    a, b = noise(4096, np.float32, seed=5)
    a[::61] = np.float32(1.0)
    b[::61] = np.float32(2.0**-30)
    k = 61 * (60 if late else 1)
    b[k] = np.float32(2.0**-31)
    for kw in (dict(), dict(atol=1e-6, rtol=1e-6, ulp=4)):
        check_all(a.reshape(2, -1), b.reshape(2, -1), **kw)
        check_all(a, b, steps_axis=None, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["first", "middle", "last", "everywhere"])
def test_signs_differ(dtype, where):
    """a and b of opposite signs (also +0 against -0): with a ULP bound the quick blocks hand
    the block to the element-wise path."""
    a, b = noise(8192, dtype, seed=3)
    idx = {"first": [0], "middle": [4100], "last": [8191],
           "everywhere": list(range(0, 8192, 37))}[where]
    for k in idx:
        a[k], b[k] = dtype(1e-7), dtype(-1e-7)
    a[idx[0] // 2] = dtype(0.0)
    b[idx[0] // 2] = -dtype(0.0)
    for kw in (dict(ulp=4), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(ulp=2**40)):
        check_all(a.reshape(4, -1), b.reshape(4, -1), **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["rising", "falling", "spike"])
def test_margin_and_rel_records(dtype, order):
    """The margin and max_rel rise inside a step (a record in every group), fall, or jump
    once: every lane must still report the exact maxima and their first index."""
    n = 4096
    a = np.linspace(1.0, 2.0, n).astype(dtype)
    d = np.linspace(1e-7, 1e-5, n)
    if order == "falling":
        d = d[::-1].copy()
    elif order == "spike":
        d = np.full(n, 1e-7)
        d[3001] = 1e-4
    b = (a + d).astype(dtype)
    for kw in (dict(rtol=1e-6), dict(atol=1e-6, rtol=1e-6, ulp=4), dict(atol=1e-6)):
        check_all(a.reshape(2, -1), b.reshape(2, -1), **kw)
        check_all(a, b, steps_axis=None, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_specials_inside_a_quick_block(dtype):
    """One NaN, inf or huge value in an otherwise quick block sends only that block on."""
    a, b = noise(8192, dtype, seed=11)
    big = np.finfo(dtype).max
    for k, (x, y) in zip((5, 1500, 2600, 4097, 8000),
                         ((np.nan, 1.0), (np.inf, 1.0), (np.nan, np.nan), (big, -big), (2.0**101, 0.0))):
        a[k], b[k] = dtype(x), dtype(y)
    for kw in BOUNDS:
        check_all(a.reshape(4, -1), b.reshape(4, -1), **kw)


def test_every_path_holds_the_quick_blocks():
    """No algorithm for one ISA only: every vector table runs the quick blocks and the
    float32 pre-filter (the names come from the table the C++ built)."""
    for isa in KERNELS:
        entries = dict(_native._kernel_entries(isa))
        want = "scalar" if isa == "scalar" else "vector+blocks"
        assert entries["float32"] == entries["float64"] == want, (isa, entries)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_margin_near_ties_across_groups(seed):
    """float32: the margin's group test uses an approximate reciprocal (RECIP_ERR up to
    2^-11 relative) and tests the group holding the block's largest estimate first. Here
    margins in many groups and blocks lie within 2^-13 of each other, at magnitudes from
    2^-6 to 2^6, so the estimate often ranks them wrongly: the exact maximum (per step and
    whole) must still come out, on every path."""
    rng = np.random.default_rng(100 + seed)
    n = 8192
    a = (rng.standard_normal(n) * 0.1).astype(np.float32)
    b = (a + rng.standard_normal(n) * 1e-5).astype(np.float32)
    atol, rtol = 1e-3, 1e-2
    where = rng.choice(n, 400, replace=False)
    mag = 2.0 ** rng.uniform(-6, 6, where.size)
    a[where] = (mag * rng.choice([-1.0, 1.0], where.size)).astype(np.float32)
    target = 0.9 * (1 + rng.uniform(-2.0**-13, 2.0**-13, where.size))
    bound = atol + rtol * np.abs(a[where].astype(np.float64))
    b[where] = (a[where] + target * bound).astype(np.float32)
    for kw in (dict(atol=atol, rtol=rtol), dict(atol=atol, rtol=rtol, ulp=2**20),
               dict(rtol=rtol)):
        check_all(a.reshape(2, -1), b.reshape(2, -1), **kw)
        check_all(a.reshape(8, -1), b.reshape(8, -1), **kw)
        check_all(a, b, steps_axis=None, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_margin_with_zero_and_subnormal_bounds(dtype):
    """rtol alone: where max(|a|,|b|) is 0 or subnormal the bound is 0 or tiny (the float32
    pre-filter's lower bound is then 0 and its reciprocal inf), and those elements hold the
    largest margin; a = b = 0 lanes have margin 0 (0/0 is not a NaN margin)."""
    a, b = noise(4096, dtype, seed=13)
    tiny = np.finfo(dtype).smallest_subnormal
    a[100:164] = 0
    b[100:164] = 0
    a[2000], b[2000] = dtype(0), dtype(tiny)
    a[3000], b[3000] = dtype(tiny * 8), dtype(tiny * 2)
    for kw in (dict(rtol=1e-3), dict(rtol=1e-3, ulp=4), dict(atol=1e-300, rtol=1e-3)):
        check_all(a.reshape(4, -1), b.reshape(4, -1), **kw)
        check_all(a, b, steps_axis=None, **kw)


def test_float32_first_index_of_the_maximum_in_a_long_run():
    """One run of 2^20 float32 elements (steps_axis=None): the running maximum rises in many
    blocks and ties twice; the first index of the final maximum is found (the search starts
    at the first block that can hold it, not at element 0, and still finds the earliest)."""
    rng = np.random.default_rng(21)
    n = 1 << 20
    a = rng.standard_normal(n).astype(np.float32)
    b = (a + rng.standard_normal(n) * 1e-6).astype(np.float32)
    for k, at in enumerate(range(5000, n, 70001)):  # a rising maximum, block after block
        b[at] = a[at] + np.float32(1e-3 * (1 + k))
    top = np.float32(0.5)
    for at in (700003, 300007, 900001):  # the same largest |a-b| three times
        a[at], b[at] = np.float32(1.0), np.float32(1.0) - top
    for kw in (dict(), dict(atol=1e-6, rtol=1e-6, ulp=4)):
        check_all(a, b, steps_axis=None, **kw)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_a_tied_maximum_before_a_short_tail_keeps_the_first_index(dtype):
    """Every pair equal, or every pair 1 ULP apart: the maximum ties everywhere, and its
    index is the first element, also where the run ends in a block too short for the quick
    path (the pre-filter blocks remembered before it are searched first). The first full
    suite of this session found (64,) for 72 equal float32 elements on every vector path."""
    for isa in _native._available_kernels():
        with kernel(isa):
            for n in (72, 100, 200, 1000, 4160, 5000, 70_000):
                for gap in (0.0, 2.0**-10):
                    a = np.ones(n, dtype)
                    b = (a + np.asarray(gap, dtype)).astype(dtype)
                    for bnd in ({}, {"atol": 1e-3, "rtol": 1e-3}):
                        d = divergence(a, b, steps_axis=None, **bnd)
                        assert d.argmax == (0,) and d.argmax_rel == (0,), (isa, n, gap, d.argmax)
                        check_against_oracle(d, oracle(a, b, steps_axis=None, **bnd))
