"""cluster.yaml, schema v1: the registry of boxes. Box-local knobs live here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tolerance._errors import ConfigError
from tolerance.config._check import Checker, name_problem
from tolerance.config._yaml import SchemaProblems, key_path, load_yaml
from tolerance.config.chips import Chip, chip_problem, knob_env, parse_chip
from tolerance.config.local import name_length_problem

SCHEMA = 1
_CLUSTER_KEYS = ("schema", "boxes")
_BOX_KEYS = ("name", "host", "root", "python", "env", "chips", "tags", "threads")


@dataclass(frozen=True)
class Box:
    """One machine of the registry."""

    name: str
    host: str
    root: str                                   # the project checkout on that box
    python: str = "python3"                     # interpreter on that box
    env: Mapping[str, str] = field(default_factory=dict)   # box-local knobs
    chips: tuple[str, ...] = ("cpu:*",)
    tags: tuple[str, ...] = ()
    threads: int | None = None                  # OMP/OPENBLAS/MKL_NUM_THREADS of its chips

    def chip_specs(self) -> tuple[Chip, ...]:
        return tuple(parse_chip(c) for c in self.chips)

    def resolved_env(self) -> dict[str, str]:
        """The box's share of a chip's env (`threads`, then `env`): knob_env of a chip that
        implies nothing."""
        return knob_env(Chip("cpu"), threads=self.threads, env=self.env)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "root": self.root, "python": self.python,
                "env": dict(self.env), "chips": list(self.chips), "tags": list(self.tags),
                "threads": self.threads}


@dataclass(frozen=True)
class Cluster:
    """The registry: boxes in file order."""

    boxes: tuple[Box, ...]
    path: Path | None = None                    # the cluster.yaml it came from
    schema: int = SCHEMA

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.boxes)

    @property
    def specs_dir(self) -> Path:
        """`specs/` next to the cluster file (or the working directory)."""
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / "specs"

    def box(self, name: str) -> Box:
        for b in self.boxes:
            if b.name == name:
                return b
        where = str(self.path) if self.path is not None else "cluster"
        raise ConfigError(f"{where}: boxes: no box named {name!r} "
                          f"(known: {', '.join(self.names) or 'none'})")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "path": str(self.path) if self.path else None,
                "boxes": [b.to_dict() for b in self.boxes]}


def _box(ck: Checker, raw: Any, path: str, base_dir: Path) -> Box | None:
    data = ck.mapping(raw, path)
    if data is None:
        return None
    ck.keys(data, path, _BOX_KEYS)
    before = len(ck.problems)
    name = host = None
    if "name" not in data:
        ck.add(key_path(path, "name"), "missing (required)")
    else:
        name = ck.string(data["name"], key_path(path, "name"))
        if name is not None and (why := name_problem(name) or name_length_problem(name)):
            ck.add(key_path(path, "name"), why)
    if "host" not in data:
        ck.add(key_path(path, "host"), "missing (required; 'localhost' for this machine)")
    else:
        host = ck.string(data["host"], key_path(path, "host"))
    root = str(base_dir)
    if "root" in data:
        text = ck.string(data["root"], key_path(path, "root"))
        if text is not None:
            root = text if os.path.isabs(text) else os.path.normpath(base_dir / text)
    python = "python3"
    if "python" in data:
        python = ck.string(data["python"], key_path(path, "python")) or python
    env = ck.env(data["env"], key_path(path, "env")) if "env" in data else {}
    chips: list[str] = ["cpu:*"]
    if "chips" in data:
        p = key_path(path, "chips")
        items = ck.list_of(data["chips"], p)
        chips = []
        if items is not None and not items:
            ck.add(p, "must list at least one chip")
        seen: set[str] = set()
        for i, item in enumerate(items or []):
            ip = key_path(p, i)
            if not isinstance(item, str):
                ck.add(ip, f"{item!r} is not a chip (cpu:N-M | cpu:* | cuda:N | rocm:N)")
                continue
            if why := chip_problem(item):
                ck.add(ip, why)
                continue
            chip = parse_chip(item)
            norm = str(chip)
            if (why := name_length_problem(chip.slug)) is not None:
                ck.add(ip, f"{item if len(item) <= 40 else item[:37] + '...'}: its directory "
                           f"name {why}; name fewer separate cores (ranges: cpu:0-7)")
                continue
            if norm in seen:
                ck.add(ip, f"{item!r} is listed twice")
                continue
            seen.add(norm)
            chips.append(norm)
    tags = ck.string_list(data["tags"], key_path(path, "tags")) if "tags" in data else []
    threads = None
    if data.get("threads") is not None:
        threads = ck.integer(data["threads"], key_path(path, "threads"), minimum=1)
    if len(ck.problems) > before or name is None or host is None:
        return None
    return Box(name=name, host=host, root=root, python=python, env=env, chips=tuple(chips),
               tags=tuple(tags), threads=threads)


def parse_cluster(data: Any, *, display: str = "cluster.yaml", base_dir: Path | str | None = None,
                  path: Path | None = None) -> Cluster:
    """Validate a decoded cluster document. Raises SchemaProblems listing every problem."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    ck = Checker(display)
    boxes: list[Box] = []
    doc = ck.mapping(data, "") if data is not None else None
    if data is None:
        ck.add("", "empty file (expected 'schema: 1' and 'boxes:')")
    if doc is not None:
        ck.keys(doc, "", _CLUSTER_KEYS)
        if "schema" not in doc:
            ck.add("schema", f"missing (required; write 'schema: {SCHEMA}')")
        elif isinstance(doc["schema"], bool) or doc["schema"] != SCHEMA:
            ck.add("schema", f"unsupported schema {doc['schema']!r} (this tolerance reads schema {SCHEMA})")
        if "boxes" not in doc:
            ck.add("boxes", "missing (required: a list of boxes)")
        else:
            items = ck.list_of(doc["boxes"], "boxes")
            if items is not None and not items:
                ck.add("boxes", "must list at least one box")
            names: dict[str, int] = {}
            for i, raw in enumerate(items or []):
                box = _box(ck, raw, key_path("boxes", i), base)
                if box is None:
                    continue
                if box.name in names:
                    ck.add(key_path(key_path("boxes", i), "name"),
                           f"duplicate box name {box.name!r} (also boxes[{names[box.name]}])")
                    continue
                names[box.name] = i
                boxes.append(box)
    if ck.problems:
        raise SchemaProblems(ck.problems)
    return Cluster(boxes=tuple(boxes), path=path)


def load_cluster(path: Path | str, *, root: Path | str | None = None,
                 display: str | None = None) -> Cluster:
    """Read and validate cluster.yaml. A box's default (and relative) `root` is the
    directory of the file, unless `root` is given."""
    p = Path(path)
    data = load_yaml(p, display if display is not None else str(path))
    base = Path(root) if root is not None else p.resolve().parent
    return parse_cluster(data, display=display if display is not None else str(path),
                         base_dir=base, path=p)
