"""Benchmark of the divergence kernels: GB/s of input (both arrays) on 2 x 256 MiB.

    python bench/kernels.py [--mib 256] [--repeat 5] [--json]

Rows per dtype (float32, float64): the full-stats kernel (bounds atol, rtol and ulp) on one
thread and on all threads; the kernel without bounds (max_abs is still computed with every
other figure: there is no separate max_abs-only mode); NumPy `np.max(np.abs(a - b))`; and a
native read-only pass over the same bytes (the memory ceiling), one thread and all threads.
Each figure is the best of --repeat runs (the machine may be shared). Fixed seed.
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
        f"full {nthreads} threads / full 1 thread": rows[f"full stats, {nthreads} threads"] / full1,
        f"full {nthreads} threads / read-only {nthreads} threads":
            rows[f"full stats, {nthreads} threads"] / rows[f"read-only pass, {nthreads} threads"],
    }
    return {"gbs": rows, "ratios": ratios}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB per array (default 256)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions; the best is kept")
    ap.add_argument("--threads", type=int, default=None, help="'all threads' count")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    nthreads = args.threads or threads_available()
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
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"kernel path: {out['kernel']} ({out['machine']}), {nthreads} threads, "
          f"2 x {args.mib} MiB, best of {args.repeat}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
