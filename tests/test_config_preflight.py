"""`tolerance check` (and `launch`, before mpiexec starts) catches what would fail at run
time (issue 11.8): a root that does not exist, a python that is not executable, names too
long for a file name, cpu cores this machine does not have, placeholder format specs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tolerance.config import SchemaProblems, load_cluster, load_spec, parse_cluster, parse_spec
from tolerance.config.local import (NAME_MAX, allowed_cores, box_problems, cluster_problems,
                                    host_is_here)

WALL_S = 10.0


def registry(tmp_path: Path, *boxes: str) -> Path:
    """cluster.yaml with box `a` (plain) and the given box entries (YAML text)."""
    p = tmp_path / "cluster.yaml"
    text = "schema: 1\nboxes:\n  - {name: a, host: localhost}\n" + "".join(
        "  - " + textwrap.indent(b.strip(), "    ")[4:] + "\n" for b in boxes)
    p.write_text(text)
    return p


def spec_file(tmp_path: Path, body: str, stem: str = "s") -> Path:
    (tmp_path / "specs").mkdir(exist_ok=True)
    p = tmp_path / "specs" / f"{stem}.yaml"
    p.write_text("schema: 1\n" + textwrap.dedent(body))
    return p


GOOD_SPEC = """\
command: ["{python}", "-c", "import sys, numpy as np; np.savez(sys.argv[1] + '/o.npz', z=np.zeros(3))", "{out}"]
keys: [z]
timeout: 60
"""


def cli(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "TOLERANCE_CLUSTER"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "tolerance", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def problems_of(path: Path) -> list[str]:
    return cluster_problems(load_cluster(path), stems=["s"])


def beyond_core() -> int:
    cores = allowed_cores()
    assert cores is not None
    return max(cores) + 1


# -- boxes of this machine ---------------------------------------------------------------

def test_a_clean_local_registry_has_no_problem(tmp_path):
    assert problems_of(registry(tmp_path, "{name: b, host: localhost}")) == []


def test_root_that_does_not_exist(tmp_path):
    p = registry(tmp_path, f"{{name: b, host: localhost, root: {tmp_path / 'nowhere'}}}")
    assert problems_of(p) == [
        f"{p}: boxes[1].root: {tmp_path / 'nowhere'}: no such directory on this machine "
        "(box b runs here, host localhost)"]


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    p = registry(tmp_path, f"{{name: b, host: localhost, root: {tmp_path / 'f'}}}")
    assert problems_of(p) == [f"{p}: boxes[1].root: {tmp_path / 'f'}: not a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_root_that_is_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    p = registry(tmp_path, f"{{name: b, host: localhost, root: {ro}}}")
    assert problems_of(p) == [f"{p}: boxes[1].root: {ro}: not writable (each run makes runs/ there)"]


def test_python_missing_not_executable_a_directory_or_not_on_path(tmp_path):
    plain = tmp_path / "plain-python"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    (tmp_path / "bin").mkdir()
    p = registry(tmp_path,
                 f"{{name: b, host: localhost, python: {tmp_path / 'nope'}}}",
                 f"{{name: c, host: localhost, python: {plain}}}",
                 f"{{name: d, host: localhost, python: {tmp_path / 'bin'}}}",
                 "{name: e, host: localhost, python: no-such-python-3.99}")
    got = problems_of(p)
    assert got[0] == f"{p}: boxes[1].python: {tmp_path / 'nope'}: no such file on this machine"
    assert got[1] == f"{p}: boxes[2].python: {plain}: not executable"
    assert got[2] == f"{p}: boxes[3].python: {tmp_path / 'bin'}: a directory, not an interpreter"
    assert got[3].startswith(f"{p}: boxes[4].python: 'no-such-python-3.99' is not an "
                             "executable on PATH (")
    assert len(got) == 4


def test_python_relative_to_the_root_and_on_path_are_fine(tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    py = tmp_path / "venv" / "bin" / "python"
    py.symlink_to(sys.executable)
    p = registry(tmp_path, "{name: b, host: localhost, python: venv/bin/python}",
                 "{name: c, host: localhost, python: sh}")
    assert problems_of(p) == []
    (tmp_path / "venv" / "bin" / "python").unlink()
    assert problems_of(p) == [f"{p}: boxes[1].python: venv/bin/python: no such file on this machine"]


def test_cpu_cores_beyond_the_machine(tmp_path):
    n = beyond_core()
    p = registry(tmp_path, f"{{name: b, host: localhost, chips: ['cpu:0', 'cpu:{n}-{n + 1}', 'cpu:*']}}")
    got = problems_of(p)
    assert len(got) == 1, got
    assert got[0].startswith(f"{p}: boxes[1].chips[1]: cpu:{n}-{n + 1} names cores {n}-{n + 1}, "
                             "not in the cores this process may use here ("), got


def test_boxes_of_other_hosts_are_checked_there(tmp_path):
    p = registry(tmp_path, f"{{name: b, host: elsewhere.invalid, root: {tmp_path / 'nowhere'}, "
                           f"python: /no/python, chips: ['cpu:{beyond_core()}']}}")
    assert not host_is_here("elsewhere.invalid")
    assert problems_of(p) == []


def test_this_hosts_own_name_is_this_machine(tmp_path):
    import socket

    here = socket.gethostname()
    assert host_is_here(here) and host_is_here("localhost") and host_is_here("127.0.0.1")
    p = registry(tmp_path, f"{{name: b, host: {here}, root: {tmp_path / 'nowhere'}}}")
    assert [ln.split(": ", 2)[1] for ln in problems_of(p)] == ["boxes[1].root"]


def test_the_deepest_run_path_must_fit_path_max(tmp_path):
    deep = tmp_path
    while len(str(deep)) < 3900:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    p = registry(tmp_path, f"{{name: b, host: localhost, root: {deep}}}")
    got = cluster_problems(load_cluster(p), stems=["s" * 200])
    assert len(got) == 1 and got[0].startswith(f"{p}: boxes[1].root: {deep}: a run's deepest path "
                                               "would be "), got
    assert "more than PATH_MAX (4096)" in got[0]


# -- names that become file names (every box, wherever it runs) ----------------------

def test_box_name_longer_than_a_file_name():
    data = {"schema": 1, "boxes": [{"name": "b" * 256, "host": "h"},
                                   {"name": "c" * NAME_MAX, "host": "h"}]}
    with pytest.raises(SchemaProblems) as info:
        parse_cluster(data, display="cluster.yaml", base_dir="/base")
    assert info.value.problems == [
        f"cluster.yaml: boxes[0].name: '{'b' * 37}...' is 256 bytes: too long for a file name "
        "(at most 255 bytes)"]


def test_chip_whose_directory_name_is_too_long():
    many = "cpu:" + ",".join(str(c) for c in range(0, 400, 2))
    data = {"schema": 1, "boxes": [{"name": "b", "host": "h", "chips": [many]}]}
    with pytest.raises(SchemaProblems) as info:
        parse_cluster(data, display="cluster.yaml", base_dir="/base")
    (line,) = info.value.problems
    assert line.startswith("cluster.yaml: boxes[0].chips[0]: cpu:0,2,4,") and \
        "its directory name 'cpu-0_2_4_" in line and "too long for a file name (at most 255 bytes)" in line


def test_stem_and_key_longer_than_their_file_names():
    ok = {"schema": 1, "python": "m:f", "keys": ["k" * 251]}
    parse_spec(ok, stem="s" * 243)
    with pytest.raises(SchemaProblems) as info:
        parse_spec({**ok, "keys": ["k" * 252, "é" * 126]}, stem="s" * 244, display="s.yaml")
    assert info.value.problems == [
        f"s.yaml: top level: stem '{'s' * 37}...' is 244 bytes: too long for a file name "
        "(at most 243 bytes, as it becomes <name>.bounds.yaml)",
        f"s.yaml: keys[0]: key '{'k' * 37}...' is 252 bytes: too long for a file name "
        "(at most 251 bytes, as it becomes <name>.png)",
        f"s.yaml: keys[1]: key '{'é' * 37}...' is 252 bytes: too long for a file name "
        "(at most 251 bytes, as it becomes <name>.png)"]


def test_the_longest_names_run_for_real(tmp_path):
    """Box, chip and stem at their limits run through the real runner: no config name enters
    a shared-memory segment name, so the path limits are the only ones."""
    box = "b" * NAME_MAX
    stem = "s" * 243
    (tmp_path / "cluster.yaml").write_text(
        f"schema: 1\nboxes:\n  - {{name: {box}, host: localhost, chips: ['cpu:0']}}\n"
        "  - {name: a, host: localhost}\n")
    spec_file(tmp_path, GOOD_SPEC, stem=stem)
    r, _ = cli(tmp_path, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    r, _ = cli(tmp_path, "run-box", stem, "--box", box)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (tmp_path / "runs" / stem).iterdir()
    assert (run / box / "cpu-0" / "o.npz").is_file()


# -- placeholders --------------------------------------------------------------------

@pytest.mark.parametrize("arg, why", [
    ("{out:>300000}", "placeholder {out:>300000} in '{out:>300000}': a placeholder takes no format spec or conversion (write {out})"),
    ("x{out!r}", "placeholder {out!r} in 'x{out!r}': a placeholder takes no format spec or conversion (write {out})"),
    ("{root!s:>9}", "placeholder {root!s:>9} in '{root!s:>9}': a placeholder takes no format spec or conversion (write {root})"),
    ("{out:{chip}}", "placeholder {out:{chip}} in '{out:{chip}}': a placeholder takes no format spec or conversion (write {out})"),
    ("{out[0]}", "unknown placeholder {out[0]} in '{out[0]}'"),
    ("{out.real}", "unknown placeholder {out.real} in '{out.real}'"),
    ("{}", "unknown placeholder {} in '{}'"),
    ("{0}", "unknown placeholder {0} in '{0}'"),
    ("{nope}", "unknown placeholder {nope} in '{nope}'"),
    ("{out", "bad placeholder in '{out': "),
    ("}x", "bad placeholder in '}x': "),
])
def test_placeholders_take_no_format_spec(arg, why):
    for field, doc in (("command[1]", {"command": ["{python}", arg]}),
                       ("env.X", {"command": ["{python}"], "env": {"X": arg}})):
        with pytest.raises(SchemaProblems) as info:
            parse_spec({"schema": 1, **doc}, stem="s", display="s.yaml")
        (line,) = info.value.problems
        assert line.startswith(f"s.yaml: {field}: {why}"), line


def test_literal_braces_and_plain_placeholders_pass():
    s = parse_spec({"schema": 1, "command": ["{python}", "{{out:>3}}", "{out}/{chip}", "{root}"],
                    "env": {"X": "{{}}{out}"}}, stem="s")
    assert s.argv(out="O", chip="C", python="P", root="R") == ["P", "{out:>3}", "O/C", "R"]


# -- through the command line: check and launch, one line each, before anything starts --

CASES = {
    "root": lambda t: (f"{{name: b, host: localhost, root: {t / 'nowhere'}}}", "boxes[1].root",
                       f"{t / 'nowhere'}: no such directory on this machine"),
    "python": lambda t: (f"{{name: b, host: localhost, python: {t / 'no-python'}}}",
                         "boxes[1].python", f"{t / 'no-python'}: no such file on this machine"),
    "cpu": lambda t: (f"{{name: b, host: localhost, chips: ['cpu:{beyond_core()}']}}",
                      "boxes[1].chips[0]", f"cpu:{beyond_core()} names core {beyond_core()}, not in"),
    "name": lambda t: ("{name: " + "n" * 300 + ", host: localhost}", "boxes[1].name",
                       "is 300 bytes: too long for a file name"),
}


@pytest.mark.parametrize("what", sorted(CASES) + ["placeholder"])
def test_check_and_launch_say_it_in_one_line(what, tmp_path):
    if what == "placeholder":
        p = registry(tmp_path, "{name: b, host: localhost}")
        sp = spec_file(tmp_path, GOOD_SPEC.replace('"{out}"]', '"{out:>300000}"]'))
        where, field, text = "specs/s.yaml", "command[3]", "placeholder {out:>300000} in '{out:>300000}'"
        assert sp == tmp_path / where
    else:
        box, field, text = CASES[what](tmp_path)
        p = registry(tmp_path, box)
        spec_file(tmp_path, GOOD_SPEC)
        where = "cluster.yaml"       # as the commands name the registry they found here
        assert p == tmp_path / where
    r, wall = cli(tmp_path, "check")
    assert r.returncode == 2, r.stdout + r.stderr
    problems = [ln for ln in r.stdout.splitlines() if not ln.startswith(("ok: ", "(warn) "))]
    assert len(problems) == 1 and problems[0].startswith(f"{where}: {field}: "), r.stdout
    assert text in problems[0], problems[0]
    assert r.stderr.strip() == "1 problem" and wall < WALL_S
    r, wall = cli(tmp_path, "launch", "s", "--hello-within", "5")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1, r.stderr            # no `+ mpiexec ...`: nothing was started
    assert lines[0].startswith(f"tolerance: error: {where}: {field}: ") and text in lines[0], lines
    assert not (tmp_path / "runs").exists() and wall < WALL_S


def test_check_json_lists_the_run_time_problems(tmp_path):
    import json

    registry(tmp_path, f"{{name: b, host: localhost, root: {tmp_path / 'nowhere'}}}")
    spec_file(tmp_path, GOOD_SPEC)
    r, _ = cli(tmp_path, "check", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and len(doc["problems"]) == 1
    assert doc["problems"][0].startswith("cluster.yaml: boxes[1].root: ")


def test_box_problems_of_one_box(tmp_path):
    c = load_cluster(registry(tmp_path, f"{{name: b, host: localhost, root: {tmp_path / 'x'}}}"))
    assert box_problems(c.boxes[0], 0, "r.yaml") == []
    (line,) = box_problems(c.boxes[1], 1, "r.yaml")
    assert line.startswith("r.yaml: boxes[1].root: ")
