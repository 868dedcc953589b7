"""Every test leaves nothing behind, and counts only what it made itself.

Each test runs with its own segment tag in TOLERANCE_SHM_TAG, inherited by every process
it starts (chip shims, run-box, mpiexec and its ranks, workloads): the tag is part of every
bootstrap segment's name, and sits in each such process's environment. After the test, no
segment with its tag may exist and no process with its tag may be alive; what another
tolerance job on the same machine makes carries another tag (or none) and is not counted.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time

import pytest

from tolerance.bootstrap.segments import SHM_DIR, tagged_segments
from tolerance.bootstrap.types import SEGMENT_TAG_ENV

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_GRACE_S = 5.0  # processes the test killed may take a moment to be reaped by their parents


def tagged_processes(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries TOLERANCE_SHM_TAG=tag."""
    if not sys.platform.startswith("linux"):
        return []
    needle = f"{SEGMENT_TAG_ENV}={tag}".encode()
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            if needle not in env:
                continue
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[-1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            out.append(int(entry))
    return out


def new_tag() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(4))


@pytest.fixture(autouse=True)
def test_tag():
    """This test's segment tag (set in the environment for the test's duration); afterwards
    no process or segment of the test may remain (they are removed, and the test errors)."""
    tag = new_tag()
    saved = os.environ.get(SEGMENT_TAG_ENV)
    os.environ[SEGMENT_TAG_ENV] = tag
    try:
        yield tag
    finally:
        if saved is None:
            os.environ.pop(SEGMENT_TAG_ENV, None)
        else:
            os.environ[SEGMENT_TAG_ENV] = saved
    end = time.monotonic() + _GRACE_S
    procs = tagged_processes(tag)
    while procs and time.monotonic() < end:
        time.sleep(0.05)
        procs = tagged_processes(tag)
    for pid in procs:  # do not let one test's leak spill into the next ones
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    segs = tagged_segments(tag)
    for name in segs:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            pass
    assert not procs, f"processes of this test still alive: {procs}"
    assert not segs, f"segments of this test left behind: {segs}"
