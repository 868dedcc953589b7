"""All-pairs streaming compare across MPI ranks (DESIGN.md "A run, end to end", step 4).

Every rank holds the outputs of its own box (its *participants*: one per chip that
produced an output). Per key the ranks first agree on shapes and dtypes; then, block by
block of steps under a byte budget, every rank hashes its blocks and the digests are
all-gathered. A pair whose blocks have equal digests moves no data: the rank that owns
the pair folds its own block against itself (exactly what comparing the two would give).
Where digests differ, the other side's block is sent once to each rank that needs it.
Each pair is computed on one rank (`plan.pair_owner`), into an `Accumulator`; at the end
the serialized accumulators are gathered to rank 0.

Collective calls are made in the same order on every rank (keys, then blocks), whatever
each rank holds, so no rank can wait on a collective its peers skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from tolerance.collective.plan import block_ranges, pair_owner
from tolerance.compare.kernel import Accumulator
from tolerance.compare.rows import incompatibility
from tolerance.io.digest import block_digest
from tolerance.io.npz import normalize_axis

class BlockSource(Protocol):
    """One participant's arrays, read block by block (never whole)."""

    label: str

    def meta(self, key: str) -> tuple[tuple[int, ...], str] | str:
        """(shape, dtype.str) of `key`, or a reason string when it cannot be read."""

    def blocks(self, key: str, steps_axis: int | None, per_block: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of `per_block` steps along `steps_axis` (flat C-order pieces
        of `per_block` elements when it is None), in order, each once."""


@dataclass
class Participant:
    """Gathered facts about one participant (index = position in the global order)."""

    index: int
    rank: int
    label: str
    failed: str | None = None  # why this participant has no output at all


@dataclass
class PairOutcome:
    """What rank 0 gets for one (a, b, key): an accumulator's bytes, or why there is none."""

    a: int
    b: int
    key: str
    shape: tuple[int, ...] | None = None
    acc: bytes | None = None
    reason: str | None = None


@dataclass
class ExchangeStats:
    bytes_sent: int = 0          # data bytes (array payloads) this rank sent
    blocks: int = 0              # blocks hashed
    blocks_equal: int = 0        # (pair, block) folds that moved no data


def pair_problem(a_label: str, b_label: str, a_meta, b_meta, ulp,
                 steps_axis: int | None) -> str | None:
    """Why a pair cannot be compared (the reason of its unmeasured row), or None: a side
    without the key, then the same checks as `tolerance diff` (compare.rows)."""
    for label, meta in ((a_label, a_meta), (b_label, b_meta)):
        if isinstance(meta, str):
            return f"{label}: {meta}"
    (sa, da), (sb, db) = a_meta, b_meta
    return incompatibility(tuple(sa), np.dtype(da), tuple(sb), np.dtype(db), ulp=ulp,
                           steps_axis=steps_axis)


def exchange(comm, sources: Sequence[BlockSource], failures: Sequence[tuple[str, str]],
             keys: Sequence[str], bounds_for: Callable[[str], Any], steps_axis: int | None,
             budget_bytes: int, *, threads: int | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             ) -> tuple[list[Participant], list[PairOutcome], ExchangeStats]:
    """Compare every pair of participants on every key; rank 0 returns all outcomes.

    `sources` are this rank's participants with outputs, `failures` its (label, reason)
    participants without. `bounds_for(key)` gives an object with atol/rtol/ulp. Returns
    (participants, outcomes, stats); outcomes are complete on rank 0 only ([] elsewhere),
    stats.bytes_sent is summed over ranks on rank 0.
    """
    rank = comm.Get_rank()
    local = [(s.label, None) for s in sources] + [(lbl, why) for lbl, why in failures]
    gathered = comm.allgather(local)
    if os.environ.get("TOLERANCE_TEST_KILL_BOX") in [lbl for lbl, _ in local]:
        os.kill(os.getpid(), 9)  # test-only fault hook: every rank is past its run by now
    participants: list[Participant] = []
    local_index: dict[int, BlockSource] = {}
    for r, entries in enumerate(gathered):
        for k, (label, why) in enumerate(entries):
            p = Participant(index=len(participants), rank=r, label=label, failed=why)
            if r == rank and k < len(sources):
                local_index[p.index] = sources[k]
            participants.append(p)
    n = len(participants)
    stats = ExchangeStats()
    outcomes: list[PairOutcome] = []

    for key in keys:
        bounds = bounds_for(key)
        local_meta = {i: _safe_meta(src, key) for i, src in local_index.items()}
        metas: dict[int, Any] = {}
        for part in comm.allgather(local_meta):
            metas.update(part)
        for p in participants:
            if p.failed is not None:
                metas[p.index] = p.failed
        # Pairs that can be measured, grouped by shape (each shape cuts into its own blocks).
        by_shape: dict[tuple, list[tuple[int, int]]] = {}
        for i in range(n):
            for j in range(i + 1, n):
                why = pair_problem(participants[i].label, participants[j].label,
                                   metas[i], metas[j], bounds.ulp, steps_axis)
                if why is not None:
                    outcomes.append(PairOutcome(i, j, key, reason=why))
                    continue
                by_shape.setdefault(tuple(metas[i][0]), []).append((i, j))
        for shape, pairs in sorted(by_shape.items()):
            outcomes.extend(_compare_shape(comm, rank, participants, local_index, metas, key,
                                           shape, pairs, bounds, steps_axis, budget_bytes,
                                           threads, stats, progress))

    # Gather every rank's owned outcomes to rank 0, in a global order.
    all_outcomes = comm.gather(outcomes, root=0)
    total_sent = comm.reduce(stats.bytes_sent, root=0)
    if rank != 0:
        return participants, [], stats
    merged: dict[tuple[int, int, str], PairOutcome] = {}
    for part in all_outcomes:
        for o in part:
            merged[(o.a, o.b, o.key)] = o
    stats.bytes_sent = int(total_sent)
    key_order = {k: i for i, k in enumerate(keys)}
    ordered = sorted(merged.values(), key=lambda o: (key_order[o.key], o.a, o.b))
    return participants, ordered, stats


def _safe_meta(src: BlockSource, key: str):
    try:
        return src.meta(key)
    except Exception as exc:  # noqa: BLE001 - a reader's error becomes this row's reason
        return f"{type(exc).__name__}: {exc}"


def _compare_shape(comm, rank, participants, local_index, metas, key, shape, pairs, bounds,
                   steps_axis, budget_bytes, threads, stats, progress) -> list[PairOutcome]:
    n = len(participants)
    axis = normalize_axis(steps_axis, len(shape))
    per, ranges = block_ranges(shape, axis, budget_bytes)
    acc_axis = axis  # None: flat pieces of the one step
    owned = [(i, j) for (i, j) in pairs if participants[pair_owner(i, j, n)].rank == rank]
    accs = {pq: Accumulator(atol=bounds.atol, rtol=bounds.rtol, ulp=bounds.ulp,
                            steps_axis=acc_axis, threads=threads) for pq in owned}
    members = sorted({i for pq in pairs for i in pq})
    local_members = [i for i in members if i in local_index]
    streams = {i: local_index[i].blocks(key, axis, per) for i in local_members}
    for b, (lo, hi) in enumerate(ranges):
        if progress is not None and rank == 0:
            progress(key, b, len(ranges))
        blocks = {i: next(streams[i]) for i in local_members}
        digests: dict[int, bytes] = {}
        for part in comm.allgather({i: block_digest(x) for i, x in blocks.items()}):
            digests.update(part)
        stats.blocks += len(blocks)
        # Who needs whose block: (needed participant, destination rank), each once.
        wanted: set[tuple[int, int]] = set()
        for i, j in pairs:
            o = pair_owner(i, j, n)
            other = j if o == i else i
            if digests[i] == digests[j]:
                continue
            dest = participants[o].rank
            if participants[other].rank != dest:
                wanted.add((other, dest))
        requests, keep = [], []
        for other, dest in sorted(wanted):
            if participants[other].rank == rank:
                # raw bytes: every dtype (bool, float16, either byte order) travels alike
                buf = np.ascontiguousarray(blocks[other]).reshape(-1).view(np.uint8)
                keep.append(buf)
                requests.append(comm.Isend(buf, dest=dest, tag=other))
                stats.bytes_sent += buf.nbytes
        received: dict[int, np.ndarray] = {}
        for other, dest in sorted(wanted):
            if dest == rank:
                dtype = np.dtype(metas[other][1])
                buf = np.empty(_block_shape(shape, axis, lo, hi), dtype=dtype)
                comm.Recv(buf.reshape(-1).view(np.uint8), source=participants[other].rank,
                          tag=other)
                received[other] = buf
        for (i, j), acc in accs.items():
            o = pair_owner(i, j, n)
            if digests[i] == digests[j]:
                x = blocks[o]
                acc.update(x, x)
                stats.blocks_equal += 1
                continue
            xi = blocks[i] if i in blocks else received[i]
            xj = blocks[j] if j in blocks else received[j]
            acc.update(xi, xj)
        if requests:
            type(requests[0]).Waitall(requests)
        del blocks, received, keep
    for i, stream in streams.items():  # run each reader to its end: that checks its CRC
        if next(stream, None) is not None:
            raise RuntimeError(f"{participants[i].label}: {key}: the reader yielded more "
                               f"blocks than the plan ({len(ranges)})")
    return [PairOutcome(i, j, key, shape=tuple(shape), acc=acc.to_bytes())
            for (i, j), acc in accs.items()]


def _block_shape(shape, axis, lo, hi) -> tuple[int, ...]:
    if axis is None:
        return (hi - lo,)  # flat pieces of the one step
    s = list(shape)
    s[axis] = hi - lo
    return tuple(s)
