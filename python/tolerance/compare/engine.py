"""The one pair engine: every pair (i<j) of N participants, every key, block by block.

Used by `tolerance diff` through the local transport (every input on this process) and by
`tolerance run` through the MPI transport (collective.exchange). Per key:

1. every participant's (shape, dtype) is known first (`Transport.gather_metas`); a pair
   that cannot be compared becomes an unmeasured row with a reason code;
2. pairs that can be measured are grouped by shape; each group is cut into blocks by the
   one block planner (`io.npz.plan_blocks`, with the group's real element size);
3. per block, every participant's block is hashed (xxh3-128) and the digests are shared
   (`Transport.share_digests`, which returns at once: the next blocks are read and hashed
   while block b's digests travel, and block b is folded up to `pipeline_depth` blocks
   later): a pair whose blocks have
   equal digests folds the owner's block as an equal block (`Accumulator.update_equal`:
   exactly what comparing the two gives, from a pass that only counts NaNs, made while the
   block is hashed when the owner's pairs were equal in the last folded block, so that the
   data is read from memory once) and moves no data; otherwise the other side's block is
   moved to the pair's owner once (`Transport.move`);
4. every pair has one `Accumulator` (the one canonical kernel); its result is the row.

Peak memory is O(block x participants on this process) whatever the array size: the block
being folded, those hashed and waiting for their digests (PENDING_BYTES of them at most, and
at least one), and the one being read ahead.
"""
from __future__ import annotations

import math
import os
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from tolerance.compare.rows import (KERNEL_REFUSED, KEY_NOT_EVERYWHERE, MISSING_KEY, NO_OUTPUT,
                                    SCHEMA, Problem, Row, as_bound, incompatibility,
                                    measured_row, rows_exit_code, unmeasured_row)
from tolerance.io.digest import block_digest
from tolerance.io.npz import DEFAULT_CHUNK_BYTES, Archive, normalize_axis, plan_blocks

_END = object()

def unique_labels(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A short unique label per input: the file name; where file names repeat, the parent
    directory name (more of the path while still ambiguous); a `#N` suffix as a last resort."""
    ps = [Path(p) for p in paths]
    labels = [p.name for p in ps]
    names = Counter(labels)
    depth = {i: 1 for i, p in enumerate(ps) if names[p.name] > 1}

    def tail(p: Path, n: int) -> str:
        parts = p.absolute().parent.parts
        t = parts[max(1, len(parts) - n):] if len(parts) > 1 else ()
        return "/".join(t) or p.name

    for i in depth:
        labels[i] = tail(ps[i], 1)
    for _ in range(64):
        counts = Counter(labels)
        dup = [i for i in depth if counts[labels[i]] > 1]
        if not dup:
            break
        grew = False
        for i in dup:
            new = tail(ps[i], depth[i] + 1)
            if new != labels[i]:
                depth[i] += 1
                labels[i] = new
                grew = True
        if not grew:
            break
    seen: Counter[str] = Counter()
    out = []
    for lab in labels:
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    # a suffixed label could collide with a real one; keep suffixing until unique
    while len(set(out)) != len(out):
        c = Counter(out)
        out = [lab + "#" if c[lab] > 1 and k else lab
               for k, lab in enumerate(out)]
    return out


def _drive(gens: list[Iterator[np.ndarray]], prefetch: bool = True
           ) -> Iterator[list[np.ndarray]]:
    """Chunk c of every input, together; every generator is run to its end (so the
    inflaters' end-of-stream and CRC checks run).

    prefetch: read chunk c+1 of every input in worker threads (one per input, up to the
    cores) while the caller folds chunk c (inflating, mapping and the kernel all release
    the GIL): at most two chunk sets are alive at once, still O(chunk x inputs).
    """
    def step() -> list[Any] | None:
        chunks = [next(g, _END) for g in gens]
        ended = [c is _END for c in chunks]
        if all(ended):
            return None
        if any(ended):  # same shape and chunk plan: cannot happen
            raise RuntimeError("inputs yielded different numbers of chunks")
        return chunks

    if not prefetch:
        while (chunks := step()) is not None:
            yield chunks
            del chunks
        return

    # one worker per input (up to the cores): inputs are read/inflated in parallel, one
    # chunk ahead; a generator is only ever advanced by one task at a time
    workers = max(1, min(len(gens), os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tolerance-read")

    def fetch() -> list[Future]:
        return [pool.submit(next, g, _END) for g in gens]

    pending: list[Future] | None = fetch()
    try:
        while pending is not None:
            chunks = [f.result() for f in pending]
            pending = None
            ended = [c is _END for c in chunks]
            if all(ended):
                return
            if any(ended):  # same shape and chunk plan: cannot happen
                raise RuntimeError("inputs yielded different numbers of chunks")
            pending = fetch()
            yield chunks
            del chunks
    finally:
        if pending is not None:
            for f in pending:  # let running reads finish before the generators are closed
                f.cancel()
            wait(pending)
        pool.shutdown(wait=True)


# --------------------------------------------------------------------------- sources, transports

class BlockSource(Protocol):
    """One participant's arrays, read block by block (never whole)."""

    label: str

    def meta(self, key: str) -> "tuple[tuple[int, ...], str] | Problem":
        """(shape, dtype.str) of `key`, or the Problem why it cannot be read."""

    def blocks(self, key: str, steps_axis: int | None, per_block: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of `per_block` steps along `steps_axis` (flat C-order pieces
        of `per_block` elements when it is None), in order, each once."""


class DigestShare(Protocol):
    """The digests of one block on their way (`Transport.share_digests`)."""

    def wait(self) -> dict[int, bytes]:
        """Every member's digest of the block (waits for the other places' own)."""


class Transport(Protocol):
    """Where participants live and how facts, digests and blocks travel between them."""

    here: int                                    # this process's place (an MPI rank; 0 locally)

    def where(self, participant: int) -> int:
        """The place holding `participant`."""

    def gather_metas(self, local: dict[int, Any]) -> dict[int, Any]:
        """Every participant's meta from each place's own."""

    def share_digests(self, local: dict[int, bytes], members: Sequence[int]) -> "DigestShare":
        """Start sharing the digests of the current block: `local` holds those of the
        members (of one shape group, all of `members`) held here. Returns at once; the
        handle's `wait()` gives every member's digest. Only places that hold a member call
        it, for every block of the group, in the same order."""

    def move(self, blocks: dict[int, np.ndarray], wanted: Sequence[tuple[int, int]],
             block_shape: tuple[int, ...], dtypes: Mapping[int, str]) -> dict[int, np.ndarray]:
        """Send each (participant, place) of `wanted` whose block is here to that place;
        return the blocks received here. Returns after every send completed."""


@dataclass
class EngineStats:
    bytes_sent: int = 0          # data bytes (array payloads) this process sent
    blocks: int = 0              # blocks hashed here
    blocks_equal: int = 0        # (pair, block) folds that moved no data


@dataclass
class PairOutcome:
    """One (a, b, key) as the engine leaves it: an accumulator, or the problem."""

    a: int
    b: int
    key: str
    shape: tuple[int, ...] | None = None
    acc: Any = None              # Accumulator (its bytes while it travels to rank 0)
    problem: Problem | None = None


def pair_owner(i: int, j: int, n: int) -> int:
    """The participant (i or j, i < j) whose place computes the pair, balanced round-robin.

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


@dataclass
class _Shared:
    """Digests already all here."""

    digests: dict[int, bytes]

    def wait(self) -> dict[int, bytes]:
        return self.digests


class LocalTransport:
    """Every participant on this process: nothing travels."""

    here = 0

    def where(self, participant: int) -> int:
        return 0

    def gather_metas(self, local: dict[int, Any]) -> dict[int, Any]:
        return dict(local)

    def share_digests(self, local: dict[int, bytes], members: Sequence[int]) -> "_Shared":
        return _Shared(dict(local))

    def move(self, blocks, wanted, block_shape, dtypes) -> dict[int, np.ndarray]:
        if wanted:
            raise RuntimeError("the local transport has nothing to move")
        return {}


def safe_meta(src: BlockSource, key: str):
    """A source's meta; a reader's error becomes the participant's problem for this key."""
    try:
        return src.meta(key)
    except Exception as exc:  # noqa: BLE001 - the row's reason, not a crash
        return Problem(NO_OUTPUT, f"{src.label}: {type(exc).__name__}: {exc}")


def pair_problem(labels: Sequence[str], i: int, j: int, metas: Mapping[int, Any],
                 ulp: int | None, steps_axis: int | None) -> Problem | None:
    """Why pair (i, j) cannot be compared, or None."""
    mi, mj = metas[i], metas[j]
    probs = [(labels[k], m) for k, m in ((i, mi), (j, mj)) if isinstance(m, Problem)]
    other = [(lab, p) for lab, p in probs if p.code != MISSING_KEY]
    if other:
        return other[0][1]
    if probs:
        return Problem(MISSING_KEY, "missing key in " + " and ".join(lab for lab, _ in probs))
    (sa, da), (sb, db) = mi, mj
    return incompatibility(tuple(sa), np.dtype(da), tuple(sb), np.dtype(db), ulp=ulp,
                           steps_axis=steps_axis)


def _block_shape(shape, axis, lo, hi) -> tuple[int, ...]:
    if axis is None:
        return (hi - lo,)  # flat pieces of the one step
    s = list(shape)
    s[axis] = hi - lo
    return tuple(s)


# --------------------------------------------------------------------------- the engine

def compare_key(transport: Transport, local: Mapping[int, BlockSource], labels: Sequence[str],
                key: str, bound: Any, steps_axis: int | None, *,
                failed: Mapping[int, Problem] | None = None, threads: int | None = None,
                budget: int = DEFAULT_CHUNK_BYTES, stats: EngineStats | None = None,
                progress: Callable[[str, int, int], None] | None = None,
                prefetch: bool = True) -> list[PairOutcome]:
    """Every pair of the participants on `key`: the outcomes of the pairs this place
    computes, and (at place 0) of every pair that cannot be measured.

    `local` maps participant index -> its source, for the participants held here;
    `failed` gives the participants (anywhere) that have no output at all. Every place
    calls this with the same key order: the transport's collective steps line up.
    """
    stats = stats if stats is not None else EngineStats()
    bound = as_bound(bound)
    n = len(labels)
    metas = transport.gather_metas({i: safe_meta(src, key) for i, src in local.items()})
    metas.update(failed or {})
    out: list[PairOutcome] = []
    groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for i, j in combinations(range(n), 2):
        why = pair_problem(labels, i, j, metas, bound.ulp, steps_axis)
        if why is not None:
            if transport.here == 0:
                out.append(PairOutcome(i, j, key, problem=why))
            continue
        groups.setdefault(tuple(metas[i][0]), []).append((i, j))

    for shape, pairs in sorted(groups.items()):
        out += _compare_group(transport, local, key, shape, pairs, n, metas, bound, steps_axis,
                              threads=threads, budget=budget, stats=stats, progress=progress,
                              prefetch=prefetch)
    return out


#: bytes of hashed blocks a place may hold while their digests travel (beyond the block
#: being folded): on a box with more ranks than cores a rank is off its core for a time
#: slice (milliseconds, a few blocks' hashing), and with blocks in hand its peers hash on
#: instead of waiting for its digests; with one block in hand the ranks go in lockstep
#: (bench/mpi_run.py, 3 ranks on 2 cores, identical boxes: 1.20x one read at depth 1,
#: 1.08x at depth 6, 16 MiB blocks)
PENDING_BYTES = 64 << 20
#: at most this many blocks in flight (their digests are 16 bytes each: depth costs memory,
#: not messages)
MAX_DEPTH = 8


def pipeline_depth(block_bytes: int, members_here: int) -> int:
    """How many hashed blocks wait for their digests before the oldest is folded: as many
    as PENDING_BYTES holds (1 to MAX_DEPTH)."""
    held = max(1, block_bytes * max(1, members_here))
    return max(1, min(MAX_DEPTH, PENDING_BYTES // held))


@dataclass
class _Pending:
    """One block of a shape group between its hash and its fold: this place's blocks, the
    equal scans made while hashing, and the digest share in flight."""

    lo: int
    hi: int
    blocks: dict[int, np.ndarray]
    scans: dict[int, Any]
    share: DigestShare


def _compare_group(transport: Transport, local: Mapping[int, BlockSource], key: str,
                   shape: tuple[int, ...], pairs: list[tuple[int, int]], n: int,
                   metas: Mapping[int, Any], bound: Any, steps_axis: int | None, *,
                   threads: int | None, budget: int, stats: EngineStats,
                   progress: Callable[[str, int, int], None] | None,
                   prefetch: bool) -> list[PairOutcome]:
    """The outcomes of the pairs of one shape group that this place owns.

    Pipelined `pipeline_depth` blocks deep: block b is read and hashed, its digests start
    travelling (`Transport.share_digests`), and only then are block b-depth's digests waited
    for and that block moved and folded; so a place never waits for digests it could be
    hashing past, and a peer that lost its core for a while does not stall the others.
    A place holding no member of the group has nothing to do and no message to expect.
    """
    from tolerance.compare.kernel import Accumulator, EqualScan

    members = sorted({k for p in pairs for k in p})
    mine = [k for k in members if k in local]
    if not mine:
        return []
    ax = normalize_axis(steps_axis, len(shape))
    itemsize = max(np.dtype(metas[k][1]).itemsize for k in members)
    per, ranges = plan_blocks(shape, ax, itemsize, budget)
    owned = [(i, j) for i, j in pairs if transport.where(pair_owner(i, j, n)) == transport.here]
    accs = {p: Accumulator(atol=bound.atol, rtol=bound.rtol, ulp=bound.ulp, steps_axis=ax,
                           threads=threads) for p in owned}
    dead: dict[tuple[int, int], Problem] = {}
    dtypes = {k: metas[k][1] for k in members}

    def fold(blk: _Pending) -> set[int]:
        """Wait for the block's digests, move what differs, fold every owned pair; the
        owners here whose pairs were equal in it."""
        digests = blk.share.wait()
        wanted: set[tuple[int, int]] = set()
        for i, j in pairs:
            if digests[i] == digests[j]:
                continue
            o = pair_owner(i, j, n)
            other = j if o == i else i
            dest = transport.where(o)
            if transport.where(other) != dest:
                wanted.add((other, dest))
        blocks = blk.blocks
        received = transport.move(blocks, sorted(wanted), _block_shape(shape, ax, blk.lo, blk.hi),
                                  dtypes)
        stats.bytes_sent += sum(blocks[k].nbytes for k, d in wanted if k in blocks)
        equal: set[int] = set()
        for p, acc in accs.items():
            if p in dead:
                continue
            i, j = p
            try:
                if digests[i] == digests[j]:
                    o = pair_owner(i, j, n)
                    acc.update_equal(blocks[o], blk.scans.get(o))
                    equal.add(o)
                    stats.blocks_equal += 1
                else:
                    acc.update(blocks[i] if i in blocks else received[i],
                               blocks[j] if j in blocks else received[j])
            except (TypeError, ValueError) as exc:  # the kernel refuses this pair
                dead[p] = Problem(KERNEL_REFUSED, str(exc).splitlines()[0] if str(exc)
                                  else type(exc).__name__)
        return equal

    # owners (here) expected equal, whose blocks are scanned for the equal fold while they
    # are hashed (the data is read from memory once): at first every owner of a pair here;
    # then those whose pairs were equal in the last folded block
    expect_equal = {pair_owner(i, j, n) for i, j in owned}
    chunks_it = _drive([local[k].blocks(key, ax, per) for k in mine], prefetch=prefetch)
    pending: deque[_Pending] = deque()
    # a block holds `per` steps, or `per` elements with no steps axis
    step_size = 1 if ax is None else math.prod(shape[:ax] + shape[ax + 1:])
    depth = pipeline_depth(per * step_size * itemsize, len(mine))
    for b, (lo, hi) in enumerate(ranges):
        if progress is not None and transport.here == 0:
            progress(key, b, len(ranges))
        blocks = dict(zip(mine, next(chunks_it)))
        if len(blocks) != len(mine):
            raise RuntimeError(f"{key}: the readers yielded fewer blocks than the plan "
                               f"({len(ranges)})")
        scans = {k: EqualScan(x, ax, threads=threads) for k, x in blocks.items()
                 if k in expect_equal}
        digests = {k: block_digest(x, scans[k].add if k in scans and scans[k].by_pieces
                                   else None) for k, x in blocks.items()}
        stats.blocks += len(blocks)
        share = transport.share_digests(digests, members)
        pending.append(_Pending(lo, hi, blocks, scans, share))
        del blocks, scans
        if len(pending) > depth:
            expect_equal = fold(pending.popleft())
    while pending:
        fold(pending.popleft())
    if next(chunks_it, None) is not None:
        raise RuntimeError(f"{key}: the readers yielded more blocks than the plan "
                           f"({len(ranges)})")
    out = []
    for p, acc in accs.items():
        if p in dead:
            out.append(PairOutcome(*p, key, problem=dead[p]))
        else:
            out.append(PairOutcome(*p, key, shape=tuple(shape), acc=acc))
    return out


def outcome_rows(outcomes: Sequence[PairOutcome], labels: Sequence[str], keys: Sequence[str],
                 bounds_for: Callable[[str], Any]) -> list[Row]:
    """Rows in (key, a, b) order from the outcomes of every place."""
    from tolerance.compare.kernel import Accumulator

    order = {k: q for q, k in enumerate(keys)}
    rows = []
    for o in sorted(outcomes, key=lambda o: (order[o.key], o.a, o.b)):
        a, b, bound = labels[o.a], labels[o.b], bounds_for(o.key)
        if o.problem is not None:
            rows.append(unmeasured_row(a, b, o.key, o.problem, bound))
            continue
        acc = Accumulator.from_bytes(o.acc) if isinstance(o.acc, (bytes, bytearray)) else o.acc
        rows.append(measured_row(a, b, o.key, acc.result(o.shape), bound))
    return rows


# --------------------------------------------------------------------------- diff: local inputs

class MemberSource:
    """One array member (or None where the input lacks the key) as a BlockSource."""

    def __init__(self, label: str, member: Any) -> None:
        self.label = label
        self.member = member

    def meta(self, key: str):
        if self.member is None:
            return Problem(MISSING_KEY, f"key {key!r} is missing from {self.label}")
        return tuple(self.member.shape), self.member.dtype.str

    def blocks(self, key: str, steps_axis: int | None, per_block: int) -> Iterator[np.ndarray]:
        return self.member.chunks(steps_axis, per_block)


def compare_members(members: Sequence[Any], labels: Sequence[str], key: str, bound: Any, *,
                    steps_axis: int | None = 0, threads: int | None = None,
                    budget: int = DEFAULT_CHUNK_BYTES) -> list[Row]:
    """The rows (pairs i<j) of one key over io members on this process (None: lacking)."""
    local = {i: MemberSource(lab, m) for i, (lab, m) in enumerate(zip(labels, members))}
    outcomes = compare_key(LocalTransport(), local, labels, key, bound, steps_axis,
                           threads=threads, budget=budget)
    return outcome_rows(outcomes, labels, [key], lambda _k: bound)


@dataclass
class DiffInput:
    label: str
    path: str
    archive: Archive

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "path": self.path,
                "keys": {k: {"shape": list(m.shape), "dtype": m.dtype.name}
                         for k, m in self.archive.members.items()}}

    def meta(self, key: str):
        m = self.archive.members.get(key)
        if m is None:
            return Problem(MISSING_KEY, f"key {key!r} is missing from {self.path}")
        return tuple(m.shape), m.dtype.str

    def blocks(self, key: str, steps_axis: int | None, per_block: int) -> Iterator[np.ndarray]:
        return self.archive.members[key].chunks(steps_axis, per_block)


@dataclass(frozen=True)
class PartialKey:
    """A key that some inputs lack (diff compares it only when asked for by name)."""

    key: str
    have: list[str]
    lack: list[str]


@dataclass(frozen=True)
class MissingKey:
    """A key asked for by name that some inputs lack."""

    key: str
    lack: list[str]


@dataclass
class DiffResult:
    inputs: list[dict[str, Any]]
    bound: Any
    steps_axis: int | None
    keys: list[str]
    rows: list[Row] = field(default_factory=list)
    partial: list[PartialKey] = field(default_factory=list)   # left out: not in every input
    missing: list[MissingKey] = field(default_factory=list)
    stats: EngineStats = field(default_factory=EngineStats)

    @property
    def exit_code(self) -> int:
        return rows_exit_code(self.rows)


def diff_inputs(inputs: Sequence[DiffInput], *, keys: Sequence[str] | None = None,
                bound: Any, steps_axis: int | None = 0, threads: int | None = None,
                budget: int = DEFAULT_CHUNK_BYTES,
                on_rows: Callable[[list[Row]], None] | None = None,
                on_notice: Callable[[PartialKey | MissingKey], None] | None = None,
                key_bounds: Mapping[str, Any] | None = None) -> DiffResult:
    """Compare every pair of inputs on every key through the local transport; rows come
    back in (key, i, j) order.

    keys None: the keys common to all inputs (in the first input's order); a key present
    in some inputs only is reported in `partial` and gets unmeasured rows (code
    KEY_NOT_EVERYWHERE, or MISSING_KEY for the pairs that lack it). on_rows is called with
    each key's rows as soon as they are done (for streaming console output), on_notice with
    each PartialKey (first) and MissingKey (before that key's rows).
    """
    bound = as_bound(bound)
    # key_bounds: a bound per key (e.g. a calibrated bounds file) over the one `bound`
    per_key = {k: as_bound(b) for k, b in (key_bounds or {}).items()}
    labels = [d.label for d in inputs]
    all_keys: list[str] = []
    for d in inputs:
        for k in d.archive.keys():
            if k not in all_keys:
                all_keys.append(k)
    if keys is None:
        chosen = [k for k in all_keys if all(k in d.archive for d in inputs)]
        partial = [k for k in all_keys if k not in chosen]
    else:
        chosen, partial = list(dict.fromkeys(keys)), []
    result = DiffResult(inputs=[d.describe() for d in inputs], bound=bound,
                        steps_axis=steps_axis, keys=chosen + partial)
    for key in partial:
        pk = PartialKey(key, [labels[i] for i, d in enumerate(inputs) if key in d.archive],
                        [labels[i] for i, d in enumerate(inputs) if key not in d.archive])
        result.partial.append(pk)
        if on_notice:
            on_notice(pk)
    transport = LocalTransport()
    local = dict(enumerate(inputs))
    for key in chosen:
        lack = [labels[i] for i, d in enumerate(inputs) if key not in d.archive]
        if lack:
            result.missing.append(MissingKey(key, lack))
            if on_notice:
                on_notice(result.missing[-1])
        kb = per_key.get(key, bound)
        outcomes = compare_key(transport, local, labels, key, kb, steps_axis,
                               threads=threads, budget=budget, stats=result.stats)
        rows = outcome_rows(outcomes, labels, [key], lambda _k: kb)
        result.rows.extend(rows)
        if on_rows:
            on_rows(rows)
    for key in partial:
        rows = []
        for i, j in combinations(range(len(inputs)), 2):
            gone = [labels[k] for k in (i, j) if key not in inputs[k].archive]
            problem = Problem(MISSING_KEY, "missing key in " + " and ".join(gone)) if gone else \
                Problem(KEY_NOT_EVERYWHERE, "key not in every input")
            rows.append(unmeasured_row(labels[i], labels[j], key, problem,
                                       per_key.get(key, bound)))
        result.rows.extend(rows)
        if on_rows:
            on_rows(rows)
    return result


def open_inputs(paths: Sequence[str | os.PathLike[str]],
                labels: Sequence[str] | None = None) -> list[DiffInput]:
    """Open and validate every input (a directory means its newest .npz by st_mtime)."""
    from tolerance.io.npz import resolve_input

    from tolerance.io.reference import is_reference_dir

    resolved = [resolve_input(p) for p in paths]
    # a reference directory is labelled by its own name, not by its arrays.npz
    named = [Path(p) if is_reference_dir(p) else r for p, r in zip(paths, resolved)]
    labels = list(labels) if labels is not None else unique_labels(named)
    out: list[DiffInput] = []
    try:
        for lab, p in zip(labels, resolved):
            out.append(DiffInput(lab, str(p), Archive(p)))
    except BaseException:
        for d in out:
            d.archive.close()
        raise
    # .npy inputs hold one array keyed by the file's stem; when every input is a .npy and
    # the stems differ (a.npy vs b.npy), they are compared as one key, "array"
    npys = [list(d.archive.members.values()) for d in out]
    if all(len(ms) == 1 and ms[0].method == "npy" for ms in npys) and \
            len({ms[0].key for ms in npys}) > 1:
        for d, (m,) in zip(out, npys):
            d.archive.members = {"array": m}
    return out


__all__ = ["BlockSource", "DiffInput", "DigestShare", "DiffResult", "EngineStats", "LocalTransport",
           "MemberSource", "MissingKey", "PairOutcome", "PartialKey", "SCHEMA", "Transport", "compare_key", "compare_members",
           "diff_inputs", "open_inputs", "outcome_rows", "pair_owner", "unique_labels"]
