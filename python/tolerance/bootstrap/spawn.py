"""Starting and killing one chip child: the exec'd shim (``python -m
tolerance.bootstrap.child``), its environment and log files, its process group."""
from __future__ import annotations

import json
import os
import signal
import subprocess

from tolerance.bootstrap.types import ChipConfig

__all__ = ["kill_process_group", "last_line", "spawn_chip"]


def spawn_chip(c: ChipConfig, mailbox: str, rank: int, nranks: int) -> subprocess.Popen:
    """Start chip `rank` of `nranks` (its mailbox created by the group)."""
    out_dir = os.path.abspath(c.out_dir)
    env = dict(os.environ)
    knobs = c.knobs()
    env.update(knobs)
    threads = knobs.get("OMP_NUM_THREADS", "")
    chip = c.parsed
    payload = {
        # the chip as parsed here (the child parses nothing): its string for messages, its
        # device, device index and sorted cores (None: every core the child may use)
        "chip": c.chip, "device": chip.kind, "index": chip.index,
        "cores": list(chip.cores) if chip.cores is not None else None,
        "rank": rank, "nranks": nranks,
        "threads": int(threads) if threads.isdigit() else None,  # recorded in the context
        "argv": list(c.argv) if c.argv is not None else None, "python": c.python,
        "out_dir": out_dir,
    }
    cmd = [c.python_exe, "-m", "tolerance.bootstrap.child", mailbox,
           json.dumps(payload, separators=(",", ":"))]
    # The workload env is the shim's own from its first instruction: variables such as
    # OPENBLAS_CORETYPE act only if set before NumPy is imported, and thread variables
    # must be set before any BLAS pool starts in the shim's own interpreter.
    files = []
    try:
        out = err = None
        if c.stdout:
            out = open(c.stdout, "ab")
            files.append(out)
        if c.stderr:
            if c.stderr == c.stdout:
                err = out
            else:
                err = open(c.stderr, "ab")
                files.append(err)
        return subprocess.Popen(cmd, cwd=out_dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, close_fds=True,
                                start_new_session=True)
    finally:
        for fh in files:
            fh.close()


def last_line(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL a chip's whole process group, its leader reaped or not: a workload's
    background grandchild must not outlive the run. (A group id is not reused while any
    member lives; once none does, ESRCH.)"""
    if proc.returncode is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the chip leads its own session and group
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass
