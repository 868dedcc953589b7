"""Shared-memory segments left behind by processes that are gone.

This project's segments (bootstrap mailboxes) are named
`/dev/shm/tol-<owner pid hex>-...[.<tag>]`: one whose owner is gone is stale. MPI runtimes'
segments (`mpich_shm_*`, ...) carry no owner: a job's are the ones its ranks said they
mapped, removed once no live process maps them (never another job's).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^tol-([0-9a-f]{1,8})-[0-9a-f]+[a-z]-[0-9a-f]{6}(?:\.([0-9a-z]{1,4}))?$")
_MPI_SHM_PREFIXES = ("mpich_shm_", "psm2_shm", "vader_segment", "sm_segment")


def process_exists(pid: int) -> bool:
    """Whether a process `pid` exists, a zombie included (its exit status is still to be
    taken by its parent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it maps nothing, runs nothing)."""
    if not process_exists(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def tagged_segments(tag: str, shm_dir: str = SHM_DIR) -> list[str]:
    """This project's segments that carry `tag` (see SEGMENT_TAG_ENV), live or stale."""
    try:
        names = sorted(os.listdir(shm_dir))
    except OSError:
        return []
    return [n for n in names if (m := _NAME.match(n)) and m.group(2) == tag]


def stale_segments(shm_dir: str = SHM_DIR) -> list[tuple[str, int]]:
    """(name, owner pid) of this project's segments whose owner process is gone."""
    out = []
    try:
        names = sorted(os.listdir(shm_dir))
    except OSError:
        return out
    for name in names:
        m = _NAME.match(name)
        if m:
            pid = int(m.group(1), 16)
            if not process_alive(pid):
                out.append((name, pid))
    return out


def remove_stale_segments(shm_dir: str = SHM_DIR) -> tuple[list[tuple[str, int]], list[tuple[str, int, str]]]:
    """Unlink every stale segment: (removed, failed with the error)."""
    removed, failed = [], []
    for name, pid in stale_segments(shm_dir):
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed.append((name, pid))
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append((name, pid, str(exc)))
    return removed, failed


def _mapped_shm_names() -> set[str] | None:
    """Names under /dev/shm that some live process maps (None when /proc cannot tell)."""
    names: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            names.update(_shm_names_mapped_by(pid))
        except OSError:
            continue
    return names


def _shm_names_mapped_by(pid: int | str) -> list[str]:
    """Names under /dev/shm that process `pid` maps, in map order (OSError if unreadable)."""
    out: list[str] = []
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
        for line in f:
            k = line.find("/dev/shm/")
            if k >= 0:
                name = line[k + 9:].split()[0]
                if name not in out:
                    out.append(name)
    return out


def remove_job_segments(names, owners, shm_dir: str = SHM_DIR) -> list[str]:
    """One job's leftovers, once every process of that job is gone: the MPI segments its
    ranks said they mapped (`names`) that no live process maps any more, and this
    project's segments owned by one of its (dead) ranks (`owners`). Nothing else: a
    segment of another job on the same machine is never touched."""
    mapped = _mapped_shm_names()
    if mapped is None:
        return []
    removed = []
    for name in sorted(set(names)):
        if "/" in name or not name.startswith(_MPI_SHM_PREFIXES) or name in mapped:
            continue
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed.append(name)
        except OSError:
            continue
    owners = set(owners)
    for name, pid in stale_segments(shm_dir):
        if pid in owners and name not in mapped:
            try:
                os.unlink(os.path.join(shm_dir, name))
                removed.append(name)
            except OSError:
                continue
    return removed


def mapped_by_self() -> list[str]:
    """Names under /dev/shm that this process maps (what a rank reports to its launcher)."""
    try:
        return _shm_names_mapped_by("self")
    except OSError:
        return []


def is_mpi_segment(name: str) -> bool:
    """Whether `name` (under /dev/shm) is an MPI runtime's segment (mpich, Open MPI, psm2)."""
    return "/" not in name and name.startswith(_MPI_SHM_PREFIXES)
