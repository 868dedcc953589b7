"""The ONE place the runner starts chips: `start_chips(configs)`.

The contract's starter is `tolerance.bootstrap.ChipGroup` (issue 4). Until it is in
this tree, chips start through `_PopenGroup`, plain `subprocess.Popen` (fork+exec /
posix_spawn of a fresh interpreter, never a bare `os.fork`), behind the same interface
(start / wait / poll / kill / pids / close, context manager), so switching is a change
to this module only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import IO, Mapping, Sequence

from tolerance.config.chips import parse_chip
from tolerance.config.cluster import THREAD_VARS

try:  # pragma: no cover - depends on whether issue 4 is merged
    from tolerance.bootstrap import BootstrapError, ChipConfig, ChipGroup  # type: ignore
    HAVE_BOOTSTRAP = True
except ImportError:
    HAVE_BOOTSTRAP = False
    ChipGroup = None  # type: ignore[assignment,misc]

    class BootstrapError(RuntimeError):  # type: ignore[no-redef]
        """A chip failed to come up (mirrors tolerance.bootstrap.BootstrapError)."""

    @dataclass(frozen=True)
    class ChipConfig:  # type: ignore[no-redef]
        """Mirrors tolerance.bootstrap.ChipConfig (the contract's Bootstrap API)."""

        chip: str
        argv: Sequence[str] | None
        python: str | None = None
        out_dir: str = "."
        env: Mapping[str, str] = field(default_factory=dict)
        threads: int | None = None
        buffers: Mapping[str, tuple] = field(default_factory=dict)
        stdout: str | None = None
        stderr: str | None = None
        python_exe: str = sys.executable


def start_chips(configs: Sequence[ChipConfig]):
    """Start every chip at once; returns the started group (a context manager)."""
    group = ChipGroup() if HAVE_BOOTSTRAP else _PopenGroup()
    try:
        group.start(list(configs))
    except BaseException:
        group.close()
        raise
    return group


def _child_env(cfg: ChipConfig) -> dict[str, str]:
    env = dict(os.environ)
    if cfg.threads is not None:
        env.update({v: str(cfg.threads) for v in THREAD_VARS})
    env.update(cfg.env)
    return env


class _PopenGroup:
    """Chips as plain child processes, one session (process group) each."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen | None] = []
        self._codes: list[int | None] = []
        self._errors: list[str | None] = []
        self._files: list[IO] = []
        self._configs: list[ChipConfig] = []
        self._contexts: list[SimpleNamespace] | None = None

    def __enter__(self) -> "_PopenGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- start ----------------------------------------------------------------------
    def start(self, configs: Sequence[ChipConfig]) -> None:
        if self._configs:
            raise RuntimeError("chips already started")
        self._configs = list(configs)
        for cfg in self._configs:
            self._procs.append(None)
            self._codes.append(None)
            self._errors.append(None)
            try:
                self._procs[-1] = self._spawn(cfg)
            except OSError as exc:
                self._errors[-1] = f"cannot start {self._argv(cfg)[0]!r}: {exc.strerror or exc}"

    def _argv(self, cfg: ChipConfig) -> list[str]:
        if cfg.argv is not None:
            return [str(a) for a in cfg.argv]
        context = os.path.join(cfg.out_dir, "chip.json")
        return [cfg.python_exe, "-m", "tolerance.runner._pyentry", str(cfg.python),
                cfg.out_dir, context]

    def _spawn(self, cfg: ChipConfig) -> subprocess.Popen:
        out = open(cfg.stdout, "ab") if cfg.stdout else subprocess.DEVNULL
        err = open(cfg.stderr, "ab") if cfg.stderr else subprocess.DEVNULL
        for fh in (out, err):
            if not isinstance(fh, int):
                self._files.append(fh)
        proc = subprocess.Popen(self._argv(cfg), cwd=cfg.out_dir, env=_child_env(cfg),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                close_fds=True, start_new_session=True)
        cpus = parse_chip(cfg.chip).cpus
        if cpus is not None and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(proc.pid, cpus)
            except OSError:
                pass  # cores outside this machine: the chip runs unpinned
        return proc

    # -- the ChipGroup interface ----------------------------------------------------
    def wait(self, timeout: float) -> list[SimpleNamespace]:
        """Bring-up: a chip that could not even be exec'd fails the group (fail fast)."""
        for cfg, error in zip(self._configs, self._errors):
            if error is not None:
                self.kill()
                raise BootstrapError(f"chip {cfg.chip}: {error}")
        self._contexts = [SimpleNamespace(chip=c.chip, out_dir=c.out_dir, pid=p.pid if p else None)
                          for c, p in zip(self._configs, self._procs)]
        return self._contexts

    @property
    def contexts(self) -> list[SimpleNamespace]:
        if self._contexts is None:
            raise RuntimeError("contexts are known only after wait() succeeded")
        return self._contexts

    @property
    def pids(self) -> list[int]:
        return [p.pid if p is not None else -1 for p in self._procs]

    def _reap(self, i: int, block: bool) -> None:
        proc = self._procs[i]
        if proc is None or self._codes[i] is not None:
            return
        try:
            pid, status = os.waitpid(proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return  # reaped by someone else: no status to be had (the runner says vanished)
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        self._codes[i] = code
        proc.returncode = code  # keep Popen's bookkeeping consistent

    def poll(self) -> list[int | None]:
        for i in range(len(self._procs)):
            self._reap(i, block=False)
        return list(self._codes)

    def kill(self, i: int | None = None) -> None:
        """SIGKILL one chip (or all) with everything it started, then reap."""
        for j in range(len(self._procs)) if i is None else [i]:
            proc = self._procs[j]
            if proc is None or self._codes[j] is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._reap(j, block=True)

    def read_buffer(self, i: int, name: str):
        raise NotImplementedError("output windows need tolerance.bootstrap (issue 4)")

    def close(self) -> None:
        self.kill()
        for fh in self._files:
            try:
                fh.close()
            except OSError:
                pass
        self._files = []


def write_context(path: str, context: Mapping) -> None:
    """The chip's context file (`{chip}` in a command): JSON, written then renamed."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(dict(context), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
