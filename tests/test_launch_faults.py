"""`tolerance launch` faults on this machine: signals, a box that never says hello, a
missing root; each ends with one line, its exit code, and nothing of the job left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _mpi import mpiexec

SLOW = textwrap.dedent("""\
    schema: 1
    command: ["{python}", "-c", "import sys, time, numpy as np; time.sleep(60); np.savez(sys.argv[1] + '/out.npz', z_b=np.zeros(3))", "{out}"]
    keys: [z_b]
    timeout: 120
    """)


def _setup(tmp_path, pythons=("python3",) * 3, roots=(None,) * 3) -> Path:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "slow.yaml").write_text(SLOW)
    lines = ["schema: 1", "boxes:"]
    for name, py, root in zip("abc", pythons, roots):
        lines += [f"  - name: {name}", "    host: localhost", f"    python: {py}"]
        if root:
            lines.append(f"    root: {root}")
    (tmp_path / "cluster.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path / "cluster.yaml"


def _start(tmp_path, *args):
    argv = [sys.executable, "-m", "tolerance", "launch", "slow", "--mpiexec", mpiexec(), *args]
    return subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, start_new_session=True)


def _job_processes(tmp_path) -> list[str]:
    """Live processes working in this test's directory or naming it (ranks, chips)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (str(tmp_path) in cmd or cwd.startswith(str(tmp_path))) and stat != "Z":
            out.append(f"{pid} {cmd}")
    return out


def _job_segments(tmp_path) -> set[str]:
    """The /dev/shm segments the job's processes map now (the runtime's, the mailboxes)."""
    names = set()
    for entry in _job_processes(tmp_path):
        try:
            maps = Path(f"/proc/{entry.split()[0]}/maps").read_text()
        except OSError:
            continue
        names |= {ln.split("/dev/shm/", 1)[1].split()[0] for ln in maps.splitlines()
                  if "/dev/shm/" in ln}
    return names


def _finish(proc, timeout=60):
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _wait_running(tmp_path, proc, box="c"):
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f"runs/slow/*/{box}/*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)


def _one_error(err: str) -> str:
    errs = [ln for ln in err.splitlines() if ln.startswith("tolerance: error:")]
    assert len(errs) == 1, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "BAD TERMINATION" not in err
    return errs[0]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129)])
def test_a_signal_ends_the_job_everywhere_with_its_exit_code(tmp_path, sig, code):
    _setup(tmp_path)
    proc = _start(tmp_path)
    _wait_running(tmp_path, proc)
    deadline = time.monotonic() + 30
    while len(_job_processes(tmp_path)) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_job_processes(tmp_path)) >= 6       # the ranks and their chips run
    ours = _job_segments(tmp_path)
    assert any(n.startswith("tol-") for n in ours)
    t = time.monotonic()
    proc.send_signal(sig)
    out, err = _finish(proc)
    took = time.monotonic() - t
    assert proc.returncode == code, err
    line = _one_error(err)
    assert signal.Signals(sig).name in line and "ended on every host" in line
    assert took < 15, took
    deadline = time.monotonic() + 10
    while _job_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _job_processes(tmp_path) == []
    assert sorted(ours & set(os.listdir("/dev/shm"))) == []


def test_a_box_that_never_says_hello_is_named_within_the_deadline(tmp_path):
    hang = tmp_path / "hang-python"
    hang.write_text("#!/bin/sh\nexec sleep 300 # " + str(tmp_path) + "\n")
    hang.chmod(0o755)
    _setup(tmp_path, pythons=("python3", str(hang), "python3"))
    t = time.monotonic()
    proc = _start(tmp_path, "--hello-within", "12")
    out, err = _finish(proc)
    took = time.monotonic() - t
    assert proc.returncode == 2, err
    line = _one_error(err)
    assert "box b (host localhost) did not say hello within 12 s" in line, line
    assert took < 30, took
    deadline = time.monotonic() + 10
    while _job_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _job_processes(tmp_path) == []


def test_a_missing_root_is_one_line(tmp_path):
    _setup(tmp_path, roots=(None, str(tmp_path / "nowhere"), None))
    proc = _start(tmp_path)
    out, err = _finish(proc)
    assert proc.returncode == 2, err
    line = _one_error(err)
    # a box of this machine is checked on the controller, before mpiexec starts (issue 11.8)
    assert line == (f"tolerance: error: cluster.yaml: boxes[1].root: {tmp_path / 'nowhere'}: "
                    "no such directory on this machine (box b runs here, host localhost)"), line
    assert "+ " not in err and not (tmp_path / "runs").exists()
    assert _job_processes(tmp_path) == []
