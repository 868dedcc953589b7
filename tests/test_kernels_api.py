"""The public kernel API: argument errors, Accumulator rules and serialization,
assert_bounded messages, to_dict, kernel selection."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tolerance import Accumulator, Divergence, assert_bounded, divergence
from tolerance import _native


# ---- argument errors --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.complex128, np.complex64, object, "U3", "S3", "V8",
                                 "M8[s]", "m8[s]", np.longdouble])
def test_unsupported_dtype_names_dtype_and_set(bad):
    x = np.zeros(3, dtype=bad)
    with pytest.raises(TypeError) as e:
        divergence(x, x)
    msg = str(e.value)
    assert str(np.dtype(bad)) in msg
    assert "float32" in msg and "uint64" in msg and "bool" in msg


def test_float_against_int_is_a_type_error():
    with pytest.raises(TypeError, match="float64 with int64"):
        divergence(np.zeros(2), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="supported dtypes"):
        divergence(np.zeros(2, np.bool_), np.zeros(2, np.float16))


def test_ulp_needs_the_same_float_type():
    with pytest.raises(ValueError, match="float32 and float64"):
        divergence(np.zeros(2, np.float32), np.zeros(2), ulp=1)
    with pytest.raises(ValueError, match="int32 and int32"):
        divergence(np.zeros(2, np.int32), np.zeros(2, np.int32), ulp=1)
    # no ulp bound: mixed widths compare in float64 and report no ULP figure
    d = divergence(np.ones(2, np.float32), np.ones(2, np.float16))
    assert d.max_ulp is None and d.within
    assert divergence(np.ones(2, ">f4"), np.ones(2, "<f4"), ulp=0).max_ulp == 0


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"\(2, 3\) vs \(3, 2\)"):
        divergence(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("kw", [dict(atol=-1.0), dict(rtol=float("nan")), dict(ulp=-1),
                                dict(ulp=1.5), dict(threads=0), dict(steps_axis=2),
                                dict(steps_axis=-3)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        divergence(np.zeros((2, 2)), np.zeros((2, 2)), **kw)


def test_steps_axis_variants():
    a = np.zeros((2, 3, 4))
    b = a.copy()
    b[1, 2, 3] = 1.0
    for axis, step, n in [(0, 1, 2), (1, 2, 3), (2, 3, 4), (-1, 3, 4), (-3, 1, 2)]:
        d = divergence(a, b, steps_axis=axis)
        assert d.argmax == (1, 2, 3) and d.step == step and d.onset == step
        assert d.series.shape == (n,) and d.series[step] == 1.0
    d = divergence(a, b, steps_axis=None)
    assert d.argmax == (1, 2, 3) and d.step == 0 and d.series.tolist() == [1.0]


def test_array_likes():
    d = divergence([[1, 2], [3, 4]], [[1, 2], [3, 5]])
    assert d.argmax == (1, 1) and d.max_abs == 1.0 and d.max_ulp is None


# ---- Accumulator ------------------------------------------------------------------------
def test_accumulator_fixes_dtypes_and_step_shape():
    acc = Accumulator()
    acc.update(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dtypes changed"):
        acc.update(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="per-step shape"):
        acc.update(np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shapes differ"):
        acc.update(np.zeros((1, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="0-d"):
        acc.update(np.float64(1), np.float64(1))
    assert acc.steps == 2


def test_update_x_x_folds_an_equal_block():
    a = np.arange(12.0).reshape(4, 3)
    b = a.copy()
    b[3, 1] += 1
    acc = Accumulator(atol=0.1)
    acc.update(a[:2], a[:2])  # a block equal on both sides
    acc.update(a[2:], b[2:])
    d = acc.result()
    assert d.argmax == (3, 1) and d.onset == 3 and acc.steps == 4
    assert d.series.tolist() == [0.0, 0.0, 0.0, 1.0] and d.size == 12


def test_accumulator_steps_axis_none_pieces_and_result_shape():
    a = np.arange(24.0).reshape(2, 3, 4)
    b = a.copy()
    b[1, 0, 2] = -1.0
    acc = Accumulator(steps_axis=None)
    flat_a, flat_b = a.ravel(), b.ravel()
    for i in range(0, 24, 5):
        acc.update(flat_a[i:i + 5], flat_b[i:i + 5])
    assert acc.steps == 1
    assert acc.result(a.shape).argmax == (1, 0, 2)
    assert acc.result().argmax == (14,)
    with pytest.raises(ValueError, match="holds 25 elements"):
        acc.result((5, 5))


def test_accumulator_result_shape_check_with_axis():
    acc = Accumulator(steps_axis=1).update(np.zeros((3, 2)), np.zeros((3, 2)))
    assert acc.result((3, 2)).size == 6
    with pytest.raises(ValueError, match="does not match"):
        acc.result((2, 3))


def test_merge_needs_same_settings():
    with pytest.raises(ValueError, match="different settings"):
        Accumulator(atol=1.0).merge(Accumulator(atol=2.0))
    with pytest.raises(TypeError):
        Accumulator().merge(b"x")


def test_empty_accumulator():
    d = Accumulator().result()
    assert d.size == 0 and d.argmax is None and d.series.size == 0 and d.within
    assert d.max_ulp is None
    again = Accumulator.from_bytes(Accumulator(ulp=3, steps_axis=None).to_bytes())
    assert again.ulp == 3 and again.steps_axis is None and again.steps == 0


def test_bytes_round_trip_and_merge():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 7)).astype(np.float32)
    b = a + np.float32(1e-4) * rng.standard_normal((50, 7)).astype(np.float32)
    one = divergence(a, b, atol=1e-4, ulp=100)
    p1 = Accumulator(atol=1e-4, ulp=100).update(a[:20], b[:20])
    p2 = Accumulator(atol=1e-4, ulp=100).update(a[20:], b[20:])
    data = p2.to_bytes()
    assert isinstance(data, bytes) and data[:6] == b"TOLACC"
    merged = Accumulator.from_bytes(p1.to_bytes()).merge(Accumulator.from_bytes(data))
    got = merged.result()
    assert got.to_dict() == one.to_dict()
    assert got.series.tobytes() == one.series.tobytes()


def test_from_bytes_rejects_malformed_input():
    a = np.arange(6.0).reshape(3, 2)
    data = Accumulator(atol=0.5).update(a, a + 1).to_bytes()
    for n in range(len(data)):  # every truncation
        with pytest.raises(ValueError):
            Accumulator.from_bytes(data[:n])
    with pytest.raises(ValueError):
        Accumulator.from_bytes(data + b"\0")
    with pytest.raises(ValueError, match="magic"):
        Accumulator.from_bytes(b"XOLACC" + data[6:])
    with pytest.raises(ValueError, match="version"):
        Accumulator.from_bytes(data[:6] + b"\x09\x00" + data[8:])
    bad_name = bytearray(data)
    i = bytes(bad_name).index(b"float64")
    bad_name[i:i + 7] = b"float99"
    with pytest.raises(ValueError, match="unsupported"):
        Accumulator.from_bytes(bytes(bad_name))


# ---- Divergence -------------------------------------------------------------------------
def test_divergence_is_frozen_and_json_safe():
    d = divergence(np.array([[1.0, np.inf], [np.nan, 2.0]]), np.array([[1.0, 3.0], [1.0, 2.0]]))
    with pytest.raises(Exception):
        d.max_abs = 0.0  # type: ignore[misc]
    doc = d.to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["max_abs"] == "inf" and doc["argmax"] == [0, 1]
    assert doc["series"] == ["inf", 0.0] and doc["series_over"] == [1, 1]
    assert doc["step"] == 0 and doc["onset"] == 0 and doc["max_rel"] == "inf"
    assert isinstance(d, Divergence)


# ---- assert_bounded ---------------------------------------------------------------------
def test_assert_bounded_passes_inside():
    a = np.linspace(0, 1, 100)
    assert_bounded(a, a + 1e-9, atol=1e-8)


def test_assert_bounded_message():
    a = np.zeros((10, 4))
    b = a.copy()
    b[6, 2] = 0.5
    b[8, 1] = 0.25
    b[9, 3] = np.nan
    with pytest.raises(AssertionError) as e:
        assert_bounded(a, b, atol=0.3, rtol=1e-6)
    msg = str(e.value)
    assert "atol=0.3, rtol=1e-06" in msg
    assert "Mismatched elements: 2 / 40 (5%)" in msg
    assert "NaN mismatches: 1" in msg
    assert "Greatest absolute difference: 0.5 at index (6, 2)" in msg
    assert "Greatest relative difference: 1.0 at index (6, 2)" in msg
    assert "Onset step: 6" in msg
    with pytest.raises(AssertionError, match="ULP distance: 1 \\(up to 0 allowed\\)"):
        assert_bounded(np.float32([1.0]), np.nextafter(np.float32([1.0]), np.float32(2)), ulp=0,
                       atol=1.0)


# ---- kernel selection -------------------------------------------------------------------
def test_kernel_paths_and_setter():
    avail = _native._available_kernels()
    assert "scalar" in avail and "baseline" in avail
    before = _native.kernel_isa()
    assert before == avail[-1]  # the best one by default
    try:
        assert _native._set_kernel("scalar") == "scalar"
        assert _native.kernel_isa() == "scalar"
        if "avx512" not in avail:  # never a path the CPU lacks
            assert _native._set_kernel("avx512") == avail[-1]
    finally:
        _native._set_kernel(before)
    assert _native.kernel_isa() == before


def _isa_in_child(value):
    env = dict(os.environ, TOLERANCE_KERNEL=value)
    out = subprocess.run([sys.executable, "-W", "always", "-c",
                          "import tolerance, tolerance._native as n; print(n.kernel_isa())"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), out.stderr


def test_environment_variable_forces_a_path():
    assert _isa_in_child("scalar")[0] == "scalar"
    if "avx512" not in _native._available_kernels():
        isa, err = _isa_in_child("avx512")
        assert isa == _native._available_kernels()[-1]
        assert "TOLERANCE_KERNEL" in err and "not available" in err


def test_read_bandwidth_pass():
    a = np.arange(1000, dtype=np.uint8)
    assert isinstance(_native._read_bandwidth(a, a), int)
    assert _native._read_bandwidth(a, a, 2) >= 0
    with pytest.raises(ValueError):
        _native._read_bandwidth(np.zeros((4, 4))[:, ::2], a)


def test_every_built_table_holds_the_fast_entries():
    """float32/float64 run the quick blocks, the float32 pre-filter and the vector loop on
    every path but scalar (baseline, AVX2, AVX-512 here; NEON on aarch64: the cross test)."""
    for isa in _native._available_kernels():
        entries = dict(_native._kernel_entries(isa))
        assert set(entries) >= {"float16", "float32", "float64", "int64", "uint64"}
        if isa == "scalar":
            assert set(entries.values()) == {"scalar"}
            continue
        assert entries["float32"] == entries["float64"] == "vector+blocks", (isa, entries)
    assert _native._kernel_entries("no-such-path") == []


def test_kernel_bench_runs_and_has_a_row_per_path():
    """bench/kernels.py (tiny sizes: a smoke test, no timing asserted) prints every figure
    the speed targets are read from: a row per kernel path, NumPy and the read-only pass."""
    import json
    import pathlib
    script = pathlib.Path(__file__).resolve().parent.parent / "bench" / "kernels.py"
    out = subprocess.run([sys.executable, str(script), "--mib", "1", "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc["paths"]) == {"default", *_native._available_kernels()}
    for dtype in ("float32", "float64"):
        rows = doc["dtypes"][dtype]["gbs"]
        assert {"full stats, 1 thread", "numpy max(abs(a-b))", "read-only pass, 1 thread"} <= set(rows)
        assert all(v > 0 for v in rows.values())
    assert len(doc["load_average"]["before"]) == 3
