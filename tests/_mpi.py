"""Start `mpiexec` from tests: with a timeout, in its own session, killed whole on timeout."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if not found:
        pytest.skip("no mpiexec (install the 'mpich' extra)")
    return found


def run_session(argv, *, timeout: float = 120, env=None, cwd=None):
    """Run `argv` in its own session with a timeout; returns CompletedProcess; the whole
    session is killed afterwards (and on timeout): never leaves processes behind."""
    argv = [str(a) for a in argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{argv[0]} timed out after {timeout} s:\n{out}\n{err}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the session, if any
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_mpi(args, *, n: int | None = None, timeout: float = 120, env=None, cwd=None):
    """Run `mpiexec [-n N] ARGS...`; returns CompletedProcess; never leaves processes behind."""
    argv = [mpiexec()] + (["-n", str(n)] if n else []) + [str(a) for a in args]
    return run_session(argv, timeout=timeout, env=env, cwd=cwd)
