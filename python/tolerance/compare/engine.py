"""The N-way engine: every pair (i<j) of N inputs, every key, streamed chunk by chunk.

For each key, chunk c of every input is read once and folded into the accumulator of
every pair it belongs to (`tolerance.Accumulator`, the one canonical kernel), then
dropped: peak memory is O(chunk x inputs) whatever the array size.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tolerance.compare.rows import (SCHEMA, incompatibility, row_from_divergence,
                                    row_to_json, rows_exit_code, series_key,
                                    unmeasured_row)
from tolerance.io.npz import DEFAULT_CHUNK_BYTES, Archive, Member, normalize_axis, plan_chunk

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


@dataclass
class DiffInput:
    label: str
    path: str
    archive: Archive

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "path": self.path,
                "keys": {k: {"shape": list(m.shape), "dtype": m.dtype.name}
                         for k, m in self.archive.members.items()}}


@dataclass
class DiffResult:
    inputs: list[dict[str, Any]]
    bounds: dict[str, Any]
    steps_axis: int | None
    keys: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: (a, b, key) -> (per-step max_abs float64, per-step count_over int64), measured rows only
    series: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return rows_exit_code(self.rows)

    def to_json(self) -> dict[str, Any]:
        """The `tolerance.diff/1` document (strict JSON)."""
        return {"schema": SCHEMA, "inputs": self.inputs, "bounds": self.bounds,
                "steps_axis": self.steps_axis,
                "rows": [row_to_json(r) for r in self.rows], "exit_code": self.exit_code}

    def series_arrays(self) -> dict[str, np.ndarray]:
        """`<a>__<b>__<key>__max_abs` and `..__over` for every measured row."""
        out: dict[str, np.ndarray] = {}
        for (a, b, key), (s, over) in self.series.items():
            out[series_key(a, b, key, "max_abs")] = s
            out[series_key(a, b, key, "over")] = over
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


def compare_key(members: Sequence[Member | None], labels: Sequence[str], key: str, *,
                atol: float | None = None, rtol: float | None = None, ulp: int | None = None,
                steps_axis: int | None = 0, threads: int | None = None,
                budget: int = DEFAULT_CHUNK_BYTES,
                ) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], tuple[Any, Any]]]:
    """Rows (pairs i<j, in order) and series for one key across N inputs.

    members[i] is None where input i lacks the key.
    """
    from tolerance.compare.kernel import Accumulator

    n = len(members)
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    live: list[tuple[int, int]] = []
    for i, j in combinations(range(n), 2):
        a, b = members[i], members[j]
        if a is None or b is None:
            missing = [labels[k] for k, m in ((i, a), (j, b)) if m is None]
            rows[i, j] = unmeasured_row(labels[i], labels[j], key,
                                        "missing key in " + " and ".join(missing))
            continue
        why = incompatibility(a.shape, a.dtype, b.shape, b.dtype, ulp=ulp,
                              steps_axis=steps_axis)
        if why:
            rows[i, j] = unmeasured_row(labels[i], labels[j], key, why)
            continue
        live.append((i, j))

    series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
    # pairs that can be measured share a shape within a group: stream each group together
    groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for i, j in live:
        groups.setdefault(members[i].shape, []).append((i, j))  # type: ignore[union-attr]
    for shape, pairs in groups.items():
        used = sorted({k for p in pairs for k in p})
        ax = normalize_axis(steps_axis, len(shape))
        itemsize = max(members[k].file_dtype.itemsize for k in used)  # type: ignore[union-attr]
        per_chunk = plan_chunk(shape, ax, itemsize, budget)
        accs = {p: Accumulator(atol=atol, rtol=rtol, ulp=ulp, steps_axis=ax, threads=threads)
                for p in pairs}
        dead: dict[tuple[int, int], str] = {}
        gens = [members[k].chunks(ax, per_chunk) for k in used]  # type: ignore[union-attr]
        pos = {k: q for q, k in enumerate(used)}
        for chunks in _drive(gens):
            for p in pairs:
                if p in dead:
                    continue
                try:
                    accs[p].update(chunks[pos[p[0]]], chunks[pos[p[1]]])
                except (TypeError, ValueError) as exc:  # the kernel refuses this pair
                    dead[p] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            del chunks
        for p in pairs:
            la, lb = labels[p[0]], labels[p[1]]
            if p in dead:
                rows[p] = unmeasured_row(la, lb, key, dead[p])
                continue
            div = accs[p].result(shape)
            rows[p] = row_from_divergence(la, lb, key, div)
            series[la, lb, key] = (np.asarray(div.series, dtype=np.float64),
                                   np.asarray(div.series_over, dtype=np.int64))
    return [rows[p] for p in sorted(rows)], series


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


def diff_inputs(inputs: Sequence[DiffInput], *, keys: Sequence[str] | None = None,
                atol: float | None = None, rtol: float | None = None, ulp: int | None = None,
                steps_axis: int | None = 0, threads: int | None = None,
                budget: int = DEFAULT_CHUNK_BYTES,
                on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
                on_warning: Callable[[str], None] | None = None) -> DiffResult:
    """Compare every pair of inputs on every key; rows come back in (key, i, j) order.

    keys None: the keys common to all inputs (in the first input's order); a key present
    in some inputs only gets a warning and unmeasured rows. on_rows is called with each
    key's rows as soon as they are done (for streaming console output).
    """
    labels = [d.label for d in inputs]
    all_keys: list[str] = []
    for d in inputs:
        for k in d.archive.keys():
            if k not in all_keys:
                all_keys.append(k)
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        if on_warning:
            on_warning(msg)

    if keys is None:
        common = [k for k in all_keys if all(k in d.archive for d in inputs)]
        partial = [k for k in all_keys if k not in common]
        chosen = common
    else:
        chosen = list(dict.fromkeys(keys))
        partial = []
    result = DiffResult(inputs=[d.describe() for d in inputs],
                        bounds={"atol": atol, "rtol": rtol, "ulp": ulp},
                        steps_axis=steps_axis, keys=chosen + partial, warnings=warnings)
    for key in partial:
        have = [labels[i] for i, d in enumerate(inputs) if key in d.archive]
        lack = [labels[i] for i, d in enumerate(inputs) if key not in d.archive]
        warn(f"(warn) key {key!r} is only in {', '.join(have)} (missing in {', '.join(lack)}): "
             f"not compared (pass --keys to compare the inputs that have it)")
    for key in chosen:
        members = [d.archive.members.get(key) for d in inputs]
        missing = [labels[i] for i, m in enumerate(members) if m is None]
        if missing:
            warn(f"(warn) key {key!r} is missing in {', '.join(missing)}")
        rows, series = compare_key(members, labels, key, atol=atol, rtol=rtol, ulp=ulp,
                                   steps_axis=steps_axis, threads=threads, budget=budget)
        result.rows.extend(rows)
        result.series.update(series)
        if on_rows:
            on_rows(rows)
    for key in partial:
        rows = []
        for i, j in combinations(range(len(inputs)), 2):
            gone = [labels[k] for k in (i, j) if key not in inputs[k].archive]
            reason = ("missing key in " + " and ".join(gone)) if gone else \
                "key not in every input (pass --keys to compare)"
            rows.append(unmeasured_row(labels[i], labels[j], key, reason))
        result.rows.extend(rows)
        if on_rows:
            on_rows(rows)
    return result
