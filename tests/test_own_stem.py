"""The README's "Write your own stem" example, run exactly as printed: the files it shows
are written into a fresh project folder (with the shipped cluster.yaml) and its commands
are run there with `tolerance` from this environment; then `runs`, `report` on the run."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from _mpi import mpiexec, run_session

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = Path(sys.executable).parent / "tolerance"


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def example(title: str):
    """(files {path: content}, commands [argv]) of a README section: a fenced block right
    after a line "`path`:" is that file; every line of a ```sh block is a command."""
    sec = readme_section(title)
    files = {m.group(1): m.group(2) for m in re.finditer(
        r"^`([^`\n]+)`:\n\n```[a-z]*\n(.*?)```", sec, re.S | re.M)}
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", sec, re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                cmds.append(shlex.split(line))
    return files, cmds


def run(argv, cwd, timeout=240):
    assert argv[0] == "tolerance"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TOLERANCE_CLUSTER", None)
    return run_session([TOLERANCE, *argv[1:]], timeout=timeout, env=env, cwd=cwd)


@pytest.mark.skipif(not TOLERANCE.exists(), reason="no tolerance script beside this Python")
def test_write_your_own_stem_as_printed(tmp_path):
    mpiexec()  # skips without an MPI launcher
    files, cmds = example("Write your own stem")
    assert set(files) == {"mywork/ode.py", "specs/ode.yaml"}
    assert [c[:2] for c in cmds] == [["tolerance", "check"], ["tolerance", "launch"],
                                     ["tolerance", "runs"], ["tolerance", "report"]]
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(REPO / "cluster.yaml", proj / "cluster.yaml")
    for rel, text in files.items():
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(text)

    check = run(cmds[0], proj)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "keys: every key common to all boxes' outputs" in check.stdout

    launch = run(cmds[1], proj)
    assert launch.returncode in (0, 1), launch.stdout + launch.stderr  # 1: a bound exceeded
    assert "keys: every key common to all boxes' outputs (the spec lists none): y, t" \
        in launch.stdout
    # progress without a terminal: one line per state change of the boxes (rank 0 only)
    states = [ln for ln in launch.stderr.splitlines() if ln.startswith("tolerance: running")]
    assert 2 <= len(states) <= 4, launch.stderr
    assert "haswell: running" in states[0] and "haswell: finished" in states[-1]
    assert all(ln.count("prescott:") == 1 for ln in states)
    rows = [ln for ln in launch.stdout.splitlines() if ln.startswith("max‖")]
    assert len(rows) == 6 and sum("max‖y[" in ln for ln in rows) == 3, launch.stdout
    (run_dir,) = (proj / "runs" / "ode").iterdir()
    doc = json.loads((run_dir / "report.json").read_text())
    assert doc["keys"] == ["y", "t"] and doc["keys_listed"] is False
    assert all(r["status"] == "pass" for r in doc["rows"] if r["key"] == "t")

    runs = run(cmds[2], proj)
    assert runs.returncode == 0, runs.stderr
    line = runs.stdout.splitlines()[1].split()
    assert line[:2] == ["ode", run_dir.name] and line[5] == str(doc["exit_code"])

    report = run(cmds[3], proj)
    assert report.returncode == doc["exit_code"], report.stdout + report.stderr
    assert [ln for ln in report.stdout.splitlines() if ln.startswith("max‖")] == rows
    js = run([*cmds[3], "--json"], proj)
    assert js.returncode == doc["exit_code"] and json.loads(js.stdout) == doc
