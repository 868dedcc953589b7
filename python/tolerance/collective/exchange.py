"""The MPI transport of the one pair engine (compare.engine): the all-pairs compare of a
run across ranks (docs/run.md, step 4).

Every rank holds the outputs of its own box (its *participants*: one per chip that
produced an output). The engine does the rest: shapes and dtypes agreed first, then block
by block digests shared, only differing blocks sent, each pair folded on the rank of its
owner (`compare.engine.pair_owner`); at the end the serialized accumulators are gathered
to rank 0.

What travels, in the same order on every rank, whatever each rank holds, so that no rank
waits on a message or collective its peers skipped:
- per key, one all-gather of every participant's (shape, dtype) (every rank);
- per block of a shape group, among the ranks holding a member of the group only (the
  others have nothing to send or fold): each such rank sends its members' 16-byte digests
  to each other such rank (point to point, on the transport's own communicator), then
  each differing block goes to its pair's owner once (`move`);
- at the end, the outcomes gathered to rank 0 (every rank).
Every wait for a peer gives the core up (`collective.mpi.wait_yielding`): on a box that
runs more ranks than cores, a spinning rank would take the time of the peer it waits for.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tolerance.collective.mpi import arrive, spare_cores, wait_yielding
from tolerance.compare.engine import BlockSource, EngineStats, PairOutcome, compare_key
from tolerance.compare.kernel import Accumulator
from tolerance.compare.rows import NO_OUTPUT, Problem
from tolerance.io.digest import DIGEST_BYTES


@dataclass
class Participant:
    """Gathered facts about one participant (index = position in the global order)."""

    index: int
    rank: int
    label: str
    failed: str | None = None  # why this participant has no output at all


class MpiTransport:
    """Participants live on ranks; facts are all-gathered, digests and blocks sent point to
    point (raw bytes: every dtype, either byte order, travels alike)."""

    def __init__(self, comm, participants: Sequence[Participant]) -> None:
        self.comm = comm
        self.here = comm.Get_rank()
        self._rank_of = [p.rank for p in participants]
        # digests travel on their own communicator: their tag can never match a block's
        self._digest_comm = comm.Dup()

    def close(self) -> None:
        """Free the digests' communicator (every rank, after the last key)."""
        self._digest_comm.Free()

    def where(self, participant: int) -> int:
        return self._rank_of[participant]

    def gather_metas(self, local: dict[int, Any]) -> dict[int, Any]:
        out: dict = {}
        arrive(self.comm)
        for part in self.comm.allgather(local):
            out.update(part)
        return out

    def share_digests(self, local: dict[int, bytes], members: Sequence[int]) -> "_DigestShare":
        """Every place holding members sends its members' digests (DIGEST_BYTES each, in
        member order) to every other such place and receives theirs: eager messages of a few
        bytes, complete as soon as the sender has hashed its block (no place forwards
        another's), so a place only ever waits for a peer that is behind it."""
        return _DigestShare(self._digest_comm, self.here, local,
                            [(k, self._rank_of[k]) for k in members])

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


class _DigestShare:
    """One block's digests on their way between the places that hold the group's members."""

    def __init__(self, comm, here: int, local: dict[int, bytes],
                 members: Sequence[tuple[int, int]]) -> None:
        by_rank: dict[int, list[int]] = {}
        for k, r in members:
            by_rank.setdefault(r, []).append(k)
        mine = by_rank.get(here, [])
        if not mine or sorted(local) != sorted(mine) or any(len(local[k]) != DIGEST_BYTES for k in mine):
            raise RuntimeError("digests to share do not match the members held here")
        self._payload = b"".join(local[k] for k in mine)
        self._digests = dict(local)
        self._incoming: list[tuple[list[int], bytearray]] = []
        self._requests = []
        for r, ks in by_rank.items():
            if r == here:
                continue
            buf = bytearray(DIGEST_BYTES * len(ks))
            self._incoming.append((ks, buf))
            self._requests.append(comm.Irecv(buf, source=r, tag=_DIGEST_TAG))
        for r in by_rank:
            if r != here:
                self._requests.append(comm.Isend(self._payload, dest=r, tag=_DIGEST_TAG))

    def wait(self) -> dict[int, bytes]:
        if self._requests:
            wait_yielding(self._requests)
            self._requests = []
            for ks, buf in self._incoming:
                for q, k in enumerate(ks):
                    self._digests[k] = bytes(buf[q * DIGEST_BYTES:(q + 1) * DIGEST_BYTES])
            self._incoming = []
        return self._digests


#: the digests' tag on the transport's own communicator
_DIGEST_TAG = 1


def exchange(comm, sources: Sequence[BlockSource], failures: Sequence[tuple[str, str]],
             keys: Sequence[str], bounds_for: Callable[[str], Any], steps_axis: int | None,
             budget_bytes: int, *, threads: int | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             ) -> tuple[list[Participant], list[PairOutcome], EngineStats]:
    """Compare every pair of participants on every key; rank 0 returns all outcomes.

    `sources` are this rank's participants with outputs, `failures` its (label, reason)
    participants without. `bounds_for(key)` gives an object with atol/rtol/ulp. Returns
    (participants, outcomes, stats); outcomes (each with its `Accumulator`, or its problem)
    are complete on rank 0 only ([] elsewhere), stats are summed over ranks on rank 0.
    """
    rank = comm.Get_rank()
    local_entries = [(s.label, None) for s in sources] + [(lbl, why) for lbl, why in failures]
    arrive(comm)
    gathered = comm.allgather((socket.gethostname(), local_entries))
    hosts = [h for h, _ in gathered]
    participants: list[Participant] = []
    local: dict[int, BlockSource] = {}
    for r, (_, entries) in enumerate(gathered):
        for k, (label, why) in enumerate(entries):
            p = Participant(index=len(participants), rank=r, label=label, failed=why)
            if r == rank and k < len(sources):
                local[p.index] = sources[k]
            participants.append(p)
    labels = [p.label for p in participants]
    failed = {p.index: Problem(NO_OUTPUT, f"{p.label}: {p.failed}")
              for p in participants if p.failed is not None}
    transport = MpiTransport(comm, participants)
    # read ahead in a thread only where the box has a core to spare for it
    prefetch = spare_cores(hosts.count(hosts[rank]))
    stats = EngineStats()
    outcomes: list[PairOutcome] = []
    for key in keys:
        outcomes += compare_key(transport, local, labels, key, bounds_for(key), steps_axis,
                                failed=failed, threads=threads, budget=budget_bytes,
                                stats=stats, progress=progress, prefetch=prefetch)
    transport.close()
    # the accumulators travel to rank 0 in their wire format; rank 0's own stay as they are
    if rank != 0:
        for o in outcomes:
            if o.acc is not None:
                o.acc = o.acc.to_bytes()
    counts = (stats.bytes_sent, stats.blocks, stats.blocks_equal)
    arrive(comm)
    gathered = comm.gather(([] if rank == 0 else outcomes, counts), root=0)
    if rank != 0:
        return participants, [], stats
    stats = EngineStats(*(sum(c) for c in zip(*(c for _, c in gathered))))
    for part, _ in gathered:
        for o in part:
            if o.acc is not None:
                o.acc = Accumulator.from_bytes(o.acc, threads=threads)
    key_order = {k: i for i, k in enumerate(keys)}
    ordered = sorted(outcomes + [o for part, _ in gathered for o in part],
                     key=lambda o: (key_order[o.key], o.a, o.b))
    return participants, ordered, stats

