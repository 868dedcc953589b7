"""Stored runs: `tolerance runs` (listing, --prune --keep N) on run directories on disk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tolerance.cli import main
from tolerance.runner.stored import find_run, list_runs, stamp_order


def fake_run(root: Path, stem: str, run_id: str, *, statuses=("finished", "finished"),
             rows=("pass", "fail"), exit_code=1, report=True) -> Path:
    """A run directory as `tolerance run` leaves it: <box>/box.json per box, report.json."""
    run = root / "runs" / stem / run_id
    names = [f"box{i}" for i in range(len(statuses))]
    for name, status in zip(names, statuses):
        (run / name / "cpu-all").mkdir(parents=True)
        out = run / name / "cpu-all" / "out.npz"
        out.write_bytes(b"")
        (run / name / "box.json").write_text(json.dumps({
            "box": name, "status": status, "chips": [
                {"chip": "cpu:*", "status": status, "output": str(out),
                 "dir": str(run / name / "cpu-all")}]}))
    if report:
        (run / "report.json").write_text(json.dumps({
            "schema": "tolerance.run/1", "run_id": run_id, "stem": stem,
            "boxes": [{"name": n, "status": s} for n, s in zip(names, statuses)],
            "rows": [{"a": "box0", "b": "box1", "key": f"k{i}", "status": s}
                     for i, s in enumerate(rows)],
            "exit_code": exit_code}))
    return run


def invoke(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_stamp_order_numbers_the_suffix():
    ids = ["20260102T030405Z-10", "20260102T030405Z-2", "20260102T030405Z", "20260101T000000Z"]
    assert sorted(ids, key=stamp_order) == ["20260101T000000Z", "20260102T030405Z",
                                             "20260102T030405Z-2", "20260102T030405Z-10"]


def test_runs_lists_stamp_boxes_counts_and_exit_code(tmp_path):
    fake_run(tmp_path, "ode", "20260102T030405Z", rows=("pass", "pass"), exit_code=0)
    fake_run(tmp_path, "ode", "20260102T030405Z-2", statuses=("finished", "failed"),
             rows=("pass", "unmeasured"), exit_code=2)
    fake_run(tmp_path, "lorenz", "20260101T000000Z", report=False)
    (tmp_path / "runs" / "ode" / "not-a-run").mkdir()  # no report, no box.json: skipped
    r = invoke("runs", "--root", str(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["STEM", "RUN", "PASS", "FAIL", "UNMEAS", "EXIT", "BOXES"]
    assert lines[1].split() == ["lorenz", "20260101T000000Z", "-", "-", "-", "-", "box0", "box1"]
    assert lines[2].split() == ["ode", "20260102T030405Z", "2", "0", "0", "0", "box0", "box1"]
    assert lines[3].split() == ["ode", "20260102T030405Z-2", "1", "0", "1", "2", "box0",
                                "box1(failed)"]
    assert lines[4] == "3 runs"
    r = invoke("runs", "ode", "--root", str(tmp_path), "--json")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["schema"] == "tolerance.runs/1"
    assert [x["run_id"] for x in doc["runs"]] == ["20260102T030405Z", "20260102T030405Z-2"]
    assert doc["runs"][1]["counts"] == {"pass": 1, "fail": 0, "unmeasured": 1}
    assert doc["runs"][1]["exit_code"] == 2
    assert doc["runs"][1]["boxes"] == {"box0": "finished", "box1": "failed"}


def test_runs_bad_stem_is_one_line(tmp_path):
    r = invoke("runs", "../x", "--root", str(tmp_path))
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "stem" in r.output


def test_prune_asks_and_keeps_the_newest(tmp_path):
    ids = [f"2026010{d}T000000Z" for d in range(1, 6)]
    for i in ids:
        fake_run(tmp_path, "ode", i)
    fake_run(tmp_path, "other", "20260101T000000Z")
    base = tmp_path / "runs" / "ode"
    # no: nothing removed
    r = invoke("runs", "--root", str(tmp_path), "--prune", "--keep", "2", input="n\n")
    assert r.exit_code == 0 and "nothing removed" in r.output
    assert sorted(p.name for p in base.iterdir()) == ids
    # no answer at all (stdin closed): an error, nothing removed
    r = invoke("runs", "--root", str(tmp_path), "--prune", "--keep", "2", input="")
    assert r.exit_code == 2 and "--yes" in r.output
    assert sorted(p.name for p in base.iterdir()) == ids
    # yes: the three oldest of `ode` go; `other` keeps its only run
    r = invoke("runs", "--root", str(tmp_path), "--prune", "--keep", "2", input="y\n")
    assert r.exit_code == 0, r.output
    assert "would remove" in r.output and "3 runs removed, 3 kept" in r.output
    assert sorted(p.name for p in base.iterdir()) == ids[3:]
    assert (tmp_path / "runs" / "other" / "20260101T000000Z").is_dir()
    # --yes: no question
    r = invoke("runs", "ode", "--root", str(tmp_path), "--prune", "--keep", "0", "--yes", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["runs"] == [] and len(doc["removed"]) == 2 and not list(base.iterdir())


def test_prune_needs_keep(tmp_path):
    r = invoke("runs", "--root", str(tmp_path), "--prune")
    assert r.exit_code == 2 and "--keep" in r.output


def test_find_run_by_path_stem_and_id(tmp_path):
    a = fake_run(tmp_path, "ode", "20260101T000000Z")
    b = fake_run(tmp_path, "ode", "20260102T000000Z")
    assert find_run(str(a), [tmp_path]) == a
    assert find_run("ode/20260101T000000Z", [tmp_path]) == a
    assert find_run("ode", [tmp_path]) == b  # a stem alone: its newest run
    with pytest.raises(Exception, match="no such run"):
        find_run("ode/20990101T000000Z", [tmp_path])
    assert [r.path for r in list_runs([tmp_path])] == [a, b]


def test_report_errors_are_one_line(tmp_path):
    fake_run(tmp_path, "ode", "20260101T000000Z", report=False)
    r = invoke("report", "ode", "--root", str(tmp_path))
    assert r.exit_code == 2 and "no report.json" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = invoke("report", "ode/20990101T000000Z", "--root", str(tmp_path))
    assert r.exit_code == 2 and "no such run" in r.output


def test_report_exit_code_and_help(tmp_path):
    fake_run(tmp_path, "ode", "20260101T000000Z", rows=("unmeasured",), exit_code=3)
    r = invoke("report", "ode", "--root", str(tmp_path))
    assert r.exit_code == 3, r.output
    assert "1 rows: 0 pass, 0 fail, 1 unmeasured -> exit 3" in r.output
    for cmd in ("report", "runs"):
        assert "Exit codes:" in invoke(cmd, "--help").output


@pytest.mark.parametrize("cmd", ["run", "diff", "check", "run-box", "launch", "runs", "report"])
def test_every_reporting_command_lists_its_exit_codes(cmd):
    r = invoke(cmd, "--help")
    assert r.exit_code == 0 and "Exit codes:" in r.output and " 2 " in r.output


def test_launch_unknown_stem_lists_the_stems(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    r = invoke("launch", "nosuch", "--cluster", str(repo / "cluster.yaml"), "--specs",
               str(repo / "specs"), "--dry-run")
    assert r.exit_code == 2 and "nosuch.yaml" in r.output
    assert "stems in" in r.output and "lorenz" in r.output and "stable" in r.output


def test_launch_checks_options_after_dashdash_before_mpi(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    r = invoke("launch", "stable", "--cluster", str(repo / "cluster.yaml"), "--specs",
               str(repo / "specs"), "--", "--chunk-mb", "nope")
    assert r.exit_code == 2 and "after --" in r.output and "--chunk-mb" in r.output
    assert "+ " not in r.output  # the mpiexec line is never printed: nothing started


def test_progress_lines_without_a_terminal():
    import io

    from tolerance.cli._progress import Progress

    buf = io.StringIO()
    p = Progress(buf)
    assert not p.live
    p.update("running 0.1 s  a: running", event=True)
    p.update("running 0.2 s  a: running")          # no change of state: no line
    p.update("running 0.3 s  a: finished", event=True)
    p.clear()
    assert buf.getvalue().splitlines() == ["tolerance: running 0.1 s  a: running",
                                           "tolerance: running 0.3 s  a: finished"]
