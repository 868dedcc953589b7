"""Bounds from the runs themselves: an ensemble's envelope, bounds from it, and a stated
false-positive rate (docs/calibrate.md).

An ensemble is a list of *members*: one (box, replica) output each. Per key, every pair
of members is compared with the canonical kernel (through the compare engine, streamed
chunk by chunk); the per-step divergence of every pair is kept (a few floats per step,
never an array). From those series:

- the envelope `env[t] = max over pairs of max_i |a[t,i] - b[t,i]|`;
- the per-step bound `F * env[t]` and a per-key bound (`atol = F * max_t env[t]`, or
  `rtol = F * max over pairs of max_rel` when the key's scale varies by more than
  `SCALE_VARIATION` over its steps);
- leave-one-out: for each member m, the per-step bound from the pairs without m, and the
  rows (m, j) tested against it; the false-positive rate is the share of those rows that
  fail. It is exact: under a per-step absolute bound a row fails iff some step's
  divergence exceeds that step's bound, and the per-step divergences are the kernel's.
- the step from which no useful bound exists: the first step where the bound `F*env[t]`
  reaches the data's own range there (`max(spread[t], scale[t])`, spread the largest
  minus the smallest value over every member's elements at step t, scale the largest
  magnitude): such a bound would pass any two values the data take.

Every figure is a max, a min or a count, so it is the same for any chunking or order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Sequence

import numpy as np

from tolerance.io.npz import Archive, normalize_axis

#: a key whose step scale (largest magnitude at a step) varies by more than this factor
#: over its steps gets a relative per-key bound: an absolute one set by its largest steps
#: would pass almost anything at its smallest. 10x is one decade: below it an atol is at
#: most 10x looser than needed anywhere.
SCALE_VARIATION = 10.0
#: leave-one-out false-positive rates above this are warned about (the issue's 5 %)
FPR_WARN = 0.05


@dataclass(frozen=True)
class EnsembleMember:
    """One (box, replica) output of a calibration ensemble."""

    box: str
    replica: int
    path: str

    @property
    def label(self) -> str:
        return f"{self.box}/r{self.replica}"


@dataclass
class KeyEnvelope:
    """Everything calibration measured for one key."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    steps: int
    #: per pair (i, j), i < j over the members: per-step max |a-b| (float64)
    pair_series: dict[tuple[int, int], np.ndarray]
    #: per pair: the row's max relative difference (max |a-b| / max(|a|,|b|))
    pair_max_rel: dict[tuple[int, int], float]
    envelope: np.ndarray          # per step, max over pairs (float64)
    scale: np.ndarray             # per step, max |x| over every member's elements
    spread: np.ndarray            # per step, max x - min x over every member's elements
    problems: list[str] = field(default_factory=list)

    @property
    def envelope_rel(self) -> np.ndarray:
        """The envelope relative to the step's scale (0 where the scale is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(self.scale > 0, self.envelope / np.where(self.scale > 0, self.scale, 1), 0.0)
        return rel


@dataclass
class KeyBounds:
    """The bounds calibration derives for one key."""

    key: str
    atol: float | None
    rtol: float | None
    per_step: np.ndarray | None      # F * envelope (float64), None when no useful bound
    max_envelope: float
    scale_variation: float | None    # max/min of the nonzero step scales (None: no scale)
    no_useful_bound_from: int | None
    false_positive_rate: float | None
    held_out_rows: int
    held_out_failures: int
    #: why the per-key bound is what it is (one sentence, for the report)
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol,
                "per_step": self.per_step is not None,
                "max_envelope": self.max_envelope,
                "scale_variation": self.scale_variation,
                "no_useful_bound_from": self.no_useful_bound_from,
                "false_positive_rate": self.false_positive_rate,
                "held_out_rows": self.held_out_rows,
                "held_out_failures": self.held_out_failures,
                "rule": self.rule}


def _step_ranges(archive: Archive, key: str, ax: int | None, steps: int,
                 budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step: max |x|, max x, min x of one member's key (NaN ignored; streamed)."""
    member = archive[key]
    scale = np.zeros(steps)
    hi = np.full(steps, -np.inf)
    lo = np.full(steps, np.inf)
    t = 0
    for chunk in member.chunks(ax, budget=budget):
        x = np.asarray(chunk)
        if ax is None:
            block = x.reshape(1, -1).astype(np.float64, copy=False)
            k = 0
        else:
            block = np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1).astype(np.float64, copy=False)
            k = block.shape[0]
        if block.size == 0:
            t += k
            continue
        finite = np.where(np.isfinite(block), block, np.nan)
        has = ~np.all(np.isnan(finite), axis=1)
        safe = np.where(has[:, None], finite, 0.0)   # all-NaN steps: no warning, masked below
        bmax = np.where(has, np.nanmax(safe, axis=1), -np.inf)
        bmin = np.where(has, np.nanmin(safe, axis=1), np.inf)
        babs = np.where(has, np.nanmax(np.abs(safe), axis=1), 0.0)
        sl = slice(0, 1) if ax is None else slice(t, t + k)
        scale[sl] = np.fmax(scale[sl], babs)
        hi[sl] = np.fmax(hi[sl], bmax)
        lo[sl] = np.fmin(lo[sl], bmin)
        t += k
    return scale, hi, lo


def measure(members: Sequence[EnsembleMember], keys: Sequence[str] | None, *,
            steps_axis: int | None = 0, budget: int | None = None,
            threads: int | None = None) -> tuple[list[KeyEnvelope], list[str]]:
    """Every pair of members compared on every key (the compare engine); per-step ranges.

    Returns the envelopes and the problems (a key missing somewhere, a pair that could
    not be measured): a key with a problem gets no envelope.
    """
    from tolerance.compare.engine import diff_inputs, open_inputs
    from tolerance.compare.rows import UNMEASURED
    from tolerance.config.spec import Bounds
    from tolerance.io.npz import DEFAULT_CHUNK_BYTES

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    budget = DEFAULT_CHUNK_BYTES if budget is None else budget
    labels = [m.label for m in members]
    inputs = open_inputs([m.path for m in members], labels)
    problems: list[str] = []
    try:
        result = diff_inputs(inputs, keys=keys, bound=Bounds(), steps_axis=steps_axis,
                             threads=threads, budget=budget)
        problems.extend(f"key {p.key!r} is only in {', '.join(p.have)} (missing in "
                        f"{', '.join(p.lack)}): not compared" for p in result.partial)
        problems.extend(f"key {m.key!r} is missing in {', '.join(m.lack)}"
                        for m in result.missing)
        bad: set[str] = set()
        for row in result.rows:
            if row.status == UNMEASURED:
                bad.add(row.key)
                problems.append(f"key {row.key!r}: {row.a} vs {row.b}: {row.reason}")
        out: list[KeyEnvelope] = []
        index = {lab: i for i, lab in enumerate(labels)}
        for key in result.keys:
            if key in bad or key not in inputs[0].archive:
                continue
            m0 = inputs[0].archive[key]
            shape = tuple(m0.shape)
            ax = normalize_axis(steps_axis, len(shape))
            steps = 1 if ax is None else shape[ax]
            pair_series: dict[tuple[int, int], np.ndarray] = {}
            pair_rel: dict[tuple[int, int], float] = {}
            for row in result.rows:
                if row.key != key:
                    continue
                p = (index[row.a], index[row.b])
                pair_series[p] = np.asarray(row.series, dtype=np.float64)
                pair_rel[p] = float(row.max_rel or 0.0)
            env = np.zeros(steps)
            for s in pair_series.values():
                env = np.fmax(env, s)
            scale = np.zeros(steps)
            hi = np.full(steps, -np.inf)
            lo = np.full(steps, np.inf)
            for d in inputs:
                sc, h, low = _step_ranges(d.archive, key, ax, steps, budget)
                scale, hi, lo = np.fmax(scale, sc), np.fmax(hi, h), np.fmin(lo, low)
            spread = np.where(np.isfinite(hi) & np.isfinite(lo), hi - lo, 0.0)
            out.append(KeyEnvelope(key=key, shape=shape, dtype=m0.dtype.name, steps=steps,
                                   pair_series=pair_series, pair_max_rel=pair_rel,
                                   envelope=env, scale=scale, spread=spread))
        return out, problems
    finally:
        for d in inputs:
            d.archive.close()


def _envelope_without(env: KeyEnvelope, m: int) -> np.ndarray:
    out = np.zeros(env.steps)
    for (i, j), s in env.pair_series.items():
        if m not in (i, j):
            out = np.fmax(out, s)
    return out


def leave_one_out(env: KeyEnvelope, n_members: int, factor: float) -> tuple[int, int]:
    """(rows, failures): every member held out in turn, its rows (m, j) tested against
    the per-step bound `factor * envelope` of the pairs without m."""
    rows = fails = 0
    for m in range(n_members):
        allowed = factor * _envelope_without(env, m)
        for j in range(n_members):
            if j == m:
                continue
            s = env.pair_series[(min(m, j), max(m, j))]
            rows += 1
            # a NaN step (a NaN/inf mismatch in the pair) fails whatever the bound
            if bool(np.any(~(s <= allowed))):
                fails += 1
    return rows, fails


def no_useful_bound_from(env: KeyEnvelope, factor: float) -> int | None:
    """The first step whose bound `factor * env[t]` reaches the data's own range there."""
    reach = np.maximum(env.spread, env.scale)
    useless = (factor * env.envelope >= reach) & (reach > 0) & (env.envelope > 0)
    hit = np.flatnonzero(useless)
    return int(hit[0]) if hit.size else None


def derive_bounds(env: KeyEnvelope, n_members: int, factor: float) -> KeyBounds:
    """The bounds of one key from its envelope (module docstring)."""
    max_env = float(np.max(env.envelope)) if env.steps else 0.0
    nz = env.scale[env.scale > 0]
    variation = float(nz.max() / nz.min()) if nz.size else None
    useless = no_useful_bound_from(env, factor)
    rows, fails = leave_one_out(env, n_members, factor) if n_members >= 3 else (0, 0)
    fpr = (fails / rows) if rows else None
    if useless is not None:
        return KeyBounds(env.key, None, None, None, max_env, variation, useless, fpr, rows,
                         fails, f"no useful bound from step {useless}: {factor:g} x the "
                                f"envelope reaches the data's own range there")
    if variation is not None and variation > SCALE_VARIATION:
        rel = max(env.pair_max_rel.values(), default=0.0)
        rtol = factor * rel if math.isfinite(rel) else None
        return KeyBounds(env.key, None, rtol, factor * env.envelope, max_env, variation,
                         None, fpr, rows, fails,
                         f"rtol: the step scale varies {variation:.3g}x (> {SCALE_VARIATION:g}x)")
    return KeyBounds(env.key, factor * max_env, None, factor * env.envelope, max_env,
                     variation, None, fpr, rows, fails,
                     "atol: the step scale is steady" if variation is not None
                     else "atol: the key is all zeros")


def calibrate(members: Sequence[EnsembleMember], keys: Sequence[str] | None, *,
              factor: float = 2.0, steps_axis: int | None = 0, budget: int | None = None,
              threads: int | None = None) -> tuple[list[KeyEnvelope], list[KeyBounds], list[str]]:
    """Measure the ensemble and derive every key's bounds."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    envs, problems = measure(members, keys, steps_axis=steps_axis, budget=budget,
                             threads=threads)
    bounds = [derive_bounds(e, len(members), factor) for e in envs]
    return envs, bounds, problems


def member_pairs(n: int) -> list[tuple[int, int]]:
    return list(combinations(range(n), 2))
