"""Regression tests of exactness (issue "One fast, exact kernel on every ISA"): ULP maxima
at and beyond 2^63 on every path, process floating-point state (FTZ/DAZ), exact integer
bounds and argmax ties beyond 2^53, bounds as users mean them (unset = None), the margin
and per-step bounds, the wire format's validation (with a fuzz test), assert_bounded."""
from __future__ import annotations

import ctypes
import math
import platform
import shutil
import subprocess

import numpy as np
import pytest

from _oracle import check_against_oracle, kernel, oracle, same_divergence
from tolerance import Accumulator, assert_bounded, divergence
from tolerance import _native

KERNELS = _native._available_kernels()
I64, U64 = np.iinfo(np.int64), np.iinfo(np.uint64)


# ---- max_ulp at and beyond 2^63 -------------------------------------------------------
@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("n", [8, 64, 4096 + 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ulp_maxima_beyond_2_63(name, n, dtype):
    t = np.dtype(dtype).type
    a = np.full(n, t(3.0))
    b = a.copy()
    b[0] = t(-3.0)
    b[min(4, n - 1)] = np.nextafter(t(3.0), t(4.0))
    big = np.full(n, np.finfo(dtype).max, dtype=dtype)
    with kernel(name):
        for x, y in ((a, b), (big, -big), (b, a)):
            for kw in ({}, {"ulp": 1}, {"ulp": 2**63}, {"atol": 1.0, "ulp": 2**64 - 1}):
                d = divergence(x, y, steps_axis=None, threads=1, **kw)
                check_against_oracle(d, oracle(x, y, steps_axis=None, **kw))
    if dtype == "float64":
        assert divergence(a, b, steps_axis=None).max_ulp == 9227875636482146304
        assert divergence(big, -big, steps_axis=None).max_ulp > 2**64 - 2**54


# ---- floating-point state of the process ------------------------------------------------
_MXCSR_C = r"""
#include <xmmintrin.h>
unsigned get_csr(void) { return _mm_getcsr(); }
void set_csr(unsigned v) { _mm_setcsr(v); }
"""


@pytest.fixture
def mxcsr(tmp_path):
    """A tiny C library that reads/writes this thread's MXCSR (what -ffast-math libraries do)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("MXCSR is x86-64 only (the aarch64 FPCR guard is checked under qemu)")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the MXCSR helper")
    src = tmp_path / "csr.c"
    src.write_text(_MXCSR_C)
    lib = tmp_path / "libcsr.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", str(src), "-o", str(lib)], check=True, timeout=60)
    csr = ctypes.CDLL(str(lib))
    csr.get_csr.restype = ctypes.c_uint
    csr.set_csr.argtypes = [ctypes.c_uint]
    before = csr.get_csr()
    yield csr
    csr.set_csr(before)


@pytest.mark.parametrize("name", KERNELS)
def test_ftz_daz_cannot_change_a_figure(mxcsr, name):
    a = np.full(4096, 5e-324)
    z = np.zeros(4096)
    a32 = np.full(4096, np.float32(1e-45))
    with kernel(name):
        want = [divergence(a, z, threads=t) for t in (1, 2)] + \
               [divergence(a32, np.zeros(4096, np.float32), threads=1)]
        flushed = mxcsr.get_csr() | 0x8040 | 0x6000  # FTZ, DAZ, round toward zero
        mxcsr.set_csr(flushed)
        got = [divergence(a, z, threads=t) for t in (1, 2)] + \
              [divergence(a32, np.zeros(4096, np.float32), threads=1)]
        after = mxcsr.get_csr()
        mxcsr.set_csr(before := mxcsr.get_csr() & ~(0x8040 | 0x6000))
    assert before != flushed
    assert after == flushed  # the caller's state is restored
    for w, g in zip(want, got):
        same_divergence(w, g)
    assert got[0].count_over == 4096 and got[0].max_abs == 5e-324


# ---- integers beyond 2^53 --------------------------------------------------------------
@pytest.mark.parametrize("name", KERNELS)
def test_integer_bounds_and_ties_are_exact(name):
    with kernel(name):
        d = divergence(np.array([2**53 + 1], np.int64), np.array([0], np.int64), rtol=1.0)
        assert d.within  # 2^53+1 <= 1 * (2^53+1)
        d = divergence(np.array([2**64 - 1], np.uint64), np.array([2**63 - 1], np.uint64), rtol=0.5)
        assert not d.within  # 2^63 > 0.5 * (2^64 - 1)
        a = np.array([I64.max, I64.max], np.int64)
        b = np.array([I64.min + 1, I64.min], np.int64)
        d = divergence(a, b, steps_axis=None)
        assert d.argmax == (1,)  # the larger exact magnitude, though float64 ties
        for x, y, kw in ((a, b, {}), (a, b, {"atol": 2.0**64}), (a[:1], b[1:], {"rtol": 0.5}),
                         (np.array([I64.min], np.int64), np.array([U64.max], np.uint64),
                          {"atol": 0.5, "rtol": 0.5})):
            check_against_oracle(divergence(x, y, steps_axis=None, **kw),
                                 oracle(x, y, steps_axis=None, **kw))
        # bounds with fractions: atol + rtol*M crosses an integer only through both parts
        x = np.array([10, 2**62 + 3], np.int64)
        y = np.array([0, 0], np.int64)
        for at, rt in ((0.5, 0.5 / 2**62), (0.75, 2.0**-64), (1e-300, 1.0), (2.0**-1074, 1.0)):
            check_against_oracle(divergence(x, y, atol=at, rtol=rt), oracle(x, y, atol=at, rtol=rt))
        # argmax ties across threads and chunks still pick the larger exact magnitude
        big = np.zeros(300_000, np.int64)
        big[10] = I64.max
        big[200_000] = I64.max
        other = np.zeros_like(big)
        other[10] = -(2**62)
        other[200_000] = I64.min
        for t in (1, 2):
            assert divergence(big, other, steps_axis=None, threads=t).argmax == (200_000,)


# ---- bounds as users mean them ----------------------------------------------------------
def test_unset_bounds_are_not_zero_bounds():
    x = np.linspace(1, 2, 100)
    y = np.nextafter(x, 3.0)
    assert divergence(x, y, ulp=4).within  # ulp alone: within 4 ULP
    assert divergence(x, y, ulp=4).margin == 0.25
    assert not divergence(x, y, ulp=0).within
    assert not divergence(x, y).within  # nothing set: equal required
    assert divergence(x, y).margin is None
    assert divergence(x, x.copy()).within
    nan = np.array([np.nan, 1.0])
    assert divergence(nan, nan.copy()).within  # NaN against NaN is equal
    assert divergence(x, y, rtol=1e-15).within and divergence(x, y, atol=1e-15).within
    assert not divergence(x, y, atol=1e-15, ulp=0).within  # every bound that is set
    with pytest.raises(ValueError, match="atol"):
        divergence(x, y, atol=-1.0)


# ---- margin and per-step bounds ---------------------------------------------------------
@pytest.mark.parametrize("name", KERNELS)
def test_margin_against_oracle(name):
    rng = np.random.default_rng(7)
    for dtype in ("float16", "float32", "float64", "int64", "uint64", "int32"):
        if dtype.startswith("float"):
            a = rng.standard_normal((37, 300)).astype(dtype)
            b = (a.astype(np.float64) * (1 + 1e-3 * rng.standard_normal(a.shape))).astype(dtype)
            b[3, 5] = np.nan
            b[4, 6] = np.inf
        else:
            a = rng.integers(0, 2**30, (37, 300)).astype(dtype)
            b = a + rng.integers(0, 3, a.shape).astype(dtype)
        at_steps = np.abs(rng.standard_normal(37)) * 1e-3
        kws = [dict(atol=1e-3), dict(rtol=1e-3), dict(atol=1e-4, rtol=1e-3), dict(atol=at_steps),
               dict(atol=at_steps, rtol=1e-3), dict(atol=0.0), dict(atol=None, rtol=0.0)]
        if dtype.startswith("float"):
            kws += [dict(ulp=3), dict(atol=1e-3, ulp=10), dict(ulp=0)]
        with kernel(name):
            for kw in kws:
                one = divergence(a, b, threads=1, **kw)
                check_against_oracle(one, oracle(a, b, **kw))
                same_divergence(one, divergence(a, b, threads=2, **kw))
                acc = Accumulator(**kw)
                for lo in range(0, 37, 5):  # chunks, merged through the wire format
                    part = Accumulator(first_step=lo, **kw).update(a[lo:lo + 5], b[lo:lo + 5])
                    acc.merge(Accumulator.from_bytes(part.to_bytes()))
                same_divergence(one, acc.result())
    d = divergence(np.array([1.0, 2.0]), np.array([1.25, 2.0]), atol=0.5)
    assert d.margin == 0.5 and d.series_margin.tolist() == [0.5, 0.0]
    assert divergence(np.array([1.0, np.nan]), np.array([1.0, 1.0]), atol=1).margin == math.inf


def test_per_step_atol_needs_one_value_per_step():
    a = np.zeros((4, 3))
    with pytest.raises(ValueError, match="per-step atol"):
        divergence(a, a, atol=[1.0, 2.0])
    with pytest.raises(ValueError, match="steps axis"):
        divergence(a, a, atol=[1.0] * 4, steps_axis=None)
    d = divergence(a, a + 1.5, atol=[1.0, 2.0, 1.0, 2.0])
    assert d.series_over.tolist() == [3, 0, 3, 0] and d.onset == 0
    assert d.series_margin.tolist() == [1.5, 0.75, 1.5, 0.75]


# ---- wire format ------------------------------------------------------------------------
def _sample():
    a = np.arange(24.0).reshape(6, 4)
    b = a.copy()
    b[2, 1] += 3.0
    return Accumulator(atol=0.5).update(a, b)


def _patch(data, field_offset, fmt, value):
    import struct
    out = bytearray(data)
    struct.pack_into(fmt, out, field_offset, value)
    return bytes(out)


def test_from_bytes_catches_consistent_looking_lies():
    from tolerance.compare import _wire
    acc = _sample()
    data = acc.to_bytes()
    head = _wire.HEAD.size
    # header: steps at offset 6+2+4+8+8+8+8 = 44 (q), inner at 52
    with pytest.raises(ValueError, match="steps"):
        Accumulator.from_bytes(_patch(data, 44, "<q", 7))
    with pytest.raises(ValueError, match="steps"):
        Accumulator.from_bytes(_patch(data, 44, "<q", 2**60))
    stats_at = head + len(b"float64") * 2 + 8 * 1
    # stats: arg_step is the 4th field (offset 24)
    with pytest.raises(ValueError, match="arg_step"):
        Accumulator.from_bytes(_patch(data, stats_at + 24, "<q", 9))
    # count_over (10th field) 0 while series_over holds 1
    with pytest.raises(ValueError, match="count_over"):
        Accumulator.from_bytes(_patch(data, stats_at + 72, "<q", 0))
    # a huge series length is refused before anything is allocated
    with pytest.raises(ValueError, match="series length"):
        Accumulator.from_bytes(_patch(data, stats_at + 128, "<q", 2**61))
    # size against the shape
    with pytest.raises(ValueError, match="size"):
        Accumulator.from_bytes(_patch(data, stats_at + 104, "<q", 23))
    assert Accumulator.from_bytes(data).result().to_dict() == acc.result().to_dict()


def _consistent(d):
    assert d.count_over == int(d.series_over.sum())
    assert d.series.size == d.series_over.size
    assert 0 <= d.count_over <= d.size
    assert d.within == (d.count_over == 0)
    assert (d.onset is None) == (d.count_over == 0)
    if d.argmax is not None:
        assert d.step is not None and 0 <= d.step < max(d.series.size, 1)


def test_from_bytes_fuzz_never_crashes_or_lies():
    rng = np.random.default_rng(12)
    seeds = [_sample().to_bytes(),
             Accumulator(ulp=3, steps_axis=None).update(np.float32([1, 2, np.nan]),
                                                         np.float32([1, 3, 1])).to_bytes(),
             Accumulator(atol=[0.1, 0.2]).update(np.int64([[1, 2], [3, 4]]),
                                                 np.int64([[1, 2], [3, 9]])).to_bytes(),
             Accumulator().to_bytes()]
    for n in range(3000):
        data = bytearray(seeds[n % len(seeds)])
        for _ in range(rng.integers(1, 4)):
            kind = rng.integers(0, 3)
            if kind == 0 and data:
                data[rng.integers(0, len(data))] = int(rng.integers(0, 256))
            elif kind == 1:
                del data[rng.integers(0, len(data) + 1):]
            else:
                data += bytes(rng.integers(0, 256, rng.integers(1, 24), dtype=np.uint8))
        try:
            acc = Accumulator.from_bytes(bytes(data), threads=1)
        except ValueError:
            continue
        _consistent(acc.result())


# ---- assert_bounded and the repr ----------------------------------------------------------
def test_assert_bounded_reports():
    with pytest.raises(AssertionError, match="different shapes"):
        assert_bounded(np.zeros(3), np.zeros(4))
    with pytest.raises(AssertionError) as e:
        assert_bounded(np.array([1.0, np.nan, np.inf]), np.array([1.5, 1.0, 1.0]), atol=0.1,
                       rtol=0.2)
    msg = str(e.value)
    assert "NaN mismatches: 1" in msg and "inf mismatches: 1" in msg
    assert "atol 0.1 + rtol 0.2" in msg and "Margin: inf" in msg
    with pytest.raises(AssertionError, match="equal required"):
        assert_bounded(np.array([1.0]), np.array([2.0]))
    assert e.traceback[-1].frame.code.name != "assert_bounded" or \
        e.traceback[-1].frame.f_locals.get("__tracebackhide__")
    text = repr(divergence(np.zeros((3, 2)), np.ones((3, 2)), atol=0.5))
    assert text.startswith("Divergence(max_abs=1 at (0, 0)") and "margin=2" in text
    assert "series" not in text and len(text) < 200
