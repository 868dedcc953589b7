"""The job's inputs (collective.inputs): the registry, the spec and the run's calibrated
bounds files travel as content, so a box never reads a controller path. The inputs are
resolved in one directory (the controller), then that directory is gone and the document
(after a JSON round trip, as over the watch line) is parsed elsewhere (a box)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tolerance.collective.inputs import content_hash, parse_inputs, resolve_inputs
from tolerance.config import load_spec
from tolerance.config.bounds_file import bounds_document, workload_hash
from tolerance.config.spec import with_run_overrides

SPEC = """\
schema: 1
python: tolerance.examples.stable:main
keys: [z_b, omega_b, x]
bounds:
  omega_b: {rtol: 1.0e-6}
"""
CLUSTER = """\
schema: 1
boxes:
  - {name: a, host: localhost, root: ./a}
  - {name: b, host: localhost, root: ./b}
"""
STEPS = 5


def _bounds_file(sdir: Path, spec, name: str, per_step: dict, **keys) -> Path:
    doc = bounds_document(stem=spec.stem, workload=workload_hash(spec), code_commit=None,
                          boxes=["a", "b"], replicas=2, perturb=0.0, factor=2.0,
                          steps_axis=spec.steps_axis, envelope_name=name[:-5] + ".npz",
                          keys={**keys, **{k: {"atol": None, "rtol": None, "per_step": True,
                                               "steps": STEPS} for k in per_step}},
                          created="20260101T000000Z")
    path = sdir / name
    path.write_text(yaml.safe_dump(doc))
    np.savez(path.with_suffix(".npz"), **{f"{k}__bound": np.asarray(v, dtype=np.float64)
                                          for k, v in per_step.items()})
    return path


@pytest.fixture
def controller(tmp_path, monkeypatch):
    """A controller folder: cluster.yaml, specs/s.yaml naming s.bounds.yaml, and a second
    bounds file t.bounds.yaml for --bounds (both with a per-step key)."""
    ctl = tmp_path / "controller"
    sdir = ctl / "specs"
    sdir.mkdir(parents=True)
    (ctl / "cluster.yaml").write_text(CLUSTER)
    (sdir / "s.yaml").write_text(SPEC)
    spec = load_spec("s", sdir)
    # 1/3 and friends: a JSON round trip must keep every float64 bit
    _bounds_file(sdir, spec, "s.bounds.yaml", {"x": [k / 3 for k in range(STEPS)]},
                 z_b={"atol": 3e-6, "rtol": None}, omega_b={"atol": 9.0, "rtol": None})
    other = _bounds_file(sdir, spec, "t.bounds.yaml", {"z_b": [0.1 * k for k in range(STEPS)]})
    (sdir / "s.yaml").write_text(SPEC + "bounds_file: s.bounds.yaml\n")
    monkeypatch.chdir(ctl)
    return ctl, sdir, other


def _at_a_box(doc: dict, tmp_path: Path, monkeypatch):
    """Parse the inputs as a box would: the controller's files are gone."""
    wire = json.loads(json.dumps(doc))  # the watch line carries JSON
    box = tmp_path / "box"
    box.mkdir()
    monkeypatch.chdir(box)
    return parse_inputs(wire)


def test_bounds_files_travel_with_the_inputs(controller, tmp_path, monkeypatch):
    ctl, sdir, other = controller
    doc = resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir), str(other))
    # what the controller itself would use: the spec's file, then --bounds over it
    want = with_run_overrides(load_spec("s", sdir), bounds_path=other)
    shutil.rmtree(ctl)  # no box can read a controller path now
    cluster, spec = _at_a_box(doc, tmp_path, monkeypatch)
    assert list(cluster.names) == ["a", "b"]
    for key in ("z_b", "omega_b", "x"):
        assert spec.bounds_for(key) == want.bounds_for(key), key
    assert spec.bounds_for("x").atol == tuple(k / 3 for k in range(STEPS))  # exact bits
    assert spec.bounds_for("z_b").atol == tuple(0.1 * k for k in range(STEPS))  # --bounds
    assert spec.bounds_for("omega_b").rtol == 1e-6  # the spec's own bound wins
    assert set(spec.calibrated) == {"z_b", "x"}


def test_the_spec_named_bounds_file_alone(controller, tmp_path, monkeypatch):
    ctl, sdir, _ = controller
    doc = resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir))
    assert [Path(b["path"]).name for b in doc["bounds"]] == ["s.bounds.yaml"]
    want = load_spec("s", sdir)
    shutil.rmtree(ctl)
    _cluster, spec = _at_a_box(doc, tmp_path, monkeypatch)
    assert spec.bounds_for("z_b") == want.bounds_for("z_b")
    assert spec.bounds_for("x").atol == tuple(k / 3 for k in range(STEPS))


def test_the_bounds_content_is_part_of_the_hash(controller):
    ctl, sdir, other = controller
    plain = resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir))
    with_bounds = resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir), str(other))
    assert content_hash(plain) != content_hash(with_bounds)
    assert content_hash(with_bounds) == content_hash(json.loads(json.dumps(with_bounds)))
    # a changed per-step bound (the .npz beside the YAML) changes the hash
    np.savez(other.with_suffix(".npz"), z_b__bound=np.full(STEPS, 7.0))
    changed = resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir), str(other))
    assert content_hash(changed) != content_hash(with_bounds)
    # without any bounds file the hash is the spec's own
    (sdir / "s.yaml").write_text(SPEC)
    bare = resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir))
    assert bare["bounds"] == [] and content_hash(bare) == hashlib.sha256(SPEC.encode()).hexdigest()


def test_a_missing_envelope_is_one_line_on_the_controller(controller):
    ctl, sdir, other = controller
    os.remove(other.with_suffix(".npz"))
    from tolerance._errors import ConfigError
    with pytest.raises(ConfigError, match=r"t\.bounds\.npz: missing"):
        resolve_inputs("s", str(ctl / "cluster.yaml"), str(sdir), str(other))
