"""Run directories: `<root>/runs/<stem>/<UTC stamp>[-N]`, claimed with an atomic mkdir."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from tolerance._errors import ToleranceError
from tolerance.config._check import name_problem

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_MAX_SUFFIX = 100_000


def utc_stamp(now: _dt.datetime | float | None = None) -> str:
    """`YYYYmmddTHHMMSSZ` of `now` (a datetime, naive ones taken as UTC; or epoch seconds)."""
    if now is None:
        now = _dt.datetime.now(_dt.timezone.utc)
    elif isinstance(now, (int, float)):
        now = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).strftime(STAMP_FORMAT)


def _check_stem(stem: str) -> None:
    if (why := name_problem(stem)) is not None:
        raise ToleranceError(f"stem: {why}")


def claim_run_dir(root: str | os.PathLike, stem: str,
                  now: _dt.datetime | float | None = None) -> Path:
    """Create and return a new `<root>/runs/<stem>/<stamp>` (or `<stamp>-2`, `-3`, ... when
    taken). The claim is the atomic `os.mkdir` itself, so two concurrent claims never get
    the same directory, and nothing that exists is ever reused or overwritten."""
    _check_stem(stem)
    parent = Path(root) / "runs" / stem
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToleranceError(f"{parent}: cannot create the runs directory: {exc.strerror}") from None
    stamp = utc_stamp(now)
    for n in range(1, _MAX_SUFFIX):
        candidate = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ToleranceError(f"{candidate}: cannot create the run directory: "
                                 f"{exc.strerror}") from None
        return candidate
    raise ToleranceError(f"{parent}: {stamp}: more than {_MAX_SUFFIX} runs in one second")


def open_run_dir(root: str | os.PathLike, stem: str, run_id: str) -> Path:
    """`<root>/runs/<stem>/<run_id>` for a run id claimed elsewhere (e.g. by rank 0 of an
    MPI job). Refuses (ToleranceError) an id that does not exist: a mistyped id never makes
    a new run. Boxes write only into their own `<box>/` below it."""
    _check_stem(stem)
    if (why := name_problem(run_id)) is not None:
        raise ToleranceError(f"run id: {why}")
    path = Path(root) / "runs" / stem / run_id
    if not path.is_dir():
        raise ToleranceError(f"run id {run_id!r}: no such run {path} (claim a new run by "
                             "leaving --run-id out; `tolerance runs` lists the stored ones)")
    return path
