"""An independent NumPy oracle of the divergence figures (docs/numbers.md).

Computed differently from the native kernels: whole-array NumPy expressions for floats,
ordered-integer ULP images from integer views with Python-int distances, Python ints
(object arrays) for every integer dtype, and the argmax mapped back through an index array.
"""
from __future__ import annotations

import contextlib
import math
from fractions import Fraction

import numpy as np

FLOATS = ("float16", "float32", "float64")


def _ordered(x: np.ndarray) -> np.ndarray:
    """Ordered-integer images (Python ints): monotone in the value, +0 and -0 both 0."""
    n = x.dtype.itemsize
    ints = x.astype(x.dtype.newbyteorder("=")).view(f"<i{n}" if np.little_endian else f">i{n}")
    sign = 1 << (8 * n - 1)
    out = []
    for v in ints.ravel().tolist():
        u = v & ((1 << (8 * n)) - 1)
        out.append(-(u & (sign - 1)) if u & sign else u)
    return np.array(out, dtype=object).reshape(x.shape)


def oracle(a, b, *, atol=None, rtol=None, ulp=None, steps_axis=0):
    """Bounds as docs/numbers.md words them: each optional; an element is inside when it meets
    every bound that is set; none set: inside means equal. `atol` may be per step."""
    a, b = np.asarray(a), np.asarray(b)
    tol_set = atol is not None or rtol is not None
    bounded = tol_set or ulp is not None
    assert a.shape == b.shape
    shape = a.shape
    index = np.arange(a.size).reshape(shape)
    if a.ndim == 0 or steps_axis is None:
        A, B, I = a.reshape(1, a.size), b.reshape(1, b.size), index.reshape(1, a.size)
        nsteps = 1
    else:
        ax = steps_axis % a.ndim
        inner = math.prod(shape) // shape[ax] if shape[ax] else math.prod(shape[:ax] + shape[ax + 1:])
        A = np.moveaxis(a, ax, 0).reshape(shape[ax], inner)
        B = np.moveaxis(b, ax, 0).reshape(shape[ax], inner)
        I = np.moveaxis(index, ax, 0).reshape(shape[ax], inner)
        nsteps = shape[ax]
    at = np.zeros((A.shape[0], 1)) if atol is None else \
        np.asarray(atol, dtype=np.float64).reshape(-1, 1) * np.ones((A.shape[0], 1))
    rt = 0.0 if rtol is None else float(rtol)
    na, nb = a.dtype.newbyteorder("=").name, b.dtype.newbyteorder("=").name
    same_float = na == nb and na in FLOATS
    if na in FLOATS:
        x, y = A.astype(np.float64), B.astype(np.float64)
        with np.errstate(all="ignore"):
            nx, ny = np.isnan(x), np.isnan(y)
            both, anyn = nx & ny, nx | ny
            eq = x == y
            d = np.where(eq, 0.0, np.abs(x - y))
            mx = np.maximum(np.abs(x), np.abs(y))
            infm = ~anyn & ~eq & (np.isinf(x) | np.isinf(y))
            rel = np.where(infm, np.inf, np.where(mx > 0, d / mx, 0.0))
            allowed = at + rt * mx
            inside_num = d <= allowed if tol_set else np.ones(A.shape, bool)
            q = d / allowed
            q = np.where(np.isnan(q) | anyn | infm, 0.0, q)
        if same_float:
            oa, ob = _ordered(A), _ordered(B)
            ulpd = np.abs(oa - ob) if A.size else np.zeros(A.shape, dtype=object)
            ulp_ok = np.ones(A.shape, bool) if ulp is None else \
                np.array([u <= ulp for u in ulpd.ravel()], dtype=bool).reshape(A.shape)
        else:
            ulpd, ulp_ok = None, np.ones(A.shape, bool)
        if not bounded:
            inside = eq | both
        else:
            inside = eq | both | (~anyn & ~infm & inside_num & ulp_ok)
        compared = ~anyn
        nan_mismatch = int((anyn & ~both).sum())
        nan_both = int(both.sum())
        inf_mismatch = int(infm.sum())
    else:
        x = A.astype(np.int64 if na == "bool" else A.dtype).astype(object)
        y = B.astype(np.int64 if nb == "bool" else B.dtype).astype(object)
        dd = np.abs(x - y)
        mm = np.maximum(np.abs(x), np.abs(y))
        d = np.array([float(v) for v in dd.ravel()], dtype=np.float64).reshape(A.shape)
        mx = np.array([float(v) for v in mm.ravel()], dtype=np.float64).reshape(A.shape)
        rel = np.array([dv / mv if mv > 0 else 0.0 for dv, mv in zip(d.ravel(), mx.ravel())],
                       dtype=np.float64).reshape(A.shape)
        # exact: Fractions of the float64 bounds against the exact integers
        def exact_le(e, at_r, m):  # e <= at_r + rt*m in exact arithmetic (inf bounds pass)
            if math.isinf(at_r) or (math.isinf(rt) and m > 0):
                return True
            return e <= Fraction(at_r) + Fraction(rt) * m
        atv = at.ravel().tolist()
        rows = np.repeat(np.arange(A.shape[0]), A.shape[1]) if A.size else np.zeros(0, int)
        inside = np.array([e == 0 or (bounded and exact_le(e, atv[r], m))
                           for e, m, r in zip(dd.ravel(), mm.ravel(), rows)],
                          dtype=bool).reshape(A.shape)
        with np.errstate(all="ignore"):
            q = d / (at + rt * mx)
        q = np.where(np.isnan(q), 0.0, q)
        anyn = infm = both = np.zeros(A.shape, bool)
        compared = np.ones(A.shape, bool)
        nan_mismatch = nan_both = inf_mismatch = 0
        ulpd = None
    over = ~inside
    out = {
        "size": int(A.size),
        "count_over": int(over.sum()),
        "nan_mismatch": nan_mismatch,
        "nan_both": nan_both,
        "inf_mismatch": inf_mismatch,
        "series_over": over.sum(axis=1).astype(np.int64) if A.size else np.zeros(nsteps, np.int64),
    }
    dm = np.where(compared, d, -1.0)
    out["series"] = np.maximum(dm.max(axis=1), 0.0) if A.size else np.zeros(nsteps)
    if compared.any():
        m = dm.max()
        flat = int(np.flatnonzero(dm.ravel() == m)[0])
        if na not in FLOATS:  # the exact integer magnitude breaks a tie of the float64 ones
            exact = dd.ravel().tolist()
            flat = max(range(len(exact)), key=lambda k: (exact[k], -k))
        out["max_abs"] = float(m)
        out["argmax"] = tuple(int(i) for i in np.unravel_index(int(I.ravel()[flat]), shape))
        out["step"] = 0 if (a.ndim == 0 or steps_axis is None) else flat // A.shape[1]
        rm = np.where(compared, rel, -1.0)
        out["max_rel"] = float(rm.max())
        rflat = int(np.flatnonzero(rm.ravel() == rm.max())[0])
        out["argmax_rel"] = tuple(int(i) for i in np.unravel_index(int(I.ravel()[rflat]), shape))
    else:
        out.update(max_abs=0.0, argmax=None, step=None, max_rel=0.0, argmax_rel=None)
    if same_float:
        vals = [u for u, c in zip(ulpd.ravel(), compared.ravel()) if c]
        out["max_ulp"] = int(max(vals)) if vals else 0
    else:
        out["max_ulp"] = None
    # margin: per element |a-b| / allowed (0/0 and inf/inf count 0) and ULP / ulp; a NaN or
    # inf mismatch is infinitely far; None with no bound set
    if bounded:
        terms = np.where(tol_set, q, 0.0) if A.size else np.zeros(A.shape)
        if same_float and ulp is not None and A.size:
            def ut(u, c):
                if not c or u == 0:
                    return 0.0
                return float(u) / float(ulp) if ulp else math.inf
            uterm = np.array([ut(u, c) for u, c in zip(ulpd.ravel(), compared.ravel())],
                             dtype=np.float64).reshape(A.shape)
            terms = np.maximum(terms, uterm)
        terms = np.where((anyn & ~both) | infm, math.inf, terms)
        out["series_margin"] = terms.max(axis=1) if A.size else np.zeros(nsteps)
        out["margin"] = float(out["series_margin"].max()) if nsteps else 0.0
    else:
        out["series_margin"] = out["margin"] = None
    nz = np.flatnonzero(out["series_over"])
    out["onset"] = int(nz[0]) if nz.size else None
    out["within"] = out["count_over"] == 0
    return out


def check_against_oracle(d, o) -> None:
    """Every figure of the Divergence `d` equals the oracle's, bit for bit."""
    for k in ("size", "count_over", "nan_mismatch", "nan_both", "inf_mismatch", "argmax", "step",
              "max_ulp", "onset", "within", "argmax_rel"):
        assert getattr(d, k) == o[k], (k, getattr(d, k), o[k])
    for k in ("max_abs", "max_rel"):
        got, want = getattr(d, k), o[k]
        assert got == want or (math.isnan(got) and math.isnan(want)), (k, got, want)
    assert d.margin == o["margin"], ("margin", d.margin, o["margin"])
    if o["series_margin"] is None:
        assert d.series_margin is None
    else:
        np.testing.assert_array_equal(d.series_margin, o["series_margin"])
    assert d.series.dtype == np.float64 and d.series_over.dtype == np.int64
    np.testing.assert_array_equal(d.series, o["series"])
    np.testing.assert_array_equal(d.series_over, o["series_over"])


def same_divergence(d1, d2) -> None:
    """Two Divergence results are identical, bit for bit."""
    for k in ("max_abs", "max_rel"):
        assert np.float64(getattr(d1, k)).tobytes() == np.float64(getattr(d2, k)).tobytes(), k
    for k in ("argmax", "step", "max_ulp", "count_over", "nan_mismatch", "nan_both",
              "inf_mismatch", "size", "onset", "within", "argmax_rel"):
        assert getattr(d1, k) == getattr(d2, k), (k, getattr(d1, k), getattr(d2, k))
    assert d1.series.tobytes() == d2.series.tobytes()
    assert d1.series_over.tobytes() == d2.series_over.tobytes()
    assert np.float64(d1.margin if d1.margin is not None else -1).tobytes() == \
        np.float64(d2.margin if d2.margin is not None else -1).tobytes()
    assert (d1.series_margin is None) == (d2.series_margin is None)
    if d1.series_margin is not None:
        assert d1.series_margin.tobytes() == d2.series_margin.tobytes()


@contextlib.contextmanager
def kernel(name):
    """Run the block with the native kernel path `name` forced (restored afterwards)."""
    from tolerance import _native

    before = _native.kernel_isa()
    assert _native._set_kernel(name) == name
    try:
        yield
    finally:
        _native._set_kernel(before)


def check_every_path(a, b, **kw):
    """The oracle == every kernel path this CPU has, one and two threads, bit for bit."""
    from tolerance import _native, divergence

    o = oracle(a, b, **kw)
    ref = None
    for name in _native._available_kernels():
        with kernel(name):
            for threads in (1, 2):
                d = divergence(a, b, threads=threads, **kw)
                check_against_oracle(d, o)
                if ref is None:
                    ref = d
                same_divergence(d, ref)
