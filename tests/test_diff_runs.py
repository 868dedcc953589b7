"""`tolerance diff` on stored runs made by the tool: a small stem launched on the three
default boxes (twice, once with a shifted output), a `run-box` run that lacks a box, and a
run where one box fails; figures checked against a NumPy oracle on the stored outputs."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _mpi import mpiexec, run_session

from tolerance.cli import main
from tolerance.runner.stored import stamp_order

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = Path(sys.executable).parent / "tolerance"
BOXES = ("haswell", "sandybridge", "prescott")
ATOL = 2.0e-6

WALK = '''import os

import numpy as np


def main(ctx, out_dir):
    if ctx.box == os.environ.get("WALK_FAIL"):
        raise SystemExit(f"walk: told to fail on {ctx.box}")
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.standard_normal((20, 5)), axis=0).astype(np.float32)
    y[10:] += np.float32({"haswell": 0.0, "sandybridge": 1e-6, "prescott": 3e-6}[ctx.box])
    y += np.float32(os.environ.get("WALK_SHIFT", "0"))
    np.savez(os.path.join(out_dir, "walk.npz"), y=y, n=np.arange(20))
'''
SPEC = f'''schema: 1
python: mywork.walk:main
keys: [y, n]
bounds:
  default: {{atol: 0}}
  y: {{atol: {ATOL}}}
steps_axis: 0
timeout: 60
'''


def tool(argv, cwd, timeout=180):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TOLERANCE_CLUSTER", None)
    return run_session([TOLERANCE, *argv], timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    """A project with the walk stem and four stored runs: A, B (shifted by 1e-6), C
    (run-box: haswell and prescott only), D (prescott fails)."""
    if not TOLERANCE.exists():
        pytest.skip("no tolerance script beside this Python")
    mpiexec()  # skips without an MPI launcher
    p = tmp_path_factory.mktemp("walk")
    shutil.copy(REPO / "cluster.yaml", p / "cluster.yaml")
    (p / "mywork").mkdir()
    (p / "mywork" / "walk.py").write_text(WALK)
    (p / "specs").mkdir()
    (p / "specs" / "walk.yaml").write_text(SPEC)
    base = p / "runs" / "walk"
    made = []

    def new_run():
        (rid,) = set(d.name for d in base.iterdir()) - set(made)
        made.append(rid)
        return base / rid

    r = tool(["launch", "walk"], p)
    assert r.returncode == 1, r.stdout + r.stderr   # prescott is 3e-6 off: fails its pairs
    a = new_run()
    r = tool(["launch", "walk", "--", "--env", "WALK_SHIFT=1e-6"], p)
    assert r.returncode == 1, r.stdout + r.stderr
    b = new_run()
    r = tool(["run-box", "walk", "--box", "haswell"], p)
    assert r.returncode == 0, r.stdout + r.stderr
    c = new_run()
    r = tool(["run-box", "walk", "--box", "prescott", "--run-id", c.name], p)
    assert r.returncode == 0, r.stdout + r.stderr
    r = tool(["launch", "walk", "--", "--env", "WALK_FAIL=prescott"], p)
    assert r.returncode == 2, r.stdout + r.stderr
    d = new_run()
    return {"dir": p, "A": a, "B": b, "C": c, "D": d}


def diff(proj, *args):
    cwd = os.getcwd()
    os.chdir(proj["dir"])
    try:
        return CliRunner().invoke(main, ["diff", *map(str, args)])
    finally:
        os.chdir(cwd)


def diff_json(proj, *args):
    r = diff(proj, *args, "--json")
    assert r.exit_code in (0, 1, 3), r.output
    return r.exit_code, json.loads(r.stdout)


def output(run: Path, box: str) -> Path:
    return run / box / "cpu-all" / "walk.npz"


def oracle(fa: Path, fb: Path, key: str, atol: float) -> dict:
    """max |a-b| (float64), its step, and the count over atol, by NumPy."""
    with np.load(fa) as za, np.load(fb) as zb:
        x = za[key].astype(np.float64)
        y = zb[key].astype(np.float64)
    d = np.abs(x - y).reshape(len(x), -1)
    per_step = d.max(axis=1)
    return {"max_abs": float(per_step.max()), "step": int(np.argmax(per_step)),
            "count_over": int((d > atol).sum()),
            "status": "pass" if (d <= atol).all() else "fail"}


def check_row(row, fa, fb, atol):
    want = oracle(fa, fb, row["key"], atol)
    assert row["max_abs"] == want["max_abs"], (row, want)
    assert row["count_over"] == want["count_over"] and row["status"] == want["status"], row
    if want["max_abs"] != 0:
        assert row["step"] == want["step"], row


def test_same_box_across_two_runs_with_the_runs_bounds(proj):
    a, b = proj["A"], proj["B"]
    code, doc = diff_json(proj, a, b)
    rows = doc["rows"]
    assert [(r["a"], r["b"], r["key"]) for r in rows] == [
        (f"{a.name}/{box}", f"{b.name}/{box}", key) for box in BOXES for key in ("y", "n")]
    for r in rows:
        box = r["a"].split("/")[1]
        check_row(r, output(a, box), output(b, box), ATOL if r["key"] == "y" else 0.0)
        assert r["bound"]["atol"] == (ATOL if r["key"] == "y" else 0.0)
    assert any(r["max_abs"] > 0 for r in rows if r["key"] == "y")  # the shift is measured
    assert doc["pairing"] == "same_box" and "report.json" in doc["bounds_from"]
    assert [x["run_id"] for x in doc["runs"]] == [a.name, b.name]
    assert code == max((1 if r["status"] == "fail" else 0) for r in rows)
    # the console: a header naming the runs, the pairing and the bounds the run used
    out = diff(proj, a, b).output.splitlines()
    assert out[0].startswith(f"run {a.name}: ") and out[1].startswith(f"run {b.name}: ")
    assert out[2] == "pairs: the same box in each run"
    assert out[3].startswith(f"bounds from run {a.name}'s report.json (stem walk")
    assert f"y atol {ATOL:g}; n atol 0; steps axis 0" in out[3]


def test_all_pairs_is_every_box_of_a_against_every_box_of_b(proj):
    a, b = proj["A"], proj["B"]
    code, doc = diff_json(proj, a, b, "--all-pairs")
    rows = doc["rows"]
    assert doc["pairing"] == "all_pairs"
    pairs = [(r["a"], r["b"]) for r in rows if r["key"] == "y"]
    assert pairs == [(f"{a.name}/{x}", f"{b.name}/{y}") for x in BOXES for y in BOXES]
    for r in rows:
        x, y = r["a"].split("/")[1], r["b"].split("/")[1]
        check_row(r, output(a, x), output(b, y), ATOL if r["key"] == "y" else 0.0)
    assert code == 1 and any(r["status"] == "fail" for r in rows)


def test_one_run_is_every_pair_of_its_boxes_as_the_run_reported(proj):
    a = proj["A"]
    code, doc = diff_json(proj, a)
    report = json.loads((a / "report.json").read_text())
    assert code == report["exit_code"] == 1
    assert doc["pairing"] == "within"

    def ident(r):
        return (r["key"], frozenset((r["a"], r["b"])))
    mine = {ident(r): r for r in doc["rows"]}
    assert set(mine) == {ident(r) for r in report["rows"]}
    for r in report["rows"]:
        m = mine[ident(r)]
        assert (m["max_abs"], m["count_over"], m["status"], m["onset"]) == \
            (r["max_abs"], r["count_over"], r["status"], r["onset"])


def test_run_names_stem_and_stem_tilde_n(proj):
    by_path = diff_json(proj, proj["A"], proj["B"])[1]["rows"]
    # A, B, C, D in that order: D is `walk`, B is `walk~2`, A is `walk~3`
    by_name = diff_json(proj, "walk~3", f"walk/{proj['B'].name}")[1]["rows"]
    assert by_name == by_path
    r = diff(proj, "walk~9", "walk")
    assert r.exit_code == 2 and "walk~9" in r.output and "4 stored runs" in r.output
    assert len(r.output.strip().splitlines()) == 1
    # `tolerance report` takes the same names
    cwd = os.getcwd()
    os.chdir(proj["dir"])
    try:
        r = CliRunner().invoke(main, ["report", "walk~3", "--json"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 1 and json.loads(r.stdout)["run_id"] == proj["A"].name


def test_a_box_in_only_one_run_is_an_unmeasured_row(proj):
    a, c = proj["A"], proj["C"]
    code, doc = diff_json(proj, a, c)
    assert code == 3
    missing = [r for r in doc["rows"] if r["status"] == "unmeasured"]
    assert [(r["a"], r["key"], r["code"]) for r in missing] == [
        (f"{a.name}/sandybridge", "y", "missing_box"), (f"{a.name}/sandybridge", "n", "missing_box")]
    assert all(f"not in run {c.name}" in r["reason"] for r in missing)
    measured = [r for r in doc["rows"] if r["status"] != "unmeasured"]
    assert len(measured) == 4 and all(r["max_abs"] == 0.0 for r in measured)  # same code, same box
    # C has no report.json: the bounds are A's, which it recorded
    assert "report.json" in doc["bounds_from"] and a.name in doc["bounds_from"]


def test_a_box_that_failed_in_a_run_is_an_unmeasured_row(proj):
    a, d = proj["A"], proj["D"]
    code, doc = diff_json(proj, a, d)
    bad = [r for r in doc["rows"] if r["status"] == "unmeasured"]
    assert {(r["b"], r["code"]) for r in bad} == {(f"{d.name}/prescott", "no_output")}
    assert len(bad) == 2 and all("did not finish" in r["reason"] for r in bad)
    assert code == 3


def test_spec_bounds_and_the_command_line_over_them(proj):
    a, b = proj["A"], proj["B"]
    code, doc = diff_json(proj, a, b, "--spec", "walk")
    assert doc["bounds_from"].startswith("spec walk")
    assert {r["key"]: r["bound"]["atol"] for r in doc["rows"]} == {"y": ATOL, "n": 0.0}
    code, doc = diff_json(proj, a, b, "--spec", "walk", "--atol", "1e-9")
    assert doc["bounds_from"] == "the command line"
    assert all(r["bound"] == {"atol": 1e-9, "rtol": None, "ulp": None} for r in doc["rows"])
    for r in doc["rows"]:
        box = r["a"].split("/")[1]
        check_row(r, output(a, box), output(b, box), 1e-9)
    assert code == 1
    # --spec on plain files: its keys and bounds, said in a header
    r = diff(proj, output(a, "haswell"), output(a, "prescott"), "--spec", "walk")
    assert r.exit_code == 1
    assert r.output.splitlines()[0].startswith("bounds from spec walk (")
    assert f"y atol {ATOL:g}; n atol 0" in r.output.splitlines()[0]


def test_box_directories_stand_for_their_outputs(proj):
    a, b = proj["A"], proj["B"]
    code, doc = diff_json(proj, a / "haswell", b / "haswell")
    assert [(r["a"], r["b"]) for r in doc["rows"]] == [(f"{a.name}/haswell", f"{b.name}/haswell")] * 2
    for r in doc["rows"]:
        check_row(r, output(a, "haswell"), output(b, "haswell"), 0.0)


@pytest.mark.parametrize("case", [
    "report_json", "series_npz", "summary_md", "box_json", "chip_json", "plot", "series_copy",
    "dir_with_series", "stem_dir", "mixed", "no_such", "twice", "failed_box_dir",
    "run_without_boxes", "all_pairs_one_run"])
def test_bad_inputs_are_one_line_and_exit_2(proj, case, tmp_path):
    a, b, d = proj["A"], proj["B"], proj["D"]
    if case == "series_copy" or case == "dir_with_series":
        (tmp_path / "x").mkdir()
        shutil.copy(a / "series.npz", tmp_path / "x" / "mine.npz")
    if case == "run_without_boxes":
        empty = tmp_path / "runs" / "walk" / "20260101T000000Z"
        empty.mkdir(parents=True)
        shutil.copy(a / "report.json", empty / "report.json")
    args, named = {
        "report_json": ([a / "report.json", b], a / "report.json"),
        "series_npz": ([a / "series.npz", b / "series.npz"], a / "series.npz"),
        "summary_md": ([b, a / "summary.md"], a / "summary.md"),
        "box_json": ([a / "haswell" / "box.json", b], a / "haswell" / "box.json"),
        "chip_json": ([a / "haswell" / "cpu-all" / "chip.json", output(b, "haswell")],
                      a / "haswell" / "cpu-all" / "chip.json"),
        "plot": ([a / "plots" / "y.png", b], a / "plots" / "y.png"),
        "series_copy": ([tmp_path / "x" / "mine.npz", output(a, "haswell")],
                        tmp_path / "x" / "mine.npz"),
        "dir_with_series": ([tmp_path / "x", output(a, "haswell")], tmp_path / "x"),
        "stem_dir": ([a.parent, b], a.parent),
        "mixed": ([a, output(b, "haswell")], output(b, "haswell")),
        "no_such": (["nosuch", a], "nosuch"),
        "twice": ([a, a], a),
        "failed_box_dir": ([d / "prescott", a / "prescott"], d / "prescott"),
        "run_without_boxes": ([tmp_path / "runs" / "walk" / "20260101T000000Z", a],
                              tmp_path / "runs" / "walk" / "20260101T000000Z"),
        "all_pairs_one_run": ([a, "--all-pairs"], "--all-pairs"),
    }[case]
    r = diff(proj, *args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 or case == "all_pairs_one_run", r.output
    assert str(named) in r.output, r.output
    assert "Traceback" not in r.output


def test_readme_compare_stored_runs_as_printed(tmp_path):
    """The README's "Compare stored runs" commands, run exactly as printed in a fresh
    project with the shipped cluster.yaml and specs/stable.yaml."""
    from test_own_stem import example

    if not TOLERANCE.exists():
        pytest.skip("no tolerance script beside this Python")
    mpiexec()
    files, cmds = example("Compare stored runs: `tolerance diff RUN_A RUN_B`")
    assert not files and [c[:2] for c in cmds] == [["tolerance", "launch"]] * 2 + [
        ["tolerance", "runs"]] + [["tolerance", "diff"]] * 4
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    (tmp_path / "specs").mkdir()
    shutil.copy(REPO / "specs" / "stable.yaml", tmp_path / "specs" / "stable.yaml")
    out = []
    for argv in cmds:
        r = tool(argv[1:], tmp_path)
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
        out.append(r.stdout)
    older, newer = sorted((d.name for d in (tmp_path / "runs" / "stable").iterdir()),
                          key=stamp_order)
    assert [ln.split()[1] for ln in out[2].splitlines()[1:3]] == [older, newer]
    same, exact, every, spec = out[3:]
    assert "pairs: the same box in each run" in same and f"run {older}:" in same
    assert f"bounds from run {older}'s report.json (stem stable" in same
    rows = [ln for ln in same.splitlines() if ln.startswith(older + "/")]
    assert len(rows) == 6 and all(ln.split()[0].split("/")[1] == ln.split()[1].split("/")[1]
                                  for ln in rows)
    assert "bounds from the command line: z_b atol 0; omega_b atol 0" in exact
    assert len([ln for ln in every.splitlines() if ln.startswith(older + "/")]) == 18
    assert "bounds from spec stable (" in spec and "every pair of its 3 outputs" in spec


def test_runs_that_recorded_other_bounds_are_warned_and_the_first_ones_used(proj, tmp_path):
    a = proj["A"]
    other = tmp_path / "runs" / "walk" / proj["B"].name
    shutil.copytree(proj["B"], other)
    doc = json.loads((other / "report.json").read_text())
    doc["bounds"]["y"] = {"atol": 1.0, "rtol": None, "ulp": None}
    (other / "report.json").write_text(json.dumps(doc))
    r = diff(proj, a, other)
    assert f"(warn) run {other.name} used other bounds on y than run {a.name}" in r.output
    code, doc = diff_json(proj, a, other)
    assert {r["key"]: r["bound"]["atol"] for r in doc["rows"]} == {"y": ATOL, "n": 0.0}
    # the command line's steps axis and keys over the recorded ones
    code, doc = diff_json(proj, a, other, "--steps-axis", "none", "--keys", "y")
    assert doc["steps_axis"] is None and {r["key"] for r in doc["rows"]} == {"y"}
    # one step: the whole array (argmax is the element's full index)
    assert all(r["step"] == 0 and len(r["argmax"]) == 2 for r in doc["rows"])
