"""One rank of bench/mpi_run.py (started by mpiexec). argv: MODE CHUNK_MB OUT_DIR FILE...

MODE stream: the real exchange (digests, pair owners, streaming blocks).
MODE naive:  every rank loads its whole array and sends it to rank 0, which diffs all pairs.
MODE read:   every rank reads its array once, block by block as the compare does (each block
             copied out of the file into memory): the cost of one read of the data.
Rank r reads FILE[r]. Each rank writes <OUT_DIR>/rank<r>.json with its figures.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from types import SimpleNamespace

import numpy as np


def main() -> None:
    from tolerance.collective.mpi import arrive, world
    comm = world()
    rank, size = comm.Get_rank(), comm.Get_size()
    mode, chunk_mb, out_dir, files = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
    bounds = SimpleNamespace(atol=1e-6, rtol=0.0, ulp=None)
    # every mode's imports happen before the clock starts: the figures are the compare's
    # (or the read's), not the interpreter loading modules
    import tolerance
    from tolerance.collective.exchange import exchange
    from tolerance.collective.sources import NpzBlockSource
    from tolerance.io import Archive, plan_blocks
    comm.Barrier()
    t0 = time.perf_counter()
    sent = 0
    max_abs = {}
    if mode == "stream":
        src = NpzBlockSource(f"box{rank}", files[rank])
        parts, outcomes, stats = exchange(comm, [src], [], ["x"], lambda k: bounds, 0,
                                          int(chunk_mb * (1 << 20)))
        sent = stats.bytes_sent
        for o in outcomes:
            max_abs[f"{o.a}-{o.b}"] = o.acc.result(o.shape).max_abs
        src.close()
    elif mode == "read":
        with Archive(files[rank]) as ar:
            m = ar["x"]
            per, _ranges = plan_blocks(m.shape, 0, m.dtype.itemsize, int(chunk_mb * (1 << 20)))
            buf = None
            for c in m.chunks(0, per):
                if buf is None or buf.shape != c.shape:
                    buf = np.empty(c.shape, c.dtype)
                np.copyto(buf, c)
        sent = comm.reduce(0, root=0)
    else:
        with Archive(files[rank]) as ar:
            x = np.concatenate(list(ar["x"].chunks(0)))  # the whole array in memory
        if rank == 0:
            arrays = [x]
            for r in range(1, size):
                buf = np.empty_like(x)
                comm.Recv(buf, source=r, tag=1)
                arrays.append(buf)
            for i in range(size):
                for j in range(i + 1, size):
                    d = tolerance.divergence(arrays[i], arrays[j], atol=bounds.atol)
                    max_abs[f"{i}-{j}"] = d.max_abs
        else:
            comm.Send(x, dest=0, tag=1)
            sent = x.nbytes
        sent = comm.reduce(sent, root=0)
    # the clock stops when every rank is done (every mode alike); a rank done early waits
    # without spinning (MPI's Barrier spins), so it takes no core from a rank still working
    arrive(comm)
    wall = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "wall_s": wall, "rss_mib": rss_mib, "bytes_sent": sent,
                   "max_abs": max_abs}, f)


if __name__ == "__main__":
    main()
