"""`tolerance doctor`: check this machine for leftovers of earlier runs.

``--clean-shm`` removes this project's stale POSIX shared-memory segments (bootstrap
mailboxes, ``/dev/shm/tol-<owner pid hex>-...``) whose owner process
is gone, and lists what it removed. Without it, the stale segments are only listed.
"""
from __future__ import annotations

import json
import os

import click

from tolerance.cli import _options

from tolerance.bootstrap.segments import SHM_DIR, remove_stale_segments, stale_segments


@click.command(epilog="Exit codes: 0 checked (stale segments are listed or removed, not an error), 2 error.")
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
    removed, failed = remove_stale_segments() if clean_shm else ([], [])
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
