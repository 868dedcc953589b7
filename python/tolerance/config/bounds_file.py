"""Calibrated bounds files, schema `tolerance.bounds/1` (docs/calibrate.md).

`tolerance calibrate STEM` writes `specs/<STEM>.bounds.yaml` (this schema) and a sibling
`.npz` holding each key's per-step envelope and bound. This module reads and validates
the YAML part strictly (every problem one line with its key path) and says whether a
file was made for a given spec; the compare layer reads the sibling arrays.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from tolerance.config._check import Checker, name_problem
from tolerance.config._yaml import SchemaProblems, key_path, load_yaml

SCHEMA = "tolerance.bounds/1"
_TOP = ("schema", "stem", "workload_hash", "code_commit", "boxes", "replicas", "perturb",
        "factor", "steps_axis", "envelope", "keys", "created")
_KEY = ("atol", "rtol", "per_step", "steps", "max_envelope", "scale_variation",
        "no_useful_bound_from", "false_positive_rate", "held_out_rows", "held_out_failures",
        "rule")
#: spec fields that say what runs (not how close): a bounds file belongs to a workload,
#: so a spec may name its bounds file, or change its own bounds, and still match it
_NOT_WORKLOAD = ("bounds", "bounds_file", "keys")


def workload_hash(spec: Any) -> str:
    """sha256 (hex) of the spec's identity without its bounds: what a bounds file is for."""
    doc = {k: v for k, v in spec.normalized().items() if k not in _NOT_WORKLOAD}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class KeyCalibration:
    """One key of a bounds file. atol/rtol None: the file gives no bound of that kind."""

    atol: float | None
    rtol: float | None
    per_step: bool
    steps: int
    false_positive_rate: float | None
    no_useful_bound_from: int | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def useful(self) -> bool:
        return self.atol is not None or self.rtol is not None or self.per_step


@dataclass(frozen=True)
class BoundsFile:
    path: Path
    stem: str
    workload_hash: str
    code_commit: str | None
    boxes: tuple[str, ...]
    replicas: int
    perturb: float
    factor: float
    steps_axis: int | None
    envelope: Path                      # the sibling .npz, resolved
    keys: Mapping[str, KeyCalibration]

    def mismatch(self, spec: Any) -> list[str]:
        """What makes this file not for `spec`: one phrase each."""
        out = []
        if self.stem != spec.stem:
            out.append(f"made for stem {self.stem!r}, not {spec.stem!r}")
        if self.workload_hash != workload_hash(spec):
            out.append("made for a different spec (its command, python, env, outputs, "
                       "steps_axis or timeout changed since)")
        if self.steps_axis != spec.steps_axis:
            out.append(f"made with steps_axis {self.steps_axis}, the spec has {spec.steps_axis}")
        return out


def _opt_number(ck: Checker, data: Mapping, key: str, path: str, *, minimum: float = 0.0
                ) -> float | None:
    if data.get(key) is None:
        return None
    v = ck.number(data[key], key_path(path, key), minimum=minimum)
    return None if v is None else float(v)


def _opt_int(ck: Checker, data: Mapping, key: str, path: str) -> int | None:
    if data.get(key) is None:
        return None
    return ck.integer(data[key], key_path(path, key), minimum=0)


def parse_bounds_file(data: Any, *, path: Path, display: str | None = None) -> BoundsFile:
    """Validate a decoded bounds document; SchemaProblems lists every problem."""
    ck = Checker(display or str(path))
    doc = ck.mapping(data, "")
    if doc is None:
        raise SchemaProblems(ck.problems or [f"{display or path}: top level: empty file"])
    ck.keys(doc, "", _TOP)
    if doc.get("schema") != SCHEMA:
        ck.add("schema", f"{doc.get('schema')!r} is not {SCHEMA!r}")
    stem = ck.string(doc.get("stem"), "stem") if "stem" in doc else None
    if stem is None and "stem" not in doc:
        ck.add("stem", "missing")
    elif stem is not None and (why := name_problem(stem)) is not None:
        ck.add("stem", why)
    wh = ck.string(doc.get("workload_hash"), "workload_hash") if "workload_hash" in doc else None
    if "workload_hash" not in doc:
        ck.add("workload_hash", "missing")
    commit = None
    if doc.get("code_commit") is not None:
        commit = ck.string(doc["code_commit"], "code_commit")
    boxes = tuple(ck.string_list(doc.get("boxes", []), "boxes"))
    replicas = ck.integer(doc.get("replicas", 1), "replicas", minimum=1) or 1
    perturb = ck.number(doc.get("perturb", 0.0), "perturb", minimum=0.0) or 0.0
    factor = ck.number(doc.get("factor", 1.0), "factor", positive=True) or 1.0
    steps_axis: int | None = 0
    if doc.get("steps_axis", 0) is None:
        steps_axis = None
    else:
        steps_axis = ck.integer(doc.get("steps_axis", 0), "steps_axis")
    envelope = envelope_path(path)
    if doc.get("envelope") is not None:
        name = ck.string(doc["envelope"], "envelope")
        if name is not None:
            parts = PurePosixPath(name).parts
            if name.startswith("/") or "\\" in name or len(parts) != 1 or name in (".", ".."):
                ck.add("envelope", f"{name!r} must be a file name beside the bounds file")
            else:
                envelope = path.parent / name
    keys: dict[str, KeyCalibration] = {}
    kdoc = ck.mapping(doc.get("keys", {}), "keys")
    for key, raw in (kdoc or {}).items():
        kp = key_path("keys", key)
        kd = ck.mapping(raw, kp)
        if kd is None:
            continue
        ck.keys(kd, kp, _KEY)
        before = len(ck.problems)
        atol = _opt_number(ck, kd, "atol", kp)
        rtol = _opt_number(ck, kd, "rtol", kp)
        fpr = _opt_number(ck, kd, "false_positive_rate", kp)
        if fpr is not None and fpr > 1:
            ck.add(key_path(kp, "false_positive_rate"), f"{fpr} is not a fraction in [0, 1]")
        per_step = kd.get("per_step", False)
        if not isinstance(per_step, bool):
            ck.add(key_path(kp, "per_step"), "must be true or false")
        steps = ck.integer(kd.get("steps", 0), key_path(kp, "steps"), minimum=0)
        nub = _opt_int(ck, kd, "no_useful_bound_from", kp)
        if len(ck.problems) == before:
            keys[str(key)] = KeyCalibration(
                atol=atol, rtol=rtol, per_step=bool(per_step), steps=int(steps or 0),
                false_positive_rate=fpr, no_useful_bound_from=nub,
                extra={k: kd[k] for k in kd if k not in ("atol", "rtol", "per_step", "steps")})
    if ck.problems:
        raise SchemaProblems(ck.problems)
    return BoundsFile(path=path, stem=str(stem), workload_hash=str(wh), code_commit=commit,
                      boxes=boxes, replicas=int(replicas), perturb=float(perturb),
                      factor=float(factor), steps_axis=steps_axis, envelope=envelope,
                      keys=keys)


def envelope_path(path: str | Path) -> Path:
    """The default sibling of a bounds file: `x.bounds.yaml` -> `x.bounds.npz`."""
    p = Path(path)
    return p.with_suffix(".npz")


def load_bounds_file(path: str | Path) -> BoundsFile:
    p = Path(path)
    return parse_bounds_file(load_yaml(p, str(p)), path=p, display=str(p))


def bounds_document(*, stem: str, workload: str, code_commit: str | None, boxes, replicas: int,
                    perturb: float, factor: float, steps_axis: int | None, envelope_name: str,
                    keys: Mapping[str, Mapping[str, Any]], created: str) -> dict[str, Any]:
    """The YAML document `tolerance calibrate` writes (plain types only)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    return {"schema": SCHEMA, "stem": stem, "workload_hash": workload,
            "code_commit": code_commit, "boxes": list(boxes), "replicas": int(replicas),
            "perturb": float(perturb), "factor": float(factor), "steps_axis": steps_axis,
            "envelope": envelope_name, "created": created,
            "keys": {k: {f: clean(v) for f, v in d.items()} for k, d in keys.items()}}


#: the sibling .npz is a few float64 arrays per key; anything larger is not ours
_ENVELOPE_MAX_BYTES = 1 << 30


def per_step_bounds(bf: BoundsFile) -> dict[str, tuple[float, ...]]:
    """Each key's per-step bound from the sibling .npz (`<key>__bound`), checked against
    the YAML (length = steps, finite, >= 0); `np.load` with pickles refused."""
    import numpy as np

    wanted = [k for k, kc in bf.keys.items() if kc.per_step]
    if not wanted:
        return {}
    where = bf.envelope
    try:
        if where.stat().st_size > _ENVELOPE_MAX_BYTES:
            raise SchemaProblems([f"{where}: larger than {_ENVELOPE_MAX_BYTES} bytes: not an envelope file"])
        out: dict[str, tuple[float, ...]] = {}
        with np.load(where, allow_pickle=False) as z:
            members = set(z.files)
            for key in wanted:
                name = f"{key}__bound"
                if name not in members:
                    raise SchemaProblems([f"{where}: {name}: missing (the bounds file says "
                                          f"keys.{key}.per_step: true)"])
                a = z[name]
                steps = bf.keys[key].steps
                if a.dtype != np.float64 or a.ndim != 1 or a.size != steps:
                    raise SchemaProblems([f"{where}: {name}: must be {steps} float64 values, "
                                          f"is {a.dtype} {a.shape}"])
                if not np.all(np.isfinite(a) & (a >= 0)):
                    raise SchemaProblems([f"{where}: {name}: values must be finite and >= 0"])
                out[key] = tuple(float(x) for x in a)
        return out
    except FileNotFoundError:
        raise SchemaProblems([f"{where}: missing (the envelope beside {bf.path})"]) from None
    except (OSError, ValueError) as exc:
        raise SchemaProblems([f"{where}: unreadable: {exc}"]) from None


def file_key_bounds(bf: BoundsFile,
                    steps: Mapping[str, tuple[float, ...]] | None = None) -> dict[str, Any]:
    """The bound the file gives each key that has a useful one: its per-step bound (an
    `atol` per step, the tighter and exact form) where it has one, else its atol/rtol.
    steps: the per-step bounds read already (`per_step_bounds`, e.g. carried in a job's
    inputs, so that no box reads the controller's files); None: read them now."""
    from tolerance.config.spec import Bounds

    steps = per_step_bounds(bf) if steps is None else steps
    out: dict[str, Any] = {}
    for key, kc in bf.keys.items():
        if not kc.useful:
            continue
        if key in steps:
            out[key] = Bounds(atol=steps[key])
        else:
            out[key] = Bounds(**{k: v for k, v in (("atol", kc.atol), ("rtol", kc.rtol))
                                 if v is not None})
    return out


def apply_bounds_file(spec: Any, bf: BoundsFile,
                      steps: Mapping[str, tuple[float, ...]] | None = None) -> Any:
    """`spec` with the file's bounds on every key the spec gives no bound of its own
    (explicit per-key bounds in the spec win; a key with no useful calibrated bound keeps
    the spec's default). A key with a per-step bound gets it (an `atol` per step, the
    tighter and exact form); otherwise its per-key atol or rtol."""
    from dataclasses import replace

    key_bounds = dict(spec.key_bounds)
    calibrated = list(spec.calibrated)
    was = set(calibrated)
    for key, b in file_key_bounds(bf, steps).items():
        if key in key_bounds and key not in was:
            continue
        key_bounds[key] = b
        if key not in was:
            was.add(key)
            calibrated.append(key)
    return replace(spec, key_bounds=key_bounds, calibrated=tuple(calibrated))
