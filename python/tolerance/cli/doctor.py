"""`tolerance doctor`: check this machine for leftovers of earlier runs.

``--clean-shm`` removes this project's stale POSIX shared-memory segments (bootstrap
mailboxes and chip output windows, ``/dev/shm/tol-<owner pid hex>-...``) whose owner process
is gone, and lists what it removed. Without it, the stale segments are only listed.
"""
from __future__ import annotations

import json
import os
import re

import click

from tolerance.cli import _options

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^tol-([0-9a-f]{1,8})-[0-9a-f]+[a-z]-[0-9a-f]{6}$")


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


@click.command()
@click.option("--clean-shm", is_flag=True,
              help="Remove stale shared-memory segments of this project whose owner is gone.")
@_options.as_json
def doctor(clean_shm: bool, as_json: bool) -> None:
    """Check for leftovers of earlier runs (stale shared-memory segments)."""
    if not os.path.isdir(SHM_DIR):
        msg = f"{SHM_DIR} does not exist: shared-memory segments cannot be listed here"
        click.echo(json.dumps({"stale": [], "removed": [], "note": msg}) if as_json
                   else f"tolerance doctor: {msg}")
        return
    stale = stale_segments()
    removed, failed = [], []
    if clean_shm:
        for name, pid in stale:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append((name, pid))
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append((name, pid, str(exc)))
    if as_json:
        click.echo(json.dumps({
            "stale": [{"name": "/" + n, "owner_pid": p} for n, p in stale],
            "removed": [{"name": "/" + n, "owner_pid": p} for n, p in removed],
            "failed": [{"name": "/" + n, "owner_pid": p, "error": e} for n, p, e in failed],
        }))
        return
    if clean_shm:
        for name, pid in removed:
            click.echo(f"removed /{name} (owner pid {pid} is gone)")
        for name, pid, err in failed:
            click.echo(f"could not remove /{name} (owner pid {pid}): {err}")
        click.echo(f"{len(removed)} stale shared-memory segment(s) removed")
    else:
        for name, pid in stale:
            click.echo(f"stale /{name} (owner pid {pid} is gone)")
        click.echo(f"{len(stale)} stale shared-memory segment(s)"
                   + ("; remove them with --clean-shm" if stale else ""))
