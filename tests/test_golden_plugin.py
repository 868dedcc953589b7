"""The pytest plugin (`tolerance_golden`), driven through `pytester`."""
from __future__ import annotations

import json
import textwrap
from importlib import metadata

import numpy as np
import pytest

pytest_plugins = ["pytester"]

_TEST = textwrap.dedent("""\
    import os
    import numpy as np

    def state():
        z = np.arange(24, dtype="f8").reshape(6, 4)
        z[int(os.environ.get("GOLDEN_FROM", "99")):, 1] += float(os.environ.get("GOLDEN_SHIFT", "0"))
        return {"z": z, "n": np.array([1, 2, 3], dtype="i4")}

    def test_state(tolerance_golden):
        tolerance_golden.check("state", state(), atol=1e-6)

    def test_params(tolerance_golden):
        for k in range(3):
            tolerance_golden.check(f"p{k}", {"x": np.full(4, float(k))})
    """)


def test_entry_point_is_registered():
    eps = metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    assert any(ep.value == "tolerance.pytest_plugin" for ep in group)


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_solver=_TEST)
    return pytester


def test_missing_create_pass_fail_refresh(suite, monkeypatch):
    # a missing golden fails with the command that creates it
    r = suite.runpytest()
    r.assert_outcomes(failed=2)
    r.stdout.fnmatch_lines([
        "*golden golden/test_solver/test_state/state.npz is missing; create it with:*",
        "*pytest --tolerance-update 'test_solver.py::test_state'*",
    ])
    assert "Traceback" not in r.stdout.str()

    # create: the arrays, and beside them the bounds, commit and environment
    r = suite.runpytest("--tolerance-update")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*tolerance: wrote 4 golden file(s) (--tolerance-update)*"])
    g = suite.path / "golden" / "test_solver" / "test_state"
    with np.load(g / "state.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["z"], np.arange(24.0).reshape(6, 4))
        assert npz["n"].dtype == np.int32
    meta = json.loads((g / "state.json").read_text())
    assert meta["schema"] == "tolerance.golden/1"
    assert meta["bounds"] == {"atol": 1e-6, "rtol": None, "ulp": None}
    assert meta["test"] == "test_solver.py::test_state"
    assert set(meta["code"]) == {"head", "digest", "dirty"}
    assert meta["environment"]["numpy"]["version"] == np.__version__
    assert "env" not in meta["environment"] and "hostname" not in meta["environment"]
    assert sorted(p.name for p in (suite.path / "golden" / "test_solver" / "test_params")
                  .iterdir()) == ["p0.json", "p0.npz", "p1.json", "p1.npz", "p2.json", "p2.npz"]

    # within the bound: pass
    monkeypatch.setenv("GOLDEN_FROM", "2")
    monkeypatch.setenv("GOLDEN_SHIFT", "5e-7")
    suite.runpytest().assert_outcomes(passed=2)

    # beyond it: fail, with the assert_bounded figures of the key that differs only
    monkeypatch.setenv("GOLDEN_SHIFT", "0.25")
    r = suite.runpytest()
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines([
        "*golden golden/test_solver/test_state/state.npz: 1 of 2 keys differ (z)*",
        "*key 'z':*",
        "*Arrays are not within the bound (atol=1e-06*",
        "*Mismatched elements: 4 / 24 (16.7%)*",
        "*Greatest absolute difference: 0.25 at index (2, 1)*",
        "*Onset step: 2 (steps axis 0)*",
        "*refresh with: pytest --tolerance-update 'test_solver.py::test_state'*",
    ])
    assert "key 'n'" not in r.stdout.str()

    # refresh: the new arrays become the golden
    suite.runpytest("--tolerance-update").assert_outcomes(passed=2)
    suite.runpytest().assert_outcomes(passed=2)
    with np.load(g / "state.npz") as npz:
        assert npz["z"][2, 1] == 9.25


def test_key_set_shape_dtype_and_pickle_fail(pytester, monkeypatch):
    pytester.makepyfile(test_keys=textwrap.dedent("""\
        import os
        import numpy as np

        def test_k(tolerance_golden):
            mode = os.environ.get("MODE")
            if mode == "extra":
                tolerance_golden.check("g", {"a": np.zeros(3), "b": np.zeros(2)})
            elif mode == "fewer":
                tolerance_golden.check("g", {"c": np.zeros(3)})
            elif mode == "shape":
                tolerance_golden.check("g", {"a": np.zeros(4)})
            elif mode == "dtype":
                tolerance_golden.check("g", {"a": np.zeros(3, dtype="i8")})
            else:
                tolerance_golden.check("g", {"a": np.zeros(3)})
        """))
    pytester.runpytest("--tolerance-update").assert_outcomes(passed=1)
    for mode, lines in (("extra", ["*key 'b':*", "*not in the golden (refresh it to add it)*"]),
                        ("fewer", ["*key 'a':*", "*in the golden, not given to check()*"]),
                        ("shape", ["*shape mismatch (4,) vs (3,) (given vs golden)*"]),
                        ("dtype", ["*dtype kind mismatch int64 vs float64*"])):
        monkeypatch.setenv("MODE", mode)
        r = pytester.runpytest()
        r.assert_outcomes(failed=1)
        r.stdout.fnmatch_lines(lines)
    monkeypatch.delenv("MODE")
    g = pytester.path / "golden" / "test_keys" / "test_k" / "g.npz"
    np.savez(g, a=np.array([{"x": 1}], dtype=object))  # a pickle: refused, never loaded
    r = pytester.runpytest()
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*golden golden/test_keys/test_k/g.npz: unreadable:*"
                            "unsupported dtype*"])


def test_under_xdist(suite, monkeypatch):
    pytest.importorskip("xdist")
    r = suite.runpytest_subprocess("-n", "2", "--tolerance-update")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*tolerance: wrote 4 golden file(s)*"])
    monkeypatch.setenv("GOLDEN_FROM", "0")
    monkeypatch.setenv("GOLDEN_SHIFT", "1")
    r = suite.runpytest_subprocess("-n", "2")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*Mismatched elements: 6 / 24 (25%)*"])
