"""The job's inputs: the registry, the spec and its calibrated bounds files, resolved once
and carried to every box.

A box never reads a controller path. `tolerance launch` resolves the registry, the spec
and the calibrated bounds files of the run (the one the spec names in `bounds_file:`, then
the one given by `--bounds`; each its YAML and the per-step bounds of its sibling .npz) on
the controller and hands their *content* to every rank over the watch line;
when the job is started by hand (`mpirun ... tolerance run`), rank 0 resolves them where
it runs and broadcasts the same document. Every rank parses the same text, so every rank
sees the same registry and the same spec; each box then resolves its own `root`,
`python` and outputs in its own filesystem.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tolerance._errors import ConfigError
from tolerance.config import Cluster, Spec, parse_cluster, parse_spec
from tolerance.config import default_cluster_path, shipped_cluster_path, spec_path
from tolerance.config._yaml import loads_yaml, read_config
from tolerance.config.bounds_file import apply_bounds_file, parse_bounds_file, per_step_bounds

SCHEMA = "tolerance.inputs/1"


def _bounds_entry(path: Path) -> dict[str, Any]:
    """A calibrated bounds file's content: its YAML text and its per-step bounds (read
    from the sibling .npz here, checked against the YAML)."""
    display = str(path)
    text = read_config(path, display)  # capped, a regular file, UTF-8
    bf = parse_bounds_file(loads_yaml(text, display), path=path, display=display)
    steps = per_step_bounds(bf)
    return {"text": text, "display": display, "path": str(path.resolve()),
            "per_step": {k: list(v) for k, v in steps.items()}}


def resolve_inputs(stem: str, cluster_path: str | None, specs_dir: str | None,
                   bounds_path: str | None = None) -> dict[str, Any]:
    """Read the registry, the spec and the run's calibrated bounds files (the spec's
    `bounds_file:`, then `bounds_path`: the run's `--bounds`) as this process would, and
    return their content.

    The registry's relative roots are resolved against `base` (the registry's folder, or
    the working directory for the package's shipped copy), exactly as `load_cluster` does.
    """
    path = default_cluster_path(cluster_path)
    base = path.resolve().parent
    if cluster_path is None and not Path("cluster.yaml").is_file():
        if not shipped_cluster_path()[1]:
            base = Path.cwd()
    display = str(path)
    cluster_text = read_config(path, display)  # capped, a regular file, UTF-8
    text = str(stem)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        sp = Path(text)
        stem_name = sp.stem if sp.suffix in (".yaml", ".yml") else sp.name
    else:
        sdir = Path(specs_dir) if specs_dir is not None else path.parent / "specs"
        sp = spec_path(text, sdir)
        stem_name = text
    spec_text = read_config(sp, str(sp))
    named = parse_spec(loads_yaml(spec_text, str(sp)), stem=stem_name, display=str(sp),
                       path=sp).bounds_file
    bounds = [_bounds_entry(Path(p)) for p in (named, bounds_path) if p is not None]
    doc = {"schema": SCHEMA, "cluster": {"text": cluster_text, "display": display,
                                         "base": str(base), "path": str(path.resolve())},
           "spec": {"text": spec_text, "display": str(sp), "stem": stem_name,
                    "path": str(sp.resolve())},
           "bounds": bounds}
    parse_inputs(doc)  # validate here: a bad file is one line before anything starts
    return doc


def parse_inputs(doc: dict[str, Any]) -> tuple[Cluster, Spec]:
    """The registry and the spec (its calibrated bounds applied, in order) from a document
    made by `resolve_inputs`; nothing is read from the filesystem."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ConfigError("job inputs: not a tolerance.inputs/1 document")
    c, s = doc["cluster"], doc["spec"]
    cluster = parse_cluster(loads_yaml(c["text"], c["display"]), display=c["display"],
                            base_dir=c["base"], path=Path(c["path"]))
    spec = parse_spec(loads_yaml(s["text"], s["display"]), stem=s["stem"],
                      display=s["display"], path=Path(s["path"]), check_files=False)
    for b in doc.get("bounds") or ():
        bf = parse_bounds_file(loads_yaml(b["text"], b["display"]), path=Path(b["path"]),
                               display=b["display"])
        steps = {str(k): tuple(float(x) for x in v) for k, v in b["per_step"].items()}
        spec = apply_bounds_file(spec, bf, steps)
    return cluster, spec


def content_hash(doc: dict[str, Any]) -> str:
    """sha256 of the spec's bytes as the controller read them, then of each calibrated
    bounds file's content (its YAML bytes and its per-step bounds) where the run has any."""
    h = hashlib.sha256(doc["spec"]["text"].encode("utf-8"))
    bounds = doc.get("bounds") or ()
    if not bounds:  # a run without bounds files hashes as its spec alone
        return h.hexdigest()
    for b in bounds:
        per_step = json.dumps(b["per_step"], sort_keys=True, separators=(",", ":"))
        for part in (b["text"], per_step):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


__all__ = ["SCHEMA", "content_hash", "parse_inputs", "resolve_inputs"]
