#!/usr/bin/env python3
"""Benchmark `tolerance diff` on two large float32 .npz files (issue 3).

Writes two arrays of --size-gib GiB each (fixed seed: a smooth field plus small quantized
noise, so deflate is meaningful; b = a + a small perturbation, some of it over --delta)
as stored .npz, compressed .npz and HDF5, then measures, each in a fresh child process:

  cat         cat of both files to /dev/null (warm page cache)
  inflate     zlib-inflating both compressed members alone, single-threaded, 4 MiB outputs
  diff        `tolerance diff A B --atol D --json`: wall time and peak RSS (wait4)
  h5diff      `h5diff -d D` on the same arrays: its "differences found" must equal our
              count_over at --atol D

Targets: peak RSS <= 200 MiB; stored <= 1.3x cat; compressed <= 1.2x inflate alone.
Prints a table, or one JSON document with --json. Temporary files are deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

import numpy as np

STEP = 16384                 # float32 elements per step (64 KiB)
ROWS_PER_BLOCK = 256         # steps generated at a time (16 MiB)
QUANTUM = 2.0 ** -12         # values are multiples of this: realistic fixed-point noise


def _header(shape: tuple[int, ...]) -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _blocks(steps: int, seed: int):
    """(a, b) blocks of ROWS_PER_BLOCK steps; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 8.0 * np.pi, STEP, dtype=np.float64)
    for t0 in range(0, steps, ROWS_PER_BLOCK):
        n = min(ROWS_PER_BLOCK, steps - t0)
        t = np.arange(t0, t0 + n, dtype=np.float64)[:, None]
        field = np.sin(x[None, :] + 1e-3 * t) * np.cos(0.5 * x[None, :] - 2e-4 * t)
        noise = rng.standard_normal((n, STEP)) * 4 * QUANTUM
        a = (np.round((field + noise) / QUANTUM) * QUANTUM).astype(np.float32)
        pert = np.zeros((n, STEP), dtype=np.float32)
        small = rng.random((n, STEP)) < 0.01
        pert[small] = QUANTUM                  # below any delta >= 2**-11
        big = rng.random((n, STEP)) < 1e-4
        pert[big] = 16 * QUANTUM               # 3.9e-3: over a delta of 1e-3
        yield a, a + pert


def write_inputs(d: str, size_gib: float, seed: int) -> dict[str, str]:
    import h5py

    steps = max(1, int(size_gib * (1 << 30)) // (STEP * 4))
    shape = (steps, STEP)
    head = _header(shape)
    paths = {}
    zips = {}
    h5 = {}
    for side in ("a", "b"):
        for kind, method in (("stored", zipfile.ZIP_STORED), ("compressed", zipfile.ZIP_DEFLATED)):
            p = os.path.join(d, f"{side}_{kind}.npz")
            paths[f"{side}_{kind}"] = p
            zf = zipfile.ZipFile(p, "w", compression=method, compresslevel=1)
            zips[side, kind] = (zf, zf.open("x.npy", "w", force_zip64=True))
            zips[side, kind][1].write(head)
        p = os.path.join(d, f"{side}.h5")
        paths[f"{side}_h5"] = p
        f = h5py.File(p, "w")
        h5[side] = (f, f.create_dataset("x", shape=shape, dtype="<f4"))
    t = 0
    for a, b in _blocks(steps, seed):
        for side, arr in (("a", a), ("b", b)):
            for kind in ("stored", "compressed"):
                zips[side, kind][1].write(arr.tobytes())
            h5[side][1][t:t + len(arr)] = arr
        t += len(a)
    for (zf, member) in zips.values():
        member.close()
        zf.close()
    for f, _ in h5.values():
        f.close()
    return paths


def _member_span(path: str) -> tuple[int, int]:
    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        raw = f.read(30)
    nlen, xlen = struct.unpack("<HH", raw[26:30])
    return info.header_offset + 30 + nlen + xlen, info.compress_size


def inflate_only(paths: list[str]) -> int:
    """Inflate every member alone, 4 MiB of output at a time (what the reader does)."""
    total = 0
    for p in paths:
        off, size = _member_span(p)
        d = zlib.decompressobj(-15)
        with open(p, "rb", buffering=0) as f:
            f.seek(off)
            left = size
            tail = b""
            while True:
                if not tail:
                    if not left:
                        break
                    tail = f.read(min(256 << 10, left))
                    left -= len(tail)
                out = d.decompress(tail, 4 << 20)
                tail = d.unconsumed_tail
                total += len(out)
                if d.eof:
                    break
    return total


def timed_rss(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (MiB) of a fresh child, and its completed process.

    The RSS comes from /usr/bin/time -f %M (a small process that forks the command, so
    the figure is the command's own, not this big benchmark process's at fork time);
    without it, from wait4 on the direct child.
    """
    gnu_time = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
    if gnu_time:
        with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
            t0 = time.perf_counter()
            cp = subprocess.run([gnu_time, "-f", "%M", "-o", tf.name, *argv],
                                capture_output=True)
            wall = time.perf_counter() - t0
            text = open(tf.name).read().strip().splitlines()
        rss_kib = float(text[-1]) if text and text[-1].strip().isdigit() else float("nan")
        return wall, rss_kib / 1024.0, cp
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    import threading
    bufs: dict[str, bytes] = {}

    def drain(name, stream):
        bufs[name] = stream.read()

    th = [threading.Thread(target=drain, args=(n, s)) for n, s in
          (("out", p.stdout), ("err", p.stderr))]
    for x in th:
        x.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    for x in th:
        x.join()
    return wall, ru.ru_maxrss / 1024.0, subprocess.CompletedProcess(
        argv, os.waitstatus_to_exitcode(status), bufs.get("out", b""), bufs.get("err", b""))


def best(argv: list[str], repeat: int) -> tuple[float, float, subprocess.CompletedProcess]:
    runs = [timed_rss(argv) for _ in range(repeat)]
    wall = min(r[0] for r in runs)
    rss = max(r[1] for r in runs)
    return wall, rss, runs[-1][2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1.0, help="size of each array (GiB)")
    ap.add_argument("--delta", type=float, default=1e-3, help="--atol / h5diff --delta")
    ap.add_argument("--repeat", type=int, default=2, help="runs per figure (best wall)")
    ap.add_argument("--dir", default=None, help="where the temporary files go")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--inflate-only", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inflate_only:
        inflate_only(args.inflate_only)
        return 0

    d = tempfile.mkdtemp(prefix="tolerance-bench-", dir=args.dir)
    try:
        t0 = time.perf_counter()
        paths = write_inputs(d, args.size_gib, args.seed)
        gen_s = time.perf_counter() - t0
        sizes = {k: os.path.getsize(v) for k, v in paths.items()}
        py = sys.executable
        tol = [py, "-m", "tolerance", "diff"]
        res: dict[str, object] = {"size_gib": args.size_gib, "delta": args.delta,
                                  "files_mib": {k: round(v / 2**20, 1) for k, v in sizes.items()},
                                  "generate_s": round(gen_s, 1)}
        rows = []
        counts = {}
        for kind in ("stored", "compressed"):
            a, b = paths[f"a_{kind}"], paths[f"b_{kind}"]
            subprocess.run(["cat", a, b], stdout=subprocess.DEVNULL, check=True)  # warm
            cat_s, _, _ = best(["sh", "-c", f"cat '{a}' '{b}' > /dev/null"], args.repeat)
            wall, rss, cp = best(tol + [a, b, "--atol", repr(args.delta), "--json"], args.repeat)
            if cp.returncode not in (0, 1):
                raise SystemExit(f"tolerance diff failed ({cp.returncode}): "
                                 f"{cp.stderr.decode().strip()}")
            doc = json.loads(cp.stdout)
            (row,) = doc["rows"]
            counts[kind] = row["count_over"]
            entry = {"kind": kind, "diff_s": round(wall, 3), "peak_rss_mib": round(rss, 1),
                     "cat_s": round(cat_s, 3), "vs_cat": round(wall / cat_s, 2),
                     "count_over": row["count_over"], "max_abs": row["max_abs"],
                     "exit_code": cp.returncode}
            if kind == "compressed":
                inf_s, _, _ = best([py, os.path.abspath(__file__), "--inflate-only", a, b],
                                   args.repeat)
                entry["inflate_s"] = round(inf_s, 3)
                entry["vs_inflate"] = round(wall / inf_s, 2)
            rows.append(entry)
        h5 = shutil.which("h5diff")
        if h5:
            subprocess.run(["cat", paths["a_h5"], paths["b_h5"]], stdout=subprocess.DEVNULL)
            hs, hrss, cp = best([h5, "-d", repr(args.delta), paths["a_h5"], paths["b_h5"],
                                 "/x", "/x"], 1)
            m = re.search(rb"(\d+) differences? found", cp.stdout)
            res["h5diff"] = {"s": round(hs, 3), "peak_rss_mib": round(hrss, 1),
                             "differences_found": int(m.group(1)) if m else None,
                             "exit_code": cp.returncode}
        else:
            res["h5diff"] = None
        res["rows"] = rows
        hd = res["h5diff"]["differences_found"] if res["h5diff"] else None
        res["counts_equal"] = hd is not None and all(c == hd for c in counts.values())
        res["targets"] = {
            "peak_rss_le_200mib": all(r["peak_rss_mib"] <= 200 for r in rows),
            "stored_le_1.3x_cat": rows[0]["vs_cat"] <= 1.3,
            "compressed_le_1.2x_inflate": rows[1]["vs_inflate"] <= 1.2,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)

    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"tolerance diff bench: 2 x {args.size_gib:g} GiB float32, delta {args.delta:g}, "
          f"best of {args.repeat}; files (MiB): "
          + ", ".join(f"{k} {v}" for k, v in res["files_mib"].items()))
    print(f"{'input':<11} {'diff s':>8} {'peak RSS MiB':>13} {'cat s':>7} {'x cat':>6} "
          f"{'inflate s':>10} {'x inflate':>10} {'count>atol':>11}")
    for r in rows:
        print(f"{r['kind']:<11} {r['diff_s']:>8.3f} {r['peak_rss_mib']:>13.1f} {r['cat_s']:>7.3f} "
              f"{r['vs_cat']:>6.2f} {r.get('inflate_s', float('nan')):>10.3f} "
              f"{r.get('vs_inflate', float('nan')):>10.2f} {r['count_over']:>11}")
    h = res["h5diff"]
    if h:
        print(f"{'h5diff -d':<11} {h['s']:>8.3f} {h['peak_rss_mib']:>13.1f}  differences found: "
              f"{h['differences_found']}  (ours: {counts['stored']} stored, "
              f"{counts['compressed']} compressed; equal: {res['counts_equal']})")
    else:
        print("h5diff: not installed (apt-get install hdf5-tools)")
    print("targets: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}"
                                  for k, v in res["targets"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
