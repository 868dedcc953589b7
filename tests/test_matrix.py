"""`tolerance matrix`: the recipe schema, and the matrix end to end under real mpiexec:
the shipped recipe's verdicts, kill and resume, reconciliation, dry-run, round trips."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from _mpi import mpiexec
from tolerance.cli import main
from tolerance.config.recipe import cell_trial_identity, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parent.parent
X86 = platform.machine().lower() in ("x86_64", "amd64")
CORES = ("Haswell", "SandyBridge", "Prescott")


def _cluster(root: Path) -> Path:
    lines = ["schema: 1", "boxes:"]
    for c in CORES:
        lines += [f"  - name: {c.lower()}", "    host: localhost", "    env:",
                  f"      OPENBLAS_CORETYPE: {c}", '      OPENBLAS_NUM_THREADS: "1"',
                  '      OMP_NUM_THREADS: "1"']
    (root / "specs").mkdir(exist_ok=True)
    for stem in ("lorenz", "stable"):
        (root / "specs" / f"{stem}.yaml").write_bytes((REPO / "specs" / f"{stem}.yaml").read_bytes())
    p = root / "cluster.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _recipe(root: Path, text: str | None = None, name="r.yaml") -> Path:
    p = root / name
    p.write_text(text if text is not None else (REPO / "recipes" / "blas.yaml").read_text())
    return p


def _tolerance(*args, cwd: Path, timeout: float = 300, wait=True):
    argv = [sys.executable, "-m", "tolerance", *map(str, args)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL)
    if not wait:
        return proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out:\n{out}\n{err}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _only_matrix_dir(root: Path, name="blas") -> Path:
    dirs = sorted((root / "runs" / "matrix" / name).iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _journal(mdir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (mdir / "journal.jsonl").read_text().splitlines()]


# -- schema -------------------------------------------------------------------------------

GOOD = {"schema": 1, "name": "blas", "stem": "lorenz", "trials": 2,
        "confound": {"threshold": 1.15},
        "cells": [{"name": "baseline"}, {"name": "same-gemm", "env": {"OPENBLAS_CORETYPE": "Haswell"}}]}


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d.update(schema=2), "schema"),
    (lambda d: d.pop("schema"), "schema"),
    (lambda d: d.update(surprise=1), "surprise"),
    (lambda d: d.update(trials=0), "trials"),
    (lambda d: d.update(trials="2"), "trials"),
    (lambda d: d.update(name="../up"), "name"),
    (lambda d: d.update(stem="a/b"), "stem"),
    (lambda d: d.update(baseline="nope"), "baseline"),
    (lambda d: d.update(confound={"threshold": 0.5}), "confound.threshold"),
    (lambda d: d.update(confound={"limit": 2}), "confound.limit"),
    (lambda d: d.update(cells=[]), "cells"),
    (lambda d: d.update(cells="baseline"), "cells"),
    (lambda d: d["cells"].append({"name": "baseline"}), "cells[2].name"),
    (lambda d: d["cells"].append({"name": "Baseline"}), "cells[2].name"),
    (lambda d: d["cells"].append({"name": "."}), "cells[2].name"),
    (lambda d: d["cells"].append({"env": {}}), "cells[2].name"),
    (lambda d: d["cells"].append({"name": "x", "env": {"A": [1]}}), "cells[2].env.A"),
    (lambda d: d["cells"].append({"name": "x", "colour": "red"}), "cells[2].colour"),
])
def test_every_malformed_recipe_field_is_one_line_exit_2(tmp_path, mutate, where):
    doc = json.loads(json.dumps(GOOD))
    mutate(doc)
    path = _recipe(tmp_path, yaml.safe_dump(doc))
    res = CliRunner().invoke(main, ["matrix", str(path), "--dry-run", "--cluster",
                                    str(_cluster(tmp_path))])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and where in lines[0], res.output
    assert not (tmp_path / "runs").exists()


def test_baseline_resolution():
    doc = dict(GOOD)
    doc.pop("baseline", None)
    assert parse_recipe(doc, display="r").baseline == "baseline"
    doc2 = {**GOOD, "cells": [{"name": "a", "env": {"X": "1"}}, {"name": "b"}]}
    r = parse_recipe(doc2, display="r")
    assert r.baseline == "b" and r.baseline_rule == "the first cell without env"


def test_dry_run_is_a_preflight_that_touches_nothing(tmp_path):
    cluster = _cluster(tmp_path)
    recipe = _recipe(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = CliRunner().invoke(main, ["matrix", str(recipe), "--dry-run", "--cluster", str(cluster)])
    assert res.exit_code == 0, res.output
    assert "baseline" in res.output and "same-gemm" in res.output and "trial 2" in res.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# -- end to end ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    mpiexec()
    root = tmp_path_factory.mktemp("mx")
    cluster = _cluster(root)
    res = _tolerance("matrix", _recipe(root), "--cluster", cluster, "--json", cwd=root)
    return root, cluster, res


@pytest.mark.skipif(not X86, reason="the default boxes differ through OPENBLAS_CORETYPE (x86-64)")
def test_the_shipped_recipe_finds_the_knob(shipped):
    root, _, res = shipped
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "tolerance.matrix/1" and doc["complete"] and doc["deltas"] == []
    assert doc["cells"]["baseline"]["verdict"] == "fail"
    assert doc["cells"]["same-gemm"]["verdict"] == "pass"
    for c in doc["cells"].values():
        assert isinstance(c["slowdown"], float) and c["slowdown"] > 0
        assert set(c["wall_s"]) == {"median", "p90", "min", "max"}
        assert c["trials_agree"] is True          # OpenBLAS on one thread is deterministic
    assert doc["cells"]["baseline"]["slowdown"] == 1.0
    assert doc["cells"]["baseline"]["keys"]["z_b"]["onset"] == 0
    mdir = _only_matrix_dir(root)
    for f in ("matrix.md", "matrix.json", "recipe.resolved.yaml", "journal.jsonl",
              "snapshot/recipe.yaml", "snapshot/specs/lorenz.yaml"):
        assert (mdir / f).is_file(), f
    for cell in ("baseline", "same-gemm"):
        for k in (1, 2):
            assert (mdir / "cells" / cell / f"trial-{k}" / "report.json").is_file()
    assert "| same-gemm | OPENBLAS_CORETYPE=Haswell | pass |" in (mdir / "matrix.md").read_text()


def test_the_resolved_recipe_round_trips(shipped, tmp_path):
    root, cluster, _ = shipped
    mdir = _only_matrix_dir(root)
    original = load_recipe(mdir / "snapshot" / "recipe.yaml")
    again = load_recipe(mdir / "recipe.resolved.yaml")
    assert again.resolved() == original.resolved()
    assert again.cells == original.cells and again.baseline == original.baseline
    spec = {"x": 1}
    ids = [[cell_trial_identity(stem=r.stem, spec_content=spec, env=c.env, trial=k,
                                code_commit="c") for c in r.cells for k in range(1, r.trials + 1)]
           for r in (original, again)]
    assert ids[0] == ids[1]
    res = CliRunner().invoke(main, ["matrix", str(mdir / "recipe.resolved.yaml"), "--dry-run",
                                    "--cluster", str(cluster), "--json"])
    assert res.exit_code == 0, res.output
    dry = json.loads(res.output)
    journal = {(e["cell"], e["trial"]): e["identity"] for e in _journal(mdir)}
    assert {(c["cell"], c["trial"]): c["identity"] for c in dry["cells"]} == journal


def test_a_deleted_or_truncated_output_is_found_and_resume_reruns_only_it(shipped):
    root, cluster, _ = shipped
    mdir = _only_matrix_dir(root)
    (mdir / "cells" / "same-gemm" / "trial-2" / "report.json").unlink()
    (mdir / "cells" / "baseline" / "trial-1" / "series.npz").write_bytes(b"PK\x03\x04broken")
    started_before = sum(1 for e in _journal(mdir) if e["state"] == "started")
    res = _tolerance("matrix", "--resume", mdir, "--cluster", cluster, "--json", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["complete"]
    started = [e for e in _journal(mdir) if e["state"] == "started"]
    rerun = {(e["cell"], e["trial"]) for e in started[started_before:]}
    assert rerun == {("same-gemm", 2), ("baseline", 1)}


def test_reconciliation_reports_what_is_missing(shipped, tmp_path):
    root, cluster, _ = shipped
    from tolerance.collective import matrix as mx
    from tolerance.config import load_spec

    mdir = _only_matrix_dir(root)
    recipe = load_recipe(mdir / "snapshot" / "recipe.yaml")
    spec = load_spec("lorenz", mdir / "snapshot" / "specs")
    commit = _journal(mdir)[0]["identity"]  # any: identities are not looked at here
    m = mx.plan(recipe, spec, mdir, commit)
    report = mdir / "cells" / "baseline" / "trial-2" / "report.json"
    saved = report.read_bytes()
    try:
        report.write_bytes(b"")
        (mdir / "cells" / "baseline" / "trial-9").mkdir()
        deltas = mx.reconcile(m)
    finally:
        report.write_bytes(saved)
        (mdir / "cells" / "baseline" / "trial-9").rmdir()
    assert any("baseline trial 2: zero-byte report.json" in d for d in deltas), deltas
    assert any("trial-9: not in the roster" in d for d in deltas), deltas


def test_a_killed_matrix_resumes_only_the_unfinished(tmp_path):
    mpiexec()
    cluster = _cluster(tmp_path)
    recipe = _recipe(tmp_path, yaml.safe_dump({**GOOD, "name": "k", "stem": "stable",
                                               "trials": 1}))
    proc = _tolerance("matrix", recipe, "--cluster", cluster, cwd=tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 120
        mdir = None
        while time.monotonic() < deadline:
            dirs = list((tmp_path / "runs" / "matrix" / "k").glob("*")) \
                if (tmp_path / "runs" / "matrix" / "k").is_dir() else []
            if dirs and (dirs[0] / "journal.jsonl").is_file() and \
                    any(e["state"] == "done" for e in _journal(dirs[0])):
                mdir = dirs[0]
                break
            time.sleep(0.1)
        assert mdir is not None, "the first cell-trial never finished"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
    done_before = {(e["cell"], e["trial"]) for e in _journal(mdir) if e["state"] == "done"}
    assert done_before == {("baseline", 1)}
    n_before = len(_journal(mdir))
    res = _tolerance("matrix", "--resume", mdir, "--cluster", cluster, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    new = _journal(mdir)[n_before:]
    assert {(e["cell"], e["trial"]) for e in new if e["state"] == "started"} == {("same-gemm", 1)}
    assert json.loads(res.stdout)["complete"]


def test_editing_the_recipe_mid_matrix_changes_nothing(shipped):
    root, _, _ = shipped
    mdir = _only_matrix_dir(root)
    (root / "r.yaml").write_text("schema: 1\nname: blas\nstem: stable\ncells: [{name: other}]\n")
    assert load_recipe(mdir / "snapshot" / "recipe.yaml").stem == "lorenz"


def test_a_cell_that_fails_to_run_is_an_error_row_and_the_matrix_goes_on(tmp_path):
    mpiexec()
    cluster = _cluster(tmp_path)
    (tmp_path / "specs" / "picky.yaml").write_text(
        "schema: 1\n"
        "command: [\"{python}\", \"-c\", \"import os, sys, numpy as np; "
        "sys.exit(3) if os.environ.get('BREAK') else np.savez(sys.argv[1] + '/o.npz', x=np.zeros(3))\", \"{out}\"]\n"
        "keys: [x]\ntimeout: 30\n")
    recipe = _recipe(tmp_path, yaml.safe_dump(
        {"schema": 1, "name": "e", "stem": "picky",
         "cells": [{"name": "broken", "env": {"BREAK": "1"}}, {"name": "fine"}]}))
    res = _tolerance("matrix", recipe, "--cluster", cluster, "--json", cwd=tmp_path)
    doc = json.loads(res.stdout)
    assert doc["cells"]["broken"]["verdict"] == "error"
    assert doc["cells"]["broken"]["trials"][0]["reason"]
    assert doc["cells"]["fine"]["verdict"] == "pass"
    assert res.returncode == 0, res.stderr  # it ran and its report loads: complete
