"""The console output explains itself: stable columns whatever the figures, NaN/inf
mismatches named in the value column, a legend once after the rows (suppressible),
--series says where it wrote, --json prints exactly one JSON document on stdout (errors
included) for every command that has it, and every command's --help lists exit codes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tolerance.cli import main
from tolerance.compare.report import (Columns, columns_for, format_row, legend_lines,
                                      row_lines, ulp_text)
from tolerance.compare.rows import row_from_json

REPO = Path(__file__).resolve().parent.parent
LONG_KEY = "k" * 61
LONG_BOX = "a-box-name-that-is-much-longer-than-any-other-label"


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def one_document(r):
    """stdout is exactly one strict JSON document (errors included)."""
    def refuse(x):
        raise AssertionError(f"non-strict JSON constant {x}")

    text = r.stdout.strip()
    assert text, f"nothing on stdout (exit {r.exit_code}); stderr: {r.stderr}"
    doc = json.loads(text, parse_constant=refuse)  # raises on a second document
    assert isinstance(doc, dict)
    return doc


def row_lines_of(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if "  rel " in ln and not ln.startswith("  ")]


def column_starts(line: str) -> dict[str, int]:
    """Where each labelled column starts in a row line."""
    out = {}
    for label in ("rel", "over", "onset", "margin"):
        m = re.search(rf"  {label} ", line)
        assert m, (label, line)
        out[label] = m.start()
    v = line.find("max|a-b| ")
    out["value"] = v if v >= 0 else re.search(r"‖ = +", line).end()
    # the verdict column starts right after the margin's padded figure
    m = re.search(r"  (pass|FAIL \()", line)
    out["verdict"] = m.start()
    return out


@pytest.fixture
def wide(tmp_path):
    """Inputs whose figures stretch every column: a 19-digit ULP (1.0 vs -1.0), the
    smallest subnormal, an overflow to inf, a NaN and an inf mismatch, a step past 100000,
    an integer key (no ULP), a 61-character key and a 51-character label."""
    n = 100_002
    big = np.zeros(n)
    big2 = big.copy()
    big2[100_001] = 1e-3
    a = {"sign": np.array([[1.0], [2.0]]), "tiny": np.array([[5e-324], [0.0]]),
         "huge": np.array([[1e308], [0.0]]), "nan": np.array([[1.0], [2.0]]),
         "inf": np.array([[1.0], [2.0]]), "ints": np.arange(6).reshape(3, 2),
         "steps": big, LONG_KEY: np.ones((4, 3), np.float32)}
    b = {"sign": np.array([[-1.0], [2.0]]), "tiny": np.array([[0.0], [0.0]]),
         "huge": np.array([[-1e308], [0.0]]), "nan": np.array([[1.0], [np.nan]]),
         "inf": np.array([[np.inf], [2.5]]), "ints": np.arange(6).reshape(3, 2) * 7,
         "steps": big2, LONG_KEY: np.ones((4, 3), np.float32) * np.float32(1.0000001)}
    c = {k: v.copy() for k, v in a.items()}
    np.savez(tmp_path / "a.npz", **a)
    np.savez(tmp_path / f"{LONG_BOX}.npz", **b)
    np.savez(tmp_path / "c.npz", **c)
    return [tmp_path / "a.npz", tmp_path / f"{LONG_BOX}.npz", tmp_path / "c.npz"]


def assert_aligned(lines: list[str]) -> None:
    starts = [column_starts(ln) for ln in lines]
    for col in starts[0]:
        assert len({s[col] for s in starts}) == 1, (col, "\n" + "\n".join(lines))
    # what follows the verdict (mismatch counts, growth) starts at one place too
    tails = {m.end() for m in (re.search(r"  (pass|FAIL \([^)]*\)) *  (?=\S)", ln)
                               for ln in lines) if m}
    assert len(tails) <= 1, "\n".join(lines)


def test_columns_stay_aligned_for_any_figure(wide):
    r = invoke("diff", *wide, "--atol", "1e-9")
    assert r.exit_code == 1, r.output
    lines = row_lines_of(r.stdout)
    assert len(lines) == 8 * 3
    assert_aligned(lines)
    text = "\n".join(lines)
    assert "ulp 9.2e+18" in text          # 9214364837600034816 ULPs, 2 significant digits
    assert "@ step 100001" in text and "4.9e-324" in text and LONG_KEY in text
    assert "NaN≠" in text and "inf≠" in text and "over 1/100002" in text
    ints = [ln for ln in lines if "  ints  " in ln]
    assert len(ints) == 3 and all(" ulp " not in ln for ln in ints)  # no ULP for integers
    # the same rows, re-formatted from their JSON form (report, run style): aligned too
    doc = one_document(invoke("diff", *wide, "--atol", "1e-9", "--json"))
    sign = next(x for x in doc["rows"] if x["key"] == "sign" and x["max_ulp"])
    assert sign["max_ulp"] == 9214364837600034816  # --json keeps the exact figure
    rows = [row_from_json(x) for x in doc["rows"]]
    for style in (True, False):
        assert_aligned(row_lines(rows, run_style=style))


def test_format_row_widths_grow_with_the_rows(wide):
    doc = one_document(invoke("diff", *wide, "--json"))
    rows = [row_from_json(x) for x in doc["rows"]]
    cols = columns_for(rows)
    assert cols.over == len("1/100002") and cols.key == len(LONG_KEY)  # from the rows
    assert cols.where == len("@ step 100001") and cols.onset == len("100001")
    assert cols.a == cols.b == len(LONG_BOX + ".npz")
    assert Columns().fit(rows) == cols
    assert ulp_text(None) == "" and ulp_text(4_294_967_295) == "4294967295"  # float32: exact
    assert ulp_text(10**10) == "1.0e+10" and ulp_text(18446744073709551615) == "1.8e+19"


def test_nan_and_inf_mismatch_rows_say_so_in_the_value_column(tmp_path):
    a = np.arange(12.0).reshape(4, 3)
    nan, inf = a.copy(), a.copy()
    nan[1, 2] = np.nan
    nan[3, 0] += 0.5
    inf[2, 1] = np.inf
    np.savez(tmp_path / "a.npz", x=a)
    np.savez(tmp_path / "nan.npz", x=nan)
    np.savez(tmp_path / "inf.npz", x=inf)
    r = invoke("diff", tmp_path / "a.npz", tmp_path / "nan.npz", "--atol", "1e300")
    assert r.exit_code == 1
    (line,) = row_lines_of(r.stdout)
    assert "max|a-b| NaN≠ " in line and "max|a-b| 0 " not in line
    assert "NaN-mismatch 1" in line and "(elsewhere max|a-b| 0.5 @ step 3)" in line
    assert "FAIL (atol 1e+300)" in line
    r = invoke("diff", tmp_path / "a.npz", tmp_path / "inf.npz", "--atol", "1e300")
    (line,) = row_lines_of(r.stdout)
    assert "max|a-b| inf≠ " in line and "@ step 2" in line and "inf-mismatch 1" in line
    assert r.exit_code == 1
    legend = r.stdout[r.stdout.index("legend"):]
    assert "inf≠" in legend and "NaN≠" not in legend


def test_legend_once_after_the_rows_and_suppressible(tmp_path):
    x = np.zeros((5, 2))
    y = x.copy()
    y[3, 1] = 1e-6
    np.savez(tmp_path / "a.npz", x=x, i=np.arange(3))
    np.savez(tmp_path / "b.npz", x=y, i=np.arange(3))
    r = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--atol", "1e-7")
    lines = r.stdout.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("legend")]
    assert len(starts) == 1
    (k,) = starts
    assert all(" rel " in ln for ln in lines[:k]) and len(lines[:k]) == 2
    legend = lines[k + 1:-1]
    assert lines[-1].startswith("2 inputs")  # the summary stays the last line
    terms = [ln.split()[0] for ln in legend]
    assert terms == ["max|a-b|", "rel", "ulp", "over", "onset", "margin"]
    assert all(ln.startswith("  ") for ln in legend)
    for flags in (["--no-legend"], ["-q"]):
        q = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--atol", "1e-7", *flags)
        assert q.exit_code == 1 and "legend (" not in q.stdout
    j = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--json")
    assert "legend (" not in j.output and one_document(j)["exit_code"] == 1
    # no steps axis: no onset entry, the index form is explained
    n = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--steps-axis", "none")
    tail = n.stdout[n.stdout.index("legend"):]
    assert "onset" not in tail and "@ [i,j]" in tail
    # nothing measured: no legend
    np.savez(tmp_path / "c.npz", x=np.zeros((5, 3)))
    u = invoke("diff", tmp_path / "a.npz", tmp_path / "c.npz", "--keys", "x")
    assert u.exit_code == 3 and "legend (" not in u.stdout


def test_legend_lines_run_style():
    from tolerance.compare.rows import PASS, Row
    from tolerance.config.spec import Bounds

    row = Row(a="pc", b="mac", key="z", status=PASS, bound=Bounds(atol=1.0), max_abs=0.5,
              argmax=[2, 0], step=2, max_rel=0.1, max_ulp=None, count_over=0, size=6,
              nan_mismatch=0, nan_both=1, inf_mismatch=0, onset=None, margin=0.5)
    lines = legend_lines([row], run_style=True)
    terms = [ln.split("  ")[1].strip() for ln in lines[1:]]
    assert terms == ["max‖…‖ =", "rel", "over", "onset", "margin", "nan-both"]
    line = format_row(row, columns=columns_for([row], run_style=True))
    assert line.startswith("max‖z[pc] − z[mac]‖ = 0.5") and "onset -" in line


def test_series_says_where_it_wrote(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)))
    out = tmp_path / "s.npz"
    r = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--series", out)
    assert out.exists()
    assert f"series: {out}" in r.stdout.splitlines()[-2]  # just before the summary
    out.unlink()
    j = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--series", out, "--json")
    assert one_document(j)["series"] == str(out) and f"series: {out}" in j.stderr
    assert one_document(invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz",
                               "--json"))["series"] is None
    q = invoke("diff", tmp_path / "a.npz", tmp_path / "b.npz", "--series", out, "-q")
    assert len(q.stdout.strip().splitlines()) == 1 and f"series: {out}" in q.stderr


# --------------------------------------------------------------------------- --json


def error_of(r, code=2):
    doc = one_document(r)
    assert r.exit_code == code, (r.exit_code, r.output)
    assert doc["schema"] == "tolerance.error/1" and doc["exit_code"] == code
    assert set(doc["error"]) >= {"code", "message", "file"} and doc["error"]["code"] == code
    return doc["error"]


def test_every_json_command_prints_one_document_on_errors(tmp_path):
    cluster = REPO / "cluster.yaml"
    # a missing input names its file
    e = error_of(invoke("diff", tmp_path / "nosuch.npz", tmp_path / "b.npz", "--json"))
    assert e["file"] == str(tmp_path / "nosuch.npz") and "no such file" in e["message"]
    # usage errors too (the one line stays on stderr)
    r = invoke("diff", tmp_path / "a.npz", "--json")
    assert "give at least two inputs" in error_of(r)["message"] and "Error" in r.stderr
    assert "--atol" in error_of(invoke("diff", "a", "b", "--atol", "x", "--json"))["message"]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    np.savez(tmp_path / "ok.npz", x=np.zeros(2))
    assert error_of(invoke("diff", bad, tmp_path / "ok.npz", "--json"))["file"] == str(bad)
    assert "stem" in error_of(invoke("runs", "../x", "--root", tmp_path, "--json"))["message"]
    error_of(invoke("runs", "--prune", "--root", tmp_path, "--json"))
    assert "no such run" in error_of(invoke("report", "nosuch", "--root", tmp_path,
                                            "--json"))["message"]
    e = error_of(invoke("hosts", "--cluster", tmp_path / "none.yaml", "--json"))
    assert e["file"] == str(tmp_path / "none.yaml")
    error_of(invoke("run-box", "lorenz", "--box", "nosuch", "--cluster", cluster, "--json"))
    error_of(invoke("verify", "stable", "--against", tmp_path / "noref", "--cluster", cluster,
                    "--json"))
    e = error_of(invoke("calibrate", "nosuch", "--cluster", cluster, "--json"))
    assert e["file"].endswith("nosuch.yaml")
    error_of(invoke("matrix", tmp_path / "none.yaml", "--cluster", cluster, "--json"))
    error_of(invoke("doctor", "--json", "--nope"))
    e = error_of(invoke("launch", "nosuch", "--cluster", cluster, "--json"))
    assert "stems in" in e["message"] and "lorenz" in e["message"]
    assert "after --" in error_of(invoke("launch", "lorenz", "--cluster", cluster, "--json",
                                         "--", "--bogus"))["message"]
    error_of(invoke("run", "nosuch", "--cluster", cluster, "--json"))
    # check reports its problems in its own document, exit 2
    (tmp_path / "c.yaml").write_text("schema: 1\nboxes: nope\n")
    r = invoke("check", "--cluster", tmp_path / "c.yaml", "--json")
    assert r.exit_code == 2 and one_document(r)["problems"]
    # success is one document too
    assert one_document(invoke("hosts", "--cluster", cluster, "--json"))["boxes"]
    d = one_document(invoke("launch", "lorenz", "--cluster", cluster, "--dry-run", "--json"))
    assert d["dry_run"] is True and d["argv"][0].endswith("mpiexec") and "--json" in d["argv"]


def test_json_after_double_dash_is_not_the_commands(tmp_path):
    from tolerance.cli import _wants_json

    assert _wants_json(["diff", "a", "--json"])
    assert not _wants_json(["launch", "x", "--", "--json"])


def test_error_document_names_the_file():
    from tolerance.cli._options import error_document, named_file

    assert named_file("specs/x.yaml: keys: not a list") == "specs/x.yaml"
    assert named_file("box haswell: failed") is None
    assert named_file("give at least two inputs") is None
    doc = error_document(2, "a.npz: key 'x': truncated")
    assert doc == {"schema": "tolerance.error/1", "exit_code": 2,
                   "error": {"code": 2, "message": "a.npz: key 'x': truncated",
                             "file": "a.npz"}}


def test_every_command_lists_its_exit_codes():
    assert "Exit codes" in invoke("--help").stdout
    for name in main.commands:
        r = invoke(name, "--help")
        assert r.exit_code == 0 and "Exit codes" in r.stdout, name


def test_report_prints_the_legend_and_the_odd_box(tmp_path):
    from test_stored_runs import fake_run

    run = fake_run(tmp_path, "ode", "20260102T030405Z", rows=("pass", "fail"), exit_code=1)
    doc = json.loads((run / "report.json").read_text())
    doc["steps_axis"] = 0
    for r in doc["rows"]:
        r.update({"bound": {"atol": 1e-7, "rtol": None, "ulp": None}, "max_abs": 3e-7,
                  "argmax": [4], "step": 4, "max_rel": 1e-8, "max_ulp": 9227875636482146304,
                  "count_over": 1, "size": 10, "nan_mismatch": 0, "nan_both": 0,
                  "inf_mismatch": 0, "onset": 4, "margin": 3.0})
    doc["rows"][1]["key"] = LONG_KEY
    (run / "report.json").write_text(json.dumps(doc))
    r = invoke("report", str(run))
    assert r.exit_code == 1, r.output
    lines = row_lines_of(r.stdout)
    assert len(lines) == 2 and all("ulp 9.2e+18" in ln for ln in lines)
    assert_aligned(lines)
    assert r.stdout.count("legend (") == 1 and "max‖…‖ =" in r.stdout
    assert "legend (" not in invoke("report", str(run), "--no-legend").stdout


def test_run_console_legend_switch():
    from types import SimpleNamespace

    from tolerance.compare.report import run_console
    from tolerance.compare.rows import FAIL, Row
    from tolerance.config.spec import Bounds

    row = Row(a="a", b="b", key="z", status=FAIL, bound=Bounds(atol=0.0), max_abs=1.0,
              argmax=[0], step=0, max_rel=1.0, max_ulp=3, count_over=1, size=1,
              nan_mismatch=0, nan_both=0, inf_mismatch=0, onset=0, margin=float("inf"))
    outcome = SimpleNamespace(stem="s", run_id="r", infos=[{"box": "a"}, {"box": "b"}],
                              boxes=[], notes=[], spec=SimpleNamespace(steps_axis=0),
                              participants=[1, 2], keys=["z"])
    doc = {"bytes_moved": 0, "outliers": []}
    paths = {"report": Path("/x/report.json")}
    lines, _ = run_console(outcome, [row], 1, doc, paths)
    assert any(ln.startswith("legend") for ln in lines)
    lines, _ = run_console(outcome, [row], 1, doc, paths, legend=False)
    assert not any(ln.startswith("legend") for ln in lines)


# --------------------------------------------------------------------------- launch --json

def _project(tmp_path, cluster_text=None):
    proj = tmp_path / "proj"
    (proj / "specs").mkdir(parents=True)
    (proj / "cluster.yaml").write_text(cluster_text or (REPO / "cluster.yaml").read_text())
    shutil.copy(REPO / "specs" / "stable.yaml", proj / "specs" / "stable.yaml")
    return proj


def _tolerance(proj, *args, timeout=240):
    import os
    import sys

    from _mpi import mpiexec, run_session

    mpiexec()  # skips without an MPI launcher
    tol = Path(sys.executable).parent / "tolerance"
    if not tol.exists():
        pytest.skip("no tolerance script beside this Python")
    env = {**os.environ, "PATH": f"{tol.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TOLERANCE_CLUSTER", None)
    return run_session([tol, *args], timeout=timeout, env=env, cwd=proj)


def test_launch_json_prints_the_runs_report(tmp_path):
    proj = _project(tmp_path)
    r = _tolerance(proj, "launch", "stable", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)  # exactly one document: the run's report.json
    (run_dir,) = (proj / "runs" / "stable").iterdir()
    assert doc == json.loads((run_dir / "report.json").read_text())
    assert doc["schema"] == "tolerance.run/1" and doc["exit_code"] == 0 and len(doc["rows"]) == 6
    assert "tolerance: running" in r.stderr  # progress stays on stderr


def test_launch_json_error_when_a_box_cannot_start(tmp_path):
    text = (REPO / "cluster.yaml").read_text().replace(
        "  - name: prescott\n", f"  - name: prescott\n    root: {tmp_path / 'gone'}\n", 1)
    proj = _project(tmp_path, text)
    r = _tolerance(proj, "launch", "stable", "--json", timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "tolerance.error/1" and doc["error"]["code"] == 2
    assert "prescott" in doc["error"]["message"] and "tolerance: error:" in r.stderr


def test_summary_markdown_names_nan_and_inf_mismatches():
    from tolerance.compare.report import summary_markdown

    base = {"a": "p", "b": "q", "step": 1, "max_rel": 0.0, "max_ulp": None, "onset": 1,
            "count_over": 1, "margin": "inf", "growth": None, "status": "fail", "reason": None}
    doc = {"stem": "s", "run_id": "r", "sync": "verify", "boxes": [], "outliers": [],
           "bounds": {}, "bytes_moved": 0, "exit_code": 1,
           "rows": [{**base, "key": "x", "max_abs": 0.0, "nan_mismatch": 2, "inf_mismatch": 0},
                    {**base, "key": "y", "max_abs": "inf", "nan_mismatch": 0, "inf_mismatch": 3},
                    {**base, "key": "z", "max_abs": 0.5, "nan_mismatch": 0, "inf_mismatch": 0}]}
    md = summary_markdown(doc)
    assert "| p | q | x | NaN≠ (2) |" in md and "| p | q | y | inf≠ (3) |" in md
    assert "| p | q | z | 0.5 |" in md


def test_run_json_by_hand_prints_one_document_from_rank_0(tmp_path):
    import sys

    from _mpi import run_mpi

    cluster = REPO / "cluster.yaml"  # 3 boxes, 2 ranks: refused, on every rank
    res = run_mpi([sys.executable, "-m", "tolerance", "run", "stable", "--cluster", cluster,
                   "--json"], n=2, timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["error"]["code"] == 2 and "run with -n 3" in doc["error"]["message"]
    assert doc["error"]["file"] == str(cluster)
    res = run_mpi([sys.executable, "-m", "tolerance", "run", "nosuch", "--cluster", cluster,
                   "--json"], n=2, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and json.loads(res.stdout)["error"]["file"].endswith("nosuch.yaml")


def test_what_follows_the_verdict_aligns_for_pass_and_fail_rows():
    from tolerance.compare.rows import FAIL, PASS, Row
    from tolerance.config.spec import Bounds

    common = dict(a="p", b="q", max_rel=0.0, max_ulp=0, count_over=0, size=4, inf_mismatch=0,
                  onset=None, margin=0.0, argmax=[0], step=0)
    rows = [Row(key="x", status=PASS, bound=Bounds(atol=1e-3), max_abs=0.0, nan_mismatch=0,
                nan_both=1, **common),
            Row(key="y", status=FAIL, bound=Bounds(atol=1e-3, rtol=1e-9), max_abs=0.0,
                nan_mismatch=1, nan_both=0, **common)]
    for style in (True, False):
        lines = row_lines(rows, run_style=style)
        assert lines[0].index("nan-both 1") == lines[1].index("NaN-mismatch 1"), lines
        assert_aligned(lines)


def test_a_reader_that_goes_away_ends_it_quietly(tmp_path):
    import subprocess
    import sys

    np.savez(tmp_path / "a.npz", **{f"k{i}": np.zeros(3) for i in range(1000)})
    np.savez(tmp_path / "b.npz", **{f"k{i}": np.ones(3) for i in range(1000)})
    proc = subprocess.Popen([sys.executable, "-m", "tolerance", "diff", tmp_path / "a.npz",
                             tmp_path / "b.npz"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("a.npz  b.npz  k0 ")
        proc.stdout.close()  # like `| head -1`: the rest of the rows have no reader
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 141 and err == "", err
    finally:
        proc.kill()
        proc.wait()
