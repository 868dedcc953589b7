"""The divergence kernels against an independent NumPy oracle, property-based.

Every figure is checked bit for bit: over dtypes, shapes (0-d, empty, 1-d, n-d), strides
(Fortran, negative, step 2), byte orders, NaN/inf/+-0/subnormal/integer extremes; on every
kernel path this CPU has (scalar, baseline, avx2, ...); chunked + merged == one-shot;
threads 1 == threads N.
"""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _oracle import FLOATS, check_against_oracle, kernel, oracle, same_divergence
import tolerance
from tolerance import Accumulator, divergence
from tolerance import _native

KERNELS = _native._available_kernels()
INTS = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- strategies -----------------------------------------------------------------------
def specials(name):
    dt = np.dtype(name)
    if name in FLOATS:
        fi = np.finfo(dt)
        return [0.0, -0.0, np.inf, -np.inf, np.nan, float(fi.tiny), -float(fi.tiny),
                float(fi.smallest_subnormal), -float(fi.smallest_subnormal), float(fi.max),
                -float(fi.max), 1.0, -1.0, float(fi.eps)]
    if name == "bool":
        return [False, True]
    ii = np.iinfo(dt)
    return [int(ii.min), int(ii.max), 0, 1, -1 if ii.min < 0 else 2, int(ii.min) + 1, int(ii.max) - 1]


def elements(name):
    if name in FLOATS:
        width = np.dtype(name).itemsize * 8
        return st.one_of(st.sampled_from(specials(name)),
                         st.floats(width=width, allow_nan=True, allow_infinity=True,
                                   allow_subnormal=True))
    if name == "bool":
        return st.booleans()
    ii = np.iinfo(np.dtype(name))
    return st.one_of(st.sampled_from(specials(name)),
                     st.integers(int(ii.min), int(ii.max)))


dtype_pairs = st.one_of(
    st.sampled_from(FLOATS + INTS).map(lambda n: (n, n)),
    st.tuples(st.sampled_from(FLOATS), st.sampled_from(FLOATS)),
    st.tuples(st.sampled_from(INTS), st.sampled_from(INTS)),
)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)


def relayout(x, how):
    """Same values, different memory layout."""
    if x.ndim == 0:
        return x.astype(x.dtype.newbyteorder("S")) if how == "swapped" else x
    if how == "fortran":
        return np.asfortranarray(x)
    if how == "negative" and x.ndim:
        return np.flip(np.flip(x, -1).copy(), -1)
    if how == "step2" and x.ndim:
        big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if how == "swapped":
        return x.astype(x.dtype.newbyteorder("S"))
    if how == "transposed" and x.ndim > 1:
        return np.ascontiguousarray(x.T).T
    return x


layouts = st.sampled_from(["c", "fortran", "negative", "step2", "swapped", "transposed"])


@st.composite
def cases(draw):
    na, nb = draw(dtype_pairs)
    shape = draw(shapes)
    a = draw(hnp.arrays(np.dtype(na), shape, elements=elements(na)))
    if na == nb and draw(st.booleans()):  # close to a: a copy with some elements replaced
        b = a.copy()
        mask = draw(hnp.arrays(np.bool_, shape))
        other = draw(hnp.arrays(np.dtype(nb), shape, elements=elements(nb)))
        b[mask] = other[mask]
    else:
        b = draw(hnp.arrays(np.dtype(nb), shape, elements=elements(nb)))
    a = relayout(a, draw(layouts))
    b = relayout(b, draw(layouts))
    if a.ndim == 0 or draw(st.integers(0, 4)) == 0:
        axis = None
    else:
        axis = draw(st.integers(-a.ndim, a.ndim - 1))
    atol = draw(st.sampled_from([None, 0.0, 1e-6, 0.5, 3.0, np.inf]))
    rtol = draw(st.sampled_from([None, 0.0, 1e-3, 0.5]))
    ulp = None
    if na == nb and na in FLOATS:
        ulp = draw(st.sampled_from([None, 0, 1, 4, 2**70]))
    return a, b, dict(atol=atol, rtol=rtol, ulp=ulp, steps_axis=axis)


# ---- oracle ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", KERNELS)
@SETTINGS
@given(case=cases())
def test_matches_oracle(name, case):
    a, b, kw = case
    with kernel(name):
        d = divergence(a, b, threads=1, **kw)
    check_against_oracle(d, oracle(a, b, **kw))


@SETTINGS
@given(case=cases(), data=st.data())
def test_chunked_and_merged_equal_one_shot(case, data):
    a, b, kw = case
    one = divergence(a, b, **kw)
    axis = kw["steps_axis"]
    kw_acc = {k: v for k, v in kw.items()}
    if a.ndim == 0 or axis is None:
        kw_acc["steps_axis"] = None
        fa, fb = a.reshape(-1), b.reshape(-1)  # flat C-order pieces of the one step
        n = fa.shape[0]
        cut = lambda x, i, j: x[i:j]  # noqa: E731
    else:
        n = a.shape[axis]
        fa, fb = a, b
        cut = lambda x, i, j: np.take(x, np.arange(i, j), axis=axis)  # noqa: E731
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0] + cuts + [n]
    pieces = [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    # all updates into one accumulator
    acc = Accumulator(**kw_acc)
    for i, j in pieces:
        acc.update(cut(fa, i, j), cut(fb, i, j))
    same_divergence(acc.result(a.shape), one)
    # one accumulator per piece, merged in order, each through bytes
    accs = []
    for i, j in pieces:
        part = Accumulator(**kw_acc).update(cut(fa, i, j), cut(fb, i, j))
        accs.append(Accumulator.from_bytes(part.to_bytes()))
    k = data.draw(st.integers(0, len(accs) - 1))
    left, right = accs[0], None
    for x in accs[1:k + 1]:
        left.merge(x)
    if k + 1 < len(accs):  # a right-hand tree, then one merge: associativity
        right = accs[k + 1]
        for x in accs[k + 2:]:
            right.merge(x)
        left.merge(right)
    same_divergence(Accumulator.from_bytes(left.to_bytes()).result(a.shape), one)


# ---- larger inputs: the vector blocks, rescans and thread splits ----------------------
def big_pair(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    b = a.copy()
    flat_b = b.reshape(-1)
    n = flat_b.size
    idx = rng.choice(n, size=min(n, 400), replace=False)
    flat_b[idx] += rng.standard_normal(idx.size).astype(dtype) * np.asarray(1e-3, dtype)
    if np.dtype(dtype).kind == "f":
        sp = rng.choice(n, size=min(n, 40), replace=False)
        vals = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310], dtype=np.float64)
        flat_b[sp] = vals[np.arange(sp.size) % vals.size].astype(dtype)
        a.reshape(-1)[sp[::3]] = np.nan
        # ties of the maximum in several blocks: the first must win
        t = rng.choice(n, size=min(n, 5), replace=False)
        flat_b[t] = a.reshape(-1)[t] + np.asarray(7.0, dtype)
    return a, b


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "uint64"])
@pytest.mark.parametrize("shape", [(5000,), (3, 4099), (1200, 7), (2, 2048), (1, 2049)])
def test_blocks_and_tails_against_oracle(dtype, shape):
    a, b = big_pair(dtype, shape, 1)
    if np.dtype(dtype).kind in "iu":
        a = (a * 1000).astype(dtype) if dtype != "uint64" else np.abs(a * 1e6).astype(dtype)
        b = a.copy()
        b.reshape(-1)[::97] += 3
    kw = dict(atol=1e-4, rtol=1e-5)
    o = oracle(a, b, **kw)
    for name in KERNELS:
        with kernel(name):
            check_against_oracle(divergence(a, b, threads=1, **kw), o)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16"])
@pytest.mark.parametrize("shape,axis", [((600_001,), None), ((3, 200_003), 0),
                                        ((4000, 150), 0), ((150, 4000), 1), ((7, 90_001), -1)])
def test_threads_give_identical_results(dtype, shape, axis):
    a, b = big_pair(dtype, shape, 2)
    if np.dtype(dtype).kind == "i":
        a = (a * 100).astype(dtype)
        b = a.copy()
        b.reshape(-1)[::1013] += 1
    kw = dict(atol=1e-3, rtol=1e-4, steps_axis=axis)
    one = divergence(a, b, threads=1, **kw)
    for t in (2, 3, 8):
        same_divergence(divergence(a, b, threads=t, **kw), one)
    for name in KERNELS:
        with kernel(name):
            same_divergence(divergence(a, b, threads=3, **kw), one)
    # and the layouts that go through the buffered conversions
    same_divergence(divergence(np.asfortranarray(a), b.astype(b.dtype.newbyteorder("S")),
                               threads=2, **kw), one)


def test_threads_identical_on_strided_views():
    a, b = big_pair("float64", (600, 1000), 3)
    kw = dict(atol=1e-4, steps_axis=1)
    va, vb = a[::-1, ::2], b[::-1, ::2]
    o = oracle(va, vb, **kw)
    check_against_oracle(divergence(va, vb, threads=1, **kw), o)
    check_against_oracle(divergence(va, vb, threads=4, **kw), o)


# ---- the rules, one by one --------------------------------------------------------------
@pytest.mark.parametrize("name", KERNELS)
def test_rules(name):
    inf, nan = np.inf, np.nan
    a = np.array([1.0, inf, inf, nan, nan, 0.0, 5e-324, 1.0, -inf, 2.0])
    b = np.array([1.0, inf, 1.0, nan, 1.0, -0.0, 0.0, 1.0 + 2**-52, inf, 2.0])
    with kernel(name):
        d = divergence(a, b, steps_axis=None, atol=1e300, rtol=1.0)
    assert d.nan_both == 1 and d.nan_mismatch == 1 and d.inf_mismatch == 2
    assert d.count_over == 3  # the NaN mismatch and both inf mismatches, whatever the bound
    assert d.max_abs == inf and d.argmax == (2,) and d.max_rel == inf
    assert d.max_ulp == 2 * 0x7FF0000000000000  # -inf .. +inf: ordered images
    assert d.size == 10 and not d.within and d.onset == 0
    with kernel(name):
        z = divergence(np.array([0.0, 5e-324]), np.array([-0.0, 0.0]), ulp=0)
    assert z.max_ulp == 1 and z.count_over == 1 and z.argmax == (1,) and z.max_rel == 1.0


def test_zero_over_zero_and_no_compared_pair():
    d = divergence(np.zeros(3), -np.zeros(3))
    assert d.max_abs == 0.0 and d.max_rel == 0.0 and d.argmax == (0,) and d.within
    n = divergence(np.full((2, 2), np.nan), np.full((2, 2), np.nan))
    assert n.argmax is None and n.step is None and n.max_abs == 0.0 and n.nan_both == 4
    assert n.within and n.onset is None and list(n.series) == [0.0, 0.0]


def test_integer_extremes_are_exact():
    a = np.array([np.iinfo(np.int64).min, 0, 2**53 + 1], dtype=np.int64)
    b = np.array([np.iinfo(np.uint64).max, 0, 2**53], dtype=np.uint64)
    d = divergence(a, b, atol=0.0)
    assert d.max_abs == float(2**64 - 1 + 2**63) and d.argmax == (0,)
    assert d.count_over == 2
    # 2**53 + 1 vs 2**53 with atol 2**53: exactly inside; with atol 0.5: exactly outside
    e = divergence(np.array([2**62 + 1], np.int64), np.array([2**62], np.uint64), atol=0.5)
    assert e.count_over == 1 and e.max_abs == 1.0
    f = divergence(np.array([True, False]), np.array([0, 0], np.int8))
    assert f.max_abs == 1.0 and f.count_over == 1


def test_empty_and_zero_d():
    d = divergence(np.zeros((4, 0)), np.zeros((4, 0)))
    assert d.size == 0 and list(d.series) == [0.0] * 4 and d.argmax is None and d.within
    e = divergence(np.zeros((0, 3)), np.zeros((0, 3)))
    assert e.size == 0 and e.series.size == 0 and e.onset is None
    s = divergence(np.float32(1.0), np.float32(np.nan))
    assert s.argmax is None and s.nan_mismatch == 1 and s.onset == 0 and s.series_over.tolist() == [1]


def test_public_names_reexported():
    for name in ("divergence", "Divergence", "Accumulator", "assert_bounded"):
        assert name in tolerance.__all__ and hasattr(tolerance, name)


# ---- the fast paths' corners: seeds, lanes without a compared pair, ULP bounds, scales --
def _scaled_pairs(dtype, kind, n=6000, seed=5):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if kind == "zeros-then-values":
        a = np.zeros(n, dt)
        b = np.zeros(n, dt)
        b[3000:] = rng.standard_normal(n - 3000).astype(dt)
        a[3000:] = b[3000:] * np.asarray(1 + 1e-3, dt)
    elif kind == "nan-block-then-zeros":
        a = np.zeros(n, dt)
        b = np.zeros(n, dt)
        a[:1100] = np.nan
        b[:1100:2] = np.nan
        b[5000] = 1.0
    elif kind == "tiny":
        a = (rng.standard_normal(n) * 1e-305).astype(dt)
        b = a + (rng.standard_normal(n) * 1e-310).astype(dt)
        a[::7] = 5e-324 if dt == np.float64 else a[::7]
    elif kind == "wide-scales":
        e = rng.integers(-300 if dt == np.float64 else -40, 300 if dt == np.float64 else 38, n)
        a = (rng.standard_normal(n) * 10.0 ** e).astype(dt)
        b = np.nextafter(a, np.asarray(np.inf, dt)) if dt != np.float16 else a.copy()
        b[::5] = a[::5] * np.asarray(-1.0, dt)
    elif kind == "overflowing":
        big = np.finfo(dt).max
        a = np.full(n, big, dt)
        b = np.full(n, -big, dt)
        b[::2] = a[::2]
    else:  # "ulp-steps": neighbours 0..5 ULP apart
        a = rng.standard_normal(n).astype(dt)
        b = a.copy()
        for k in range(1, 6):
            b[k::6] = np.nextafter(b[k::6], np.asarray(np.inf, dt))
            b[k + 1::6] = b[k + 1::6]
        b[::6] = np.nextafter(np.nextafter(a[::6], np.asarray(np.inf, dt)), np.asarray(np.inf, dt))
    return a, b


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["zeros-then-values", "nan-block-then-zeros", "tiny",
                                  "wide-scales", "overflowing", "ulp-steps"])
@pytest.mark.parametrize("ulp", [None, 0, 1, 3, 2**33])
def test_fast_path_corners_against_oracle(dtype, kind, ulp):
    a, b = _scaled_pairs(dtype, kind)
    a2, b2 = a.reshape(3, -1), b.reshape(3, -1)
    kw = dict(atol=1e-300, rtol=1e-7, ulp=ulp)
    o = oracle(a2, b2, **kw)
    for name in KERNELS:
        with kernel(name):
            check_against_oracle(divergence(a2, b2, threads=1, **kw), o)
            check_against_oracle(divergence(a2, b2, threads=2, **kw), o)
