"""Fresh output against a published reference: the rows of `tolerance verify`.

With the reference's arrays, every key goes through the one pair engine
(`compare.engine.compare_members`), the reference as input a and the fresh output as b: the
rows are exactly those `tolerance diff reference/ fresh.npz` prints. A digests-only
reference holds no arrays: a key whose every block digest matches has the same bytes
(its row is the fresh output folded against itself, which is exactly what comparing the
two would give); a key with a differing block cannot be measured, and says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tolerance.compare.engine import compare_members
from tolerance.compare.rows import (DIGESTS_DIFFER, DTYPE_MISMATCH, MISSING_KEY, UNMEASURED,
                                    Problem, Row, incompatibility, rows_exit_code,
                                    unmeasured_row)
from tolerance.config.spec import Bounds
from tolerance.io.digest import DIGEST_ALGORITHM
from tolerance.io.npz import DEFAULT_CHUNK_BYTES, Archive, Member
from tolerance.io.reference import KeyEntry, Reference, key_digests

REFERENCE_LABEL = "reference"


@dataclass
class VerifyResult:
    rows: list[Row] = field(default_factory=list)
    #: one line per key that could not be verified, saying exactly why
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return rows_exit_code(self.rows)


def _bound_of(b: Any) -> Bounds:
    """A Bounds from a bound object or dict (unset fields keep Bounds' defaults)."""
    get = b.get if isinstance(b, dict) else (lambda k: getattr(b, k, None))
    return Bounds(**{k: get(k) for k in ("atol", "rtol", "ulp") if get(k) is not None})


def _digest_row(entry: KeyEntry, fresh: Member, label: str, steps_axis: int | None,
                bound: Bounds, threads: int | None,
                budget: int) -> tuple[Row, str | None]:
    """(row, warning) of one key against a digests-only reference."""
    key = entry.key
    why = incompatibility(entry.shape, entry.dtype, fresh.shape, fresh.dtype,
                          ulp=bound.ulp, steps_axis=steps_axis)
    if why is None and entry.algorithm != DIGEST_ALGORITHM:
        why = Problem(DIGESTS_DIFFER, f"the reference's digests are {entry.algorithm}, this "
                                      f"tolerance makes {DIGEST_ALGORITHM}: the bytes cannot "
                                      "be compared")
    if why is None and fresh.dtype.str != entry.dtype.str:
        why = Problem(DTYPE_MISMATCH, f"dtype {fresh.dtype.str} vs the reference's "
                                      f"{entry.dtype.str}")
    if why is None:
        mine = key_digests(fresh, entry.axis, entry.per_block)
        differ = [i for i, (a, b) in enumerate(zip(entry.blocks, mine)) if a != b]
        if not differ:
            rows = compare_members([fresh, fresh], [REFERENCE_LABEL, label], key, bound,
                                   steps_axis=steps_axis, threads=threads, budget=budget)
            return rows[0], None
        total = entry.shape[entry.axis] if entry.axis is not None else fresh.header.size
        lo = differ[0] * entry.per_block
        hi = min(lo + entry.per_block, total) - 1
        unit = "steps" if entry.axis is not None else "elements"
        why = Problem(DIGESTS_DIFFER,
                      f"digests-only reference: {len(differ)} of {len(mine)} blocks differ, "
                      f"the first at {unit} {lo}-{hi}; the reference holds no arrays, so by "
                      "how much cannot be measured")
    row = unmeasured_row(REFERENCE_LABEL, label, key, why, bound)
    return row, f"cannot verify {key!r} of {label}: {why.message}"


def verify_output(ref: Reference, fresh: Archive, label: str, *,
                  keys: Sequence[str] | None = None,
                  bounds_for: Callable[[str], Any] | None = None,
                  threads: int | None = None,
                  budget: int = DEFAULT_CHUNK_BYTES) -> VerifyResult:
    """Rows of one fresh output against the reference, in the reference's key order.

    keys: the keys the fresh side should hold (the spec's); one the reference lacks
    cannot be verified. bounds_for(key): the bound to use (default: the reference's own).
    """
    steps_axis = ref.steps_axis
    bounds_for = bounds_for or (lambda k: ref.bounds.get(k, {}))
    wanted = list(ref.keys) + [k for k in (keys or ()) if k not in ref.keys]
    result = VerifyResult()
    arrays = None if ref.digests_only else ref.open_arrays()
    try:
        for key in wanted:
            bound = _bound_of(bounds_for(key))
            mine = fresh.members.get(key)
            if key not in ref.keys:
                why = "the reference holds no such key"
                result.rows.append(unmeasured_row(REFERENCE_LABEL, label, key,
                                                  Problem(MISSING_KEY, why), bound))
                result.warnings.append(f"cannot verify {key!r} of {label}: {why}")
                continue
            if mine is None:
                result.rows.append(unmeasured_row(
                    REFERENCE_LABEL, label, key, Problem(MISSING_KEY, f"missing key in {label}"),
                    bound))
                result.warnings.append(f"cannot verify {key!r}: {label} did not write it")
                continue
            if arrays is None:
                row, warning = _digest_row(ref.keys[key], mine, label, steps_axis, bound,
                                           threads, budget)
                result.rows.append(row)
                if warning:
                    result.warnings.append(warning)
                continue
            rows = compare_members([arrays.members[key], mine], [REFERENCE_LABEL, label], key,
                                   bound, steps_axis=steps_axis, threads=threads, budget=budget)
            result.rows.extend(rows)
            for r in rows:
                if r.status == UNMEASURED:
                    result.warnings.append(f"cannot verify {key!r} of {label}: {r.reason}")
    finally:
        if arrays is not None:
            arrays.close()
    return result
