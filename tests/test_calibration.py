"""Calibration: the envelope, the bounds, leave-one-out and the chaos step, each against
an independent NumPy computation on the same member outputs."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from tolerance.compare.calibration import (SCALE_VARIATION, EnsembleMember, calibrate,
                                           no_useful_bound_from)


def _members(tmp_path, arrays_per_member):
    out = []
    for k, arrays in enumerate(arrays_per_member):
        p = tmp_path / f"m{k}.npz"
        np.savez(p, **arrays)
        out.append(EnsembleMember(box=f"box{k % 3}", replica=k // 3, path=str(p)))
    return out


def _oracle(arrays: list[np.ndarray], factor: float):
    """Independent: per-pair per-step max|a-b| in float64, envelope, leave-one-out."""
    x = [np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1) for a in arrays]
    n = len(x)
    d = {(i, j): np.abs(x[i] - x[j]).max(axis=1) for i, j in combinations(range(n), 2)}
    env = np.max(np.stack(list(d.values())), axis=0)
    rows = fails = 0
    for m in range(n):
        others = [s for (i, j), s in d.items() if m not in (i, j)]
        allowed = factor * (np.max(np.stack(others), axis=0) if others else np.zeros_like(env))
        for j in range(n):
            if j != m:
                rows += 1
                fails += int(np.any(d[min(m, j), max(m, j)] > allowed))
    return d, env, rows, fails


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_envelope_and_leave_one_out_match_numpy(tmp_path, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((40, 17)).astype(np.float32)
    arrays = [base + (rng.standard_normal(base.shape) * 1e-6 * (1 + k)).astype(np.float32)
              for k in range(6)]
    members = _members(tmp_path, [{"x": a} for a in arrays])
    envs, bounds, problems = calibrate(members, ["x"], factor=2.0, budget=17 * 4 * 3)
    assert problems == []
    (env,), (b,) = envs, bounds
    d, oracle_env, rows, fails = _oracle(arrays, 2.0)
    for p, s in d.items():
        np.testing.assert_array_equal(env.pair_series[p], s)
    np.testing.assert_array_equal(env.envelope, oracle_env)
    assert b.held_out_rows == rows == 6 * 5
    assert b.held_out_failures == fails
    assert b.false_positive_rate == fails / rows
    assert b.atol == 2.0 * oracle_env.max()
    np.testing.assert_array_equal(b.per_step, 2.0 * oracle_env)
    assert b.no_useful_bound_from is None


def test_identical_members_give_zero_bounds_and_no_false_positives(tmp_path):
    a = 1.0 + np.linspace(0, 1, 60).reshape(12, 5)
    members = _members(tmp_path, [{"x": a}] * 4)
    _, (b,), _ = calibrate(members, ["x"], factor=2.0)
    assert b.atol == 0.0 and b.max_envelope == 0.0
    assert b.held_out_failures == 0 and b.false_positive_rate == 0.0


def test_relative_bound_when_the_scale_varies(tmp_path):
    rng = np.random.default_rng(7)
    scale = np.logspace(0, 4, 30)[:, None]          # 1e4 over the steps
    base = rng.standard_normal((30, 8)) * scale
    arrays = [base * (1 + rng.standard_normal(base.shape) * 1e-9) for _ in range(4)]
    _, (b,), _ = calibrate(_members(tmp_path, [{"x": a} for a in arrays]), ["x"], factor=3.0)
    assert b.scale_variation > SCALE_VARIATION
    assert b.atol is None and b.rtol is not None
    # oracle: the largest elementwise relative difference over all pairs, times F
    rel = max(float(np.max(np.abs(x - y) / np.maximum(np.abs(x), np.abs(y))))
              for x, y in combinations(arrays, 2))
    assert b.rtol == pytest.approx(3.0 * rel, rel=1e-12)


def test_chaos_is_reported_not_hidden(tmp_path):
    rng = np.random.default_rng(3)
    steps = 50
    base = np.tanh(rng.standard_normal((steps, 32)))
    arrays = []
    for k in range(3):
        grow = np.minimum(1e-7 * 2.0 ** np.arange(steps), 10.0)[:, None]
        noise = rng.standard_normal(base.shape)
        arrays.append(np.clip(base + grow * noise, -1, 1))
    envs, (b,), _ = calibrate(_members(tmp_path, [{"x": a} for a in arrays]), ["x"], factor=2.0)
    # oracle: the first step where 2*env reaches max(spread, scale) of the data at that step
    _, env, _, _ = _oracle(arrays, 2.0)
    stack = np.stack(arrays)
    spread = stack.max(axis=(0, 2)) - stack.min(axis=(0, 2))
    scale = np.abs(stack).max(axis=(0, 2))
    expect = int(np.flatnonzero(2.0 * env >= np.maximum(spread, scale))[0])
    assert b.no_useful_bound_from == expect == no_useful_bound_from(envs[0], 2.0)
    assert b.atol is None and b.rtol is None and b.per_step is None
    assert 10 < expect < steps


def test_a_missing_key_is_a_problem_not_a_bound(tmp_path):
    members = _members(tmp_path, [{"x": np.zeros((3, 2)), "y": np.ones(3)},
                                  {"x": np.zeros((3, 2))}, {"x": np.zeros((3, 2)), "y": np.ones(3)}])
    envs, bounds, problems = calibrate(members, None, factor=2.0)
    assert [e.key for e in envs] == ["x"]
    assert any("'y'" in p for p in problems)


# -- bounds files: schema, use, check ---------------------------------------------------

import json  # noqa: E402
import textwrap  # noqa: E402

import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from tolerance.cli import main  # noqa: E402
from tolerance.config import load_spec  # noqa: E402
from tolerance.config.bounds_file import (bounds_document, load_bounds_file,  # noqa: E402
                                          workload_hash)
from tolerance.config.spec import list_stems, with_run_overrides  # noqa: E402

SPEC = """\
schema: 1
python: tolerance.examples.stable:main
keys: [z_b, omega_b]
bounds:
  omega_b: {rtol: 1.0e-6}
"""


def _bounds_file(tmp_path, spec, name="s.bounds.yaml", **keys):
    doc = bounds_document(stem=spec.stem, workload=workload_hash(spec), code_commit=None,
                          boxes=["a", "b"], replicas=2, perturb=0.0, factor=2.0,
                          steps_axis=spec.steps_axis, envelope_name=name[:-5] + ".npz",
                          keys=keys, created="20260101T000000Z")
    path = tmp_path / "specs" / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _spec_dir(tmp_path, extra=""):
    (tmp_path / "specs").mkdir(exist_ok=True)
    (tmp_path / "specs" / "s.yaml").write_text(SPEC + extra)
    return tmp_path / "specs"


def test_a_bounds_file_bounds_the_keys_the_spec_leaves_unbounded(tmp_path):
    sdir = _spec_dir(tmp_path)
    spec = load_spec("s", sdir)
    path = _bounds_file(tmp_path, spec, z_b={"atol": 3e-6, "rtol": None},
                        omega_b={"atol": 9.0, "rtol": None})
    used = with_run_overrides(spec, bounds_path=path)
    assert used.bounds_for("z_b").atol == 3e-6
    assert used.bounds_for("omega_b").rtol == 1e-6       # the spec's own bound wins
    assert used.bounds_for("omega_b").atol != 9.0
    assert used.calibrated == ("z_b",)
    # the spec may name it; a later --bounds file replaces what the first one set
    (sdir / "s.yaml").write_text(SPEC + "bounds_file: s.bounds.yaml\n")
    named = load_spec("s", sdir)
    assert named.bounds_for("z_b").atol == 3e-6
    other = _bounds_file(tmp_path, spec, name="t.bounds.yaml", z_b={"atol": 5e-6})
    assert with_run_overrides(named, bounds_path=other).bounds_for("z_b").atol == 5e-6
    assert list_stems(sdir) == ["s"]                      # bounds files are not stems


def test_check_says_when_a_bounds_file_was_made_for_another_spec(tmp_path):
    sdir = _spec_dir(tmp_path)
    spec = load_spec("s", sdir)
    _bounds_file(tmp_path, spec, z_b={"atol": 3e-6})
    (tmp_path / "cluster.yaml").write_text(textwrap.dedent("""\
        schema: 1
        boxes:
          - {name: a, host: localhost}
          - {name: b, host: localhost}
        """))
    args = ["check", "--cluster", str(tmp_path / "cluster.yaml"), "--specs", str(sdir)]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    (sdir / "s.yaml").write_text(SPEC.replace("stable", "lorenz") + "bounds_file: s.bounds.yaml\n")
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code == 2
    assert "s.bounds.yaml: made for a different spec" in bad.output


@pytest.mark.parametrize("field,value,expect", [
    ("schema", "tolerance.bounds/9", "schema"),
    ("factor", -1, "factor"),
    ("keys", {"z_b": {"atol": "big"}}, "keys.z_b.atol"),
    ("keys", {"z_b": {"false_positive_rate": 3}}, "keys.z_b.false_positive_rate"),
    ("envelope", "../../etc/x.npz", "envelope"),
    ("surprise", 1, "surprise"),
])
def test_a_malformed_bounds_file_is_one_line_naming_the_field(tmp_path, field, value, expect):
    sdir = _spec_dir(tmp_path)
    spec = load_spec("s", sdir)
    path = _bounds_file(tmp_path, spec, z_b={"atol": 1e-6})
    doc = yaml.safe_load(path.read_text())
    doc[field] = value
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception) as info:
        load_bounds_file(path)
    line = str(info.value)
    assert line.startswith(str(path)) and expect in line and "\n" not in line


def test_diff_takes_a_bounds_file_per_key_and_per_step(tmp_path):
    sdir = _spec_dir(tmp_path)
    spec = load_spec("s", sdir)
    steps = 10
    bound = np.full(steps, 1e-3)
    bound[6:] = 1e-6                        # tighter from step 6: the drift below breaks it
    path = _bounds_file(tmp_path, spec, z_b={"atol": 2e-3, "per_step": True, "steps": steps})
    np.savez(path.with_suffix(".npz"), z_b__bound=bound)
    a = np.zeros((steps, 4))
    b = a.copy()
    b[:, 1] = 1e-4                          # inside 1e-3, outside 1e-6
    np.savez(tmp_path / "a.npz", z_b=a, other=a)
    np.savez(tmp_path / "b.npz", z_b=b, other=b)
    res = CliRunner().invoke(main, ["diff", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                                    "--bounds", str(path), "--atol", "1", "--json"])
    assert res.exit_code == 1, res.output
    rows = {r["key"]: r for r in json.loads(res.output)["rows"]}
    assert rows["z_b"]["status"] == "fail" and rows["z_b"]["onset"] == 6
    assert rows["z_b"]["count_over"] == steps - 6
    assert rows["other"]["status"] == "pass"             # the command line's bound
    # a per-step bound that does not fit the file's step count is refused in one line
    np.savez(path.with_suffix(".npz"), z_b__bound=bound[:5])
    bad = CliRunner().invoke(main, ["diff", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                                    "--bounds", str(path)])
    assert bad.exit_code == 2 and "z_b__bound" in bad.output
