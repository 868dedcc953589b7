"""Shared fixtures of the bootstrap tests (imported by tests/test_bootstrap*.py)."""
from __future__ import annotations

import os
import signal
import sys

import pytest

from tolerance.bootstrap.segments import tagged_segments

SHM = "/dev/shm"
#: the test-only sitecustomize that injects faults into the processes the tests start
FAULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_faults")
FAULT = "TOLERANCE_CHIP_TEST_FAULT"


def need_root_namespaces() -> None:
    """Skip without root or unshare (a tmpfs in a private mount namespace); in CI
    (TOLERANCE_CI=1, where we are root) fail instead."""
    import shutil

    why = None
    if os.geteuid() != 0:
        why = "needs root (a tmpfs in a private mount namespace)"
    elif not shutil.which("unshare"):
        why = "needs unshare (util-linux)"
    if why:
        if os.environ.get("TOLERANCE_CI") == "1":
            pytest.fail(why)
        pytest.skip(why)


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
    """This project's segments in /dev/shm, of every job on the machine (filter by owner)."""
    try:
        return {n for n in os.listdir(SHM) if n.startswith("tol-")}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaked_segments(test_tag):
    """Every test leaves /dev/shm as it found it, failures included; and none runs forever.
    Only this test's segments count (its tag, set by conftest's test_tag): another tolerance
    job on the same machine has its own."""
    before = set(tagged_segments(test_tag))

    def _alarm(signum, frame):
        raise TimeoutError(f"test ran longer than {TEST_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    leaked = set(tagged_segments(test_tag)) - before
    assert not leaked, f"leaked segments: {sorted(leaked)}"
