"""Run under mpiexec by tests/test_collective_mpi.py: the exchange over in-memory sources.

argv: OUT.json NPARTS CHUNK_BYTES MODE [AXIS]
MODE: random | identical | partial | mixed | groups | failed (see `arrays_of`).
Participant p lives on rank p % size, so the same participants spread over any rank count;
in mode `failed` every participant of the last rank failed (it has no output at all).
"""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np

from tolerance.collective.exchange import exchange
from tolerance.collective.mpi import RankContext, abort_on_error, world
from tolerance.compare.rows import MISSING_KEY, Problem


def _mixed(p: int) -> dict[str, np.ndarray]:
    """Every participant equal to a common base on some steps and not on others, a pattern
    of its own (so a pair's blocks are equal in some blocks and differ in others, and which
    ones differs from pair to pair); NaNs in the base, also inside equal blocks."""
    rng = np.random.default_rng(99)
    z = rng.standard_normal((40, 6)).astype(np.float32)
    z[[3, 17, 30], 2] = np.nan
    z[11] = np.nan                                   # a step of NaNs only
    flat = rng.standard_normal(101)
    ints = rng.integers(-1000, 1000, size=(12, 4), dtype=np.int64)
    r = np.random.default_rng(1000 + p)
    steps = r.random(40) < 0.4                       # the steps where p leaves the base
    z[steps] += np.float32(1e-4) * (1 + p)
    if p % 3 == 1:
        z[steps, 2] = np.nan                         # NaN against a number on some pairs
    flat[r.random(101) < 0.3] += 1e-9 * (1 + p)
    ints[r.random(12) < 0.5] += p
    return {"z_b": z, "omega_b": flat, "n": ints}


def arrays_of(p: int, mode: str) -> dict[str, np.ndarray]:
    if mode in ("mixed", "failed"):
        return _mixed(p)
    rng = np.random.default_rng(1234)
    base = rng.standard_normal((37, 5, 3)).astype(np.float32)
    flat = rng.standard_normal(101)
    ints = rng.integers(-1000, 1000, size=(12, 4), dtype=np.int64)
    if mode == "identical":
        return {"z_b": base, "omega_b": flat, "n": ints}
    if mode == "groups":
        # z_b: participants 1 and 4 share one shape, the others another; with 5 participants
        # on 3 ranks, one shape group lives on rank 1 alone and rank 1 holds no member of
        # the other; omega_b and n: every participant, equal on some, not on others
        z = base.copy() if p in (1, 4) else base[:30].copy()
        if p in (3, 4):
            z[5:9] += np.float32(1e-3)
        return {"z_b": z, "omega_b": flat + (1e-9 if p % 2 else 0.0),
                "n": ints + (p == 2)}
    r = np.random.default_rng(p + 1)
    z = base.copy()
    if mode == "partial":          # participants 0 and 1 equal; later steps differ for p >= 2
        if p >= 2:
            z[20:] += np.float32(1e-3) * r.standard_normal(z[20:].shape).astype(np.float32)
    else:
        z += np.float32(1e-4) * r.standard_normal(z.shape).astype(np.float32)
        z[3, 1, 2] = np.nan if p % 2 else z[3, 1, 2]
    out = {"z_b": z, "omega_b": flat + (p * 1e-9), "n": ints + (p % 2)}
    if p == 3:
        out["z_b"] = z[:30]        # a shape mismatch for every pair with participant 3
        del out["n"]               # and a missing key
    return out


class MemSource:
    def __init__(self, label, arrays):
        self.label = label
        self.arrays = arrays

    def meta(self, key):
        if key not in self.arrays:
            return Problem(MISSING_KEY, f"key {key!r} is missing")
        a = self.arrays[key]
        return a.shape, a.dtype.str

    def blocks(self, key, axis, per):
        a = self.arrays[key]
        if axis is None:
            flat = a.reshape(-1)
            for lo in range(0, max(flat.size, 1), per):
                yield flat[lo:lo + per]
            return
        n = a.shape[axis]
        if n == 0:
            yield a
            return
        for lo in range(0, n, per):
            idx = [slice(None)] * a.ndim
            idx[axis] = slice(lo, lo + per)
            yield a[tuple(idx)]


def main() -> None:
    out, nparts, chunk, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    comm = world()
    rank, size = comm.Get_rank(), comm.Get_size()
    with abort_on_error(RankContext(comm)):
        mine = [p for p in range(nparts) if p % size == rank]
        failed = mode == "failed" and rank == size - 1
        sources = [] if failed else [MemSource(f"p{p}", arrays_of(p, mode)) for p in mine]
        failures = [(f"p{p}", "the chip failed") for p in mine] if failed else []
        bounds = {"z_b": SimpleNamespace(atol=1e-4, rtol=0.0, ulp=None),
                  "omega_b": SimpleNamespace(atol=0.0, rtol=1e-9, ulp=None),
                  "n": SimpleNamespace(atol=0.0, rtol=0.0, ulp=None)}
        steps_axis = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "none" else (
            None if len(sys.argv) > 5 else 0)
        parts, outcomes, stats = exchange(comm, sources, failures, ["z_b", "omega_b", "n"],
                                          bounds.__getitem__, steps_axis, chunk)
        if rank == 0:
            rows = []
            for o in outcomes:
                a, b = parts[o.a].label, parts[o.b].label
                d = o.acc.result(o.shape).to_dict() if o.acc else None
                rows.append({"a": a, "b": b, "key": o.key,
                             "reason": o.problem.message if o.problem else None, "div": d})
            with open(out, "w") as f:
                json.dump({"rows": rows, "bytes_sent": stats.bytes_sent,
                           "blocks_equal": stats.blocks_equal,
                           "participants": [[q.label, q.rank] for q in parts]}, f)


if __name__ == "__main__":
    main()
