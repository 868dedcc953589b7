"""Shared-memory segments left behind by processes that are gone.

This project's segments (bootstrap mailboxes) are named
`/dev/shm/tol-<owner pid hex>-...[.<tag>]`: one whose owner is gone is stale. MPI runtimes'
segments (`mpich_shm_*`, ...) carry no owner; one that no live process maps, made while a
job that was killed ran, is that job's.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^tol-([0-9a-f]{1,8})-[0-9a-f]+[a-z]-[0-9a-f]{6}(?:\.([0-9a-z]{1,4}))?$")
_MPI_SHM_PREFIXES = ("mpich_shm_", "psm2_shm", "vader_segment", "sm_segment")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
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
            if not _alive(pid):
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
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    k = line.find("/dev/shm/")
                    if k >= 0:
                        names.add(line[k + 9:].split()[0])
        except OSError:
            continue
    return names


def remove_orphaned_mpi_segments(since: float, shm_dir: str = SHM_DIR) -> list[str]:
    """MPI shared-memory segments made since `since` (epoch s) that no live process maps:
    a job whose ranks were SIGKILLed could not unlink them."""
    root = Path(shm_dir)
    if not root.is_dir():
        return []
    mapped = _mapped_shm_names()
    if mapped is None:
        return []
    removed = []
    for entry in root.iterdir():
        if not entry.name.startswith(_MPI_SHM_PREFIXES) or entry.name in mapped:
            continue
        try:
            if entry.stat().st_mtime >= since:
                entry.unlink()
                removed.append(entry.name)
        except OSError:
            continue
    return removed


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
    out: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                k = line.find("/dev/shm/")
                if k >= 0:
                    name = line[k + 9:].split()[0]
                    if name not in out:
                        out.append(name)
    except OSError:
        pass
    return out
