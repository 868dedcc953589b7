"""The compare plan across ranks: which rank computes which pair, how keys split into blocks.

Pure functions, no MPI: every rank computes the same plan from the same gathered facts,
so no message is needed to agree on it, and the tests can check it without `mpiexec`.
"""
from __future__ import annotations

import math
from typing import Sequence

# The byte budget of a block assumes the widest element (8 bytes) so that every box,
# whatever its dtype, cuts the same key into the same step ranges.
_WIDEST_ITEMSIZE = 8
# A block is one MPI message; MPI counts are C ints, so a message must stay far below
# 2 GiB. 1 GiB leaves room for any MPI implementation's header arithmetic.
MAX_BLOCK_BYTES = 1 << 30


def pair_owner(i: int, j: int, n: int) -> int:
    """The participant (i or j, i < j) whose rank computes the pair, balanced round-robin.

    Participants sit on a circle; a pair goes to the one from which the other is at most
    half-way round clockwise. Every participant then owns about (n-1)/2 pairs, so the data
    of each moves to about half of the others, never to all of them.
    """
    if not 0 <= i < j < n:
        raise ValueError(f"pair ({i}, {j}) is not i < j < {n}")
    d = j - i
    if 2 * d < n:
        return i
    if 2 * d > n:
        return j
    return i if i % 2 == 0 else j  # n even and j opposite i: alternate to stay balanced


def block_ranges(shape: Sequence[int], steps_axis: int | None,
                 budget_bytes: int) -> tuple[int, list[tuple[int, int]]]:
    """Consecutive ranges that cut a key of `shape` into blocks of at most `budget_bytes`.

    With a steps axis the ranges are step ranges (a block holds whole steps, at least one);
    with `steps_axis=None` the array is one step and the ranges are flat C-order element
    ranges. Depends only on the shape and the budget, so every rank cuts alike.
    Returns (steps or elements per block, the ranges).
    """
    budget = max(1, min(int(budget_bytes), MAX_BLOCK_BYTES))
    size = math.prod(int(s) for s in shape)
    if steps_axis is None or len(shape) == 0:
        per = max(1, budget // _WIDEST_ITEMSIZE)
        if size == 0:
            return per, [(0, 0)]
        return per, [(lo, min(lo + per, size)) for lo in range(0, size, per)]
    nsteps = int(shape[steps_axis])
    step_elems = size // nsteps if nsteps else 0
    per = max(1, budget // max(1, step_elems * _WIDEST_ITEMSIZE))
    if nsteps == 0:
        return per, [(0, 0)]
    return per, [(lo, min(lo + per, nsteps)) for lo in range(0, nsteps, per)]

