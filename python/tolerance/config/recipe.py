"""Triage matrix recipes, schema 1 (`tolerance matrix RECIPE`, docs/matrix.md).

A recipe names a stem, how many trials (replicated runs) each cell gets, which cell is
the baseline and the slowdown that flags a cell `speed`, and the cells: each a name and
the env it applies on every box, over the box's own env. Validation is strict: every
problem is one line `<file>: <key path>: <problem>`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tolerance.config._check import Checker, name_problem
from tolerance.config._yaml import SchemaProblems, key_path, load_yaml

SCHEMA = 1
_TOP = ("schema", "name", "stem", "trials", "baseline", "confound", "cells", "description")
_CELL = ("name", "env", "description")
_CONFOUND = ("threshold",)
DEFAULT_THRESHOLD = 1.15
#: a cell or trial count beyond this is almost surely a typo (each cell-trial is a run)
MAX_CELLS, MAX_TRIALS = 1000, 1000


@dataclass(frozen=True)
class Cell:
    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    stem: str
    trials: int
    baseline: str                      # resolved: always a cell's name
    threshold: float
    cells: tuple[Cell, ...]
    description: str | None = None
    path: Path | None = None
    #: how the baseline was chosen ("named", "baseline*", "first cell without env")
    baseline_rule: str = "named"

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in and the baseline resolved; loading it
        back gives the same cells (and so the same cell-trial identities)."""
        doc: dict[str, Any] = {"schema": SCHEMA, "name": self.name, "stem": self.stem,
                               "trials": self.trials, "baseline": self.baseline,
                               "confound": {"threshold": self.threshold}}
        if self.description is not None:
            doc["description"] = self.description
        cells = []
        for c in self.cells:
            d: dict[str, Any] = {"name": c.name}
            if c.env:
                d["env"] = dict(c.env)
            if c.description is not None:
                d["description"] = c.description
            cells.append(d)
        doc["cells"] = cells
        return doc


def cell_trial_identity(*, stem: str, spec_content: Mapping[str, Any], env: Mapping[str, str],
                        trial: int, code_commit: str | None) -> str:
    """A cell-trial's identity: sha256 of what it runs (not where it sits in the recipe)."""
    doc = {"stem": stem, "spec": spec_content, "env": dict(sorted(env.items())),
           "trial": int(trial), "code_commit": code_commit}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def parse_recipe(data: Any, *, display: str, path: Path | None = None) -> Recipe:
    ck = Checker(display)
    if data is None:
        raise SchemaProblems([f"{display}: top level: empty file (expected 'schema: 1')"])
    doc = ck.mapping(data, "")
    if doc is None:
        raise SchemaProblems(ck.problems)
    ck.keys(doc, "", _TOP)
    if "schema" not in doc:
        ck.add("schema", f"missing (required; write 'schema: {SCHEMA}')")
    elif isinstance(doc["schema"], bool) or doc["schema"] != SCHEMA:
        ck.add("schema", f"unsupported schema {doc['schema']!r} (this tolerance reads schema {SCHEMA})")

    def safe(value: Any, where: str) -> str | None:
        text = ck.string(value, where)
        if text is not None and (why := name_problem(text)) is not None:
            ck.add(where, why)
            return None
        return text

    name = safe(doc.get("name"), "name") if "name" in doc else None
    if "name" not in doc:
        ck.add("name", "missing (the matrix's name: its runs go to runs/matrix/<name>/)")
    stem = safe(doc.get("stem"), "stem") if "stem" in doc else None
    if "stem" not in doc:
        ck.add("stem", "missing (the stem every cell runs)")
    trials = 1
    if "trials" in doc:
        t = ck.integer(doc["trials"], "trials", minimum=1)
        if t is not None and t > MAX_TRIALS:
            ck.add("trials", f"{t} is more than {MAX_TRIALS}")
        elif t is not None:
            trials = t
    threshold = DEFAULT_THRESHOLD
    if doc.get("confound") is not None:
        cd = ck.mapping(doc["confound"], "confound")
        if cd is not None:
            ck.keys(cd, "confound", _CONFOUND)
            if "threshold" in cd:
                v = ck.number(cd["threshold"], "confound.threshold", positive=True)
                if v is not None and v < 1.0:
                    ck.add("confound.threshold", f"must be >= 1 (a slowdown factor), not {v:g}")
                elif v is not None:
                    threshold = v
    description = None
    if doc.get("description") is not None:
        description = ck.string(doc["description"], "description", nonempty=False)

    cells: list[Cell] = []
    raw_cells = ck.list_of(doc.get("cells"), "cells") if "cells" in doc else None
    if "cells" not in doc:
        ck.add("cells", "missing (at least one cell)")
    elif raw_cells is not None and not raw_cells:
        ck.add("cells", "must list at least one cell")
    elif raw_cells is not None and len(raw_cells) > MAX_CELLS:
        ck.add("cells", f"{len(raw_cells)} cells is more than {MAX_CELLS}")
    seen: dict[str, str] = {}
    for i, raw in enumerate(raw_cells or []):
        cp = key_path("cells", i)
        cd = ck.mapping(raw, cp)
        if cd is None:
            continue
        ck.keys(cd, cp, _CELL)
        if "name" not in cd:
            ck.add(key_path(cp, "name"), "missing")
            continue
        cname = safe(cd["name"], key_path(cp, "name"))
        if cname is None:
            continue
        # cell names are directories: two that differ only in case are one directory on a
        # case-insensitive filesystem, so they collide too
        folded = cname.casefold()
        if folded in seen:
            ck.add(key_path(cp, "name"), f"{cname!r} collides with cell {seen[folded]!r} "
                                         "(cell names are directories; one per cell)")
            continue
        seen[folded] = cname
        env: dict[str, str] = {}
        if cd.get("env") is not None:
            env = ck.env(cd["env"], key_path(cp, "env"))
        cdesc = None
        if cd.get("description") is not None:
            cdesc = ck.string(cd["description"], key_path(cp, "description"), nonempty=False)
        cells.append(Cell(name=cname, env=env, description=cdesc))

    baseline, rule = None, "named"
    if doc.get("baseline") is not None:
        b = ck.string(doc["baseline"], "baseline")
        if b is not None and b not in {c.name for c in cells}:
            ck.add("baseline", f"{b!r} is not a cell ({', '.join(c.name for c in cells)})")
        else:
            baseline = b
    elif cells:
        first = next((c for c in cells if c.name.startswith("baseline")), None)
        rule = "the first cell named baseline*"
        if first is None:
            first = next((c for c in cells if not c.env), None)
            rule = "the first cell without env"
        if first is None:
            ck.add("baseline", "not given, and no cell is named baseline* or has no env: "
                               "name one with 'baseline: CELL'")
        else:
            baseline = first.name
    if ck.problems:
        raise SchemaProblems(ck.problems)
    return Recipe(name=str(name), stem=str(stem), trials=trials, baseline=str(baseline),
                  threshold=float(threshold), cells=tuple(cells), description=description,
                  path=path, baseline_rule=rule)


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    return parse_recipe(load_yaml(p, str(p)), display=str(p), path=p)
