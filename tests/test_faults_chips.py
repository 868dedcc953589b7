"""Chips die with their rank (issue: no fault leaves anything behind): after SIGKILL of the
parent, a signal to a parent whose group lives in a worker thread, and a workload's
background grandchild, no workload of the test is alive. Processes are found by this test's
tag (conftest), so other jobs on the machine are not counted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import tagged_processes
from tolerance.bootstrap.segments import SHM_DIR, tagged_segments

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

PARENT = textwrap.dedent("""
    import sys, threading, time
    from tolerance.bootstrap import ChipConfig, ChipGroup
    mode = sys.argv[1]
    argv = ["sleep", "60"] if mode != "background" else ["sh", "-c", "sleep 60 & sleep 60"]
    def make():
        g = ChipGroup()
        g.start([ChipConfig("cpu:0", argv) for _ in range(2)])
        g.wait(30)
        return g
    if mode == "thread":
        from tolerance.bootstrap._registry import install_handlers
        install_handlers()
        box = {}
        # the thread lives on, like the runner's (chips die with the thread that started them)
        t = threading.Thread(target=lambda: (box.setdefault("g", make()), time.sleep(60)),
                             daemon=True)
        t.start()
        while "g" not in box:
            time.sleep(0.01)
    else:
        g = make()
    print("READY", flush=True)
    time.sleep(60)
""")


def _until_gone(tag: str, timeout: float = 10.0) -> list[int]:
    end = time.monotonic() + timeout
    procs = tagged_processes(tag)
    while procs and time.monotonic() < end:
        time.sleep(0.05)
        procs = tagged_processes(tag)
    return procs


@pytest.mark.parametrize("mode,sig", [("plain", signal.SIGKILL), ("thread", signal.SIGTERM),
                                      ("thread", signal.SIGINT), ("background", signal.SIGTERM)])
def test_no_workload_outlives_its_parent(tmp_path, test_tag, mode, sig):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    p = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert p.stdout.readline().strip() == "READY", p.stderr.read()
        end = time.monotonic() + 5
        while len(tagged_processes(test_tag)) < 3:  # the parent and its two workloads
            assert time.monotonic() < end, tagged_processes(test_tag)
            time.sleep(0.05)
        t0 = time.monotonic()
        p.send_signal(sig)
        p.wait(20)
        assert _until_gone(test_tag) == []
        assert time.monotonic() - t0 < 10
    finally:
        p.kill()
        p.wait()
        if sig == signal.SIGKILL:  # a killed parent's mailboxes: the launcher's sweep removes them
            for name in tagged_segments(test_tag):
                if name.startswith(f"tol-{p.pid:x}-"):
                    os.unlink(os.path.join(SHM_DIR, name))


def test_a_background_grandchild_dies_with_its_chip(test_tag):
    from tolerance.bootstrap import ChipConfig, ChipGroup

    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["sh", "-c", "sleep 60 & exit 0"])])
        g.wait(30)
        end = time.monotonic() + 20
        while None in g.poll():
            assert time.monotonic() < end
            time.sleep(0.02)
        assert tagged_processes(test_tag)  # the grandchild outlived its leader
    assert _until_gone(test_tag, 5) == []


KILLED_WHILE_CREATING = textwrap.dedent("""
    import os, signal, sys
    from tolerance import _native
    from tolerance.bootstrap import ChipConfig, ChipGroup
    real = _native.Mailbox.create
    made = []
    def create(name):  # the process dies right after a segment exists, before anything else
        mb = real(name)
        made.append(name)
        if len(made) == int(sys.argv[1]):
            print(name, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return mb
    _native.Mailbox.create = create
    ChipGroup().start([ChipConfig("cpu:0", ["sleep", "60"]) for _ in range(3)])
""")


@pytest.mark.parametrize("nth", [1, 3])
def test_a_mailbox_of_an_owner_killed_as_it_was_made_is_unlinked(tmp_path, test_tag, nth):
    """SIGKILL of the owner right after a mailbox segment is created (the first one: while its
    keeper is only just starting): the keeper already had the name, and unlinks it. Before,
    the name reached the keeper only after the segment existed, and CI found one left behind
    when another box aborted the job at that moment."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WHILE_CREATING)
    p = subprocess.run([sys.executable, str(script), str(nth)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == -signal.SIGKILL, p.stderr
    name = p.stdout.strip()
    assert name.startswith("/tol-") and name.endswith("." + test_tag), p.stdout
    end = time.monotonic() + 10
    while tagged_segments(test_tag) and time.monotonic() < end:
        time.sleep(0.02)
    assert tagged_segments(test_tag) == []
    assert _until_gone(test_tag) == []
