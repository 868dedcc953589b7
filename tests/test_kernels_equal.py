"""The equal-block entry: `Accumulator.update_equal(x)` folds exactly what
`update(x, x)` folds (every field of the statistics, every figure of the result), for every
dtype, NaN/inf/-0/subnormal, shape, steps axis, chunking, byte order, strides, thread count
and bound; and both agree with the NumPy oracle of (x, x)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tolerance.compare.kernel import SUPPORTED_DTYPES, Accumulator, EqualScan
from tolerance.io import digest
from tolerance.io.digest import block_digest
from tests._oracle import oracle

FLOATS = ("float16", "float32", "float64")


def _specials(dt: np.dtype) -> list:
    if dt.kind == "f":
        fi = np.finfo(dt)
        return [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, fi.tiny / 2, -fi.tiny, fi.max, 1.5]
    if dt.kind == "b":
        return [True, False]
    ii = np.iinfo(dt)
    return [ii.min, ii.max, 0, 1, -1 if ii.min < 0 else 2]


def _array(rng: np.random.Generator, dtype: str, shape: tuple, swap: bool, special: float):
    dt = np.dtype(dtype)
    n = math.prod(shape)
    if dt.kind == "f":
        x = rng.standard_normal(n).astype(dt)
    elif dt.kind == "b":
        x = rng.integers(0, 2, n).astype(bool)
    else:
        ii = np.iinfo(dt)
        x = rng.integers(ii.min, ii.max, n, dtype=dt, endpoint=True)
    sp = _specials(dt)
    pick = rng.random(n) < special
    if pick.any():
        x[pick] = np.array(sp, dtype=object)[rng.integers(0, len(sp), int(pick.sum()))].astype(dt)
    x = x.reshape(shape)
    if swap and dt.itemsize > 1:
        x = x.astype(dt.newbyteorder("S"))
    return x


def _bounds(draw_set: int, dtype: str, steps: int | None):
    atol, rtol, ulp = None, None, None
    if draw_set & 1:
        atol = 1e-3
    if draw_set & 2:
        rtol = 1e-5
    if draw_set & 4 and dtype in FLOATS:
        ulp = 3
    if draw_set & 8 and steps:
        atol = [0.5 * k for k in range(steps)]
    return atol, rtol, ulp


def _fold(x: np.ndarray, cuts: list[int], axis, bounds, threads: int, equal: bool):
    atol, rtol, ulp = bounds
    acc = Accumulator(atol=atol, rtol=rtol, ulp=ulp, steps_axis=axis, threads=threads)
    if axis is None:
        flat = x.reshape(-1)
        pieces = np.split(flat, cuts)
    else:
        pieces = np.split(x, cuts, axis=axis)
    for p in pieces:
        if equal == "scan":  # scanned piece by piece while hashed, as the engine does
            scan = EqualScan(p, axis, threads=threads)
            assert block_digest(p, scan.add if scan.by_pieces else None) == block_digest(p)
            acc.update_equal(p, scan)
        elif equal:
            acc.update_equal(p)
        else:
            acc.update(p, p)
    return acc


def _same(ref: Accumulator, eq: Accumulator, shape) -> None:
    assert eq._stats.to_bytes() == ref._stats.to_bytes()  # every Stats field, bit for bit
    assert (eq.steps, eq._inner, eq._names, eq._step_shape) == \
        (ref.steps, ref._inner, ref._names, ref._step_shape)
    assert eq.to_bytes() == ref.to_bytes()
    r, e = ref.result(shape), eq.result(shape)
    for f in r.__dataclass_fields__:
        rv, ev = getattr(r, f), getattr(e, f)
        if isinstance(rv, np.ndarray) or isinstance(ev, np.ndarray):
            assert rv is not None and ev is not None and np.array_equal(rv, ev), f
            assert rv.dtype == ev.dtype, f
        else:
            assert rv == ev, f


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(SUPPORTED_DTYPES))
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    axis = draw(st.sampled_from([0, -1, None] + ([1] if ndim > 1 else [])))
    swap = draw(st.booleans())
    special = draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    layout = draw(st.sampled_from(["c", "transposed", "strided"]))
    steps = None if axis is None else shape[axis]
    bset = draw(st.integers(0, 15))
    n_along = math.prod(shape) if axis is None else shape[axis]
    cuts = sorted(draw(st.lists(st.integers(0, n_along), max_size=3)))
    threads = draw(st.sampled_from([1, 2]))
    # a NaN prefix (flat C order) that can fill the first pieces, so the first compared
    # element sits in a later piece
    prefix = draw(st.integers(0, math.prod(shape)))
    return dtype, shape, axis, swap, special, seed, layout, steps, bset, cuts, threads, prefix


def _layout(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "transposed":
        return np.ascontiguousarray(x.T).T  # same values, Fortran order
    if layout == "strided":
        big = np.empty(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    return x


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_update_equal_is_update_of_the_block_against_itself(case):
    dtype, shape, axis, swap, special, seed, layout, steps, bset, cuts, threads, prefix = case
    rng = np.random.default_rng(seed)
    x = _array(rng, dtype, shape, swap, special)
    if x.dtype.kind == "f":
        x.reshape(-1)[:prefix] = np.nan
    x = _layout(x, layout)
    bounds = _bounds(bset, dtype, steps)
    ref = _fold(x, cuts, axis, bounds, threads, equal=False)
    eq = _fold(x, cuts, axis, bounds, threads, equal=True)
    _same(ref, eq, shape)
    with pytest.MonkeyPatch.context() as mp:  # small blocks scanned in many pieces
        mp.setattr(digest, "PIECE_BYTES", 64)
        _same(ref, _fold(x, cuts, axis, bounds, threads, equal="scan"), shape)
    # and the figures are the oracle's for (x, x)
    want = oracle(x, x, atol=bounds[0], rtol=bounds[1], ulp=bounds[2], steps_axis=axis)
    got = eq.result(shape)
    assert got.nan_both == want["nan_both"]
    assert got.size == want["size"]
    assert got.max_abs == want["max_abs"] == 0.0
    assert got.argmax == want["argmax"]
    assert got.count_over == 0 and got.onset is None


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64", "bool"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_update_equal_over_thread_parts(dtype, threads):
    """Arrays large enough for the thread split (>= 2^17 elements a part), with NaNs at and
    around the part boundaries and whole NaN steps first, so the first compared element
    sits in a later part."""
    steps, inner = 12, 70_000
    x = (np.arange(steps * inner) % 1000).astype(dtype).reshape(steps, inner)
    if x.dtype.kind == "f":
        x[:5] = np.nan  # the first compared element is in step 5, well into part 2 or 3
        flat = x.reshape(-1)
        for cut in range(4096, flat.size, 4096 * 7):
            flat[cut - 1:cut + 2] = np.nan
        flat[-1] = np.inf
    for axis in (0, 1, None):
        for bounds in ((None, None, None), (1e-3, 1e-4, None)):
            cuts = {0: [3, 7], 1: [], None: [3 * inner, 7 * inner]}[axis]
            ref = _fold(x, cuts, axis, bounds, threads, equal=False)
            for mode in (True, "scan"):
                _same(ref, _fold(x, cuts, axis, bounds, threads, equal=mode), x.shape)


def test_update_equal_checks_like_update():
    acc = Accumulator(ulp=1)
    with pytest.raises(ValueError, match="ulp needs both inputs of the same float type"):
        acc.update_equal(np.zeros(3, np.int32))
    acc = Accumulator(atol=[1.0, 2.0])
    with pytest.raises(ValueError, match="per-step atol has 2 values"):
        acc.update_equal(np.zeros((3, 2)))
    acc = Accumulator()
    acc.update_equal(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="per-step shape changed"):
        acc.update_equal(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="dtypes changed"):
        acc.update_equal(np.zeros((2, 3), np.float64))
    with pytest.raises(TypeError, match="unsupported dtype"):
        Accumulator().update_equal(np.zeros(3, np.complex64))
    c = np.zeros(3, np.complex64)
    with pytest.raises(TypeError, match="unsupported dtype"):
        Accumulator().update_equal(c, EqualScan(c, 0))
    x = np.zeros(3)
    with pytest.raises(ValueError, match="another block"):
        Accumulator().update_equal(x, EqualScan(x.copy(), 0))
    with pytest.raises(ValueError, match="another block or steps axis"):
        Accumulator().update_equal(x, EqualScan(x, None))


def test_update_equal_merges_with_update():
    """An equal block folded beside differing blocks: the same as update throughout."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((9, 5))
    b = a + rng.standard_normal((9, 5)) * 1e-3
    b[3:6] = a[3:6]
    a[4, 2] = b[4, 2] = np.nan
    ref, eq = Accumulator(atol=1e-3), Accumulator(atol=1e-3)
    for lo, hi in ((0, 3), (3, 6), (6, 9)):
        ref.update(a[lo:hi], b[lo:hi])
        if lo == 3:
            eq.update_equal(a[lo:hi])
        else:
            eq.update(a[lo:hi], b[lo:hi])
    _same(ref, eq, a.shape)


class _Arrays:
    """A BlockSource over in-memory arrays (blocks of whole steps, or flat pieces)."""

    def __init__(self, label, arrays):
        self.label, self.arrays = label, arrays

    def meta(self, key):
        x = self.arrays[key]
        return tuple(x.shape), x.dtype.str

    def blocks(self, key, steps_axis, per_block):
        x = self.arrays[key]
        if steps_axis is None:
            flat = x.reshape(-1)
            for lo in range(0, max(1, flat.size), per_block):
                yield flat[lo:lo + per_block]
            return
        for lo in range(0, x.shape[steps_axis], per_block):
            yield np.take(x, range(lo, min(x.shape[steps_axis], lo + per_block)), steps_axis)


@pytest.mark.parametrize("axis", [0, 1, None])
def test_engine_equal_blocks_as_compared(axis, monkeypatch):
    """Blocks equal on some pairs and not on others, switching from block to block (the
    engine scans an owner's block while hashing it only where its pairs were equal in the
    last block): every row is the accumulator of the pair folded block by block."""
    from tolerance.compare.engine import EngineStats, LocalTransport, compare_key
    from tolerance.compare.rows import Bounds

    monkeypatch.setattr(digest, "PIECE_BYTES", 256)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 24)).astype(np.float32)
    a[0:6] = np.nan
    a[9, 3] = np.inf
    b, c = a.copy(), a.copy()
    b[20:22] += 1e-3   # b differs from a in one block only
    c[:2, :3] = 7.0    # c differs from a in the first block only
    arrays = [a, b, c]
    srcs = {k: _Arrays(f"box{k}", {"x": x}) for k, x in enumerate(arrays)}
    labels = [s.label for s in srcs.values()]
    budget = 5 * 24 * 4  # a few steps a block
    stats = EngineStats()
    outs = compare_key(LocalTransport(), srcs, labels, "x", Bounds(atol=1e-4), axis,
                       threads=1, budget=budget, stats=stats)
    assert len(outs) == 3
    assert 0 < stats.blocks_equal < 3 * stats.blocks // 3  # some pairs' blocks were equal
    for o in outs:
        ref = Accumulator(atol=1e-4, steps_axis=axis, threads=1)
        ref.update(arrays[o.a], arrays[o.b])
        assert o.acc._stats.to_bytes() == ref._stats.to_bytes(), (o.a, o.b)


def test_block_digest_is_xxh3_128_of_dtype_shape_and_c_order_bytes():
    """The digest a reference records and the exchange compares: the same bits whether the
    block is hashed whole or piece by piece, in any layout."""
    import xxhash

    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 700)).astype(np.float32)      # 840 KB: several pieces
    for b in (x, np.asfortranarray(x), x[::2], x[:, ::3], x[:0], x.astype(">f8")[:7]):
        want = xxhash.xxh3_128(b.dtype.str.encode() + repr(b.shape).encode()
                               + np.ascontiguousarray(b).tobytes()).digest()
        seen = []
        assert block_digest(b) == want
        assert block_digest(b, lambda lo, hi: seen.append((lo, hi))) == want
        if b.shape[0]:
            assert seen[0][0] == 0 and seen[-1][1] == b.shape[0]
            assert all(p[1] == q[0] for p, q in zip(seen, seen[1:]))
