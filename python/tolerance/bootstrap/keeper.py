"""What cleans up after this process if it dies without cleaning (SIGKILL, MPI_Abort of
its job, a killed mpiexec): the keeper (`_keeper_main.py`).

PR_SET_PDEATHSIG ends a chip's leader with its parent, but nothing ends the leader's own
children (a workload's background job), and a SIGKILLed process unlinks nothing. So while
this process holds chips or segments, a small keeper process runs beside it, in its own
session, reading a pipe from this process: every chip's process group and every segment
is listed there as it is made and released as it is cleaned. When the pipe ends without
the release (the kernel closes it when this process dies, however it dies) the keeper
kills what is still listed and unlinks it. With nothing listed it is not running.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

__all__ = ["guard_group", "guard_segment", "keeper_pid", "release_group", "release_segment"]

_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_keeper_main.py")
_lock = threading.RLock()
_proc: subprocess.Popen | None = None
_owner = 0
_items: dict[str, str] = {}     # key ("g 123", "s /name") -> the line that lists it


def _start() -> subprocess.Popen | None:
    global _proc, _owner
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _MAIN], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
            close_fds=True, start_new_session=True)
    except OSError:
        return None  # no keeper: the in-process cleanup still runs on every normal path
    _proc, _owner = proc, os.getpid()
    return proc


def _send(line: str) -> None:
    """Write one line to the keeper (started on demand); a keeper that died is replaced
    and told everything still listed."""
    global _proc
    for _attempt in range(2):
        proc = _proc if _proc is not None and _owner == os.getpid() else None
        if proc is None:
            proc = _start()
            line = "".join(_items.values()) or line  # a new keeper hears the whole list
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(line.encode("utf-8"))
            proc.stdin.flush()
            return
        except (OSError, ValueError):  # it died: replace it
            _proc = None


def _list(key: str, line: str) -> None:
    with _lock:
        _items[key] = line
        _send(line)


def _unlist(key: str, line: str) -> None:
    global _proc
    with _lock:
        if _items.pop(key, None) is None or _owner != os.getpid():
            return
        if _items:
            _send(line)
            return
        proc, _proc = _proc, None   # nothing left to keep: let the keeper go
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()  # end of file with nothing listed: it exits at once
            except OSError:
                pass
            # not waited for: subprocess reaps it later (it is in subprocess._active)


def _forget_in_child() -> None:
    """A forked copy keeps none of its parent's list, nor its keeper."""
    global _proc, _lock
    _proc, _lock = None, threading.RLock()
    _items.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def guard_group(pgid: int) -> None:
    """Kill process group `pgid` (a chip's: it leads its own session) if this process dies
    before `release_group`."""
    _list(f"g {pgid}", f"g {int(pgid)}\n")


def release_group(pgid: int) -> None:
    _unlist(f"g {pgid}", f"r {int(pgid)}\n")


def guard_segment(name: str, *, shared: bool = False) -> None:
    """Unlink /dev/shm segment `name` if this process dies before `release_segment`;
    shared: a segment other processes of the job map too (an MPI runtime's), unlinked only
    once none maps it."""
    _list(f"s {name}", f"{'m' if shared else 's'} {name}\n")


def release_segment(name: str) -> None:
    _unlist(f"s {name}", f"u {name}\n")


def keeper_pid() -> int | None:
    """The running keeper's pid (None when nothing is kept): for tests."""
    with _lock:
        return _proc.pid if _proc is not None and _owner == os.getpid() else None
