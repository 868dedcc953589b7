"""Shared by the example workloads: a seeded float32 GEMM recurrence, an atomic .npz write."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def recurrence(*, n: int, batch: int, steps: int, gain: float, seed: int, bias: float = 0.0):
    """Z[t+1] = tanh(gain * W @ Z[t] + bias) in float32, W ~ N(0, 1/n), Z of shape (n, batch).

    `W @ Z` is a float32 (n x n) @ (n x batch) matrix product, i.e. a BLAS SGEMM, so the
    result depends on the GEMM kernel. gain > 1 is chaotic (rounding differences grow
    exponentially); gain < 1 is contracting (they stay at rounding level).
    Returns z_b (steps x n, float32: the first column of each step's state) and omega_b
    (steps, float64: the energy sum(Z**2) of each step's whole state).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, n)) * (gain / np.sqrt(n))).astype(np.float32)
    z = rng.standard_normal((n, batch)).astype(np.float32)
    b = np.float32(bias)
    z_b = np.empty((steps, n), dtype=np.float32)
    omega_b = np.empty(steps, dtype=np.float64)
    for t in range(steps):
        z = np.tanh(w @ z + b)
        z_b[t] = z[:, 0]
        omega_b[t] = float(np.square(z, dtype=np.float64).sum())
    return z_b, omega_b


def write_npz(out_dir: str | os.PathLike, name: str, **arrays) -> Path:
    """Write `<out_dir>/<name>.npz` under a temporary name, then rename it into place."""
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{name}.npz"
    tmp = out / f".{name}.npz.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, final)
    return final


def cli(description: str, run) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=".", help="output directory (default: .)")
    args = parser.parse_args()
    print(run(None, args.out))
