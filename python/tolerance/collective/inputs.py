"""The job's inputs: the registry and the spec, resolved once and carried to every box.

A box never reads a controller path. `tolerance launch` resolves the registry and the
spec on the controller and hands their *content* to every rank over the watch line;
when the job is started by hand (`mpirun ... tolerance run`), rank 0 resolves them where
it runs and broadcasts the same document. Every rank parses the same text, so every rank
sees the same registry and the same spec; each box then resolves its own `root`,
`python` and outputs in its own filesystem.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tolerance._errors import ConfigError
from tolerance.config import Cluster, Spec, parse_cluster, parse_spec
from tolerance.config import default_cluster_path, shipped_cluster_path, spec_path
from tolerance.config._yaml import loads_yaml, read_config

SCHEMA = "tolerance.inputs/1"


def resolve_inputs(stem: str, cluster_path: str | None, specs_dir: str | None) -> dict[str, Any]:
    """Read the registry and the spec as this process would, and return their content.

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
    doc = {"schema": SCHEMA, "cluster": {"text": cluster_text, "display": display,
                                         "base": str(base), "path": str(path.resolve())},
           "spec": {"text": spec_text, "display": str(sp), "stem": stem_name,
                    "path": str(sp.resolve())}}
    parse_inputs(doc)  # validate here: a bad file is one line before anything starts
    return doc


def parse_inputs(doc: dict[str, Any]) -> tuple[Cluster, Spec]:
    """The registry and the spec from a document made by `resolve_inputs`."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ConfigError("job inputs: not a tolerance.inputs/1 document")
    c, s = doc["cluster"], doc["spec"]
    cluster = parse_cluster(loads_yaml(c["text"], c["display"]), display=c["display"],
                            base_dir=c["base"], path=Path(c["path"]))
    spec = parse_spec(loads_yaml(s["text"], s["display"]), stem=s["stem"],
                      display=s["display"], path=Path(s["path"]))
    return cluster, spec


def content_hash(doc: dict[str, Any]) -> str:
    """sha256 of the spec's bytes as the controller read them."""
    return hashlib.sha256(doc["spec"]["text"].encode("utf-8")).hexdigest()


__all__ = ["SCHEMA", "content_hash", "parse_inputs", "resolve_inputs"]
