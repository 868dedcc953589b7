"""Workloads the bootstrap tests run inside chips (`python: _chip_workloads:NAME`)."""
from __future__ import annotations

import os

import numpy as np

from tolerance.bootstrap.child import buffer


def fill(ctx, out_dir):
    """Write rank-dependent values into every declared buffer."""
    z = buffer("z")
    z[...] = np.arange(z.size, dtype=z.dtype).reshape(z.shape) * (ctx.rank + 1)
    try:
        n = buffer("n")
    except KeyError:
        return 0
    n[...] = ctx.rank
    with open(os.path.join(out_dir, f"done-{ctx.rank}"), "w") as fh:
        fh.write(ctx.device)
    return 0


def exit_seven(ctx, out_dir):
    return 7


def boom(ctx, out_dir):
    raise ValueError("workload failed on purpose")
