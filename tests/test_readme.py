"""Every command the README shows is exercised by a test.

The README's ```sh blocks are extracted line by line. Each command must be listed below:
HERE (run by this file exactly as printed, in a fresh project folder holding copies of the
shipped cluster.yaml, specs/ and recipes/), DRY (run as printed plus --dry-run, before any
`--`: it would need other hosts or network interfaces, so the printed line is checked to
reach every rank's mpiexec command), or the test that runs it (a node id, checked to exist
and to say the command's words). A README command that no test runs fails
`test_every_readme_command_is_exercised`; the README's example output and its Python block
are checked too.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = Path(sys.executable).parent / "tolerance"
HERE, DRY = "here", "dry"

# README command -> HERE, DRY, or (node id, words its test must contain)
COVERED: dict[str, object] = {
    # "Set up": .ci/run runs the install and the test command on a fresh clone
    "python3 -m venv .venv && .venv/bin/pip install '.[mpich]' && .venv/bin/tolerance launch lorenz":
        ("tests/test_readme.py::test_set_up_commands_are_what_ci_runs", ("launch lorenz",)),
    "python3 -m venv .venv && .venv/bin/pip install '.[mpich,test]' && .venv/bin/python -m pytest -q tests":
        ("tests/test_readme.py::test_set_up_commands_are_what_ci_runs", ("pytest -q tests",)),
    # "Run a stem on every box"
    "tolerance launch lorenz --dry-run": HERE,
    "tolerance launch lorenz": HERE,
    "mpirun -n 3 python -m tolerance run lorenz":
        ("tests/test_run_mpi.py::test_lorenz_on_the_default_boxes_fails_from_step_0",
         ("lorenz_run",)),
    "tolerance launch lorenz -- --no-sync --chunk-mb 64": DRY,
    # "Run on your machines"
    "tolerance launch lorenz --cluster hosts.yaml":
        ("tests/test_hosts_netns.py::test_lorenz_across_three_hosts", ('"lorenz"',)),
    "tolerance launch lorenz --cluster hosts.yaml --sync push":
        ("tests/test_hosts_netns.py::test_sync_push_brings_a_box_to_the_controllers_commit",
         ('"--sync", "push"', '"lorenz"')),
    "tolerance launch lorenz --mpiexec-arg=-iface --mpiexec-arg=eth1": DRY,
    # "Boxes and stems"
    "tolerance hosts": HERE,
    "tolerance check": HERE,
    "tolerance run-box lorenz --box haswell": HERE,
    # "Write your own stem": run exactly as printed by tests/test_own_stem.py
    "tolerance check ode": ("tests/test_own_stem.py::test_write_your_own_stem_as_printed",
                            ('"check"',)),
    "tolerance launch ode": ("tests/test_own_stem.py::test_write_your_own_stem_as_printed",
                             ('"launch"',)),
    "tolerance runs ode": ("tests/test_own_stem.py::test_write_your_own_stem_as_printed",
                           ('"runs"',)),
    "tolerance report ode": ("tests/test_own_stem.py::test_write_your_own_stem_as_printed",
                             ('"report"',)),
    # "Compare output files"
    "tolerance diff a.npz b.npz c.npz --atol 1e-7": HERE,
    "tolerance diff out/a out/b --json": HERE,
    # "Compare stored runs": run exactly as printed by tests/test_diff_runs.py
    **{cmd: ("tests/test_diff_runs.py::test_readme_compare_stored_runs_as_printed",
             ("Compare stored runs",)) for cmd in (
        "tolerance launch stable", "tolerance runs stable", "tolerance diff stable~1 stable",
        "tolerance diff stable~1 stable --atol 0", "tolerance diff stable~1 stable --all-pairs",
        "tolerance diff stable --spec stable")},
    # "Calibrate bounds from your runs"
    "tolerance calibrate stable --replicas 5 --perturb 1e-7":
        ("tests/test_calibrate_cli.py::test_calibrate_stable_then_launch_with_its_bounds_passes",
         ('"calibrate", "stable"',)),
    "tolerance launch stable --bounds specs/stable.bounds.yaml":
        ("tests/test_calibrate_cli.py::test_calibrate_stable_then_launch_with_its_bounds_passes",
         ('"launch", "stable"', '"--bounds"')),
    # "Which knob makes the boxes agree"
    "tolerance matrix recipes/blas.yaml --dry-run": HERE,
    "tolerance matrix recipes/blas.yaml":
        ("tests/test_matrix.py::test_the_shipped_recipe_finds_the_knob", ("shipped",)),
    # "Check a machine against a reference"
    "tolerance publish runs/stable/<run id> --box haswell --out refs/stable": HERE,
    "tolerance verify stable --against refs/stable --box newbox": HERE,
}


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """Every command line of the README's ```sh blocks (comments and blanks dropped)."""
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", readme(), re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                cmds.append(" ".join(line.split()))
    return cmds


def _test_source(nodeid: str) -> str | None:
    path, _, name = nodeid.partition("::")
    tree = ast.parse((REPO / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment((REPO / path).read_text(), node)
    return None


def test_every_readme_command_is_exercised():
    cmds = readme_commands()
    assert len(cmds) >= 20
    missing = [c for c in cmds if c not in COVERED]
    assert not missing, ("README commands that no test runs (run them in a test and list "
                         f"them in tests/test_readme.py COVERED): {missing}")
    stale = [c for c in COVERED if c not in cmds]
    assert not stale, f"COVERED lists commands the README no longer shows: {stale}"
    for cmd, how in COVERED.items():
        if how in (HERE, DRY):
            continue
        nodeid, words = how
        src = _test_source(nodeid)
        assert src is not None, f"{cmd!r}: no test {nodeid}"
        for w in words:
            assert w in src, f"{cmd!r}: {nodeid} does not say {w!r}"
    # every HERE/DRY command is run below (a command listed but not run would be a lie)
    src = Path(__file__).read_text()
    for cmd, how in COVERED.items():
        if how in (HERE, DRY):
            assert src.count(f'"{cmd}"') >= 2, f"{cmd!r} is marked {how} but not run here"


def test_set_up_commands_are_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    setup = [c for c in readme_commands() if c.startswith("python3 -m venv .venv")]
    assert len(setup) == 2, setup  # the README keeps its two set-up commands
    assert "python3 -m venv .venv" in ci and re.search(r"pip install -q \"\.\[mpich,test", ci)
    assert ".venv/bin/python -m pytest -q tests" in ci and "pytest -q tests" in setup[1]
    # the first one's launch is `tolerance launch lorenz` (run here, as printed)
    assert setup[0].endswith(".venv/bin/tolerance launch lorenz")


# --------------------------------------------------------------------------- as printed


def _project(tmp_path: Path, extra_box: str | None = None) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    cluster = (REPO / "cluster.yaml").read_text()
    if extra_box:  # a copy of the first box under another name
        first = cluster[cluster.index("  - name: haswell"):cluster.index("  - name: sandybridge")]
        cluster = cluster.rstrip("\n") + "\n" + first.replace("haswell", extra_box, 1)
    (proj / "cluster.yaml").write_text(cluster)
    shutil.copytree(REPO / "specs", proj / "specs",
                    ignore=shutil.ignore_patterns("*.bounds.*"))
    shutil.copytree(REPO / "recipes", proj / "recipes")
    return proj


def run(cmd: str, proj: Path, *, extra=(), timeout=240, subst=None):
    """The README command `cmd`, exactly as printed (placeholders substituted, `extra`
    inserted before any `--`), with `tolerance` from this environment."""
    from _mpi import run_session

    for k, v in (subst or {}).items():
        cmd = cmd.replace(k, v)
    argv = shlex.split(cmd)
    assert argv[0] == "tolerance"
    if extra:
        k = argv.index("--") if "--" in argv else len(argv)
        argv[k:k] = list(extra)
    env = {**os.environ, "PATH": f"{TOLERANCE.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TOLERANCE_CLUSTER", None)
    return run_session([TOLERANCE, *argv[1:]], timeout=timeout, env=env, cwd=proj)


needs_script = pytest.mark.skipif(not TOLERANCE.exists(),
                                  reason="no tolerance script beside this Python")


@needs_script
def test_quick_commands_as_printed(tmp_path):
    from _mpi import mpiexec

    mpiexec()  # the launch and matrix lines need a launcher
    proj = _project(tmp_path)
    r = run("tolerance hosts", proj)
    assert r.returncode == 0 and "3 boxes" in r.stdout and "haswell" in r.stdout, r.stderr
    r = run("tolerance check", proj)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok: " in r.stdout and "lorenz.yaml" in r.stdout and "stable.yaml" in r.stdout
    r = run("tolerance launch lorenz --dry-run", proj)
    assert r.returncode == 0 and r.stdout.count("run lorenz") == 3, r.stdout + r.stderr
    assert not (proj / "runs").exists()  # starts nothing
    # DRY: lines that need other hosts or network interfaces, checked up to mpiexec
    r = run("tolerance launch lorenz -- --no-sync --chunk-mb 64", proj, extra=["--dry-run"])
    assert r.returncode == 0 and r.stdout.count("run lorenz --sync verify --no-sync "
                                                "--chunk-mb 64") == 3, r.stdout + r.stderr
    r = run("tolerance launch lorenz --mpiexec-arg=-iface --mpiexec-arg=eth1", proj,
            extra=["--dry-run"])
    assert r.returncode == 0 and r.stdout.split()[1:3] == ["-iface", "eth1"], r.stdout
    r = run("tolerance matrix recipes/blas.yaml --dry-run", proj)
    assert r.returncode == 0 and "baseline" in r.stdout and "same-gemm" in r.stdout, r.stderr
    assert not (proj / "runs").exists()  # touches nothing

    r = run("tolerance run-box lorenz --box haswell", proj)
    assert r.returncode == 0, r.stdout + r.stderr
    (stamp,) = (proj / "runs" / "lorenz").iterdir()
    assert (stamp / "haswell").is_dir() and "lorenz on haswell: finished" in r.stdout

    # diff: three files of the same keys, then two directories of output files
    rng = np.random.default_rng(1)
    z = rng.standard_normal((50, 8))
    for i, name in enumerate("abc"):
        np.savez(proj / f"{name}.npz", z_b=z + i * 1e-8, omega_b=z[:5] * 2)
    r = run("tolerance diff a.npz b.npz c.npz --atol 1e-7", proj)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [ln for ln in r.stdout.splitlines() if "  rel " in ln and not ln.startswith(" ")]
    assert len(rows) == 6 and all(ln.endswith("pass") for ln in rows), r.stdout
    assert "legend (" in r.stdout and r.stdout.splitlines()[-1].endswith("-> exit 0")
    for box, d in (("a", 0.0), ("b", 5e-8)):
        (proj / "out" / box).mkdir(parents=True)
        np.savez(proj / "out" / box / "out.npz", z_b=z + d)
    r = run("tolerance diff out/a out/b --json", proj)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "tolerance.diff/1" and len(doc["rows"]) == 1
    assert doc["rows"][0]["max_abs"] == pytest.approx(5e-8, rel=1e-6)


@needs_script
def test_publish_and_verify_as_printed(tmp_path):
    proj = _project(tmp_path, extra_box="newbox")
    r = run("tolerance run-box stable --box haswell", proj)  # a stored run to publish
    assert r.returncode == 0, r.stdout + r.stderr
    (run_dir,) = (proj / "runs" / "stable").iterdir()
    r = run("tolerance publish runs/stable/<run id> --box haswell --out refs/stable", proj,
            subst={"<run id>": run_dir.name})
    assert r.returncode == 0 and (proj / "refs" / "stable" / "reference.json").is_file(), \
        r.stdout + r.stderr
    r = run("tolerance verify stable --against refs/stable --box newbox", proj)
    assert r.returncode == 0, r.stdout + r.stderr  # same kernels as haswell: within bound
    assert "tolerance verify stable on newbox" in r.stdout and "legend (" in r.stdout


@needs_script
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"),
                    reason="the default boxes differ through OPENBLAS_CORETYPE (x86-64)")
def test_main_job_as_printed(tmp_path):
    """`tolerance launch lorenz`: exits 1 on purpose, rows from onset 0, the legend."""
    from _mpi import mpiexec

    mpiexec()
    proj = _project(tmp_path)
    r = run("tolerance launch lorenz", proj)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    rows = [ln for ln in out if ln.startswith("max‖")]
    assert len(rows) == 6 and all("FAIL" in ln and "onset 0 " in ln for ln in rows), r.stdout
    assert any("doubles every" in ln for ln in rows)  # the README's growth fit
    k = out.index(next(ln for ln in out if ln.startswith("legend (")))
    assert k > out.index(rows[-1]) and "-> exit 1" in out[-1]  # legend, then the summary
    (run_dir,) = (proj / "runs" / "lorenz").iterdir()
    assert out[-1].endswith("report.json") and (run_dir / "report.json").is_file()


# --------------------------------------------------------------------------- examples


def _block_after(title: str, fence: str) -> str:
    text = readme()
    start = text.index(f"## {title}")
    return re.search(rf"```{fence}\n(.*?)```", text[start:], re.S).group(1)


def test_read_the_output_example_is_what_the_tool_prints():
    from tolerance.compare.report import legend_lines, row_lines
    from tolerance.compare.rows import FAIL, Row
    from tolerance.config.spec import Bounds

    rows = [Row(a="haswell", b="prescott", key="z_b", status=FAIL, bound=Bounds(atol=1e-7),
                max_abs=3.2e-7, argmax=[812, 5], step=812, max_rel=4.1e-8, max_ulp=3,
                count_over=17, size=4096000, nan_mismatch=0, nan_both=0, inf_mismatch=0,
                onset=790, margin=3.2),
            Row(a="haswell", b="prescott", key="omega_b", status=FAIL,
                bound=Bounds(rtol=1e-6), max_abs=0.0, argmax=[0, 0], step=0, max_rel=0.0,
                max_ulp=0, count_over=1, size=200, nan_mismatch=1, nan_both=0,
                inf_mismatch=0, onset=3, margin=float("inf"))]
    want = row_lines(rows, run_style=True) + legend_lines(rows, run_style=True)
    assert _block_after("Read the output", "text").splitlines() == want
    # docs/output.md shows the same row, run style and diff style
    doc = (REPO / "docs" / "output.md").read_text()
    assert want[0] in doc
    for r in rows:
        r.a, r.b = "a.npz", "b.npz"
    assert row_lines(rows[:1])[0] in doc


def test_the_python_block_runs():
    import tolerance

    src = _block_after("The kernels from Python", "python")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 16))
    b = a + 1e-9
    ns = {"a": a, "b": b, "actual": a * (1 + 1e-8), "desired": a}
    exec(compile(src, "README.md", "exec"), ns)  # noqa: S102 - the README's own example
    assert ns["d"].max_abs == pytest.approx(1e-9, rel=1e-3) and ns["d"].within
    assert isinstance(ns["acc"], tolerance.Accumulator)
