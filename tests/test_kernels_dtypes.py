"""The kernels for inner size 1 (every element a step), float16 and int64/uint64, against
the NumPy oracle, bit for bit, on every kernel path; edge values (NaN/inf/subnormal float16,
int64 MIN/MAX, uint64 near 2^64, ties); chunk-size and thread-count invariance."""
from __future__ import annotations

import numpy as np
import pytest

from _oracle import FLOATS, check_against_oracle, kernel, oracle, same_divergence
from test_kernels import specials as kernel_specials
from tolerance import Accumulator, divergence
from tolerance import _native

KERNELS = _native._available_kernels()
# lengths around the vector widths and the 512/1024-element blocks
LENGTHS = (1, 2, 3, 5, 8, 9, 17, 511, 512, 513, 1023, 1024, 1025, 2100)
BOUNDS = (
    {},
    {"atol": 0.0},
    {"atol": 1e-3},
    {"atol": 1e-3, "rtol": 1e-2},
    {"rtol": 0.5},
    {"ulp": 3},
    {"ulp": 0},
    {"atol": 1e-2, "rtol": 1e-3, "ulp": 2},
)


def specials(name):
    """test_kernels' special values, and a subnormal that is not the smallest."""
    out = kernel_specials(name)
    if name in FLOATS:
        out.append(3.0 * float(np.finfo(np.dtype(name)).smallest_subnormal))
    return out


def pair(name, n, seed, special_rate=0.1):
    """a, b of length n: close values with a share of specials placed independently."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(name)
    if name in FLOATS:
        a = rng.standard_normal(n) * rng.choice([1e-6, 1.0, 1e3], n)
        b = a * (1.0 + rng.standard_normal(n) * np.finfo(dt).eps * 4)
        a, b = a.astype(dt), b.astype(dt)
        eq = rng.random(n) < 0.2
        b[eq] = a[eq]
    elif name == "bool":
        a, b = rng.random(n) < 0.5, rng.random(n) < 0.5
    else:
        ii = np.iinfo(dt)
        a = rng.integers(ii.min // 4, ii.max // 4, n, dtype=dt, endpoint=True)
        b = (a + rng.integers(0, 3, n).astype(dt)).astype(dt)
    sp = np.array(specials(name), dtype=dt)
    for x in (a, b):
        m = rng.random(n) < special_rate
        x[m] = rng.choice(sp, int(m.sum()))
    return a, b


NAMES = FLOATS + ("bool", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64")


@pytest.mark.parametrize("name", NAMES)
def test_one_element_per_step_against_oracle(name):
    for isa in KERNELS:
        with kernel(isa):
            for k, n in enumerate(LENGTHS):
                a, b = pair(name, n, 1000 + k)
                for bnd in BOUNDS:
                    if "ulp" in bnd and name not in FLOATS:
                        continue
                    d = divergence(a, b, **bnd)
                    check_against_oracle(d, oracle(a, b, **bnd))


@pytest.mark.parametrize("name", ("float16", "float32", "float64", "int64", "uint64"))
def test_one_element_per_step_equals_the_per_step_driver(name):
    """The series kernels give the same figures as the per-step driver (forced by a per-step
    atol holding the same value for every step), also through an Accumulator in chunks."""
    a, b = pair(name, 3000, 7)
    bnd = {"rtol": 1e-2, "ulp": 4} if name in FLOATS else {"rtol": 1e-2}
    for isa in KERNELS:
        with kernel(isa):
            d = divergence(a, b, atol=1e-3, **bnd)
            same_divergence(d, divergence(a, b, atol=np.full(a.size, 1e-3), **bnd))
            acc = Accumulator(atol=1e-3, **bnd)
            for s in range(0, a.size, 677):
                acc.update(a[s:s + 677], b[s:s + 677])
            same_divergence(d, acc.result(a.shape))
            # an intermediate result does not consume the accumulator
            same_divergence(d, acc.result(a.shape))


@pytest.mark.parametrize("name", ("float64", "float32", "float16", "int64"))
def test_one_element_per_step_strided_and_swapped(name):
    a, b = pair(name, 2 * 1500 + 1, 11)
    for isa in KERNELS:
        with kernel(isa):
            for x, y in ((a[::2], b[::2]), (a[::-3], b[::-3]),
                         (a.astype(a.dtype.newbyteorder(">")), b)):
                check_against_oracle(divergence(x, y, atol=1e-3, rtol=1e-3),
                                     oracle(x, y, atol=1e-3, rtol=1e-3))


@pytest.mark.parametrize("name", ("float64", "float16"))
def test_one_element_per_step_threads_and_ties(name):
    """Large enough to split across threads: 2 threads == 1 thread bit for bit; ties of the
    maximum in different parts go to the lowest step."""
    n = 600_000
    rng = np.random.default_rng(3)
    a = rng.standard_normal(n).astype(name)
    b = (a + rng.standard_normal(n) * 1e-9 * (1e6 if name == "float16" else 1)).astype(name)
    a[[10, 300_001, 599_999]] = 0.5
    b[[10, 300_001, 599_999]] = 1.5
    b[[5, 400_000]] = np.nan
    bnd = {"atol": 1e-8, "rtol": 1e-6} if name == "float64" else {"atol": 1e-3, "ulp": 2}
    for isa in KERNELS:
        with kernel(isa):
            d1 = divergence(a, b, threads=1, **bnd)
            assert d1.argmax == (10,) and d1.max_abs == 1.0
            d2 = divergence(a, b, threads=2, **bnd)
            same_divergence(d1, d2)
    check_against_oracle(d1, oracle(a, b, **bnd))


# ---- int64 / uint64 in vector blocks ---------------------------------------------------
INT_BOUNDS = ({}, {"atol": 0.0}, {"atol": 1.0}, {"atol": 2.5}, {"rtol": 0.5},
              {"atol": 1.0, "rtol": 1e-9}, {"atol": 0.0, "rtol": 1.0}, {"rtol": 2.0**-40},
              {"rtol": 1 / 3})


def int_pair(name, shape, seed, big_every=0):
    """Small magnitudes (the lane path) with ties and exact bound hits; every `big_every`-th
    element an extreme (MIN/MAX, near 2^64), which sends its block to the exact path."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(name)
    n = int(np.prod(shape))
    lo = 0 if dt.kind == "u" else -2**40
    a = rng.integers(lo, 2**40, n, dtype=dt)
    delta = rng.choice(np.array([0, 1, 2, 3, 2**12], dtype=dt), n)
    b = (a + delta).astype(dt)
    # exact hits of the bound rtol * max(|a|,|b|) = 0.5 * M (b = 2a: |a-b| = a = M/2)
    hit = rng.random(n) < 0.05
    a[hit] = np.abs(a[hit]) // 4 * 2
    b[hit] = a[hit] * 2
    # |a-b| = M/3 exactly, just above the real bound fl(1/3) * M (float64 rounds it onto M/3)
    third = (rng.random(n) < 0.05) & ~hit
    k = np.abs(a[third]) // 8 + 1
    a[third], b[third] = 3 * k, 2 * k
    if big_every:
        ii = np.iinfo(dt)
        ext = np.array([ii.min, ii.max, ii.max - 1, ii.min + 1] if dt.kind == "i"
                       else [ii.max, ii.max - 1, 2**63, 2**63 - 1], dtype=dt)
        a[::big_every] = rng.choice(ext, a[::big_every].size)
        b[::big_every * 2] = rng.choice(ext, b[::big_every * 2].size)
    return a.reshape(shape), b.reshape(shape)


@pytest.mark.parametrize("name", ("int64", "uint64"))
@pytest.mark.parametrize("shape,big_every", [((3, 2100), 0), ((2, 2100), 1500), ((4, 9), 0),
                                             ((1, 1031), 7), ((2, 3), 0)])
def test_int64_blocks_against_oracle(name, shape, big_every):
    a, b = int_pair(name, shape, 20 + shape[1], big_every)
    for isa in KERNELS:
        with kernel(isa):
            for bnd in INT_BOUNDS:
                check_against_oracle(divergence(a, b, **bnd), oracle(a, b, **bnd))


@pytest.mark.parametrize("name", ("int64", "uint64"))
@pytest.mark.parametrize("n,big_every", [(2100, 0), (1031, 7), (3000, 1500), (9, 0), (513, 0),
                                         (4096, 0)])
def test_int64_one_element_per_step_blocks(name, n, big_every):
    """1-D int64 / uint64 with the default steps axis (every element a step): the series
    lanes (small magnitudes, ties, exact bound hits, |a-b| = M/3 against fl(1/3)) and blocks
    sent to the exact rule by an extreme, against the oracle and the per-step driver."""
    a, b = int_pair(name, (n,), 300 + n, big_every)
    for isa in KERNELS:
        with kernel(isa):
            for bnd in INT_BOUNDS:
                d = divergence(a, b, **bnd)
                check_against_oracle(d, oracle(a, b, **bnd))
                if "atol" in bnd:
                    per_step = dict(bnd, atol=np.full(n, bnd["atol"]))
                    same_divergence(d, divergence(a, b, **per_step))


@pytest.mark.parametrize("name", ("int64", "uint64"))
def test_int64_rising_max_rel(name):
    """max_rel rising a little at every element, within and across blocks (each new
    maximum only just above the last, where a lane must not skip its division), then a
    plateau: max_rel's index is the last rise, on the run and the series lanes alike."""
    n = 3000
    k = np.arange(1, n + 1, dtype=name)
    k[2500:] = 2500
    a = np.full(n, 2**30, dtype=name)
    b = (a + k).astype(name)
    for isa in KERNELS:
        with kernel(isa):
            for shape, steps_axis in (((n,), None), ((n,), 0), ((3, 1000), 0)):
                x, y = a.reshape(shape), b.reshape(shape)
                d = divergence(x, y, rtol=1e-9, steps_axis=steps_axis)
                check_against_oracle(d, oracle(x, y, rtol=1e-9, steps_axis=steps_axis))
                assert np.ravel_multi_index(d.argmax_rel, shape) == 2499


@pytest.mark.parametrize("name", ("int64", "uint64"))
def test_int64_leading_zero_pairs_hold_max_rel(name):
    """Equal pairs only, starting with 0 vs 0 (max(|a|,|b|) = 0): max_rel is 0 and its index
    is the first element, not the first non-zero one."""
    a = np.array([0] * 2100 + [5] * 3000, dtype=name)  # whole blocks of 0 vs 0 first
    for isa in KERNELS:
        with kernel(isa):
            for bnd in ({}, {"atol": 1.0}, {"rtol": 0.5}, {"atol": 1.0, "rtol": 1e-9}):
                d = divergence(a, a.copy(), steps_axis=None, **bnd)
                check_against_oracle(d, oracle(a, a.copy(), steps_axis=None, **bnd))
                assert d.argmax_rel == (0,) and d.max_rel == 0.0


@pytest.mark.parametrize("name", ("int64", "uint64"))
def test_int64_extremes_and_ties(name):
    ii = np.iinfo(name)
    if name == "int64":
        a = np.array([ii.max, ii.max, 0, 5] * 300, dtype=name)
        b = np.array([ii.min + 1, ii.min, 0, 5] * 300, dtype=name)
    else:
        a = np.array([2**64 - 1, 2**63 - 1, 0, 2**64 - 2] * 300, dtype=np.uint64)
        b = np.array([0, 2**63, 1, 2**64 - 1] * 300, dtype=np.uint64)
    small = np.arange(4096, dtype=name)
    ties = (small, small + np.array([0, 3, 1, 3], dtype=name)[np.arange(4096) % 4])
    for isa in KERNELS:
        with kernel(isa):
            for bnd in ({"rtol": 0.5}, {"rtol": 1.0}, {"atol": 3.0}, {}):
                check_against_oracle(divergence(a, b, steps_axis=None, **bnd),
                                     oracle(a, b, steps_axis=None, **bnd))
                d = divergence(*ties, steps_axis=None, **bnd)
                assert d.argmax == (1,) and d.max_abs == 3.0
                check_against_oracle(d, oracle(*ties, steps_axis=None, **bnd))


@pytest.mark.parametrize("name", ("int64", "uint64"))
def test_int64_threads_chunks_and_paths_agree(name):
    a, b = int_pair(name, (40, 8192), 5, big_every=70001)
    ref = None
    for isa in KERNELS:
        with kernel(isa):
            for threads in (1, 2):
                d = divergence(a, b, atol=1.0, rtol=1e-9, threads=threads)
                ref = ref or d
                same_divergence(ref, d)
            acc = Accumulator(atol=1.0, rtol=1e-9)
            for s in range(0, 40, 3):
                acc.update(a[s:s + 3], b[s:s + 3])
            same_divergence(ref, acc.result(a.shape))


# ---- float16 through the float32 vector loop --------------------------------------------
def half_pair(shape, seed):
    """float16 pairs: close values (0-3 ULP apart and far ones), every special (NaN, inf,
    subnormals, +-0, max), exact equals; some blocks hold none of the specials."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    a = (rng.standard_normal(n) * rng.choice([1e-6, 1e-3, 1.0, 300.0], n)).astype(np.float16)
    bits = a.view(np.uint16).astype(np.int32)
    step = rng.choice([0, 0, 1, -1, 2, 3, 5, 40], n)
    b = np.clip(bits + step, 0, 0xFFFF).astype(np.uint16).view(np.float16).copy()
    sp = np.array(specials("float16"), dtype=np.float16)
    sub = np.arange(1, 1024, dtype=np.uint16).view(np.float16)  # every subnormal
    for x in (a, b):
        m = rng.random(n) < 0.03
        x[m] = rng.choice(sp, int(m.sum()))
        m = rng.random(n) < 0.03
        x[m] = rng.choice(sub, int(m.sum())) * rng.choice(np.array([1, -1], np.float16), int(m.sum()))
    if n > 3000:  # a clean stretch: blocks on the finite fast path
        a[1024:3000] = np.abs(a[1024:3000])
        b[1024:3000] = a[1024:3000]
        b[1500:1510] = np.nextafter(a[1500:1510], np.float16(np.inf))
    return a.reshape(shape), b.reshape(shape)


HALF_BOUNDS = BOUNDS + ({"atol": 1e-3, "rtol": 1e-3, "ulp": 4}, {"ulp": 1}, {"atol": 0.01, "ulp": 1},
                        {"atol": float(np.finfo(np.float16).smallest_subnormal)})


@pytest.mark.parametrize("shape", [(3, 4100), (2, 1031), (5, 17), (1, 3), (2, 1024)])
def test_float16_blocks_against_oracle(shape):
    a, b = half_pair(shape, shape[1])
    for isa in KERNELS:
        with kernel(isa):
            for bnd in HALF_BOUNDS:
                check_against_oracle(divergence(a, b, **bnd), oracle(a, b, **bnd))
                check_against_oracle(divergence(a, b, steps_axis=None, **bnd),
                                     oracle(a, b, steps_axis=None, **bnd))


def test_float16_every_value_against_every_neighbour():
    """All 65536 float16 bit patterns against their neighbours 0..2 patterns up and a
    sign flip: subnormals, the normal/subnormal border, inf/NaN encodings."""
    a = np.arange(65536, dtype=np.uint32)
    for delta in (1, 2):
        b = ((a + delta) % 65536).astype(np.uint16).view(np.float16)
        x = a.astype(np.uint16).view(np.float16)
        for isa in KERNELS:
            with kernel(isa):
                for bnd in ({"ulp": 1}, {"atol": 2.0**-24, "ulp": 2}, {"rtol": 1e-3}):
                    check_against_oracle(divergence(x, b, steps_axis=None, **bnd),
                                         oracle(x, b, steps_axis=None, **bnd))
    x = a.astype(np.uint16).view(np.float16)
    check_against_oracle(divergence(x, -x, steps_axis=None, ulp=3),
                         oracle(x, -x, steps_axis=None, ulp=3))


def test_float16_threads_and_chunks_agree():
    a, b = half_pair((64, 8192), 9)
    ref = None
    for isa in KERNELS:
        with kernel(isa):
            for threads in (1, 2):
                d = divergence(a, b, atol=1e-3, rtol=1e-3, ulp=4, threads=threads)
                ref = ref or d
                same_divergence(ref, d)
            acc = Accumulator(atol=1e-3, rtol=1e-3, ulp=4)
            for s in range(0, 64, 5):
                acc.update(a[s:s + 5], b[s:s + 5])
            same_divergence(ref, acc.result(a.shape))
