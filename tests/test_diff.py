"""`tolerance diff`: N-way rows, verdicts, exit codes, the tolerance.diff/1 JSON contract."""
from __future__ import annotations

import json
import math
import os
from itertools import combinations

import numpy as np
import pytest
from click.testing import CliRunner

import tolerance
from tolerance.cli import main
from tolerance.compare.engine import unique_labels
from tolerance.compare.rows import ROW_FIELDS
from tolerance.compare.series import read_series

ATOL = 1e-6


def _run(*args):
    return CliRunner().invoke(main, ["diff", *map(str, args)])


def _json(*args):
    r = _run(*args, "--json")
    assert r.exit_code in (0, 1, 3), (r.exit_code, r.output)

    def refuse(x):
        raise AssertionError(f"non-strict JSON constant {x}")

    doc = json.loads(r.stdout, parse_constant=refuse)
    assert doc["exit_code"] == r.exit_code
    return doc


def _family(tmp_path, n):
    """n inputs of the same keys; input k perturbs z_b from step 40+k on; mixed storage."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((120, 33)).astype(np.float32)
    omega = rng.standard_normal((17, 4, 3))
    paths = []
    for k in range(n):
        z = base.copy()
        z[40 + k:, k % 33] += np.float32(2e-6 * (k + 1))
        w = omega.copy()
        w[3, 1, 2] += 1e-9 * k
        if k == 2:
            w = np.asfortranarray(w)
        ints = np.arange(50, dtype=">i4" if k == 1 else "<i4") + (k == 3)
        save = np.savez_compressed if k % 2 else np.savez
        p = tmp_path / f"in{k}.npz"
        save(p, z_b=z, omega_b=w, ints=ints)
        paths.append(p)
    return paths


def _check_rows_against_kernel(doc, paths, keys, **kw):
    labels = [i["label"] for i in doc["inputs"]]
    assert [i["path"] for i in doc["inputs"]] == [str(p) for p in paths]
    rows = {(r["a"], r["b"], r["key"]): r for r in doc["rows"]}
    assert len(rows) == len(doc["rows"]) == len(keys) * len(paths) * (len(paths) - 1) // 2
    for key in keys:
        for i, j in combinations(range(len(paths)), 2):
            row = rows[labels[i], labels[j], key]
            assert list(row) == list(ROW_FIELDS)
            with np.load(paths[i], allow_pickle=False) as za, \
                    np.load(paths[j], allow_pickle=False) as zb:
                a, b = za[key], zb[key]
            div = tolerance.divergence(a, b, **kw)
            want = json.loads(json.dumps({k: v for k, v in div.to_dict().items()
                                          if k in ROW_FIELDS}))
            for f, v in want.items():
                assert row[f] == v, (key, i, j, f, row[f], v)
            assert row["status"] == ("pass" if div.within else "fail")
            # the tests' own NumPy oracle, independent of the kernel (finite data here)
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            assert row["max_abs"] == float(d.max())
            assert row["count_over"] == int((d > kw.get("atol", 0.0)).sum())


@pytest.mark.parametrize("n", [3, 4])
def test_n_way_rows_agree_with_the_kernel(tmp_path, n):
    paths = _family(tmp_path, n)
    doc = _json(*paths, "--atol", ATOL)
    assert doc["schema"] == "tolerance.diff/1"
    assert [i["label"] for i in doc["inputs"]] == [p.name for p in paths]
    assert doc["bounds"] == {"atol": ATOL, "rtol": None, "ulp": None}
    keys = ["z_b", "omega_b", "ints"]
    assert list(doc["inputs"][0]["keys"]) == keys
    assert doc["inputs"][0]["keys"]["z_b"] == {"shape": [120, 33], "dtype": "float32"}
    assert doc["inputs"][1]["keys"]["ints"] == {"shape": [50], "dtype": "int32"}
    _check_rows_against_kernel(doc, paths, keys, atol=ATOL)
    # rows come in (key, i<j) order
    labels = [i["label"] for i in doc["inputs"]]
    order = [(r["key"], labels.index(r["a"]), labels.index(r["b"])) for r in doc["rows"]]
    assert order == [(k, i, j) for k in keys for i, j in combinations(range(n), 2)]
    fails = {(r["a"], r["b"]) for r in doc["rows"] if r["key"] == "z_b" and r["status"] == "fail"}
    assert ("in0.npz", "in1.npz") in fails
    assert doc["exit_code"] == 1


def test_chunk_size_and_threads_do_not_change_a_figure(tmp_path):
    paths = _family(tmp_path, 3)
    ref = _json(*paths, "--atol", ATOL)
    for extra in (["--chunk-mb", "0.0625"], ["--chunk-mb", "64"], ["--threads", "2"],
                  ["--chunk-mb", "1", "--threads", "1"]):
        assert _json(*paths, "--atol", ATOL, *extra) == ref, extra
    # below the option's floor: the engine itself, down to one element per block
    from tolerance.compare.engine import diff_inputs, open_inputs
    from tolerance.compare.report import diff_document
    from tolerance.config.spec import Bounds
    for budget in (1, 200, 4096):
        inputs = open_inputs(paths)
        try:
            doc = diff_document(diff_inputs(inputs, bound=Bounds(atol=float(ATOL)),
                                            budget=budget))
        finally:
            for d in inputs:
                d.archive.close()
        assert doc["rows"] == ref["rows"], budget


@pytest.mark.parametrize("axis", ["1", "-1", "none"])
def test_other_steps_axes(tmp_path, axis):
    paths = _family(tmp_path, 3)
    doc = _json(*paths, "--atol", ATOL, "--steps-axis", axis, "--keys", "z_b,omega_b",
                "--chunk-mb", "0.0625")
    ax = None if axis == "none" else int(axis)
    assert doc["steps_axis"] == ax
    _check_rows_against_kernel(doc, paths, ["z_b", "omega_b"], atol=ATOL, steps_axis=ax)


def test_series_file(tmp_path):
    paths = _family(tmp_path, 3)
    out = tmp_path / "series.npz"
    r = _run(*paths, "--atol", ATOL, "--series", out, "--keys", "z_b")
    assert r.exit_code == 1
    with np.load(paths[0]) as za, np.load(paths[2]) as zc:
        div = tolerance.divergence(za["z_b"], zc["z_b"], atol=ATOL)
    back = read_series(out)            # the tolerance.series/1 layout, read by its names
    assert back.steps_axis == 0
    assert [(r.a, r.b) for r in back.rows] == list(combinations([p.name for p in paths], 2))
    (row,) = [r for r in back.rows if (r.a, r.b) == ("in0.npz", "in2.npz")]
    assert row.key == "z_b" and row.bound == {"atol": ATOL, "rtol": None, "ulp": None}
    assert np.array_equal(row.max_abs, div.series)
    assert np.array_equal(row.over, div.series_over) and row.over.dtype == np.int64
    assert np.array_equal(row.margin, div.series_margin)
    assert np.array_equal(row.step, np.arange(div.series.size))
    assert row.onset == div.onset
    # a second run replaces the file the user named (atomically)
    assert _run(*paths, "--atol", 1.0, "--series", out, "--keys", "z_b").exit_code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".series")]


def test_exit_codes(tmp_path):
    a = np.linspace(0, 1, 200).reshape(20, 10)
    np.savez(tmp_path / "a.npz", x=a)
    np.savez(tmp_path / "same.npz", x=a.copy())
    np.savez(tmp_path / "near.npz", x=a + 1e-9)
    nan = a.copy()
    nan[7, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    np.savez(tmp_path / "shape.npz", x=a[:-1])
    np.savez(tmp_path / "kind.npz", x=np.arange(200).reshape(20, 10))
    np.savez(tmp_path / "nokey.npz", y=a)
    np.savez(tmp_path / "extra.npz", x=a, y=a)
    p = lambda n: tmp_path / f"{n}.npz"  # noqa: E731
    assert _run(p("a"), p("same")).exit_code == 0
    assert _run(p("a"), p("near")).exit_code == 1
    assert _run(p("a"), p("near"), "--atol", "1e-8").exit_code == 0
    # a NaN mismatch fails whatever the bound
    r = _run(p("a"), p("nan"), "--atol", "1e300")
    assert r.exit_code == 1 and "NaN-mismatch 1" in r.stdout
    for other in ("shape", "kind"):
        r = _run(p("a"), p(other))
        assert r.exit_code == 3, other
        assert "(warn)" in r.stdout and "nan" in r.stdout
    # unmeasured does not hide a failure: 1 wins over 3
    assert _run(p("a"), p("near"), p("shape")).exit_code == 1
    # a key in some inputs only: (warn), not compared by default, exit 3
    r = _run(p("a"), p("extra"))
    assert r.exit_code == 3 and "(warn) key 'y'" in r.stdout
    # --keys names a key that one input lacks
    r = _run(p("a"), p("nokey"), "--keys", "x")
    assert r.exit_code == 3 and "missing key in nokey.npz" in r.stdout
    # no common key at all: nothing compared, unmeasured
    assert _run(p("a"), p("nokey")).exit_code == 3
    # usage errors are 2
    assert _run(p("a")).exit_code == 2
    assert _run(p("a"), p("same"), "--steps-axis", "x").exit_code == 2
    assert _run(p("a"), p("same"), "--atol", "-1").exit_code == 2


def test_unmeasured_rows_in_json(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 3)), k=np.zeros(3, np.float32))
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 2)), k=np.zeros(3, np.float64))
    doc = _json(tmp_path / "a.npz", tmp_path / "b.npz", "--ulp", "2")
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["x"]["status"] == "unmeasured"
    assert rows["x"]["reason"] == "shape mismatch (4, 3) vs (4, 2)"
    assert rows["x"]["code"] == "shape_mismatch" and rows["k"]["code"] == "ulp_needs_same_float"
    assert rows["x"]["max_abs"] == "nan" and rows["x"]["max_rel"] == "nan"
    for f in ("argmax", "step", "max_ulp", "count_over", "size", "nan_mismatch", "nan_both",
              "inf_mismatch", "onset"):
        assert rows["x"][f] is None
    assert rows["k"]["status"] == "unmeasured" and "ULP bound" in rows["k"]["reason"]
    assert "--" not in rows["k"]["reason"]  # no library message names a command-line flag
    assert doc["exit_code"] == 3


def test_non_finite_numbers_are_strings(tmp_path):
    a = np.array([[1.0, np.inf], [2.0, 3.0]])
    b = np.array([[1.0, 5.0], [2.0, np.nan]])
    np.savez(tmp_path / "a.npz", x=a)
    np.savez(tmp_path / "b.npz", x=b)
    doc = _json(tmp_path / "a.npz", tmp_path / "b.npz")
    (row,) = doc["rows"]
    assert row["max_abs"] == "inf" and row["inf_mismatch"] == 1 and row["nan_mismatch"] == 1
    assert row["status"] == "fail"


def test_ulp_bound(tmp_path):
    a = np.linspace(1, 2, 64, dtype=np.float32).reshape(8, 8)
    b = np.nextafter(a, np.float32(3))
    b[5, 5] = np.nextafter(b[5, 5], np.float32(3))
    np.savez(tmp_path / "a.npz", x=a)
    np.savez(tmp_path / "b.npz", x=b)
    doc = _json(tmp_path / "a.npz", tmp_path / "b.npz", "--ulp", "1", "--atol", "1")
    (row,) = doc["rows"]
    assert row["max_ulp"] == 2 and row["count_over"] == 1 and row["onset"] == 5
    assert _run(tmp_path / "a.npz", tmp_path / "b.npz", "--ulp", "2", "--atol", "1"
                ).exit_code == 0


def test_directory_inputs_pick_newest_by_mtime(tmp_path):
    for box in ("boxA", "boxB"):
        d = tmp_path / "runs" / box / "cpu0"
        d.mkdir(parents=True)
        older = d / "z_run.npz"          # the later name, but older
        newer = d / "a_run.npz"
        np.savez(older, x=np.full(5, 99.0))
        np.savez(newer, x=np.arange(5.0) + (box == "boxB") * 0.5)
        os.utime(older, (1_000, 1_000))
        os.utime(newer, (2_000, 2_000))
    doc = _json(tmp_path / "runs" / "boxA", tmp_path / "runs" / "boxB")
    assert [i["path"] for i in doc["inputs"]] == [
        str(tmp_path / "runs" / b / "cpu0" / "a_run.npz") for b in ("boxA", "boxB")]
    # same file names, same parent names: labels walk up the path until unique
    assert [i["label"] for i in doc["inputs"]] == ["boxA/cpu0", "boxB/cpu0"]
    assert doc["rows"][0]["max_abs"] == 0.5


def test_unique_labels():
    assert unique_labels(["x/a.npz", "y/b.npz"]) == ["a.npz", "b.npz"]
    assert unique_labels(["x/out.npz", "y/out.npz", "b.npz"]) == ["x", "y", "b.npz"]
    assert unique_labels(["/r/p/out.npz", "/r/q/out.npz", "/s/p/out.npz"]) == \
        ["r/p", "q", "s/p"]
    labels = unique_labels(["x/a.npz", "x/a.npz"])
    assert len(set(labels)) == 2


def test_console_lines_and_quiet(tmp_path):
    a = np.zeros((1000, 6), np.float32)
    b = a.copy()
    b[812, 5] = 3.2e-7
    b[790, 1] = 2e-7
    np.savez(tmp_path / "a.npz", z_b=a)
    np.savez(tmp_path / "b.npz", z_b=b)
    r = _run(tmp_path / "a.npz", tmp_path / "b.npz", "--atol", "1e-7", "--ulp", "100000000")
    assert r.exit_code == 1
    line, *legend, summary = r.stdout.strip().splitlines()
    assert legend[0].startswith("legend") and all(ln.startswith("  ") for ln in legend[1:])
    assert line.startswith("a.npz  b.npz  z_b  max|a-b| 3.2e-07")
    for part in ("@ step 812", "rel 1", "ulp ", "onset 790", "over 2/6000",
                 "FAIL (atol 1e-07 ulp 100000000)"):
        assert part in line, (part, line)
    assert "1 fail" in summary and "exit 1" in summary
    q = _run(tmp_path / "a.npz", tmp_path / "b.npz", "--atol", "1e-7", "-q")
    assert q.stdout.strip() == summary.replace("2 inputs", "2 inputs")
    assert len(q.stdout.strip().splitlines()) == 1
    ok = _run(tmp_path / "a.npz", tmp_path / "b.npz", "--atol", "1e-6")
    assert ok.exit_code == 0 and " pass" in ok.stdout


def test_json_is_one_document_with_warnings_elsewhere(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros(3), y=np.zeros(2))
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    r = _run(tmp_path / "a.npz", tmp_path / "b.npz", "--json")
    doc = json.loads(r.stdout)
    assert set(doc) >= {"schema", "inputs", "bounds", "rows", "exit_code"}
    assert "(warn)" in r.stderr and r.exit_code == 3
    assert [(x["key"], x["status"]) for x in doc["rows"]] == [("x", "pass"), ("y", "unmeasured")]


def test_npy_inputs_and_scalars(tmp_path):
    np.save(tmp_path / "one" , np.arange(6.0).reshape(2, 3))
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "one", np.arange(6.0).reshape(2, 3) * 2)
    doc = _json(tmp_path / "one.npy", tmp_path / "d" / "one.npy")
    (row,) = doc["rows"]
    assert row["key"] == "one" and row["max_abs"] == 5.0 and row["argmax"] == [1, 2]
    np.savez(tmp_path / "s1.npz", s=np.float64(1.0))
    np.savez(tmp_path / "s2.npz", s=np.float64(1.5))
    doc = _json(tmp_path / "s1.npz", tmp_path / "s2.npz")
    (row,) = doc["rows"]
    assert row["max_abs"] == 0.5 and row["size"] == 1 and not math.isnan(row["max_rel"])


def test_npy_files_with_different_names_compare_as_one_key(tmp_path):
    np.save(tmp_path / "run1.npy", np.zeros((3, 2)))
    np.save(tmp_path / "run2.npy", np.ones((3, 2)))
    doc = _json(tmp_path / "run1.npy", tmp_path / "run2.npy")
    (row,) = doc["rows"]
    assert row["key"] == "array" and row["max_abs"] == 1.0 and doc["exit_code"] == 1
