"""Benchmark of the divergence kernels: GB/s of input (both arrays) on 2 x 256 MiB.

    python bench/kernels.py [--mib 256] [--repeat 5] [--json] [--dtypes-only]

Rows per dtype (float32, float64): the full-stats kernel (bounds atol, rtol and ulp) on one
thread and on all threads, and on identical arrays (one thread: every block's largest
|a-b| then ties the running maximum, 0); the kernel without bounds (max_abs is still computed with every
other figure: there is no separate max_abs-only mode); NumPy `np.max(np.abs(a - b))`; and a
native read-only pass over the same bytes (the memory ceiling), one thread and all threads.
Then: full stats on every kernel path this CPU has (forced, one thread, the paths taking
turns run by run; the default path must be at least as fast as every forced one), float16 and int64 against NumPy on
the same data, and a 1-D array with the default steps axis (every element a step).
Last (bench_dtypes_shapes; alone with --dtypes-only): float16 against NumPy on float16 and
on float64 casts, int64 and uint64 against NumPy, and one element a step for float64,
float32, float16 and int64, each beside the floor its result sets: writing its 24 bytes a
step (series, series_over, series_margin) to fresh pages alone, measured in the same run.
Each figure is the best of --repeat runs (the machine may be shared: the load average before
and after is printed with the table). Fixed seed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from tolerance import divergence
from tolerance import _native


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def threads_available():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bench_dtype(dtype, mib, repeat, nthreads):
    rng = np.random.default_rng(20261124)
    n = mib * 2**20 // np.dtype(dtype).itemsize
    a = rng.standard_normal(n, dtype=np.float32).astype(dtype, copy=False)
    b = a + (rng.standard_normal(n, dtype=np.float32) * np.float32(1e-6)).astype(dtype, copy=False)
    a = a.reshape(-1, 4096)  # 4096 elements a step
    b = b.reshape(-1, 4096)
    nbytes = a.nbytes + b.nbytes
    rows = {}

    def gbs(t):
        return nbytes / t / 1e9

    divergence(a[:16], b[:16])  # warm up (first touch of the code and the pages)
    rows["full stats, 1 thread"] = gbs(best_time(
        lambda: divergence(a, b, atol=1e-6, rtol=1e-6, ulp=4, threads=1), repeat))
    rows[f"full stats, {nthreads} threads"] = gbs(best_time(
        lambda: divergence(a, b, atol=1e-6, rtol=1e-6, ulp=4, threads=nthreads), repeat))
    same = a.copy()  # identical boxes: every block's largest |a-b| ties the running one (0)
    rows["full stats, identical arrays, 1 thread"] = gbs(best_time(
        lambda: divergence(a, same, atol=1e-6, rtol=1e-6, ulp=4, threads=1), repeat))
    del same
    rows["no bounds (max_abs only*), 1 thread"] = gbs(best_time(
        lambda: divergence(a, b, threads=1), repeat))
    rows["numpy max(abs(a-b))"] = gbs(best_time(lambda: np.max(np.abs(a - b)), repeat))
    rows["read-only pass, 1 thread"] = gbs(best_time(lambda: _native._read_bandwidth(a, b, 1), repeat))
    rows[f"read-only pass, {nthreads} threads"] = gbs(best_time(
        lambda: _native._read_bandwidth(a, b, nthreads), repeat))
    full1 = rows["full stats, 1 thread"]
    ratios = {
        "full 1 thread / numpy": full1 / rows["numpy max(abs(a-b))"],
        "full 1 thread / read-only 1 thread": full1 / rows["read-only pass, 1 thread"],
        "identical arrays / different, full 1 thread":
            rows["full stats, identical arrays, 1 thread"] / full1,
        f"full {nthreads} threads / full 1 thread": rows[f"full stats, {nthreads} threads"] / full1,
        f"full {nthreads} threads / read-only {nthreads} threads":
            rows[f"full stats, {nthreads} threads"] / rows[f"read-only pass, {nthreads} threads"],
    }
    return {"gbs": rows, "ratios": ratios}


def bench_paths(mib, repeat):
    """Full stats, 1 thread, on every kernel path (forced), float32 and float64."""
    rng = np.random.default_rng(20261124)
    out = {}
    before = _native.kernel_isa()
    for dtype in ("float32", "float64"):
        n = mib * 2**20 // np.dtype(dtype).itemsize
        a = rng.standard_normal(n, dtype=np.float32).astype(dtype).reshape(-1, 4096)
        b = a + (rng.standard_normal(a.shape, dtype=np.float32) * np.float32(1e-6)).astype(dtype)
        nbytes = a.nbytes + b.nbytes
        # the paths take turns, one run each a round (best of `repeat` rounds): a change in
        # the machine's load during the bench falls on every path alike
        paths = ["default"] + _native._available_kernels()
        best = dict.fromkeys(paths, float("inf"))
        try:
            for _ in range(repeat):
                for isa in paths:
                    _native._set_kernel("auto" if isa == "default" else isa)
                    best[isa] = min(best[isa], best_time(
                        lambda: divergence(a, b, atol=1e-6, rtol=1e-6, ulp=4, threads=1), 1))
        finally:
            _native._set_kernel(before)
        for isa in paths:
            out.setdefault(isa, {})[dtype] = nbytes / best[isa] / 1e9
    return out


def bench_dtypes_shapes(mib, repeat):
    """Issue 12 item 5 (float16 / int64 / uint64 vector paths, one element a step), each
    against NumPy's np.max(np.abs(a - b)) on the same data in the same run: float16 both as
    NumPy computes it on float16 arrays and on float64 casts (the kernel's |a-b| is in
    float64); 1-D arrays with the default steps axis (every element a step), 1 thread."""
    rng = np.random.default_rng(20261126)
    rows, ratios = {}, {}

    def gbs(nb, fn):
        return nb / best_time(fn, repeat) / 1e9

    n = mib * 2**20 // 2
    a = rng.standard_normal(n, dtype=np.float32).astype(np.float16).reshape(-1, 4096)
    b = (a.astype(np.float32) * np.float32(1.001)).astype(np.float16)
    nb = a.nbytes + b.nbytes
    k = rows["float16 full stats"] = gbs(nb, lambda: divergence(a, b, atol=1e-3, rtol=1e-3, ulp=4, threads=1))
    f16 = rows["float16 numpy (float16 arithmetic)"] = gbs(nb, lambda: np.max(np.abs(a - b)))
    f64 = rows["float16 numpy (float64 casts)"] = gbs(
        nb, lambda: np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    ratios["float16 / numpy float16"] = k / f16
    ratios["float16 / numpy float64 casts"] = k / f64
    del a, b
    for dt in ("int64", "uint64"):
        n = mib * 2**20 // 8
        a = rng.integers(0 if dt == "uint64" else -2**40, 2**40, n, dtype=dt).reshape(-1, 4096)
        b = (a + rng.integers(0, 4, a.shape).astype(dt)).astype(dt)
        nb = a.nbytes + b.nbytes
        k = rows[f"{dt} full stats"] = gbs(nb, lambda: divergence(a, b, atol=1, rtol=1e-9, threads=1))
        npy = rows[f"{dt} numpy"] = gbs(
            nb, lambda: np.max(np.abs(a - b)) if dt == "int64" else np.max(np.maximum(a, b) - np.minimum(a, b)))
        ratios[f"{dt} / numpy"] = k / npy
        del a, b
    for dt in ("float64", "float32", "float16", "int64"):
        n = mib * 2**20 // 8
        x = rng.standard_normal(n).astype(dt) if dt != "int64" else rng.integers(-2**40, 2**40, n)
        y = (x + (1e-3 if dt == "float16" else 1e-6)).astype(dt) if dt != "int64" else x + 1
        nb = x.nbytes + y.nbytes
        k = rows[f"1-D {dt}, default steps axis"] = gbs(nb, lambda: divergence(x, y, atol=1e-8, threads=1))
        # the floor of any one-element-a-step run: its result holds 24 bytes a step (series
        # f64, series_over i64, series_margin f64) in memory that is new to the process, so
        # writing those bytes once, on fresh pages, alone (NumPy, in the same run) bounds it
        w = rows[f"1-D {dt}: its 24 B/step output written to fresh pages alone"] = gbs(
            nb, lambda: np.empty(3 * n).fill(1.0))
        ratios[f"1-D {dt} / writing its output alone"] = k / w
        del x, y
    return {"gbs": rows, "ratios": ratios}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB per array (default 256)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions; the best is kept")
    ap.add_argument("--threads", type=int, default=None, help="'all threads' count")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--dtypes-only", action="store_true",
                    help="only the float16 / int64 / uint64 / one-element-a-step rows")
    args = ap.parse_args(argv)
    nthreads = args.threads or threads_available()
    load_before = os.getloadavg()
    if args.dtypes_only:
        return print_dtypes_shapes(bench_dtypes_shapes(args.mib, args.repeat), args)
    out = {
        "kernel": _native.kernel_isa(),
        "machine": platform.machine(),
        "cpu_threads": nthreads,
        "mib_per_array": args.mib,
        "repeat": args.repeat,
        "note": "best of --repeat runs; GB/s counts the bytes of both inputs",
        "dtypes": {},
    }
    for dtype in ("float32", "float64"):
        out["dtypes"][dtype] = bench_dtype(dtype, args.mib, args.repeat, nthreads)
    out["paths"] = bench_paths(args.mib, args.repeat)
    out["dtypes_shapes"] = bench_dtypes_shapes(args.mib, args.repeat)
    out["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"kernel path: {out['kernel']} ({out['machine']}), {nthreads} threads, "
          f"2 x {args.mib} MiB, best of {args.repeat}")
    la = out["load_average"]
    print("load average (1, 5, 15 min) before: " + " ".join(f"{x:.2f}" for x in la["before"])
          + ", after: " + " ".join(f"{x:.2f}" for x in la["after"]) + f" ({os.cpu_count()} CPUs)")
    names = list(out["dtypes"]["float32"]["gbs"])
    w = max(len(n) for n in names) + 2
    print(f"{'GB/s of input':<{w}}{'float32':>10}{'float64':>10}")
    for name in names:
        print(f"{name:<{w}}" + "".join(f"{out['dtypes'][d]['gbs'][name]:>10.2f}" for d in out["dtypes"]))
    print("* the full kernel without bounds: there is no separate max_abs-only mode")
    print()
    for name in out["dtypes"]["float32"]["ratios"]:
        print(f"{name:<{w + 16}}" + "".join(f"{out['dtypes'][d]['ratios'][name]:>10.2f}"
                                          for d in out["dtypes"]))
    print()
    print(f"{'full stats, 1 thread, by path':<{w}}{'float32':>10}{'float64':>10}"
          f"{'/default':>10}{'/default':>10}")
    dflt = out["paths"]["default"]
    for isa, v in out["paths"].items():
        print(f"{isa:<{w}}{v['float32']:>10.2f}{v['float64']:>10.2f}"
              f"{v['float32'] / dflt['float32']:>10.2f}{v['float64'] / dflt['float64']:>10.2f}")
    print()
    print_dtypes_shapes(out["dtypes_shapes"], args)
    return 0


def print_dtypes_shapes(out, args):
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"float16 / int64 / uint64 / one element a step: 1 thread, {args.mib} MiB per array, "
          f"best of {args.repeat}")
    for name, v in out["gbs"].items():
        print(f"{name + ' (GB/s)':<68}{v:>10.2f}")
    for name, v in out["ratios"].items():
        print(f"{name:<68}{v:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
