"""The all-pairs streaming exchange under real `mpiexec`, checked against the kernel on
whole arrays, for 1, 2 and 3 ranks and several block budgets (bit-identical results)."""
from __future__ import annotations

import json
import sys
from itertools import combinations
from pathlib import Path

import pytest

import tolerance
from _mpi import run_mpi  # tests/ is on sys.path (pytest's rootdir-less test modules)
from _mpi_exchange_worker import arrays_of

WORKER = Path(__file__).with_name("_mpi_exchange_worker.py")
BOUNDS = {"z_b": dict(atol=1e-4, rtol=0.0), "omega_b": dict(atol=0.0, rtol=1e-9),
          "n": dict(atol=0.0, rtol=0.0)}


def _exchange(tmp_path, nranks, nparts, chunk, mode, axis="0"):
    out = tmp_path / f"out-{nranks}-{chunk}-{mode}.json"
    res = run_mpi([sys.executable, WORKER, out, nparts, chunk, mode, axis], n=nranks)
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text())


def _expected(nparts, mode, axis):
    arrays = {p: arrays_of(p, mode) for p in range(nparts)}
    rows = {}
    for key in ("z_b", "omega_b", "n"):
        for p, q in combinations(range(nparts), 2):
            a, b = arrays[p].get(key), arrays[q].get(key)
            if a is None or b is None or a.shape != b.shape:
                rows[(f"p{p}", f"p{q}", key)] = None
                continue
            rows[(f"p{p}", f"p{q}", key)] = tolerance.divergence(
                a, b, steps_axis=axis, **BOUNDS[key]).to_dict()
    return rows


def _by_pair(doc):
    # participant order follows ranks, so a pair may come as (p2, p1): the figures are
    # symmetric in a and b, so compare by the unordered pair
    return {(*sorted((r["a"], r["b"])), r["key"]): r["div"] for r in doc["rows"]}


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_exchange_matches_whole_array_kernel(tmp_path, nranks):
    want = _expected(4, "random", 0)
    for chunk in (64, 1 << 20):
        got = _by_pair(_exchange(tmp_path, nranks, 4, chunk, "random"))
        assert set(got) == set(want)
        for k, d in want.items():
            assert got[k] == d, (k, chunk)


def test_exchange_flat_steps_axis_none(tmp_path):
    want = _expected(3, "random", None)
    got = _by_pair(_exchange(tmp_path, 3, 3, 40, "random", "none"))
    assert got == want


def test_identical_boxes_move_no_data(tmp_path):
    doc = _exchange(tmp_path, 3, 3, 64, "identical")
    assert doc["bytes_sent"] == 0
    assert all(r["div"]["max_abs"] == 0.0 and r["div"]["within"] for r in doc["rows"])


def test_partly_equal_boxes_move_only_the_differing_blocks(tmp_path):
    doc = _exchange(tmp_path, 3, 3, 5 * 3 * 8, "partial")   # one step of z_b per block
    want = _expected(3, "partial", 0)
    assert _by_pair(doc) == want
    z = arrays_of(2, "partial")["z_b"]
    step_bytes = z[0].nbytes
    # p0 == p1 everywhere; p2 differs on steps 20..36 only. Pairs: (0,1) owner 0,
    # (1,2) owner 1, (0,2) owner 2. Only blocks of differing steps move: p2's 17 steps to
    # rank 1 and p0's 17 steps to rank 2.  omega_b and n differ everywhere (small).
    zb_bytes = 2 * 17 * step_bytes
    assert doc["bytes_sent"] >= zb_bytes
    full_zb = 3 * z.nbytes
    assert doc["bytes_sent"] < full_zb
