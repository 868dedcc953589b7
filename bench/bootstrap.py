"""Benchmark of the chip bootstrap (issue 4).

  python bench/bootstrap.py            # a table
  python bench/bootstrap.py --json     # one JSON document

1. Bring-up: time from ChipGroup.start() to wait() returning with every chip SUCCESS, for
   1, 4 and 16 chips (workload `true`, chip `cpu:*`), median/min/max of several repeats.
   The baseline row is one bare `python -c "import tolerance._native"` run to its exit
   (interpreter start, import, teardown): the interpreter start dominates a chip's bring-up.
2. Wake latency: time from a release store + FUTEX_WAKE of a mailbox state word to the
   waiter's return, for the mailbox wait (futex) against a 1 ms sleep-poll loop (native
   helper, two threads of one process, 2-3 ms between waits so that the waiter sleeps).

The machine may be shared with other jobs: every figure is a median over repeats, and
min/max show the spread.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from tolerance import _native
from tolerance.bootstrap import ChipConfig, ChipGroup


def _bringup(n: int) -> float:
    with ChipGroup() as g:
        t = time.perf_counter()
        g.start([ChipConfig("cpu:*", ["true"]) for _ in range(n)])
        g.wait(120)
        dt = time.perf_counter() - t
    return dt


def _baseline() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tolerance._native"], check=True)
    return time.perf_counter() - t


def _summary(xs: list[float], scale: float) -> dict:
    return {"median": statistics.median(xs) * scale, "min": min(xs) * scale,
            "max": max(xs) * scale, "n": len(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--repeats", type=int, default=7, help="bring-up repeats per chip count")
    ap.add_argument("--wakes", type=int, default=200, help="wake-latency samples per mode")
    args = ap.parse_args()

    _bringup(1)  # warm the page cache
    rows = {"baseline": _summary([_baseline() for _ in range(args.repeats)], 1e3)}
    for n in (1, 4, 16):
        reps = args.repeats if n < 16 else max(3, args.repeats // 2)
        rows[f"{n} chips"] = _summary([_bringup(n) for _ in range(reps)], 1e3)
    wake = {m: _summary([x / 1e9 for x in _native._bench_bootstrap.wake_latency(m, args.wakes)], 1e6)
            for m in ("futex", "sleep1ms")}
    doc = {
        "machine": {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "wait": _native.wait_mechanism(),
                    "note": "shared machine: medians over repeats"},
        "bringup_ms": rows,
        "wake_latency_us": wake,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    m = doc["machine"]
    print(f"# bootstrap benchmark  ({m['cpus']} CPUs, {m['platform']}, Python {m['python']}, "
          f"wait: {m['wait']}; {m['note']})")
    print()
    print("| start -> all SUCCESS             | median ms |  min ms |  max ms | runs |")
    print("|----------------------------------|----------:|--------:|--------:|-----:|")
    for k, r in rows.items():
        label = "baseline: python -c import+exit" if k == "baseline" else k
        print(f"| {label:<32} | {r['median']:9.1f} | {r['min']:7.1f} | {r['max']:7.1f} | {r['n']:4d} |")
    print()
    print("| wake latency               | median us |  min us |  max us | samples |")
    print("|----------------------------|----------:|--------:|--------:|--------:|")
    for k, r in wake.items():
        label = "futex (mailbox wait)" if k == "futex" else "1 ms sleep-poll"
        print(f"| {label:<26} | {r['median']:9.1f} | {r['min']:7.1f} | {r['max']:7.1f} | {r['n']:7d} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
