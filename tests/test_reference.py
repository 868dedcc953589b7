"""`tolerance publish`, `tolerance verify`, the reference reader, and `diff` on a reference."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tolerance._errors import FormatError
from tolerance.cli import main
from tolerance.io.reference import canonical_json, read_reference

REPO = Path(__file__).resolve().parent.parent

# a tiny deterministic workload: z[t] = t*4 + i, shifted by $SHIFT from step 3 on (the
# box's env, a box-local knob, so the spec stays the same); w never changes
_WORK = ("import os, sys, numpy as np; s = float(os.environ.get('SHIFT', '0')); "
         "z = np.arange(40, dtype='f8').reshape(10, 4); z[3:] += s; "
         "open(os.path.join(sys.argv[1], 'ran'), 'w').write('x'); "
         "np.savez(os.path.join(sys.argv[1], 'o.npz'), z=z, w=np.ones(3, dtype='f4'))")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output
    return lines[0]


def _make_project(tmp_path):
    (tmp_path / "cluster.yaml").write_text(textwrap.dedent("""\
        schema: 1
        boxes:
          - name: one
            host: localhost
            env: {SHIFT: "0"}
          - name: near
            host: localhost
            env: {SHIFT: "1e-9"}
          - name: far
            host: localhost
            env: {SHIFT: "0.5"}
        """))
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny.yaml").write_text(textwrap.dedent(f"""\
        schema: 1
        command: [{json.dumps(sys.executable)}, -c, {json.dumps(_WORK)}, "{{out}}"]
        keys: [z, w]
        bounds:
          z: {{atol: 1.0e-3}}
        timeout: 60
        """))
    return tmp_path


@pytest.fixture
def project(tmp_path):
    return _make_project(tmp_path)


def _run_box(project, box="one"):
    r = invoke("run-box", "tiny", "--box", box, "--cluster", project / "cluster.yaml")
    assert r.exit_code == 0, r.output
    runs = sorted((project / "runs" / "tiny").iterdir())
    return runs[-1]


def _publish(project, out, *extra):
    run = _run_box(project)
    r = invoke("publish", run, "--out", out, "--cluster", project / "cluster.yaml", *extra)
    assert r.exit_code == 0, r.output
    return out


def _verify(project, ref, box="one", *extra):
    return invoke("verify", "tiny", "--against", ref, "--box", box,
                  "--cluster", project / "cluster.yaml", *extra)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One reference published for the module (each test gets a copy of it)."""
    project = _make_project(tmp_path_factory.mktemp("published"))
    return _publish(project, project / "ref")


@pytest.fixture
def ref(project, published):
    (project / "runs" / "tiny").mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(published, project / "ref"))


def _runs(project) -> int:
    return len(list((project / "runs" / "tiny").iterdir()))


# --- the happy paths and the verdicts ------------------------------------------------------

def test_publish_writes_a_reference(project, ref):
    assert sorted(os.listdir(ref)) == ["arrays.npz", "reference.json"]
    doc = json.loads((ref / "reference.json").read_text())
    assert doc["schema"] == "tolerance.reference/1" and doc["stem"] == "tiny"
    assert doc["box"] == "one" and doc["steps_axis"] == 0 and doc["digests_only"] is False
    assert doc["keys"]["z"]["shape"] == [10, 4] and doc["keys"]["z"]["dtype"] == "<f8"
    assert doc["keys"]["w"]["dtype"] == "<f4" and len(doc["keys"]["z"]["blocks"]) == 1
    assert doc["bounds"]["z"]["atol"] == 1e-3
    data = (ref / "arrays.npz").read_bytes()
    assert doc["files"]["arrays.npz"] == {"sha256": hashlib.sha256(data).hexdigest(),
                                          "size": len(data)}
    with np.load(ref / "arrays.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["z"], np.arange(40.0).reshape(10, 4))
    assert read_reference(ref).keys["z"].shape == (10, 4)
    assert not [p for p in project.iterdir() if p.name.startswith(".ref")]  # no temp left


def test_publish_never_overwrites(project, ref):
    before = (ref / "reference.json").read_bytes()
    run = _run_box(project)
    r = invoke("publish", run, "--out", ref, "--cluster", project / "cluster.yaml")
    assert r.exit_code == 2 and "already exists" in one_line(r)
    assert (ref / "reference.json").read_bytes() == before
    empty = project / "empty"
    empty.mkdir()
    r = invoke("publish", run, "--out", empty, "--cluster", project / "cluster.yaml")
    assert r.exit_code == 2 and os.listdir(empty) == []


def test_verify_same_box_exits_0(project, ref):
    r = _verify(project, ref)
    assert r.exit_code == 0, r.output
    assert "reference  one  z " in r.output and "pass" in r.output
    assert "2 pass, 0 fail, 0 unmeasured -> exit 0" in r.output
    run = sorted((project / "runs" / "tiny").iterdir())[-1]
    doc = json.loads((run / "one" / "verify.json").read_text())
    assert doc["exit_code"] == 0 and [r["status"] for r in doc["rows"]] == ["pass", "pass"]


def test_verify_within_bound_exits_0(project, ref):
    r = _verify(project, ref, "near")
    assert r.exit_code == 0, r.output


def test_verify_beyond_bound_exits_1_with_onset(project, ref):
    r = _verify(project, ref, "far", "--json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    z = next(row for row in doc["rows"] if row["key"] == "z")
    assert z["status"] == "fail" and z["onset"] == 3 and z["max_abs"] == 0.5
    assert z["count_over"] == 28 and z["a"] == "reference" and z["b"] == "far"
    w = next(row for row in doc["rows"] if row["key"] == "w")
    assert w["status"] == "pass"
    r = _verify(project, ref, "far")
    assert r.exit_code == 1
    line = next(ln for ln in r.output.splitlines() if " z " in ln)
    assert "onset 3" in line and "FAIL (atol 0.001)" in line


def test_verify_bounds_file_overrides(project, ref):
    loose = project / "loose.yaml"
    loose.write_text("bounds:\n  z: {atol: 1.0}\n")
    assert _verify(project, ref, "far", "--bounds", loose).exit_code == 0
    import yaml

    from tolerance.config import load_spec
    from tolerance.config.bounds_file import bounds_document, workload_hash

    spec = load_spec("tiny", project / "specs")
    cal = project / "tiny.bounds.yaml"
    doc = bounds_document(stem="tiny", workload=workload_hash(spec), code_commit=None,
                          boxes=["one"], replicas=2, perturb=0.0, factor=2.0, steps_axis=0,
                          envelope_name="tiny.bounds.npz", created="2026-12-01T00:00:00Z",
                          keys={"z": {"atol": 1.0, "rtol": None, "per_step": False,
                                      "steps": 10}})
    cal.write_text(yaml.safe_dump(doc))
    r = _verify(project, ref, "far", "--bounds", cal)
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.output
    doc["workload_hash"] = "0" * 64
    cal.write_text(yaml.safe_dump(doc))
    r = _verify(project, ref, "far", "--bounds", cal)
    assert r.exit_code == 2 and "made for a different spec" in one_line(r)
    bad = project / "bad.yaml"
    bad.write_text("bounds:\n  zz: {atol: 1.0}\n")
    r = _verify(project, ref, "far", "--bounds", bad)
    assert r.exit_code == 2 and "zz" in r.output


def test_digests_only_equal_bytes_pass_differing_bytes_exit_3(project):
    ref = _publish(project, project / "dref", "--digests-only")
    assert os.listdir(ref) == ["reference.json"]
    assert _verify(project, ref).exit_code == 0
    r = _verify(project, ref, "near")  # within the bound, but the bytes differ
    assert r.exit_code == 3, r.output
    assert ("tolerance: warning: cannot verify 'z' of near: digests-only reference: 1 of 1 "
            "blocks differ, the first at steps 0-9; the reference holds no arrays") in r.stderr
    assert "2 inputs, 2 keys, 2 rows: 1 pass, 0 fail, 1 unmeasured -> exit 3" in r.stdout


def test_a_key_the_reference_lacks_exits_3(project):
    """A reference of only `z` (published through the library): `w` cannot be verified."""
    from tolerance.config import load_spec
    from tolerance.io.npz import Archive
    from tolerance.io.reference import write_reference

    run = _run_box(project)
    spec = load_spec("tiny", project / "specs")
    with Archive(run / "one" / "cpu-all" / "o.npz") as arc:
        write_reference(project / "zref", {
            "stem": "tiny", "box": "one", "run_id": run.name, "spec": spec.published(),
            "bounds": {"z": spec.bounds_for("z").to_dict()}, "steps_axis": 0,
            "code": {}, "environment": {}}, [arc["z"]])
    r = _verify(project, project / "zref")
    assert r.exit_code == 3, r.output
    assert "cannot verify 'w' of one: the reference holds no such key" in r.stderr


def test_verify_a_different_spec_names_the_fields(project, ref):
    spec = project / "specs" / "tiny.yaml"
    spec.write_text(spec.read_text().replace("atol: 1.0e-3", "atol: 1.0e-2")
                    .replace("timeout: 60", "timeout: 61"))
    n = _runs(project)
    r = _verify(project, ref)
    assert r.exit_code == 2
    assert one_line(r) == (f"tolerance: error: {ref}: made from a different spec than "
                           f"{spec}: bounds.z.atol, timeout differ")
    assert _runs(project) == n  # nothing ran


def test_box_local_knobs_never_in_reference(tmp_path):
    (tmp_path / "cluster.yaml").write_text(textwrap.dedent("""\
        schema: 1
        boxes:
          - name: knobby
            host: localhost
            threads: 3
            chips: [cpu:0]
            env: {OPENBLAS_CORETYPE: Prescott, MKL_CBWR: AVX2, MY_SECRET_KNOB: zebra-42}
        """))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tiny.yaml").write_text(textwrap.dedent(f"""\
        schema: 1
        command: [{json.dumps(sys.executable)}, -c, {json.dumps(_WORK)}, "{{out}}"]
        keys: [z, w]
        timeout: 60
        """))
    r = invoke("run-box", "tiny", "--box", "knobby", "--cluster", tmp_path / "cluster.yaml")
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs" / "tiny").iterdir())
    r = invoke("publish", run, "--out", tmp_path / "ref", "--cluster", tmp_path / "cluster.yaml")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "ref" / "reference.json").read_text()
    for knob in ("Prescott", "MKL_CBWR", "AVX2\"", "MY_SECRET_KNOB", "zebra-42", "cpu:0",
                 "NUM_THREADS", "threads", "usable", "chips", "executable",
                 socket.gethostname()):
        assert knob not in text, knob
    doc = json.loads(text)
    assert doc["environment"]["machine"] and doc["environment"]["numpy"]["version"]


def test_diff_accepts_a_reference_directory(project, ref):
    fresh = project / "fresh.npz"
    np.savez(fresh, z=np.arange(40, dtype="f8").reshape(10, 4) + 1e-4, w=np.ones(3, "f4"))
    r = invoke("diff", ref, fresh, "--atol", "1e-3")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("ref ") or " ref " in r.output
    assert invoke("diff", ref, fresh).exit_code == 1
    (ref / "arrays.npz").write_bytes((ref / "arrays.npz").read_bytes()[:-1] + b"!")
    r = invoke("diff", ref, fresh)
    assert r.exit_code == 2 and "sha256 mismatch" in one_line(r)
    dref = _publish(project, project / "dref", "--digests-only")
    r = invoke("diff", dref, fresh)
    assert r.exit_code == 2 and "digests-only" in one_line(r)


# --- tampered, malformed, hostile: exit 2, one line, nothing run -------------------------

def _doc(ref: Path) -> dict:
    return json.loads((ref / "reference.json").read_text())


def _write(ref: Path, doc: dict, *, reseal: bool = True) -> None:
    """Rewrite the manifest; with reseal, recompute every hash the way an attacker who
    knows the format would (so that the deeper checks are the ones that must catch it)."""
    if reseal:
        for name in doc.get("files", {}):
            p = ref / name
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                      "size": len(data)}
        doc["self_sha256"] = hashlib.sha256(canonical_json(
            {k: v for k, v in doc.items() if k != "self_sha256"})).hexdigest()
    (ref / "reference.json").write_text(json.dumps(doc))


def _flip_array_byte(ref):
    data = bytearray((ref / "arrays.npz").read_bytes())
    data[200] ^= 0x01
    (ref / "arrays.npz").write_bytes(bytes(data))


def _edit_sha(ref):
    d = _doc(ref)
    d["files"]["arrays.npz"]["sha256"] = "0" * 64
    _write(ref, d, reseal=False)


def _edit_sha_resealed(ref):
    d = _doc(ref)
    _flip_array_byte(ref)
    d["self_sha256"] = hashlib.sha256(canonical_json(
        {k: v for k, v in d.items() if k != "self_sha256"})).hexdigest()
    _write(ref, d, reseal=False)


def _edit_bound(ref):
    text = (ref / "reference.json").read_text()
    (ref / "reference.json").write_text(text.replace('"atol": 0.001', '"atol": 1000.0', 1))


def _edit_self_sha(ref):
    d = _doc(ref)
    d["self_sha256"] = "f" * 64
    _write(ref, d, reseal=False)


def _pickle_payload(ref):
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(ref / "arrays.npz", "w") as zf:
        zf.writestr("z.npy", buf.getvalue())
        zf.writestr("w.npy", buf.getvalue())
    _write(ref, _doc(ref))


def _lying_manifest_shape(ref):
    d = _doc(ref)
    d["keys"]["z"]["shape"] = [20, 4]
    _write(ref, d)


def _lying_npy_shape(ref):
    data = (ref / "arrays.npz").read_bytes()
    out = data.replace(b"'shape': (10, 4)", b"'shape': (90, 4)")
    assert out != data
    (ref / "arrays.npz").write_bytes(out)
    _write(ref, _doc(ref))


def _absurd_shape(ref):
    d = _doc(ref)
    d["keys"]["z"]["shape"] = [2**40, 2**40]
    _write(ref, d)


def _traversal_file(ref):
    d = _doc(ref)
    d["files"]["../../outside"] = d["files"].pop("arrays.npz")
    _write(ref, d)


def _traversal_member(ref):
    d = _doc(ref)
    with zipfile.ZipFile(ref / "arrays.npz", "a") as zf:
        buf = io.BytesIO()
        np.save(buf, np.zeros(2))
        zf.writestr("../../evil.npy", buf.getvalue())
    d["keys"]["../../evil"] = dict(d["keys"]["w"], shape=[2], dtype="<f8")
    d["bounds"]["../../evil"] = d["bounds"]["w"]
    _write(ref, d)


def _extra_member(ref):
    with zipfile.ZipFile(ref / "arrays.npz", "a") as zf:
        buf = io.BytesIO()
        np.save(buf, np.zeros(2))
        zf.writestr("extra.npy", buf.getvalue())
    _write(ref, _doc(ref))


def _symlinked_arrays(ref):
    (ref / "arrays.npz").rename(ref.parent / "real.npz")
    (ref / "arrays.npz").symlink_to(ref.parent / "real.npz")
    _write(ref, _doc(ref))


def _extra_file(ref):
    (ref / "run_me.sh").write_text("echo hi\n")


def _not_json(ref):
    (ref / "reference.json").write_text("{\"schema\": ")


def _nan_constant(ref):
    text = (ref / "reference.json").read_text()
    (ref / "reference.json").write_text(text.replace('"atol": 0.001', '"atol": NaN', 1))


def _duplicate_field(ref):
    text = (ref / "reference.json").read_text()
    (ref / "reference.json").write_text(text.replace('{', '{"stem": "x", ', 1))


def _huge_manifest(ref):
    with open(ref / "reference.json", "ab") as fh:
        fh.truncate(65 << 20)


def _deep_json(ref):
    (ref / "reference.json").write_text("[" * 100000 + "]" * 100000)


def _wrong_schema(ref):
    d = _doc(ref)
    d["schema"] = "tolerance.reference/9"
    _write(ref, d)


def _unknown_field(ref):
    d = _doc(ref)
    d["command_to_run"] = "rm -rf /"
    _write(ref, d)


def _bad_digest(ref):
    d = _doc(ref)
    d["keys"]["z"]["blocks"] = ["zz" * 16]
    _write(ref, d)


def _too_few_blocks(ref):
    d = _doc(ref)
    d["keys"]["z"]["blocks"] = []
    _write(ref, d)


def _negative_bound(ref):
    d = _doc(ref)
    d["bounds"]["z"]["atol"] = -1.0
    _write(ref, d)


def _spec_hash(ref):
    d = _doc(ref)
    d["spec"]["timeout"] = 1.0
    _write(ref, d)


def _object_dtype(ref):
    d = _doc(ref)
    d["keys"]["z"]["dtype"] = "|O"
    _write(ref, d)


def _missing_arrays(ref):
    (ref / "arrays.npz").unlink()


HOSTILE = {
    "bytes flipped": (_flip_array_byte, "arrays.npz: sha256 mismatch"),
    "sha256 edited": (_edit_sha, "self_sha256: does not match the document"),
    "sha256 edited, resealed": (_edit_sha_resealed, "arrays.npz: sha256 mismatch"),
    "bound edited": (_edit_bound, "self_sha256: does not match"),
    "self sha256 edited": (_edit_self_sha, "self_sha256: does not match"),
    "pickle payload": (_pickle_payload, "z: unsupported dtype"),
    "lying manifest shape": (_lying_manifest_shape, "arrays.npz: z: shape (10, 4) dtype <f8, "
                                                   "the manifest says (20, 4) <f8"),
    "lying npy shape": (_lying_npy_shape, "arrays.npz: z: header + shape (90, 4)"),
    "absurd shape": (_absurd_shape, "keys.z.shape"),
    "path traversal file": (_traversal_file, "files.../../outside: '../../outside' is not a "
                                             "file of a reference"),
    "path traversal member": (_traversal_member, "keys.../../evil: '../../evil' is not a "
                                                 "safe array name"),
    "extra member": (_extra_member, "arrays.npz: extra: not in the manifest"),
    "symlinked arrays": (_symlinked_arrays, "arrays.npz: not a regular file"),
    "extra file": (_extra_file, "run_me.sh: a file the manifest does not list"),
    "not json": (_not_json, "reference.json: not valid JSON"),
    "NaN constant": (_nan_constant, "NaN is not a JSON number"),
    "duplicate field": (_duplicate_field, "duplicate field 'stem'"),
    "huge manifest": (_huge_manifest, "more than 64 MiB"),
    "deep json": (_deep_json, "reference.json: "),
    "wrong schema": (_wrong_schema, "schema: 'tolerance.reference/9'"),
    "unknown field": (_unknown_field, "command_to_run: unknown field"),
    "bad digest": (_bad_digest, "keys.z.blocks: holds a value that is not a digest"),
    "too few blocks": (_too_few_blocks, "keys.z.blocks: must list 1 digests"),
    "negative bound": (_negative_bound, "bounds.z.atol: -1.0 is not a number >= 0"),
    "spec hash": (_spec_hash, "spec_hash: does not match the spec's content"),
    "object dtype": (_object_dtype, "keys.z.dtype"),
    "missing arrays": (_missing_arrays, "arrays.npz: missing"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_reference_exits_2_one_line_nothing_run(project, ref, case):
    spoil, expect = HOSTILE[case]
    spoil(ref)
    n = _runs(project)
    r = _verify(project, ref)
    assert r.exit_code == 2, (case, r.output)
    line = one_line(r)
    assert line.startswith(f"tolerance: error: {ref}"), line
    assert expect in line, (case, line)
    assert _runs(project) == n  # nothing ran: no run directory claimed
    with pytest.raises(FormatError):
        read_reference(ref)


def test_not_a_reference(project, tmp_path):
    r = _verify(project, tmp_path / "nowhere")
    assert r.exit_code == 2 and "cannot read the reference" in one_line(r)
    (tmp_path / "plain").mkdir()
    r = _verify(project, tmp_path / "plain")
    assert r.exit_code == 2 and "no reference.json" in one_line(r)
