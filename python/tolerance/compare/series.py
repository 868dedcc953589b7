"""The `tolerance.series/1` layout of a series .npz: every row's per-step figures.

One .npz (written by `tolerance run` as `series.npz`, and by `tolerance diff --series`):

- `meta`: a 1-D uint8 array, the UTF-8 bytes of one JSON object
  `{"schema": "tolerance.series/1", "steps_axis": 0 | null, "rows": [ROW, ...]}`;
  each ROW is `{"a", "b", "key", "status", "onset", "bound": {"atol", "rtol", "ulp"},
  "arrays": {"step": NAME, "max_abs": NAME, "over": NAME[, "margin": NAME]}}`, where
  every NAME is the key of a member of the same .npz (today `row<i>.<field>`; read the
  names from `arrays`, never guess them).
- per row, 1-D arrays of one length (the row's steps): `step` int64 (the step index),
  `max_abs` float64 (`d[t] = max_i |a[t,i] − b[t,i]|`), `over` int64 (elements outside
  the bound at that step), and, when the kernel measured it, `margin` float64 (the
  row's margin at that step).

Only measured rows are listed. Nothing is pickled: the metadata is JSON in a byte array.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from tolerance._errors import FormatError

SCHEMA = "tolerance.series/1"
META_KEY = "meta"
#: the per-step arrays of a row; margin is optional
FIELDS = ("step", "max_abs", "over", "margin")
_DTYPES = {"step": np.int64, "max_abs": np.float64, "over": np.int64, "margin": np.float64}
_KINDS = {"step": "iu", "max_abs": "f", "over": "iu", "margin": "f"}
_META_CAP = 64 << 20  # bytes of JSON metadata read at most


@dataclass
class RowSeries:
    """One row's identity, bound and per-step series."""

    a: str
    b: str
    key: str
    bound: dict[str, Any]
    max_abs: np.ndarray
    over: np.ndarray
    status: str = "pass"
    onset: int | None = None
    margin: np.ndarray | None = None
    step: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.max_abs = np.asarray(self.max_abs, dtype=np.float64).reshape(-1)
        self.over = np.asarray(self.over, dtype=np.int64).reshape(-1)
        self.step = (np.arange(self.max_abs.size, dtype=np.int64) if self.step is None
                     else np.asarray(self.step, dtype=np.int64).reshape(-1))
        if self.margin is not None:
            self.margin = np.asarray(self.margin, dtype=np.float64).reshape(-1)
        for name in ("over", "step", "margin"):
            arr = getattr(self, name)
            if arr is not None and arr.size != self.max_abs.size:
                raise ValueError(f"{self.a} vs {self.b} {self.key}: {name} has {arr.size} "
                                 f"steps, max_abs {self.max_abs.size}")


@dataclass
class SeriesFile:
    """A read-back series .npz."""

    path: str
    steps_axis: int | None
    rows: list[RowSeries] = field(default_factory=list)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(r.key for r in self.rows))


def series_arrays(rows: Sequence[RowSeries], *, steps_axis: int | None = 0
                  ) -> dict[str, np.ndarray]:
    """The members of a `tolerance.series/1` .npz for these rows."""
    out: dict[str, np.ndarray] = {}
    meta_rows = []
    for i, r in enumerate(rows):
        names = {}
        for f in FIELDS:
            arr = getattr(r, f)
            if arr is None:
                continue
            names[f] = f"row{i}.{f}"
            out[names[f]] = np.ascontiguousarray(arr, dtype=_DTYPES[f])
        meta_rows.append({"a": r.a, "b": r.b, "key": r.key, "status": r.status,
                          "onset": r.onset, "bound": _bound(r.bound), "arrays": names})
    meta = {"schema": SCHEMA, "steps_axis": steps_axis, "rows": meta_rows}
    text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    out[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
    return out


def _bound(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"atol": b.get("atol"), "rtol": b.get("rtol"), "ulp": b.get("ulp")}


def _read_1d(member: Any) -> np.ndarray:
    parts = list(member.chunks(None))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def read_series(path: str | os.PathLike[str]) -> SeriesFile:
    """Read a `tolerance.series/1` .npz back; FormatError naming the file and key."""
    from tolerance.io.npz import open_npz

    p = str(path)
    with open_npz(p) as arch:
        if META_KEY not in arch:
            raise FormatError(f"{p}: {META_KEY}: missing: not a {SCHEMA} file "
                              f"(write one with `tolerance diff --series` or `tolerance run`)")
        m = arch[META_KEY]
        if m.dtype != np.uint8 or len(m.shape) != 1:
            raise FormatError(f"{p}: {META_KEY}: must be a 1-D uint8 array of JSON, "
                              f"got {m.dtype} {m.shape}")
        if m.shape[0] > _META_CAP:
            raise FormatError(f"{p}: {META_KEY}: {m.shape[0]} bytes, over the "
                              f"{_META_CAP} bytes a series file's metadata may hold")
        try:
            meta = json.loads(_read_1d(m).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"{p}: {META_KEY}: not JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
            got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
            raise FormatError(f"{p}: {META_KEY}: schema {got!r}, expected {SCHEMA!r}")
        steps_axis = meta.get("steps_axis")
        if steps_axis is not None and not isinstance(steps_axis, int):
            raise FormatError(f"{p}: {META_KEY}: steps_axis must be an integer or null")
        rows_meta = meta.get("rows")
        if not isinstance(rows_meta, list):
            raise FormatError(f"{p}: {META_KEY}: rows must be a list")
        out = SeriesFile(p, steps_axis)
        for i, rm in enumerate(rows_meta):
            out.rows.append(_read_row(p, arch, i, rm))
    return out


def _read_row(p: str, arch: Any, i: int, rm: Any) -> RowSeries:
    where = f"{p}: {META_KEY}: rows[{i}]"
    if not isinstance(rm, dict):
        raise FormatError(f"{where}: must be an object")
    for f in ("a", "b", "key", "status"):
        if not isinstance(rm.get(f), str):
            raise FormatError(f"{where}.{f}: must be a string")
    onset = rm.get("onset")
    if onset is not None and (not isinstance(onset, int) or isinstance(onset, bool)):
        raise FormatError(f"{where}.onset: must be an integer or null")
    bound = rm.get("bound")
    if not isinstance(bound, dict):
        raise FormatError(f"{where}.bound: must be an object")
    for f, kinds in (("atol", (int, float)), ("rtol", (int, float)), ("ulp", (int,))):
        v = bound.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kinds)):
            raise FormatError(f"{where}.bound.{f}: must be a number or null")
    names = rm.get("arrays")
    if not isinstance(names, dict):
        raise FormatError(f"{where}.arrays: must be an object")
    arrays: dict[str, np.ndarray] = {}
    for f in FIELDS:
        name = names.get(f)
        if name is None and f == "margin":
            continue
        if not isinstance(name, str):
            raise FormatError(f"{where}.arrays.{f}: must name a member")
        if name not in arch:
            raise FormatError(f"{p}: {name}: missing (named by rows[{i}].arrays.{f})")
        mem = arch[name]
        if len(mem.shape) != 1 or mem.dtype.kind not in _KINDS[f]:
            raise FormatError(f"{p}: {name}: must be a 1-D {_DTYPES[f].__name__} array, "
                              f"got {mem.dtype} {mem.shape}")
        arrays[f] = _read_1d(mem)
    n = arrays["max_abs"].size
    for f, arr in arrays.items():
        if arr.size != n:
            raise FormatError(f"{p}: {names[f]}: {arr.size} steps, its row's max_abs has {n}")
    return RowSeries(a=rm["a"], b=rm["b"], key=rm["key"], bound=_bound(bound),
                     status=rm["status"], onset=onset, **arrays)
