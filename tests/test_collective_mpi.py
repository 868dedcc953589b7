"""The all-pairs streaming exchange under real `mpiexec`, checked against the kernel on
whole arrays, for 1, 2 and 3 ranks and several block budgets (bit-identical results)."""
from __future__ import annotations

import json
import sys
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


# --------------------------------------------------------------------------- digests point to point

def _moved_bytes(doc, mode, chunk, axis=0, failed=()):
    """The data bytes the exchange must move, from the definition: per block, for every
    comparable pair whose blocks differ, the non-owner's block goes to the owner's rank,
    once per (block, participant, rank); equal blocks move nothing."""
    from tolerance.compare.engine import pair_owner
    from tolerance.io import plan_blocks

    labels = [lab for lab, _ in doc["participants"]]
    rank = [r for _, r in doc["participants"]]
    n = len(labels)
    arrays = {i: arrays_of(int(lab[1:]), mode) for i, lab in enumerate(labels)
              if lab not in failed}
    total = 0
    for key in ("z_b", "omega_b", "n"):
        have = {i: a[key] for i, a in arrays.items() if key in a}
        for shape in sorted({a.shape for a in have.values()}):
            members = [i for i, a in have.items() if a.shape == shape]
            itemsize = max(have[i].dtype.itemsize for i in members)
            _per, ranges = plan_blocks(shape, axis, itemsize, chunk)
            for lo, hi in ranges:
                wanted = set()
                for i, j in combinations(sorted(members), 2):
                    if have[i][lo:hi].tobytes() == have[j][lo:hi].tobytes():
                        continue  # equal digests
                    o = pair_owner(i, j, n)
                    other = j if o == i else i
                    if rank[other] != rank[o]:
                        wanted.add((other, rank[o]))
                total += sum(have[k][lo:hi].nbytes for k, _ in wanted)
    return total


def _local_engine(nparts, mode, chunk, axis=0):
    """The same participants through the local transport (the engine `tolerance diff` runs)."""
    from _mpi_exchange_worker import MemSource
    from tolerance.compare.engine import LocalTransport, compare_key
    from tolerance.compare.kernel import Accumulator

    labels = [f"p{p}" for p in range(nparts)]
    local = {p: MemSource(labels[p], arrays_of(p, mode)) for p in range(nparts)}
    rows = {}
    for key in ("z_b", "omega_b", "n"):
        bound = SimpleNamespace(**{"ulp": None, **BOUNDS[key]})
        for o in compare_key(LocalTransport(), local, labels, key, bound, axis, budget=chunk):
            rows[(labels[o.a], labels[o.b], key)] = None if o.acc is None else \
                Accumulator.from_bytes(o.acc.to_bytes()).result(o.shape).to_dict()
    return rows


@pytest.mark.parametrize("nranks", [2, 3, 4])
def test_mixed_equal_and_differing_blocks_across_ranks(tmp_path, nranks):
    """Pairs equal in some blocks and not in others (a pattern per participant, NaNs inside
    equal blocks): the figures are the whole-array kernel's and the local engine's, for any
    rank count, and exactly the differing blocks move, once per pair."""
    chunk = 48  # 2 steps of z_b, 6 values of omega_b, 1 step of n per block
    want = _expected(5, "mixed", 0)
    assert _local_engine(5, "mixed", chunk) == want
    doc = _exchange(tmp_path, nranks, 5, chunk, "mixed")
    assert _by_pair(doc) == want
    assert doc["bytes_sent"] == _moved_bytes(doc, "mixed", chunk)
    assert 0 < doc["bytes_sent"]
    assert doc["blocks_equal"] > 0


def test_pipeline_depth_from_the_pending_budget():
    from tolerance.compare.engine import MAX_DEPTH, PENDING_BYTES, pipeline_depth
    assert pipeline_depth(16 << 20, 1) == PENDING_BYTES // (16 << 20)
    assert pipeline_depth(16 << 20, 2) == PENDING_BYTES // (32 << 20)
    assert pipeline_depth(PENDING_BYTES + 1, 1) == 1  # one block in hand at least
    assert pipeline_depth(48, 3) == MAX_DEPTH
    assert pipeline_depth(0, 0) == MAX_DEPTH


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_rows_do_not_depend_on_the_pipeline_depth(monkeypatch, depth):
    """Blocks folded 1, 2 or 5 blocks after they are hashed (fewer than the blocks of the
    key, so the pipeline fills and drains): the same rows as the whole-array kernel, and
    the equal blocks still found."""
    import tolerance.compare.engine as engine
    monkeypatch.setattr(engine, "MAX_DEPTH", depth)
    want = _expected(5, "mixed", 0)
    assert _local_engine(5, "mixed", 48) == want


def test_a_rank_without_members_in_a_shape_group(tmp_path):
    """Five participants on three ranks: one shape group of z_b lives on rank 1 alone, and
    rank 1 holds no member of the other; every rank still agrees on what travels."""
    doc = _exchange(tmp_path, 3, 5, 64, "groups")
    want = _expected(5, "groups", 0)
    assert _by_pair(doc) == want
    assert doc["bytes_sent"] == _moved_bytes(doc, "groups", 64)
    assert sum(1 for k, d in want.items() if k[2] == "z_b" and d is None) == 6  # mismatches


def test_a_rank_whose_participants_all_failed(tmp_path):
    """The last rank has no output at all: it takes part in no shape group, the others
    compare without it, and its pairs are unmeasured rows naming why."""
    doc = _exchange(tmp_path, 3, 5, 48, "failed")
    failed = {"p2"}  # participants on rank 2 of 3 (p % 3 == 2)
    want = _expected(5, "mixed", 0)
    got = _by_pair(doc)
    assert set(got) == set(want)
    for k, d in want.items():
        if failed & set(k[:2]):
            assert got[k] is None, k
        else:
            assert got[k] == d, k
    reasons = {r["reason"] for r in doc["rows"] if failed & {r["a"], r["b"]}}
    assert reasons and all("the chip failed" in r for r in reasons)
    assert doc["bytes_sent"] == _moved_bytes(doc, "mixed", 48, failed=failed)


def test_a_reader_thread_only_with_a_core_to_spare():
    from tolerance.collective.mpi import spare_cores
    import os

    cores = len(os.sched_getaffinity(0))
    assert spare_cores(cores) is False            # a rank per core: read in turn
    assert spare_cores(cores - 1) is (cores > 1)
    assert spare_cores(1) is (cores > 1)
