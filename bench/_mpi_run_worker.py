"""One rank of bench/mpi_run.py (started by mpiexec). argv: MODE CHUNK_MB OUT_DIR FILE...

MODE stream: the real exchange (digests, pair owners, streaming blocks).
MODE naive:  every rank loads its whole array and sends it to rank 0, which diffs all pairs.
MODE read:   every rank reads its array once, block by block as the compare does (each block
             copied out of the file into memory): the cost of one read of the data.
MODE pair:ROUNDS: read, then stream, ROUNDS times in this one job (the two take turns, so
             what the machine does meanwhile falls on both alike, and no job start is in
             either); each timed from a barrier to the moment every rank is done.
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
    mode, _, rounds_arg = mode.partition(":")  # pair:ROUNDS
    bounds = SimpleNamespace(atol=1e-6, rtol=0.0, ulp=None)
    # every mode's imports happen before the clock starts: the figures are the compare's
    # (or the read's), not the interpreter loading modules
    import tolerance
    from tolerance.collective.exchange import exchange
    from tolerance.collective.sources import NpzBlockSource
    from tolerance.io import Archive, plan_blocks
    def stream():
        src = NpzBlockSource(f"box{rank}", files[rank])
        parts, outcomes, stats = exchange(comm, [src], [], ["x"], lambda k: bounds, 0,
                                          int(chunk_mb * (1 << 20)))
        src.close()
        return stats.bytes_sent, {f"{o.a}-{o.b}": o.acc.result(o.shape).max_abs for o in outcomes}

    def read():
        with Archive(files[rank]) as ar:
            m = ar["x"]
            per, _ranges = plan_blocks(m.shape, 0, m.dtype.itemsize, int(chunk_mb * (1 << 20)))
            buf = None
            for c in m.chunks(0, per):
                if buf is None or buf.shape != c.shape:
                    buf = np.empty(c.shape, c.dtype)
                np.copyto(buf, c)
        return comm.reduce(0, root=0), {}

    def naive():
        with Archive(files[rank]) as ar:
            x = np.concatenate(list(ar["x"].chunks(0)))  # the whole array in memory
        max_abs, sent = {}, 0
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
        return comm.reduce(sent, root=0), max_abs

    def timed(fn):
        comm.Barrier()
        t0 = time.perf_counter()
        sent, max_abs = fn()
        # the clock stops when every rank is done (every mode alike); a rank done early
        # waits without spinning (MPI's Barrier spins), so it takes no core from a rank
        # still working
        arrive(comm)
        return time.perf_counter() - t0, sent, max_abs

    rounds = []
    if mode == "pair":
        for _ in range(int(rounds_arg)):
            rounds.append({"read_s": timed(read)[0], "stream_s": timed(stream)[0]})
        wall, sent, max_abs = min(r["stream_s"] for r in rounds), 0, {}
    else:
        wall, sent, max_abs = timed({"stream": stream, "read": read, "naive": naive}[mode])
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "wall_s": wall, "rss_mib": rss_mib, "bytes_sent": sent,
                   "max_abs": max_abs, "rounds": rounds}, f)


if __name__ == "__main__":
    main()
