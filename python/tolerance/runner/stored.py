"""A stored run, read back: `<root>/runs/<stem>/<run id>/<box>/box.json` and its outputs.

Used to publish a reference from a run made earlier (by `tolerance run`/`launch` or
`tolerance run-box`). Paths are rebuilt from the run directory, not taken from the stored
absolute paths, so a run directory that was moved or copied still reads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tolerance._errors import ToleranceError
from tolerance.runner.box import BoxResult

BOX_FILE = "box.json"
REPORT_FILE = "report.json"
_MAX_JSON = 16 << 20


@dataclass
class StoredBox:
    """One box of a stored run: its result and the outputs of its finished chips."""

    run_dir: Path
    result: BoxResult
    outputs: list[tuple[str, Path]]     # (chip, output file), in the box's chip order
    code: dict[str, Any] | None         # the box's code fingerprint, when the run recorded it

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def _read_json(path: Path) -> Any:
    try:
        if os.path.getsize(path) > _MAX_JSON:
            raise ToleranceError(f"{path}: larger than {_MAX_JSON >> 20} MiB: not a run record")
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise ToleranceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ToleranceError(f"{path}: not valid JSON ({exc})") from None


def stored_boxes(run_dir: str | os.PathLike[str]) -> list[str]:
    """The names of the boxes that recorded a `box.json` in a run directory, sorted."""
    p = Path(run_dir)
    if not p.is_dir():
        raise ToleranceError(f"{p}: not a run directory")
    return sorted(d.name for d in p.iterdir() if (d / BOX_FILE).is_file())


def load_stored_box(run_dir: str | os.PathLike[str], box: str | None = None) -> StoredBox:
    """The stored box `box` of a run directory (the only one when `box` is None)."""
    p = Path(run_dir)
    names = stored_boxes(p)
    if not names:
        raise ToleranceError(f"{p}: no <box>/{BOX_FILE} here: not a run directory "
                             "(give runs/<stem>/<run id>)")
    if box is None:
        if len(names) > 1:
            raise ToleranceError(f"{p}: holds boxes {', '.join(names)}: say which with --box")
        box = names[0]
    elif box not in names:
        raise ToleranceError(f"{p}: no box {box!r} in this run (it holds {', '.join(names)})")
    raw = _read_json(p / box / BOX_FILE)
    try:
        result = BoxResult.from_dict(raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ToleranceError(f"{p / box / BOX_FILE}: not a box record ({exc})") from None
    if result.status != "finished":
        failed = [f"{c.chip} {c.status}" for c in result.chips if c.status != "finished"]
        raise ToleranceError(f"{p / box}: box {box!r} did not finish this run "
                             f"({', '.join(failed) or result.status})")
    outputs: list[tuple[str, Path]] = []
    for c in result.chips:
        if not c.dir or not c.output:
            raise ToleranceError(f"{p / box / BOX_FILE}: chip {c.chip}: no output recorded")
        out = p / box / Path(c.dir).name / Path(c.output).name
        if not out.is_file():
            raise ToleranceError(f"{out}: the output of chip {c.chip} is gone")
        outputs.append((c.chip, out))
    code = None
    if (p / REPORT_FILE).is_file():
        report = _read_json(p / REPORT_FILE)
        for b in (report.get("boxes") or []) if isinstance(report, dict) else []:
            if isinstance(b, dict) and b.get("name") == box and isinstance(b.get("code"), dict):
                code = b["code"]
    return StoredBox(run_dir=p, result=result, outputs=outputs, code=code)
