"""A failure on any rank, in any phase, ends the whole job; chips die with their rank.

Real processes throughout: `mpiexec -n 3 python -m tolerance run` (no launcher) and
`tolerance launch`. Full disks are real: a tiny tmpfs mounted on the box root inside a
private mount namespace (`unshare -m`, root only; in CI, where TOLERANCE_CI=1 and we are
root, these tests fail instead of skipping). After each case: the exit code, one line,
and nothing left: no workload (found by a marker in its environment), no segment, no
temporary file.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _bootstrap_helpers import FAULTS_DIR, need_root_namespaces
from _mpi import mpiexec, orphaned_mpi_segments, run_session
from tolerance.bootstrap.segments import tagged_segments

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="real processes, /proc and /dev/shm (Linux)")

MARK_ENV = "TOL_TEST_MARK"

# Every chip leaves a background grandchild and a foreground child, both sleeping: its whole
# process group must go when its rank goes.
BACKGROUND = textwrap.dedent("""\
    schema: 1
    command: ["/bin/sh", "-c", "sleep 300 & touch \\"$0/started\\"; sleep 300", "{out}"]
    keys: [z]
    env: {%s: "%s"}
    timeout: 120
    """)

QUICK = textwrap.dedent("""\
    schema: 1
    command: ["{python}", "-c", "import sys, numpy as np; np.savez(sys.argv[1] + '/out.npz', z_b=np.arange(4.0), omega_b=np.ones(4))", "{out}"]
    keys: [z_b, omega_b]
    bounds: {default: {atol: 0.0}}
    timeout: 60
    """)


def setup(tmp_path: Path, spec: str, text: str, root: Path | None = None,
          roots: dict | None = None) -> Path:
    (tmp_path / "specs").mkdir(exist_ok=True)
    (tmp_path / "specs" / f"{spec}.yaml").write_text(text)
    lines = ["schema: 1", "boxes:"]
    for name in "abc":
        r = (roots or {}).get(name, root or tmp_path)
        lines += [f"  - name: {name}", "    host: localhost", f"    root: {r}",
                  "    env: {OMP_NUM_THREADS: \"1\", OPENBLAS_NUM_THREADS: \"1\"}"]
    (tmp_path / "cluster.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path / "cluster.yaml"


def job_argv(tmp_path: Path, stem: str, *extra: str, launch: bool = False) -> list[str]:
    common = ["--cluster", str(tmp_path / "cluster.yaml"), "--specs", str(tmp_path / "specs"),
              "-q", *extra]
    if launch:
        return [sys.executable, "-m", "tolerance", "launch", stem, "--mpiexec", mpiexec(),
                *common]
    return [mpiexec(), "-n", "3", sys.executable, "-m", "tolerance", "run", stem, *common]


def with_faults(**env) -> dict:
    out = {**os.environ, **env}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [FAULTS_DIR, os.environ.get("PYTHONPATH")]))
    return out


def in_tmpfs(mount: Path, size: str, argv: list[str]) -> list[str]:
    """argv run with a `size` tmpfs on `mount`, in a private mount namespace; afterwards the
    temporary files left in it are listed as `LEFT <path>` lines on stdout."""
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; m="$2"; shift 2; "$@"; '
              'rc=$?; find "$m" -name ".*tmp*" -printf "LEFT %p\\n"; exit $rc')
    return ["unshare", "-m", "sh", "-c", script, "in-tmpfs", size, str(mount), *argv]


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err and "internal error" not in err, err
    return [ln for ln in err.splitlines() if ln.startswith("tolerance: error:")]


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries the test's marker (its workloads)."""
    needle = f"{MARK_ENV}={mark}".encode()
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in "ZX":
                continue
        except OSError:
            continue
        out.append(int(pid))
    return out


def gone_within(seconds: float, test_tag: str, mark: str, since: float) -> float:
    """Seconds until no workload, segment of the test or orphaned MPI segment is left;
    fails (after killing what is left) past `seconds`."""
    t0 = time.monotonic()
    while True:
        left = (marked(mark), tagged_segments(test_tag), orphaned_mpi_segments(since))
        if not any(left):
            return time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            for pid in left[0]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            raise AssertionError(f"left after {seconds} s: workloads {left[0]}, "
                                 f"segments {left[1]}, MPI segments {left[2]}")
        time.sleep(0.1)


class Job:
    """A job started in its own session, its output in files (a pipe held by a leaked
    process must not hang the test); killed whole at the end whatever happened."""

    def __init__(self, argv, tmp_path, env=None):
        self.out = open(tmp_path / "job.out", "w+")
        self.err = open(tmp_path / "job.err", "w+")
        self.proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=self.out,
                                     stderr=self.err, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def wait_started(self, tmp_path, stem, n=3, timeout=60):
        end = time.monotonic() + timeout
        while len(glob.glob(str(tmp_path / "runs" / stem / "*" / "*" / "*" / "started"))) < n:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < end, "the workloads did not start: " + self.output()
            time.sleep(0.05)

    def wait(self, timeout=60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the job did not end within {timeout} s: {self.output()}")

    def output(self) -> str:
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read() + self.err.read()

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        self.out.close()
        self.err.close()


def rank_of(mark: str, box: str) -> int:
    """The rank process of `box`: the parent of that box's chip leader."""
    for pid in marked(mark):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"/{box}/" in cwd + "/" and b"tolerance" in parent:
            return ppid
    raise AssertionError(f"no rank of box {box} found")


# ------------------------------------------------------------------ item 2: full disks


@pytest.mark.parametrize("launch", [False, True], ids=["mpiexec", "launch"])
def test_a_full_disk_at_the_report_ends_every_rank_naming_the_file(tmp_path, launch):
    need_root_namespaces()
    disk = tmp_path / "disk"
    disk.mkdir()
    setup(tmp_path, "quick", QUICK, root=disk)
    env = with_faults(TOLERANCE_TEST_FILL_DISK=str(disk / ".fill"))
    t0 = time.monotonic()
    res = run_session(in_tmpfs(disk, "4m", job_argv(tmp_path, "quick", launch=launch)),
                      timeout=90, env=env, cwd=tmp_path)
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res.stderr
    assert re.fullmatch(rf"tolerance: error: {re.escape(str(disk))}/runs/quick/[^/]+/"
                        r"(series\.npz|report\.json|summary\.md): cannot write "
                        r"\(No space left on device\)", errors[0]), errors
    assert "LEFT " not in res.stdout, res.stdout       # no temporary file left
    assert took < 60, took


def test_a_box_whose_disk_is_full_from_the_start_ends_the_job(tmp_path):
    need_root_namespaces()
    disk = tmp_path / "disk"
    disk.mkdir()
    setup(tmp_path, "quick", QUICK, roots={"b": disk})
    # the box root's disk is full before the job starts: b's first file cannot be written
    fill = f'head -c 8m /dev/zero > "{disk}/.fill" 2>/dev/null; exec "$@"'
    # (--no-sync: the roots differ, and a root that is not a checkout has no common code)
    argv = in_tmpfs(disk, "64k", ["sh", "-c", fill, "fill",
                                  *job_argv(tmp_path, "quick", "--no-sync")])
    res = run_session(argv, timeout=90, env=dict(os.environ), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res.stderr
    assert "box b" in errors[0] and str(disk) in errors[0], errors
    assert "No space left on device" in errors[0], errors
    assert "LEFT " not in res.stdout, res.stdout


# ------------------------------------------------------------------ item 3: chips die with their rank


@pytest.mark.parametrize("fault", ["kill-rank", "kill-mpiexec", "abort", "launch-abort",
                                   "launch-sigint"])
def test_no_workload_outlives_its_job(tmp_path, test_tag, fault):
    """SIGKILL of one rank, SIGKILL of mpiexec, MPI_Abort from a rank, Ctrl-C to the
    launcher: every chip's whole process group (its background grandchild too) is gone
    within 15 s, and no segment of the job is left."""
    mark = secrets.token_hex(6)
    setup(tmp_path, "bg", BACKGROUND % (MARK_ENV, mark))
    since = time.time() - 1
    env = dict(os.environ)
    abort = fault in ("abort", "launch-abort")
    if abort:
        env = with_faults(TOLERANCE_TEST_RAISE_BOX="b@run")
    job = Job(job_argv(tmp_path, "bg", launch=fault.startswith("launch")), tmp_path, env=env)
    try:
        if not abort:   # (with abort, rank b waits for a started chip itself)
            job.wait_started(tmp_path, "bg")
            assert len(marked(mark)) >= 6             # the leaders and their children run
        if fault == "kill-rank":
            os.kill(rank_of(mark, "b"), signal.SIGKILL)
        elif fault == "kill-mpiexec":
            os.kill(job.proc.pid, signal.SIGKILL)
        elif fault == "launch-sigint":
            os.kill(job.proc.pid, signal.SIGINT)
        code = job.wait(timeout=60)
        took = gone_within(15, test_tag, mark, since)
        err = job.stderr()
        if abort:
            assert glob.glob(str(tmp_path / "runs/bg/*/*/*/started")), job.output()
            assert code == 2, job.output()
            assert error_lines(err) == [
                "tolerance: error: rank 1 (box b): RuntimeError: injected test fault on box b "
                "while the others run"], err
            if fault == "launch-abort":
                assert "Abort(" not in err and "BAD TERMINATION" not in err, err
        elif fault == "launch-sigint":
            assert code == 130, job.output()
            assert len(error_lines(err)) == 1, err
        elif fault == "kill-rank":
            assert code != 0, job.output()
        print(f"{fault}: nothing left {took:.2f} s after the job ended")
    finally:
        job.close()
        for pid in marked(mark):
            os.kill(pid, signal.SIGKILL)


def test_a_chips_background_job_dies_when_its_leader_ends(tmp_path, test_tag):
    """`sh -c 'sleep 300 & exit 0'`: the chip is finished; its group is killed with it."""
    mark = secrets.token_hex(6)
    spec = textwrap.dedent(f"""\
        schema: 1
        command: ["/bin/sh", "-c", "sleep 300 & {sys.executable} -c 'import sys, numpy as np; np.savez(sys.argv[1] + \\"/out.npz\\", z=np.zeros(3))' \\"$0\\"", "{{out}}"]
        keys: [z]
        env: {{{MARK_ENV}: "{mark}"}}
        timeout: 60
        """)
    setup(tmp_path, "bgexit", spec)
    since = time.time() - 1
    res = run_session(job_argv(tmp_path, "bgexit"), timeout=90, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert gone_within(5, test_tag, mark, since) < 5


@pytest.mark.parametrize("launch", [False, True], ids=["mpiexec", "launch"])
def test_a_rank_that_raises_in_the_compare_ends_every_rank(tmp_path, test_tag, launch):
    setup(tmp_path, "quick", QUICK)
    since = time.time() - 1
    t0 = time.monotonic()
    res = run_session(job_argv(tmp_path, "quick", launch=launch), timeout=90, cwd=tmp_path,
                      env=with_faults(TOLERANCE_TEST_RAISE_BOX="c"))
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert error_lines(res.stderr) == [
        "tolerance: error: rank 2 (box c): RuntimeError: injected test fault on box c"], res.stderr
    assert took < 60, took
    assert gone_within(10, test_tag, "none", since) < 10


def test_launch_says_a_rank_error_its_output_never_carried(tmp_path, test_tag):
    """The runtime may kill an aborting rank before it forwards the rank's stderr: the
    rank's line also travels over the watch line, and the launcher says it once."""
    setup(tmp_path, "quick", QUICK)
    since = time.time() - 1
    res = run_session(job_argv(tmp_path, "quick", launch=True), timeout=90, cwd=tmp_path,
                      env=with_faults(TOLERANCE_TEST_RAISE_BOX="c", TOLERANCE_TEST_MUTE_RAISE="1"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert error_lines(res.stderr) == [
        "tolerance: error: rank 2 (box c): RuntimeError: injected test fault on box c"], res.stderr
    assert gone_within(10, test_tag, "none", since) < 10


def test_an_example_workload_on_a_full_disk_leaves_no_temporary(tmp_path):
    need_root_namespaces()
    disk = tmp_path / "disk"
    disk.mkdir()
    code = ("import sys, numpy as np; from tolerance.examples._common import write_npz; "
            "write_npz(sys.argv[1], 'big', z=np.zeros(1 << 20))")
    res = run_session(in_tmpfs(disk, "64k", [sys.executable, "-c", code, str(disk)]),
                      timeout=60, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "No space left on device" in res.stderr, res.stderr
    assert "LEFT " not in res.stdout, res.stdout
