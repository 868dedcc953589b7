"""`stable`: a contracting float32 recurrence through SGEMM; boxes stay within bound.

z_{t+1} = tanh(0.5 W z_t + 0.1), the same shapes as `lorenz` but contracting: rounding
differences between GEMM kernels are damped each step and stay at float32 rounding level.
"""
from __future__ import annotations

N, BATCH, STEPS, GAIN, SEED, BIAS = 512, 8, 200, 0.5, 2024, 0.1


def main(ctx, out_dir):
    """Spec entry point (`python: tolerance.examples.stable:main`)."""
    from tolerance.examples._common import ensemble_member, recurrence, write_npz

    replica, perturb = ensemble_member()

    z_b, omega_b = recurrence(n=N, batch=BATCH, steps=STEPS, gain=GAIN, seed=SEED, bias=BIAS,
                               replica=replica, perturb=perturb)
    return write_npz(out_dir, "stable", z_b=z_b, omega_b=omega_b)


if __name__ == "__main__":
    from tolerance.examples._common import cli

    cli(__doc__.splitlines()[0], main)
