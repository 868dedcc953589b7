"""The main job end to end: `mpiexec -n 3 python -m tolerance run STEM` and `tolerance launch`.

Every run here starts real MPI ranks and chip processes, with timeouts; outputs go under
temporary box roots, never into the repository.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _mpi import mpiexec, run_mpi
from tolerance.cli import main
from tolerance.compare.series import read_series

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
X86 = platform.machine().lower() in ("x86_64", "amd64")
CORES = ("Haswell", "SandyBridge", "Prescott")


def write_cluster(root: Path, boxes: list[dict]) -> Path:
    lines = ["schema: 1", "boxes:"]
    for b in boxes:
        lines.append(f"  - name: {b['name']}")
        lines.append("    host: localhost")
        if "root" in b:
            lines.append(f"    root: {b['root']}")
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **b.get("env", {})}
        lines.append("    env:")
        lines += [f"      {k}: \"{v}\"" for k, v in env.items()]
    path = root / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def default_boxes() -> list[dict]:
    return [{"name": c.lower(), "env": {"OPENBLAS_CORETYPE": c}} for c in CORES]


def run_job(cluster: Path, stem: str, *extra: str, specs: Path = SPECS, timeout: float = 240,
            env=None):
    return run_mpi([sys.executable, "-m", "tolerance", "run", stem, "--cluster", cluster,
                    "--specs", specs, *extra], n=3, timeout=timeout, env=env, cwd=cluster.parent)


def report_of(root: Path, stem: str) -> dict:
    reports = sorted((root / "runs" / stem).glob("*/report.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


@pytest.fixture(scope="module")
def lorenz_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lorenz")
    res = run_job(write_cluster(root, default_boxes()), "lorenz")
    return root, res


@pytest.mark.skipif(not X86, reason="OPENBLAS_CORETYPE names x86-64 kernels")
def test_lorenz_on_the_default_boxes_fails_from_step_0(lorenz_run):
    root, res = lorenz_run
    assert res.returncode == 1, res.stderr
    for key in ("z_b", "omega_b"):
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith(f"max‖{key}[")]
        assert len(lines) == 3 and all("FAIL" in ln for ln in lines), res.stdout
    doc = report_of(root, "lorenz")
    assert doc["schema"] == "tolerance.run/1" and doc["exit_code"] == 1
    z = [r for r in doc["rows"] if r["key"] == "z_b"]
    assert len(z) == 3 and all(r["onset"] == 0 and r["status"] == "fail" for r in z)
    assert [b["name"] for b in doc["boxes"]] == ["haswell", "sandybridge", "prescott"]
    assert all(b["status"] == "finished" for b in doc["boxes"])
    assert doc["bytes_moved"] > 0
    run_dir = Path(doc["run_dir"])
    for name in ("report.json", "series.npz", "summary.md"):
        assert (run_dir / name).is_file()
    series = read_series(run_dir / "series.npz")
    assert [(r.a, r.b, r.key) for r in series.rows] == \
        [(r["a"], r["b"], r["key"]) for r in doc["rows"]]
    assert all(r.margin is not None and r.margin.size == r.max_abs.size for r in series.rows)


@pytest.fixture(scope="module")
def lorenz_run_small_blocks(tmp_path_factory):
    root = tmp_path_factory.mktemp("lorenz-small")
    res = run_job(write_cluster(root, default_boxes()), "lorenz", "--chunk-mb", "0.0625")
    return root, res


@pytest.mark.skipif(not X86, reason="OPENBLAS_CORETYPE names x86-64 kernels")
@pytest.mark.parametrize("which", ["default", "small"])
def test_report_rows_equal_tolerance_diff_on_the_same_files(lorenz_run, lorenz_run_small_blocks,
                                                            which):
    root, res = lorenz_run if which == "default" else lorenz_run_small_blocks
    assert res.returncode == 1, res.stderr
    doc = report_of(root, "lorenz")
    outputs = [b["chips"][0]["output"] for b in doc["boxes"]]
    for chunk_mb in ("0.0625", "1", "16", "64"):
        for key, bounds in doc["bounds"].items():
            args = ["diff", *outputs, "--keys", key, "--json", "--atol", repr(bounds["atol"]),
                    "--rtol", repr(bounds["rtol"]), "--chunk-mb", chunk_mb]
            out = CliRunner().invoke(main, args)
            assert out.exit_code in (0, 1, 3), out.output
            diff_rows = json.loads(out.stdout)["rows"]
            run_rows = [r for r in doc["rows"] if r["key"] == key]
            assert len(diff_rows) == len(run_rows) == 3
            for d, r in zip(diff_rows, run_rows):
                for f in ("status", "code", "bound", "max_abs", "argmax", "step", "max_rel",
                          "max_ulp", "count_over", "size", "nan_mismatch", "nan_both",
                          "inf_mismatch", "onset", "margin", "growth"):
                    assert d[f] == r[f], (which, chunk_mb, key, f, d, r)


def _numpy_margin(a, b, bound):
    """max |a-b| / (atol + rtol*max(|a|,|b|)), in float64 (the oracle of a row's margin)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    allowed = (bound["atol"] or 0.0) + (bound["rtol"] or 0.0) * np.maximum(np.abs(a), np.abs(b))
    return float(np.max(np.abs(a - b) / allowed))


def _outputs(doc):
    out = {}
    for b in doc["boxes"]:
        with np.load(b["chips"][0]["output"]) as f:
            out[b["name"]] = {k: f[k] for k in doc["bounds"]}
    return out


@pytest.mark.skipif(not X86, reason="OPENBLAS_CORETYPE names x86-64 kernels")
def test_lorenz_report_shows_margin_growth_and_plots(lorenz_run):
    root, res = lorenz_run
    doc = report_of(root, "lorenz")
    data = _outputs(doc)
    for r in doc["rows"]:
        want = _numpy_margin(data[r["a"]][r["key"]], data[r["b"]][r["key"]], r["bound"])
        assert r["margin"] == pytest.approx(want, rel=1e-12), r
        g = r["growth"]
        if r["key"] == "z_b":       # every z_b row: a short doubling time and a saturation
            assert 2 < g["doubling_steps"] < 10 and g["from_step"] == 0, g
            assert 60 <= g["saturates_at"] <= 130, g
    assert doc["outliers"] == []    # three all-different boxes: nobody is the odd one
    z_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("max‖z_b[")]
    assert all("margin" in ln and "doubles every" in ln and "saturates at step" in ln
               for ln in z_lines), res.stdout
    run_dir = Path(doc["run_dir"])
    summary = (run_dir / "summary.md").read_text()
    if doc["plots"] is None:        # no matplotlib here: said, and the run went on
        assert "matplotlib" in doc["plots_note"] and "Plots: not drawn" in summary
        return
    assert sorted(doc["plots"]) == ["omega_b", "z_b"]
    from matplotlib.image import imread
    for key, rel in doc["plots"].items():
        assert rel == f"plots/{key}.png"
        assert imread(run_dir / rel).shape[:2] == (810, 960)
        assert f"]({rel})" in summary


def test_stable_stays_within_bound(tmp_path):
    res = run_job(write_cluster(tmp_path, default_boxes()), "stable")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = report_of(tmp_path, "stable")
    assert all(r["status"] == "pass" for r in doc["rows"]) and len(doc["rows"]) == 6
    data = _outputs(doc)
    for r in doc["rows"]:           # margin well under 1, equal to NumPy's
        want = _numpy_margin(data[r["a"]][r["key"]], data[r["b"]][r["key"]], r["bound"])
        assert r["margin"] == pytest.approx(want, rel=1e-12) and r["margin"] < 0.2, r
        assert r["growth"] is None
    assert doc["outliers"] == []


def test_identical_boxes_move_no_data(tmp_path):
    boxes = [{"name": n} for n in ("a", "b", "c")]
    res = run_job(write_cluster(tmp_path, boxes), "lorenz")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = report_of(tmp_path, "lorenz")
    assert doc["bytes_moved"] == 0
    assert all(r["max_abs"] == 0.0 and r["status"] == "pass" for r in doc["rows"])


FLAKY_SPEC = textwrap.dedent("""\
    schema: 1
    command: ["{python}", "-c", "import os, sys, numpy as np; sys.exit(3) if os.environ.get('TOL_TEST_FAIL') else np.savez(os.path.join(sys.argv[1], 'out.npz'), z_b=np.arange(12.0).reshape(4, 3), omega_b=np.ones(4))", "{out}"]
    keys: [z_b, omega_b]
    bounds: {default: {atol: 0.0}}
    timeout: 60
    """)


def test_a_failing_box_is_unmeasured_and_the_others_compared(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "flaky.yaml").write_text(FLAKY_SPEC)
    boxes = [{"name": "a"}, {"name": "b", "env": {"TOL_TEST_FAIL": "1"}}, {"name": "c"}]
    res = run_job(write_cluster(tmp_path, boxes), "flaky", specs=specs)
    assert res.returncode == 2, res.stdout + res.stderr
    doc = report_of(tmp_path, "flaky")
    for r in doc["rows"]:
        if "b" in (r["a"], r["b"]):
            assert r["status"] == "unmeasured" and "box b" in r["reason"]
        else:
            assert r["status"] == "pass"
    assert "(warn)" in res.stdout


def test_a_rank_killed_mid_compare_ends_the_job_naming_the_box(tmp_path):
    cluster = write_cluster(tmp_path, [{"name": n} for n in ("a", "b", "c")])
    faults = str(Path(__file__).with_name("_faults"))  # a test-only sitecustomize
    env = {**os.environ, "TOLERANCE_TEST_KILL_BOX": "b",
           "PYTHONPATH": os.pathsep.join(filter(None, [faults, os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "tolerance", "launch", "stable", "--cluster", str(cluster),
            "--specs", str(SPECS), "--mpiexec", mpiexec()]
    t0, t0_wall = time.monotonic(), time.time() - 1
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert "box b (rank 1" in res.stderr, res.stderr
    assert elapsed < 90  # workloads included; the abort itself is immediate
    from tolerance.bootstrap.segments import _mapped_shm_names
    mapped = _mapped_shm_names() or set()  # another job's live segments are not ours
    leftovers = [p for p in Path("/dev/shm").glob("mpich_shm_*")
                 if p.stat().st_mtime >= t0_wall and p.name not in mapped]
    assert not leftovers  # launch removed the dead job's MPI segments
    assert "BAD TERMINATION" not in res.stdout + res.stderr  # one line, not hydra's report


def _git(root, *args):
    # one fixed date: the three roots' commits are the same commit, whenever they are made
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, timeout=30,
                   env=env)


def _box_roots(tmp_path, change: str | None):
    roots = []
    for name in ("a", "b", "c"):
        r = tmp_path / name
        r.mkdir()
        _git(r, "init", "-q")
        _git(r, "config", "user.email", "t@t.invalid")
        _git(r, "config", "user.name", "t")
        (r / "model.py").write_text("def step(x):\n    return 2 * x\n")
        _git(r, "add", ".")
        _git(r, "commit", "-q", "-m", "model")
        roots.append(r)
    if change is not None:
        (roots[1] / "model.py").write_text(change)
    return roots


@pytest.mark.parametrize("change,refused", [
    ("def step(x):\n    return 3 * x\n", True),
    ("# tuned comment only\n\ndef step(x):\n\n    return 2 * x  # same\n", False),
])
def test_code_fingerprint_mismatch_is_refused(tmp_path, change, refused):
    roots = _box_roots(tmp_path, change)
    boxes = [{"name": n, "root": str(r)} for n, r in zip("abc", roots)]
    res = run_job(write_cluster(tmp_path, boxes), "stable")
    if refused:
        assert res.returncode == 2, res.stdout + res.stderr
        assert "do not run the same code" in res.stderr
        row_b = next(ln for ln in res.stderr.splitlines() if ln.strip().startswith("b "))
        assert "model.py" in row_b
        assert not list(roots[0].glob("runs/*/*"))  # refused before anything ran
    else:
        assert res.returncode == 0, res.stdout + res.stderr


def test_no_sync_runs_anyway_and_warns(tmp_path):
    roots = _box_roots(tmp_path, "def step(x):\n    return 3 * x\n")
    boxes = [{"name": n, "root": str(r)} for n, r in zip("abc", roots)]
    res = run_job(write_cluster(tmp_path, boxes), "stable", "--no-sync")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.count("--no-sync") >= 2


def test_wrong_rank_count_is_one_line(tmp_path):
    cluster = write_cluster(tmp_path, default_boxes())
    res = run_mpi([sys.executable, "-m", "tolerance", "run", "stable", "--cluster", cluster,
                   "--specs", SPECS], n=2, timeout=60, cwd=tmp_path)
    assert res.returncode == 2
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("tolerance: error:")]
    assert len(errs) == 1 and "run with -n 3" in errs[0], res.stderr


def test_launch_dry_run_prints_the_command_and_starts_nothing(tmp_path):
    cluster = write_cluster(tmp_path, default_boxes())
    out = CliRunner().invoke(main, ["launch", "lorenz", "--cluster", str(cluster), "--specs",
                                    str(SPECS), "--dry-run", "--mpiexec", mpiexec()])
    assert out.exit_code == 0, out.output
    assert out.output.count("tolerance-rank") == 3 and " : " in out.output
    for box in ("haswell", "sandybridge", "prescott"):
        assert f"python {box} -m tolerance run lorenz" in out.output
    assert not (tmp_path / "runs").exists()


def test_sync_push_by_hand_ships_rank_0s_commit(tmp_path):
    roots = _box_roots(tmp_path, None)
    (roots[0] / "model.py").write_text("def step(x):\n    return 4 * x\n")
    _git(roots[0], "commit", "-q", "-am", "newer model")
    head = subprocess.run(["git", "-C", str(roots[0]), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (roots[2] / "model.py").write_text("def step(x):\n    return 5 * x\n")   # a real change
    boxes = [{"name": n, "root": str(r)} for n, r in zip("abc", roots)]
    cluster = write_cluster(tmp_path, boxes)
    res = run_job(cluster, "stable", "--sync", "push")
    assert res.returncode == 2, res.stdout + res.stderr
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("tolerance: error:")]
    assert len(errs) == 1 and "box c" in errs[0] and "model.py" in errs[0], res.stderr
    _git(roots[2], "checkout", "-q", "--", "model.py")
    res = run_job(cluster, "stable", "--sync", "push")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = report_of(roots[0], "stable")
    assert doc["sync"] == "push" and [b["commit"] for b in doc["boxes"]] == [head] * 3
    assert (roots[1] / "model.py").read_text() == "def step(x):\n    return 4 * x\n"
