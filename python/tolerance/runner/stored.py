"""Stored runs, read back: `<root>/runs/<stem>/<run id>/` directories.

A run directory holds one `<box>/` directory per box that ran here (each with its
`box.json` and one `<chip>/` directory per chip), and, on the box of MPI rank 0, the
report files (`report.json`, `series.npz`, `summary.md`). This module lists runs, finds one
by name, prunes old ones, and reads one box back (to publish a reference from a run made
earlier, by `tolerance run`/`launch` or `tolerance run-box`). Paths are rebuilt from the
run directory, not taken from the stored absolute paths, so a run directory that was moved
or copied still reads. Nothing here writes a report; nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from tolerance._errors import ConfigError, ToleranceError
from tolerance.config._check import name_problem
from tolerance.runner.box import RUNNER_FILES, BoxResult

BOX_FILE = "box.json"
REPORT_FILE = "report.json"
SERIES_FILE, SUMMARY_FILE = "series.npz", "summary.md"
#: files of a run directory that are never a box's output
REPORT_FILES = frozenset({REPORT_FILE, SERIES_FILE, SUMMARY_FILE})
PLOTS_DIR = "plots"
_MAX_JSON = 16 << 20
_STAMP = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")


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


def stamp_order(name: str) -> tuple[str, int, str]:
    """Sort key of a run id: its stamp, then its `-N` suffix as a number (`-10` after `-9`)."""
    m = _STAMP.match(name)
    if m is None:
        return (name, 0, name)
    return (m.group(1), int(m.group(2) or 1), name)


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when there is no such file."""
    if not path.is_file():
        return None
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ToleranceError(f"{path}: not a JSON object")
    return data


@dataclass
class StoredChip:
    box: str
    chip: str
    status: str | None
    output: str | None            # absolute path of the chip's output file, when it wrote one
    dir: Path


@dataclass
class StoredRun:
    """One run directory as found on disk."""

    stem: str
    run_id: str
    path: Path
    boxes: dict[str, str | None] = field(default_factory=dict)    # box -> status
    chips: list[StoredChip] = field(default_factory=list)
    report: dict[str, Any] | None = None                          # report.json, if any
    problem: str | None = None    # why a file of the run could not be read

    @property
    def counts(self) -> dict[str, int] | None:
        if self.report is None:
            return None
        rows = self.report.get("rows") or []
        return {s: sum(1 for r in rows if isinstance(r, dict) and r.get("status") == s)
                for s in ("pass", "fail", "unmeasured")}

    @property
    def exit_code(self) -> int | None:
        code = (self.report or {}).get("exit_code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    def to_dict(self) -> dict[str, Any]:
        return {"stem": self.stem, "run_id": self.run_id, "path": str(self.path),
                "boxes": dict(self.boxes), "report": (str(self.path / REPORT_FILE)
                                                      if self.report is not None else None),
                "counts": self.counts, "exit_code": self.exit_code, "problem": self.problem}


def _box_status(box_dir: Path, data: dict | None) -> str | None:
    if data is not None:
        return data.get("status")
    return None


def read_run(path: str | os.PathLike) -> StoredRun:
    """The run in directory `path` (`.../runs/<stem>/<run_id>`): its boxes (from each
    `<box>/box.json`, else from report.json), chips and outputs, and report.json if here."""
    p = Path(path)
    if not p.is_dir():
        raise ToleranceError(f"{p}: no such run directory")
    run = StoredRun(stem=p.parent.name, run_id=p.name, path=p)
    try:
        run.report = _read_object(p / REPORT_FILE)
    except ToleranceError as exc:
        run.problem = str(exc)
    if run.report is not None:
        for b in run.report.get("boxes") or []:
            if isinstance(b, dict) and isinstance(b.get("name"), str):
                run.boxes[b["name"]] = b.get("status")
    for d in sorted(x for x in p.iterdir() if x.is_dir()):
        try:
            data = _read_object(d / BOX_FILE)
        except ToleranceError as exc:
            run.problem = run.problem or str(exc)
            continue
        if data is None:
            continue
        name = data.get("box") if isinstance(data.get("box"), str) else d.name
        run.boxes.setdefault(name, _box_status(d, data))
        for c in data.get("chips") or []:
            if not isinstance(c, dict):
                continue
            # rebuilt from the run directory (it may have been moved or copied)
            cdir = d / Path(c["dir"]).name if isinstance(c.get("dir"), str) else d
            out = (str(cdir / Path(c["output"]).name)
                   if isinstance(c.get("output"), str) else None)
            run.chips.append(StoredChip(box=name, chip=str(c.get("chip")), status=c.get("status"),
                                        output=out, dir=cdir))
    return run


def is_run_dir(path: str | os.PathLike) -> bool:
    """True for a directory that holds report.json or a `<box>/box.json`."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / REPORT_FILE).is_file():
        return True
    return any((d / BOX_FILE).is_file() for d in p.iterdir() if d.is_dir())


def list_runs(roots: Iterable[str | os.PathLike], stem: str | None = None) -> list[StoredRun]:
    """Every stored run under `<root>/runs/` of each root (only `stem`'s when given), oldest
    first per stem, stems in name order. A run directory under several roots (boxes of one
    run on different roots of this machine) is listed once per root."""
    if stem is not None and (why := name_problem(stem)) is not None:
        raise ConfigError(f"stem: {why}")
    out: list[StoredRun] = []
    seen: set[Path] = set()
    for root in roots:
        base = Path(root) / "runs"
        if not base.is_dir():
            continue
        stems = [base / stem] if stem is not None else sorted(d for d in base.iterdir() if d.is_dir())
        for sdir in stems:
            if not sdir.is_dir():
                continue
            for rdir in sorted((d for d in sdir.iterdir() if d.is_dir()),
                               key=lambda d: stamp_order(d.name)):
                real = rdir.resolve()
                if real in seen or not is_run_dir(rdir):
                    continue
                seen.add(real)
                out.append(read_run(rdir))
    return out


_BACK = re.compile(r"^(.+)~(\d+)$")


def find_run(name: str, roots: Sequence[str | os.PathLike]) -> Path:
    """A run directory named by its path, or `STEM/RUN_ID`, or `STEM` (its newest run), or
    `STEM~N` (the run N before its newest: `STEM~0` is `STEM`), looked up under
    `<root>/runs/` of each root. ToleranceError when there is none."""
    p = Path(name)
    if p.is_dir() and is_run_dir(p):
        return p
    parts = name.strip("/").split("/")
    back = _BACK.match(name) if len(parts) == 1 else None
    if back is not None and name_problem(back.group(1)) is None:
        runs = list_runs(roots, back.group(1))
        n = int(back.group(2))
        if n < len(runs):
            return runs[-1 - n].path
        if runs:
            raise ToleranceError(f"{name}: stem {back.group(1)!r} has {len(runs)} stored "
                                 f"run{'s' if len(runs) != 1 else ''} (`tolerance runs "
                                 f"{back.group(1)}` lists them)")
    elif len(parts) in (1, 2) and all(name_problem(x) is None for x in parts):
        if len(parts) == 2:
            for root in roots:
                cand = Path(root) / "runs" / parts[0] / parts[1]
                if is_run_dir(cand):
                    return cand
        else:
            runs = list_runs(roots, parts[0])
            if runs:
                return runs[-1].path
    if p.is_dir():
        raise ToleranceError(f"{name}: not a run directory (no {REPORT_FILE} and no "
                             f"<box>/{BOX_FILE} in it)")
    where = ", ".join(str(Path(r) / "runs") for r in roots) or "(no roots)"
    raise ToleranceError(f"{name}: no such run (give a run directory, STEM/RUN_ID, STEM or "
                         f"STEM~N; "
                         f"looked under {where}; `tolerance runs` lists them)")


def runs_to_prune(runs: Sequence[StoredRun], keep: int) -> list[StoredRun]:
    """The runs older than the `keep` newest of each stem (runs as list_runs returns them)."""
    by_stem: dict[str, list[StoredRun]] = {}
    for r in runs:
        by_stem.setdefault(r.stem, []).append(r)
    out: list[StoredRun] = []
    for stem_runs in by_stem.values():
        ordered = sorted(stem_runs, key=lambda r: stamp_order(r.run_id))
        out += ordered[:max(0, len(ordered) - keep)]
    return out


def remove_run(run: StoredRun) -> None:
    """Delete one run directory (only one that is a run directory under `runs/<stem>/`)."""
    p = run.path
    if p.parent.parent.name != "runs" or not is_run_dir(p) or p.is_symlink():
        raise ToleranceError(f"{p}: not a run directory; not removed")
    shutil.rmtree(p)


def participant_label(box: str, chip: str, multi_chip: bool) -> str:
    """The box name, or `box/chip` when the box runs the stem on several chips (the label
    of a box's output in a run's rows and in `tolerance diff` of stored runs)."""
    if not multi_chip:
        return box
    return f"{box}/{re.sub(r'[^A-Za-z0-9_.-]+', '-', chip)}"


def is_box_dir(path: str | os.PathLike) -> bool:
    """True for a run's `<box>/` directory (it holds the box's box.json)."""
    return Path(path).is_dir() and (Path(path) / BOX_FILE).is_file()


def is_stem_dir(path: str | os.PathLike) -> bool:
    """True for `runs/<stem>/`: a directory whose subdirectories are runs."""
    p = Path(path)
    return p.is_dir() and not is_run_dir(p) and \
        any(is_run_dir(d) for d in p.iterdir() if d.is_dir())


def _is_series_file(path: Path) -> bool:
    """A `tolerance.series/1` .npz (a run's series.npz, `diff --series`): its `meta` member
    is the UTF-8 JSON of that schema. Only the first bytes of `meta` are read."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            if "meta.npy" not in zf.namelist():
                return False
            with zf.open("meta.npy") as fh:
                head = fh.read(4096)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False
    return b'"tolerance.series/1"' in head


def tool_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is a file the tool wrote (a report, a record, a log, a plot, a series)
    and so never an output to compare; None for anything else."""
    p = Path(path)
    name, parent = p.name, p.parent
    if name in REPORT_FILES and is_run_dir(parent):
        return f"a report file of run {parent}"
    if name == BOX_FILE and is_run_dir(parent.parent):
        return "a box's record (box.json) of a stored run"
    if name in RUNNER_FILES and (parent.parent / BOX_FILE).is_file():
        return "a file the runner writes beside a chip's output"
    if parent.name == PLOTS_DIR and is_run_dir(parent.parent):
        return f"a plot of run {parent.parent}"
    if name.endswith(".npz") and p.is_file() and _is_series_file(p):
        return "a tolerance.series/1 file (what `tolerance run` and `diff --series` write)"
    return None
