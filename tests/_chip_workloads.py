"""Workloads the bootstrap tests run inside chips (`python: _chip_workloads:NAME`)."""
from __future__ import annotations

import os

import numpy as np


def fill(ctx, out_dir):
    """Write rank-dependent values into the chip's output file (the one data path)."""
    np.savez(os.path.join(out_dir, f"out-{ctx.rank}.npz"),
             z=np.arange(15.0).reshape(5, 3) * (ctx.rank + 1))
    with open(os.path.join(out_dir, f"done-{ctx.rank}"), "w") as fh:
        fh.write(ctx.device)
    return 0


def exit_seven(ctx, out_dir):
    return 7


def boom(ctx, out_dir):
    raise ValueError("workload failed on purpose")
