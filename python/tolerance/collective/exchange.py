"""The MPI transport of the one pair engine (compare.engine): the all-pairs compare of a
run across ranks (docs/run.md, step 4).

Every rank holds the outputs of its own box (its *participants*: one per chip that
produced an output). The engine does the rest: shapes and dtypes agreed first, then block
by block digests all-gathered, only differing blocks sent, each pair folded on the rank of
its owner (`compare.engine.pair_owner`); at the end the serialized accumulators are
gathered to rank 0.

Collective calls are made in the same order on every rank (keys, then blocks), whatever
each rank holds, so no rank can wait on a collective its peers skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tolerance.compare.engine import BlockSource, EngineStats, PairOutcome, compare_key
from tolerance.compare.rows import NO_OUTPUT, Problem


@dataclass
class Participant:
    """Gathered facts about one participant (index = position in the global order)."""

    index: int
    rank: int
    label: str
    failed: str | None = None  # why this participant has no output at all


class MpiTransport:
    """Participants live on ranks; facts and digests are all-gathered, blocks sent
    point to point (raw bytes: every dtype, either byte order, travels alike)."""

    def __init__(self, comm, participants: Sequence[Participant]) -> None:
        self.comm = comm
        self.here = comm.Get_rank()
        self._rank_of = [p.rank for p in participants]

    def where(self, participant: int) -> int:
        return self._rank_of[participant]

    def _allgather_merged(self, local: dict) -> dict:
        out: dict = {}
        for part in self.comm.allgather(local):
            out.update(part)
        return out

    def gather_metas(self, local: dict[int, Any]) -> dict[int, Any]:
        return self._allgather_merged(local)

    def gather_digests(self, local: dict[int, bytes]) -> dict[int, bytes]:
        return self._allgather_merged(local)

    def move(self, blocks: dict[int, np.ndarray], wanted: Sequence[tuple[int, int]],
             block_shape: tuple[int, ...], dtypes: Mapping[int, str]) -> dict[int, np.ndarray]:
        requests, keep = [], []
        for other, dest in wanted:
            if other in blocks:
                buf = np.ascontiguousarray(blocks[other]).reshape(-1).view(np.uint8)
                keep.append(buf)
                requests.append(self.comm.Isend(buf, dest=dest, tag=other))
        received: dict[int, np.ndarray] = {}
        for other, dest in wanted:
            if dest == self.here:
                buf = np.empty(block_shape, dtype=np.dtype(dtypes[other]))
                self.comm.Recv(buf.reshape(-1).view(np.uint8), source=self._rank_of[other],
                               tag=other)
                received[other] = buf
        if requests:
            type(requests[0]).Waitall(requests)
        del keep
        return received


def exchange(comm, sources: Sequence[BlockSource], failures: Sequence[tuple[str, str]],
             keys: Sequence[str], bounds_for: Callable[[str], Any], steps_axis: int | None,
             budget_bytes: int, *, threads: int | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             ) -> tuple[list[Participant], list[PairOutcome], EngineStats]:
    """Compare every pair of participants on every key; rank 0 returns all outcomes.

    `sources` are this rank's participants with outputs, `failures` its (label, reason)
    participants without. `bounds_for(key)` gives an object with atol/rtol/ulp. Returns
    (participants, outcomes, stats); outcomes (accumulators as bytes) are complete on
    rank 0 only ([] elsewhere), stats are summed over ranks on rank 0.
    """
    rank = comm.Get_rank()
    local_entries = [(s.label, None) for s in sources] + [(lbl, why) for lbl, why in failures]
    gathered = comm.allgather(local_entries)
    participants: list[Participant] = []
    local: dict[int, BlockSource] = {}
    for r, entries in enumerate(gathered):
        for k, (label, why) in enumerate(entries):
            p = Participant(index=len(participants), rank=r, label=label, failed=why)
            if r == rank and k < len(sources):
                local[p.index] = sources[k]
            participants.append(p)
    labels = [p.label for p in participants]
    failed = {p.index: Problem(NO_OUTPUT, f"{p.label}: {p.failed}")
              for p in participants if p.failed is not None}
    transport = MpiTransport(comm, participants)
    stats = EngineStats()
    outcomes: list[PairOutcome] = []
    for key in keys:
        outcomes += compare_key(transport, local, labels, key, bounds_for(key), steps_axis,
                                failed=failed, threads=threads, budget=budget_bytes,
                                stats=stats, progress=progress)
    for o in outcomes:
        if o.acc is not None:
            o.acc = o.acc.to_bytes()
    all_outcomes = comm.gather(outcomes, root=0)
    counts = comm.gather((stats.bytes_sent, stats.blocks, stats.blocks_equal), root=0)
    if rank != 0:
        return participants, [], stats
    stats = EngineStats(*(sum(c) for c in zip(*counts)))
    key_order = {k: i for i, k in enumerate(keys)}
    ordered = sorted((o for part in all_outcomes for o in part),
                     key=lambda o: (key_order[o.key], o.a, o.b))
    return participants, ordered, stats

