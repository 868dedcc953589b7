"""How a divergence drifts: the growth fit of a per-step series and the odd box out.

Both work on figures the kernel already produced (a row's per-step `max_abs` series, the
rows of one key), so they are deterministic functions of bit-identical inputs. The rules,
their thresholds and their limits are written out in docs/drift.md.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: a box is the odd one out when its pairs exceed the others' by at least this factor
OUTLIER_RATIO = 10.0
#: points needed on the growth ramp, and after a plateau's start, to fit either
MIN_POINTS = 3
#: growth must rise at least this many times the scatter of the points around the fit
SCATTER_RISE = 2.0
#: a plateau is accepted when the ramp-then-plateau model leaves at most this fraction
#: of the single line's squared residual
PLATEAU_GAIN = 0.5

_LN2 = math.log(2.0)


def _hinge_sse(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every k, the least-squares fit of y ~ c + r·min(t, t[k]) (a ramp up to t[k],
    flat after): (sse[k], r[k]), all from prefix sums (O(n))."""
    n = y.size
    x = t - t[0]                       # any shift leaves the fit unchanged; this one keeps x >= 0
    cx, cx2, cxy = np.cumsum(x), np.cumsum(x * x), np.cumsum(x * y)
    cy = np.cumsum(y)
    sy, sy2 = cy[-1], float(np.dot(y, y))
    after = n - 1 - np.arange(n)       # points with t > t[k]
    ya = sy - cy                        # sum of y over those points
    sx = cx + x * after
    sx2 = cx2 + x * x * after
    sxy = cxy + x * ya
    vxx = sx2 - sx * sx / n
    vxy = sxy - sx * sy / n
    vyy = sy2 - sy * sy / n
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(vxx > 0, vxy / vxx, 0.0)
    sse = np.maximum(vyy - r * vxy, 0.0)
    return sse, r


def growth_fit(series: Any, steps: Sequence[int] | None = None) -> dict[str, Any] | None:
    """The growth of a per-step divergence `d[t]`, or None when it never grows.

    Fits `log d[t]` over the growth window: from the first step with `0 < d < inf` to
    where it stops growing (the last such step, or the start of a plateau). The model is
    least squares `log d = c + rate·min(t, s)`, a ramp up to step `s` and flat after;
    `s` is searched over every step with at least MIN_POINTS points on the ramp and after
    it, and kept (`saturates_at = s`) when it leaves at most PLATEAU_GAIN of the squared
    residual of one straight line over all points; otherwise the window is the data's
    range and `saturates_at` is None. Steps where d is 0 or not finite are left out of
    the fit. None when fewer than MIN_POINTS points are usable, or when the fit does not
    rise over the window (`rise = rate·(to_step − from_step)`, in log units) by at least
    ln 2 (twofold) and at least SCATTER_RISE times the scatter of the points around the
    fit (the root mean square residual of log d over every usable point).

    Returns `{rate, doubling_steps, from_step, to_step, saturates_at}`: rate is the
    natural-log growth per step, doubling_steps = ln 2 / rate.
    """
    d = np.asarray(series, dtype=np.float64).reshape(-1)
    t_all = (np.arange(d.size, dtype=np.int64) if steps is None
             else np.asarray(steps, dtype=np.int64).reshape(-1))
    if t_all.size != d.size:
        raise ValueError(f"steps has {t_all.size} entries, the series {d.size}")
    ok = np.isfinite(d) & (d > 0)
    if int(ok.sum()) < MIN_POINTS:
        return None
    t = t_all[ok].astype(np.float64)
    y = np.log(d[ok])
    n = y.size
    sse, r = _hinge_sse(t, y)
    k = n - 1                                    # the straight line over every point
    lo, hi = MIN_POINTS - 1, n - 1 - MIN_POINTS  # ramp and plateau each hold >= MIN_POINTS
    if hi >= lo:
        cand = int(lo + np.argmin(sse[lo:hi + 1]))   # ties: the lowest step
        if r[cand] > 0 and sse[cand] < PLATEAU_GAIN * sse[n - 1]:
            k = cand
    rate = float(r[k])
    from_step, to_step = int(t[0]), int(t[k])
    rise = rate * (to_step - from_step)
    scatter = math.sqrt(float(sse[k]) / n)
    if not rate > 0 or rise < _LN2 or rise < SCATTER_RISE * scatter:
        return None
    return {"rate": rate, "doubling_steps": _LN2 / rate, "from_step": from_step,
            "to_step": to_step, "saturates_at": to_step if k < n - 1 else None}


def find_outliers(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The odd box out, per key: `[{box, key, why}]` in key order.

    With three or more boxes on a key (every pair measured), a box is named when every
    pair among the other boxes passes, and its own pairs are far apart: every one fails,
    or the smallest of their `max_abs` is at least OUTLIER_RATIO times the largest
    among the others' pairs (and not 0).
    """
    by_key: dict[str, dict[frozenset, Mapping[str, Any]]] = {}
    boxes: dict[str, list[str]] = {}
    for r in rows:
        key = r["key"]
        by_key.setdefault(key, {})[frozenset((r["a"], r["b"]))] = r
        names = boxes.setdefault(key, [])
        for x in (r["a"], r["b"]):
            if x not in names:
                names.append(x)
    out: list[dict[str, Any]] = []
    for key, pairs in by_key.items():
        names = boxes[key]
        if len(names) < 3:
            continue
        every = [pairs.get(frozenset(p)) for p in combinations(names, 2)]
        if any(r is None or r["status"] == "unmeasured" for r in every):
            continue
        for x in names:
            own = [r for r in every if x in (r["a"], r["b"])]
            rest = [r for r in every if x not in (r["a"], r["b"])]
            if not all(r["status"] == "pass" for r in rest):
                continue
            n_own, n_rest = len(own), len(rest)
            if all(r["status"] == "fail" for r in own):
                why = (f"its {n_own} pairs fail while the {n_rest} "
                       f"pair{'s' if n_rest > 1 else ''} among the others pass")
            else:
                low = min(float(r["max_abs"]) for r in own)
                high = max(float(r["max_abs"]) for r in rest)
                if not (low > 0 and low >= OUTLIER_RATIO * high):
                    continue
                why = (f"its {n_own} pairs differ by max|a-b| >= {low:.2g}, at least "
                       f"{OUTLIER_RATIO:g}x the {n_rest} pair{'s' if n_rest > 1 else ''} "
                       f"among the others (<= {high:.2g})")
            out.append({"box": x, "key": key, "why": why})
    return out
