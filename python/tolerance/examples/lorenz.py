"""`lorenz`: a chaotic float32 recurrence through SGEMM; boxes part from step 0.

z_{t+1} = tanh(2 W z_t), W a seeded 512x512 Gaussian matrix with variance 1/n, the state
a 512x8 block so every step is one SGEMM. Different GEMM kernels (OPENBLAS_CORETYPE)
round differently: ~1e-6 apart at step 0, ~1e-3 by step 50, O(1) by step 100.
"""
from __future__ import annotations

N, BATCH, STEPS, GAIN, SEED = 512, 8, 200, 2.0, 12345


def main(ctx, out_dir):
    """Spec entry point (`python: tolerance.examples.lorenz:main`)."""
    from tolerance.examples._common import ensemble_member, recurrence, write_npz

    replica, perturb = ensemble_member()

    z_b, omega_b = recurrence(n=N, batch=BATCH, steps=STEPS, gain=GAIN, seed=SEED,
                               replica=replica, perturb=perturb)
    return write_npz(out_dir, "lorenz", z_b=z_b, omega_b=omega_b)


if __name__ == "__main__":
    from tolerance.examples._common import cli

    cli(__doc__.splitlines()[0], main)
