"""config layer: cluster.yaml and run-spec schemas (v1), strict validation, clear errors.

Every problem is one line `<file>: <key path>: <problem>`; loaders raise
`SchemaProblems` (a `ConfigError`) whose `problems` lists every line found.
"""
from __future__ import annotations

from pathlib import Path

from tolerance.config._yaml import SchemaProblems, load_yaml
from tolerance.config.chips import CHIP_GRAMMAR, THREAD_VARS, Chip, chip_problem, knob_env, parse_chip
from tolerance.config.cluster import Box, Cluster, load_cluster, parse_cluster
from tolerance.config.spec import (BOX_LOCAL_ENV, Bounds, Spec, list_stems, load_spec,
                                   parse_spec, spec_path)

__all__ = [
    "BOX_LOCAL_ENV", "CHIP_GRAMMAR", "THREAD_VARS", "Bounds", "Box", "Chip", "Cluster", "knob_env",
    "SchemaProblems", "Spec", "chip_problem", "default_cluster_path", "list_stems",
    "load_cluster", "load_default_cluster", "load_spec", "load_yaml", "parse_chip",
    "parse_cluster", "parse_spec", "shipped_cluster_path", "spec_path",
]

_PACKAGE = Path(__file__).resolve().parent.parent          # python/tolerance


def shipped_cluster_path() -> tuple[Path, bool]:
    """The repository's own cluster.yaml when running from a source tree or an editable
    install (`True`), else the copy shipped as package data (`False`)."""
    repo = _PACKAGE.parent.parent
    if (repo / "cluster.yaml").is_file() and (repo / "pyproject.toml").is_file():
        return repo / "cluster.yaml", True
    return _PACKAGE / "data" / "cluster.yaml", False


def default_cluster_path(explicit: str | Path | None = None) -> Path:
    """`explicit`, else ./cluster.yaml if present, else the shipped one."""
    if explicit is not None:
        return Path(explicit)
    here = Path("cluster.yaml")
    if here.is_file():
        return here
    return shipped_cluster_path()[0]


def load_default_cluster(explicit: str | Path | None = None) -> Cluster:
    """Load the cluster the command line would use. Boxes of the package-data copy get
    the working directory as their default root (never the installed package)."""
    path = default_cluster_path(explicit)
    if explicit is None and not Path("cluster.yaml").is_file():
        shipped, in_repo = shipped_cluster_path()
        if not in_repo:
            return load_cluster(path, root=Path.cwd())
    return load_cluster(path)
