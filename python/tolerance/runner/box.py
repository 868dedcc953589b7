"""Run one stem on every chip of one box: `run_on_box(spec, box, run_dir) -> BoxResult`
(the `tolerance run-box` command, cli/run_box.py, and every rank of a run call it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tolerance._errors import ToleranceError
from tolerance.bootstrap.segments import process_exists
from tolerance.config import Box, Chip, Spec
from tolerance.config.chips import knob_env
from tolerance.io.atomic import write_text
from tolerance.runner import _chips
from tolerance.runner.env_fingerprint import environment_fingerprint

STATUSES = ("finished", "failed", "vanished", "timeout")
STDOUT_LOG, STDERR_LOG, CONTEXT_FILE = "stdout.log", "stderr.log", "chip.json"
#: files the runner itself writes into a chip's directory (never taken as its output)
RUNNER_FILES = frozenset({STDOUT_LOG, STDERR_LOG, CONTEXT_FILE, CONTEXT_FILE + ".tmp"})
TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024


@dataclass
class ChipResult:
    """One chip's outcome. `status`: finished | failed | vanished | timeout."""

    chip: str
    status: str
    returncode: int | None = None
    reason: str | None = None
    stderr_tail: list[str] = field(default_factory=list)
    started: float | None = None       # epoch seconds
    ended: float | None = None
    output: str | None = None          # the fresh output file (absolute path), finished only
    env: dict[str, str] = field(default_factory=dict)  # the resolved extra env (not os.environ)
    dir: str | None = None             # the chip's directory
    pid: int | None = None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        return {"chip": self.chip, "status": self.status, "returncode": self.returncode,
                "reason": self.reason, "stderr_tail": list(self.stderr_tail),
                "started": self.started, "ended": self.ended, "seconds": self.seconds,
                "output": self.output, "env": dict(self.env), "dir": self.dir, "pid": self.pid}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChipResult":
        return cls(**{k: d.get(k) for k in ("chip", "status", "returncode", "reason", "started",
                                             "ended", "output", "dir", "pid")},
                   stderr_tail=list(d.get("stderr_tail") or []), env=dict(d.get("env") or {}))


@dataclass
class BoxResult:
    """Every chip of one box. `status` is "finished" when every chip finished, else "failed"."""

    box: str
    status: str
    chips: list[ChipResult]
    env_fingerprint: dict[str, Any]
    stem: str | None = None
    spec_hash: str | None = None
    run_dir: str | None = None         # the box's directory, <run>/<box>
    host: str | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box, "status": self.status, "stem": self.stem,
                "spec_hash": self.spec_hash, "run_dir": self.run_dir, "host": self.host,
                "started": self.started, "ended": self.ended,
                "chips": [c.to_dict() for c in self.chips],
                "env_fingerprint": self.env_fingerprint}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BoxResult":
        return cls(box=d["box"], status=d["status"],
                   chips=[ChipResult.from_dict(c) for c in d.get("chips") or []],
                   env_fingerprint=dict(d.get("env_fingerprint") or {}),
                   **{k: d.get(k) for k in ("stem", "spec_hash", "run_dir", "host", "started",
                                            "ended")})


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    return [line for line in text if line.strip()][-lines:]


def newest_output(directory: Path, pattern: str) -> Path | None:
    """The newest regular file matching `pattern` in `directory` by st_mtime (ties: the
    later name), the runner's own files excluded."""
    best: tuple[int, str] | None = None
    found = None
    for p in directory.glob(pattern):
        if p.name in RUNNER_FILES and p.parent == directory:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        key = (st.st_mtime_ns, str(p))
        if best is None or key > best:
            best, found = key, p
    return found


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _write_json(path: Path, data: dict) -> None:
    """Temp + rename (io.atomic): a refused write (a full disk) raises ToleranceError naming
    the file, and leaves no temporary behind."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n",
               overwrite=True)


#: the variable that tells a workload its box's root (the project checkout on that box)
ROOT_ENV = "TOLERANCE_ROOT"


def chip_env(spec: Spec, box: Box, chip: Chip, *, out: str = "", context: str = "",
             python: str = "") -> dict[str, str]:
    """What the chip gets on top of os.environ, resolved in the one documented order
    (config.chips.knob_env): derived from the chip, then the box's `threads`, then the
    box's `env`, then the spec's `env` (its placeholders {root}, {out}, {chip}, {python}
    filled in); plus TOLERANCE_ROOT, the box's root."""
    root = str(Path(box.root).resolve())
    spec_env = spec.resolved_env(out=out, chip=context, python=python, root=root)
    return {**knob_env(chip, threads=box.threads, env={**box.env, **spec_env}), ROOT_ENV: root}


def _watch(group, results: list[ChipResult], settle, *, deadline: float, timeout: float,
           poll: float, max_polls: int | None) -> None:
    """Poll every chip to a terminal state; kill what outlives the deadline or max_polls."""
    pending = set(range(len(results)))
    polls = 0
    while pending:
        codes = group.poll()
        polls += 1
        for i in sorted(pending):
            code = codes[i]
            # gone: no such pid at all, its status taken by someone else. A zombie is not
            # gone: its status comes, though not always at once (the leader of a killed
            # multi-threaded process is a zombie before its last thread has exited, and
            # waitpid reports it only then)
            if code is None and results[i].pid is not None and not process_exists(results[i].pid):
                code = group.poll()[i]  # it may have ended between the two looks
                if code is None:
                    settle(i, "vanished", "process gone without an exit status")
                    pending.discard(i)
                    continue
            if code is None:
                continue
            pending.discard(i)
            group.kill(i)  # its leader is reaped: what is left of its group goes now
            if code == 0:
                settle(i, "finished", None, 0)
            elif code > 0:
                settle(i, "failed", f"exited with code {code}", code)
            else:
                settle(i, "vanished", f"killed by {_signal_name(-code)} (no exit status)", code)
        if not pending:
            return
        now = time.time()
        if now >= deadline or (max_polls is not None and polls >= max_polls):
            why = (f"still running after {timeout:g} s (the spec's timeout); killed"
                   if now >= deadline else f"still running after {polls} polls; killed")
            for i in sorted(pending):
                group.kill(i)
                settle(i, "timeout", why, None)
            return
        time.sleep(min(poll, max(0.0, deadline - now)))


def run_on_box(spec: Spec, box: Box, run_dir: str | os.PathLike, *, poll: float = 0.05,
               max_polls: int | None = None, python_exe: str | None = None) -> BoxResult:
    """Run `spec` once per chip of `box`, all chips at once, into `<run_dir>/<box>/<chip>/`.

    Polls every `poll` seconds until each chip is finished | failed | vanished | timeout
    (killed once `spec.timeout` has passed, or once `max_polls` polls have been made).
    Never raises for a chip's failure: that is a status with a reason. Raises
    ToleranceError when the box directory exists already (nothing is overwritten) or
    cannot be created. Writes `<run_dir>/<box>/box.json` with `BoxResult.to_dict()`.
    """
    exe = python_exe or sys.executable
    run_dir = Path(run_dir)
    box_dir = run_dir / box.name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        box_dir.mkdir()
    except FileExistsError:
        raise ToleranceError(f"{box_dir}: already exists; a run directory is never "
                             "overwritten (claim a new run)") from None
    except OSError as exc:
        raise ToleranceError(f"{box_dir}: cannot create: {exc.strerror}") from None
    box_dir = box_dir.resolve()

    results: list[ChipResult] = []
    configs = []
    for chip in box.chip_specs():
        cdir = box_dir / chip.slug
        try:
            cdir.mkdir()
        except OSError as exc:
            raise ToleranceError(f"{cdir}: cannot create: {exc.strerror}") from None
        env = chip_env(spec, box, chip, out=str(cdir), context=str(cdir / CONTEXT_FILE),
                       python=exe)
        context = {"box": box.name, "host": box.host, "chip": str(chip), "stem": spec.stem,
                   "spec_hash": spec.identity_hash(), "out_dir": str(cdir),
                   "run_dir": str(run_dir.resolve()), "root": env[ROOT_ENV], "env": env}
        _chips.write_context(str(cdir / CONTEXT_FILE), context)
        if spec.command is not None:
            argv = spec.argv(out=str(cdir), chip=str(cdir / CONTEXT_FILE), python=exe,
                             root=env[ROOT_ENV])
        else:  # exec'd, so the resolved env is in place before anything imports NumPy
            argv = [exe, "-m", "tolerance.runner._pyentry", str(spec.python), str(cdir),
                    str(cdir / CONTEXT_FILE)]
        configs.append(_chips.ChipConfig(chip=chip, argv=argv, python=None,
                                         out_dir=str(cdir), env=env, threads=None,
                                         stdout=str(cdir / STDOUT_LOG),
                                         stderr=str(cdir / STDERR_LOG), python_exe=exe))
        results.append(ChipResult(chip=str(chip), status="running", env=env, dir=str(cdir)))

    fingerprint = environment_fingerprint({**os.environ, **box.resolved_env(), **spec.env})
    started = time.time()
    deadline = started + spec.timeout
    for r in results:
        r.started = started

    def settle(i: int, status: str, reason: str | None, code: int | None = None) -> None:
        r = results[i]
        r.status, r.reason, r.returncode, r.ended = status, reason, code, time.time()
        if status != "finished":
            r.stderr_tail = _tail(Path(r.dir) / STDERR_LOG)  # type: ignore[arg-type]

    try:
        group = _chips.start_chips(configs)
    except _chips.BootstrapError as exc:  # not even started: every chip failed
        for i in range(len(results)):
            settle(i, "failed", f"could not start: {exc}")
    else:
        with group:
            for r, pid in zip(results, group.pids):
                r.pid = pid if pid and pid > 0 else None
            try:
                group.wait(max(0.1, deadline - time.time()))
            except _chips.BootstrapError as exc:  # fail fast: every chip is killed and reaped
                group.kill()
                codes = group.poll()
                for i in range(len(results)):
                    settle(i, "failed", f"bring-up failed: {exc}", codes[i])
            else:
                _watch(group, results, settle, deadline=deadline, timeout=spec.timeout,
                       poll=poll, max_polls=max_polls)

    for r in results:
        if r.status == "failed" and r.stderr_tail and r.reason and r.reason.startswith("exited"):
            r.reason += f": {r.stderr_tail[-1].strip()[:200]}"
        if r.status != "finished":
            continue
        out = newest_output(Path(r.dir), spec.outputs)  # type: ignore[arg-type]
        if out is None:
            r.status = "failed"
            r.reason = f"finished, but wrote no file matching {spec.outputs!r} in {r.dir}"
            r.stderr_tail = _tail(Path(r.dir) / STDERR_LOG)  # type: ignore[arg-type]
        else:
            r.output = str(out)

    result = BoxResult(box=box.name,
                       status="finished" if all(r.status == "finished" for r in results)
                       else "failed",
                       chips=results, env_fingerprint=fingerprint, stem=spec.stem,
                       spec_hash=spec.identity_hash(), run_dir=str(box_dir),
                       host=socket.gethostname(), started=started, ended=time.time())
    _write_json(box_dir / "box.json", result.to_dict())  # a refused write is an error
    return result
