"""`tolerance hosts`, `tolerance check`, `tolerance run-box` through click's CliRunner."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tolerance.cli import main
from tolerance.config import shipped_cluster_path

REPO = Path(__file__).resolve().parent.parent


def invoke(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


@pytest.fixture
def project(tmp_path):
    """A cluster with two local boxes and two tiny specs (quick to run)."""
    (tmp_path / "cluster.yaml").write_text(textwrap.dedent("""\
        schema: 1
        boxes:
          - name: one
            host: localhost
            env: {TOL_BOX: one}
          - name: two
            host: localhost
            chips: [cuda:0, cuda:1]
        """))
    specs = tmp_path / "specs"
    specs.mkdir()
    py = json.dumps(sys.executable)
    (specs / "ok.yaml").write_text(textwrap.dedent(f"""\
        schema: 1
        command: [{py}, -c, "import sys, os; open(os.path.join(sys.argv[1], 'o.npz'), 'w').write('x')", "{{out}}"]
        timeout: 30
        """))
    (specs / "bad.yaml").write_text(textwrap.dedent(f"""\
        schema: 1
        command: [{py}, -c, "import sys; sys.stderr.write('kaput\\\\n'); sys.exit(3)"]
        timeout: 30
        """))
    return tmp_path


def test_hosts_default_cluster(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./cluster.yaml: the repository's own is used
    monkeypatch.delenv("TOLERANCE_CLUSTER", raising=False)
    r = invoke("hosts")
    assert r.exit_code == 0, r.output
    assert str(shipped_cluster_path()[0]) in r.output  # the repository's, or the installed copy
    for name in ("haswell", "sandybridge", "prescott"):
        assert name in r.output
    assert "OPENBLAS_CORETYPE=Prescott" in r.output


def test_hosts_json(project):
    r = invoke("hosts", "--cluster", str(project / "cluster.yaml"), "--json")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert [b["name"] for b in doc["boxes"]] == ["one", "two"]
    assert doc["boxes"][1]["chips"] == ["cuda:0", "cuda:1"]
    assert doc["boxes"][0]["root"] == str(project.resolve())


def test_hosts_uses_cwd_cluster(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.delenv("TOLERANCE_CLUSTER", raising=False)
    r = invoke("hosts")
    assert r.exit_code == 0 and "one" in r.output and "haswell" not in r.output


def test_hosts_bad_cluster_is_one_line(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("schema: 1\nboxes:\n  - {name: a, host: h, chips: [gpu:x]}\n")
    r = CliRunner().invoke(main, ["hosts", "--cluster", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip() == (f"tolerance: error: {bad}: boxes[0].chips[0]: 'gpu:x' is not a "
                                "chip (cpu:N-M | cpu:* | cuda:N | rocm:N)")


def test_check_default_is_clean(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOLERANCE_CLUSTER", raising=False)
    r = invoke("check")
    assert r.exit_code == 0, r.output
    assert "3 boxes" in r.output and "lorenz.yaml" in r.output and "stable.yaml" in r.output


def test_check_prints_every_problem(tmp_path):
    (tmp_path / "cluster.yaml").write_text(
        "schema: 1\nboxes:\n  - {name: '..', host: h}\n  - {name: b, chips: [gpu:x]}\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "s1.yaml").write_text("schema: 1\ncommand: [x]\nthreads: 4\n")
    (specs / "s2.yaml").write_text("schema: 1\npython: m:f\nbounds: {default: {atol: -1}}\n")
    (specs / "good.yaml").write_text("schema: 1\npython: m:f\n")
    r = invoke("check", "--cluster", str(tmp_path / "cluster.yaml"))
    assert r.exit_code == 2
    lines = r.stdout.splitlines()
    c, s = tmp_path / "cluster.yaml", specs
    assert f"{c}: boxes[0].name: '..' is not a safe name (not '.' or '..')" in lines
    assert f"{c}: boxes[1].host: missing (required; 'localhost' for this machine)" in lines
    assert (f"{c}: boxes[1].chips[0]: 'gpu:x' is not a chip (cpu:N-M | cpu:* | cuda:N | rocm:N)"
            in lines)
    assert any(line.startswith(f"{s / 's1.yaml'}: threads: a box-local knob") for line in lines)
    assert f"{s / 's2.yaml'}: bounds.default.atol: must be >= 0, not -1" in lines
    assert any(line.startswith("ok: ") and "good.yaml" in line for line in lines)
    assert "5 problems" in r.stderr


def test_check_named_stems(project):
    c = str(project / "cluster.yaml")
    r = invoke("check", "ok", "--cluster", c)
    assert r.exit_code == 0 and "ok.yaml" in r.output and "bad.yaml" not in r.output
    r = invoke("check", "nope", "--cluster", c)
    assert r.exit_code == 2 and f"{project / 'specs' / 'nope.yaml'}: no such file" in r.output
    r = invoke("check", "../x", "--cluster", c)
    assert r.exit_code == 2
    r = invoke("check", "ok", "--cluster", c, "--json")
    doc = json.loads(r.output)
    assert doc["problems"] == [] and list(doc["specs"]) == ["ok"] and doc["boxes"] == ["one", "two"]


def test_check_specs_dir_option(project, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "x.yaml").write_text("schema: 1\npython: a:b\n")
    r = invoke("check", "--cluster", str(project / "cluster.yaml"), "--specs", str(other))
    assert r.exit_code == 0 and "x.yaml" in r.output and "ok.yaml" not in r.output


def test_run_box_finishes(project):
    r = invoke("run-box", "ok", "--box", "two", "--cluster", str(project / "cluster.yaml"))
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first.startswith("ok on two: finished (") and "runs/ok/" in first
    assert "cuda:0  finished" in r.output and "cuda:1  finished" in r.output
    assert "cuda-0/o.npz" in r.output and "cuda-1/o.npz" in r.output
    runs = list((project / "runs" / "ok").iterdir())
    assert len(runs) == 1 and (runs[0] / "two" / "box.json").is_file()


def test_run_box_failure_exits_2_with_reason(project):
    r = CliRunner().invoke(main, ["run-box", "bad", "--box", "one", "--cluster",
                                  str(project / "cluster.yaml")])
    assert r.exit_code == 2
    assert "cpu:*  failed" in r.stdout and "exited with code 3: kaput" in r.stdout
    assert "| kaput" in r.stderr


def test_run_box_json_and_run_id(project):
    c = str(project / "cluster.yaml")
    # an id that does not exist is refused (a typo never makes a new run)
    r = CliRunner().invoke(main, ["run-box", "ok", "--box", "one", "--cluster", c, "--run-id", "R1"])
    assert r.exit_code == 2 and "run id 'R1': no such run" in r.output
    assert not (project / "runs" / "ok" / "R1").exists()
    (project / "runs" / "ok" / "R1").mkdir(parents=True)  # claimed elsewhere (rank 0)
    r = invoke("run-box", "ok", "--box", "one", "--cluster", c, "--json", "--run-id", "R1")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["status"] == "finished" and doc["box"] == "one"
    assert doc["run_dir"] == str((project / "runs" / "ok" / "R1" / "one").resolve())
    assert doc["chips"][0]["env"] == {"TOL_BOX": "one",
                                      "TOLERANCE_ROOT": str(project.resolve())}
    # the same box into the same run id again: refused, nothing overwritten
    r = CliRunner().invoke(main, ["run-box", "ok", "--box", "one", "--cluster", c, "--run-id", "R1"])
    assert r.exit_code == 2 and "already exists" in r.output


def test_run_box_unknown_box_and_stem(project):
    c = str(project / "cluster.yaml")
    r = CliRunner().invoke(main, ["run-box", "ok", "--box", "zz", "--cluster", c])
    assert r.exit_code == 2
    assert r.output.strip() == f"tolerance: error: {c}: boxes: no box named 'zz' (known: one, two)"
    r = CliRunner().invoke(main, ["run-box", "..", "--box", "one", "--cluster", c])
    assert r.exit_code == 2 and "stem" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["run-box", "ok", "--cluster", c])
    assert r.exit_code == 2 and "--box" in r.output


def test_run_box_lorenz_default_cluster(monkeypatch, tmp_path):
    """`tolerance run-box lorenz --box <name>` with the shipped cluster, from a fresh dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOLERANCE_CLUSTER", raising=False)
    (tmp_path / "cluster.yaml").write_text((REPO / "cluster.yaml").read_text())
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "lorenz.yaml").write_text((REPO / "specs" / "lorenz.yaml").read_text())
    r = invoke("run-box", "lorenz", "--box", "prescott")
    assert r.exit_code == 0, r.output
    assert "cpu:*  finished" in r.output and "prescott/cpu-all/lorenz.npz" in r.output
    assert len(list((tmp_path / "runs" / "lorenz").iterdir())) == 1
