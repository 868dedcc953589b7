"""Shared fixtures of the bootstrap tests (imported by tests/test_bootstrap*.py)."""
from __future__ import annotations

import os
import signal
import sys

import pytest

SHM = "/dev/shm"
#: the test-only sitecustomize that injects faults into the processes the tests start
FAULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_faults")
FAULT = "TOLERANCE_CHIP_TEST_FAULT"


def faults_env(spec: str, base=None) -> dict:
    """An environment whose chip children run the faults `spec` (see _faults/sitecustomize)."""
    env = dict(os.environ if base is None else base)
    env[FAULT] = spec
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [FAULTS_DIR, env.get("PYTHONPATH")]))
    return env


def inject_faults(monkeypatch, spec: str) -> None:
    """Chip children started by this test (this process's env) run the faults `spec`."""
    for k, v in faults_env(spec).items():
        if os.environ.get(k) != v:
            monkeypatch.setenv(k, v)
TEST_TIMEOUT_S = 30

pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                      reason="inspects /dev/shm (Linux)")


def tol_segments() -> set[str]:
    """This project's segments in /dev/shm (other programs on a shared machine have theirs)."""
    try:
        return {n for n in os.listdir(SHM) if n.startswith("tol-")}
    except FileNotFoundError:
        return set()


def _owner(name: str) -> int | None:
    """The creating pid a segment's name carries (`tol-<pid hex>-...`)."""
    try:
        return int(name.split("-")[1], 16)
    except (IndexError, ValueError):
        return None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def ours(name: str) -> bool:
    """Whether a segment may be this test's: its owner is this process or a descendant,
    or is gone (a dead owner's segment is a leak whoever made it). A segment whose owner
    is alive elsewhere belongs to another job on the machine, and is not counted."""
    pid = _owner(name)
    if pid is None:
        return True
    me = os.getpid()
    seen = 0
    while pid and pid > 1 and seen < 64:
        if pid == me:
            return True
        nxt = _parent(pid)
        if nxt is None:
            return not os.path.exists(f"/proc/{pid}")  # gone: counted
        pid, seen = nxt, seen + 1
    return False


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Every test leaves /dev/shm as it found it, failures included; and none runs forever."""
    before = tol_segments()

    def _alarm(signum, frame):
        raise TimeoutError(f"test ran longer than {TEST_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    leaked = {n for n in tol_segments() - before if ours(n)}
    assert leaked == set(), f"leaked segments: {sorted(leaked)}"
