"""Shared by the example workloads: a seeded float32 GEMM recurrence, an atomic .npz write."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


#: what `tolerance calibrate` puts in a replica's environment (docs/calibrate.md)
REPLICA_ENV, PERTURB_ENV = "TOLERANCE_REPLICA", "TOLERANCE_PERTURB"


def ensemble_member() -> tuple[int, float]:
    """(replica, perturbation) of this run, from the environment `tolerance calibrate`
    sets: replica 0 (and any run outside a calibration) is unperturbed."""
    try:
        replica = int(os.environ.get(REPLICA_ENV, "0"))
        eps = float(os.environ.get(PERTURB_ENV, "0"))
    except ValueError as exc:
        raise SystemExit(f"{REPLICA_ENV}/{PERTURB_ENV}: not a number: {exc}") from None
    return replica, (eps if replica > 0 else 0.0)


def recurrence(*, n: int, batch: int, steps: int, gain: float, seed: int, bias: float = 0.0,
               replica: int = 0, perturb: float = 0.0):
    """Z[t+1] = tanh(gain * W @ Z[t] + bias) in float32, W ~ N(0, 1/n), Z of shape (n, batch).

    `W @ Z` is a float32 (n x n) @ (n x batch) matrix product, i.e. a BLAS SGEMM, so the
    result depends on the GEMM kernel. gain > 1 is chaotic (rounding differences grow
    exponentially); gain < 1 is contracting (they stay at rounding level).
    Returns z_b (steps x n, float32: the first column of each step's state) and omega_b
    (steps, float64: the energy sum(Z**2) of each step's whole state).

    perturb > 0 multiplies the initial state by (1 + perturb * u), u uniform in [-1, 1]
    drawn from a generator seeded by (seed, replica): a round-off-level perturbation that
    is the same for a replica on every box, so boxes still compare like with like.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, n)) * (gain / np.sqrt(n))).astype(np.float32)
    z = rng.standard_normal((n, batch)).astype(np.float32)
    if perturb > 0:
        u = np.random.default_rng([seed, replica]).uniform(-1.0, 1.0, size=z.shape)
        z = (z.astype(np.float64) * (1.0 + perturb * u)).astype(np.float32)
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
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, final)
    except BaseException:  # a full disk: no temporary file left behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


def cli(description: str, run) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=".", help="output directory (default: .)")
    args = parser.parse_args()
    print(run(None, args.out))
