"""The MPI layer's pure parts: pair ownership, block plans, fingerprints, handshake, launch."""
from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from tolerance._errors import ToleranceError
from tolerance.collective.code_fingerprint import code_fingerprint, differing_files
from tolerance.collective.handshake import (RankInfo, assign_boxes, check_hosts, host_matches,
                                            sync_problems)
from tolerance.collective.launch import build_plan
from tolerance.collective.watch import DeathWatch, announce, farewell
from tolerance.compare.engine import pair_owner
from tolerance.io.npz import plan_blocks


@pytest.mark.parametrize("n", range(2, 9))
def test_pair_owner_is_one_of_the_pair_and_balanced(n):
    owned = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            o = pair_owner(i, j, n)
            assert o in (i, j)
            owned[o] += 1
    assert sum(owned) == n * (n - 1) // 2
    assert max(owned) - min(owned) <= 1


def test_pair_owner_rejects_bad_pairs():
    with pytest.raises(ValueError):
        pair_owner(2, 1, 3)


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
@pytest.mark.parametrize("shape,axis,budget", [
    ((10, 4), 0, 64), ((10, 4), 0, 1), ((10, 4), 1, 80), ((7,), None, 16), ((), None, 8),
    ((0, 3), 0, 100), ((3, 0), 0, 100), ((5, 6, 7), 2, 5 * 6 * 8 * 3),
])
def test_block_ranges_cover_the_axis_in_order(shape, axis, budget, itemsize):
    import math
    per, ranges = plan_blocks(shape, axis, itemsize, budget)
    extent = math.prod(shape) if axis is None else shape[axis]
    if extent == 0:
        assert ranges == [(0, 0)]
        return
    assert ranges[0][0] == 0 and ranges[-1][1] == extent
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(0 < hi - lo <= per for lo, hi in ranges)
    if axis is not None and per > 1:  # a block holds whole steps within the budget
        assert per * itemsize * math.prod(shape) // shape[axis] <= budget


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "box"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@t.invalid")
    _git(root, "config", "user.name", "t")
    (root / "work.py").write_text("def f(x):\n    return x + 1\n")
    (root / "data.yaml").write_text("a: 1\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def test_fingerprint_ignores_comment_and_blank_line_changes(repo):
    before = code_fingerprint(repo)
    (repo / "work.py").write_text("# a comment\n\ndef f(x):\n\n    return x + 1  # same\n")
    after = code_fingerprint(repo)
    assert after.digest == before.digest
    assert after.head == before.head


def test_fingerprint_sees_a_real_change_and_names_the_file(repo):
    before = code_fingerprint(repo)
    (repo / "work.py").write_text("def f(x):\n    return x + 2\n")
    after = code_fingerprint(repo)
    assert after.digest != before.digest
    assert differing_files(before, after) == ["work.py"]


def test_fingerprint_sees_untracked_and_non_python_changes(repo):
    base = code_fingerprint(repo).digest
    (repo / "data.yaml").write_text("a: 2\n")
    d1 = code_fingerprint(repo).digest
    (repo / "new.py").write_text("x = 1\n")
    d2 = code_fingerprint(repo).digest
    assert len({base, d1, d2}) == 3


def test_fingerprint_of_a_plain_directory(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    one = code_fingerprint(tmp_path)
    (tmp_path / "a.py").write_text("x = 1  # comment\n")
    assert code_fingerprint(tmp_path).digest == one.digest
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_fingerprint(tmp_path).digest != one.digest


def test_assign_boxes_rank_order_and_overrides():
    assert assign_boxes(["a", "b", "c"], 3, [None] * 3, "c.yaml") == ["a", "b", "c"]
    assert assign_boxes(["a", "b", "c"], 3, ["c", None, "a"], "c.yaml") == ["c", "b", "a"]


@pytest.mark.parametrize("names,n,over,needle", [
    (["a"], 1, [None], "at least 2 boxes"),
    (["a", "b", "c"], 2, [None, None], "run with -n 3"),
    (["a", "b"], 2, ["b", None], "claimed by ranks 0 and 1"),
    (["a", "b"], 2, ["zz", None], "'zz'"),
])
def test_assign_boxes_errors_are_one_line(names, n, over, needle):
    with pytest.raises(ToleranceError) as e:
        assign_boxes(names, n, over, "cluster.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("cluster.yaml")


def _info(rank, box, digest="d", head="h", files=None, spec="s", host="vm"):
    return RankInfo(rank=rank, box=box, hostname=host, pid=100 + rank, arch="x86_64",
                    python="python3", versions={"tolerance": "0.1.0", "numpy": "2"},
                    code={"digest": digest, "head": head, "files": files or {}}, spec_hash=spec)


def test_host_matching():
    assert host_matches("localhost", "anything")
    assert host_matches("vm", "vm.example.org")
    assert not host_matches("other", "vm")
    with pytest.raises(ToleranceError, match="box 'b' is declared on host 'far'"):
        check_hosts([_info(0, "a"), _info(1, "b")], {"a": "localhost", "b": "far"}, "c.yaml")


def test_sync_problems_name_the_box_and_the_files():
    same = [_info(0, "a"), _info(1, "b"), _info(2, "c")]
    assert sync_problems(same) == []
    odd = [_info(0, "a"), _info(1, "b", digest="x", files={"work.py": "ast:1"}), _info(2, "c")]
    lines = sync_problems(odd)
    assert lines and "do not run the same code" in lines[0]
    row_b = next(line for line in lines if line.strip().startswith("b "))
    assert "work.py" in row_b
    row_c = next(line for line in lines if line.strip().startswith("c "))
    assert row_c.rstrip().endswith("same")


def _cluster(hosts):
    boxes = [SimpleNamespace(name=f"b{i}", host=h, root=f"/r{i}", python="python3")
             for i, h in enumerate(hosts)]
    return SimpleNamespace(boxes=boxes)


def test_launch_plan_hydra_local():
    plan = build_plan(_cluster(["localhost"] * 3), "lorenz", mpiexec="mpiexec", flavor="hydra",
                      cluster_path="/c.yaml", specs_dir=None, watch="127.0.0.1:5555")
    argv = plan.argv
    assert argv.count(":") == 2 and "-f" not in argv and "-host" not in argv
    assert argv[1:4] == ["-genv", "TOLERANCE_LAUNCH_WATCH", "127.0.0.1:5555"]
    for i in range(3):
        k = argv.index(f"b{i}")
        assert argv[k - 2:k] == ["-env", "TOLERANCE_BOX"]
    assert argv[-5:] == ["tolerance", "run", "lorenz", "--cluster", "/c.yaml"]


def test_launch_plan_openmpi_remote():
    plan = build_plan(_cluster(["h1", "h2", "h1"]), "s", mpiexec="mpirun", flavor="openmpi",
                      cluster_path="/c.yaml", specs_dir="/specs", extra=["--no-sync"],
                      hostfile_path="/tmp/hf")
    assert plan.hostfile == "h1 slots=2\nh2 slots=1\n"
    assert plan.argv[1:3] == ["--hostfile", "/tmp/hf"]
    assert "-x" in plan.argv and "TOLERANCE_BOX=b1" in plan.argv
    assert plan.argv[plan.argv.index("TOLERANCE_BOX=b1") - 5:][:2] == ["--host", "h2"]
    assert plan.argv[-1] == "--no-sync" and "/specs" in plan.argv


def test_death_watch_names_the_first_rank_that_ended_without_bye():
    import time
    watch = DeathWatch()
    try:
        lines = [announce(watch.address, r, box, "vm", 100 + r) for r, box in enumerate("abc")]
        assert all(lines)
        farewell(lines[0])            # a finished normally
        time.sleep(0.2)
        lines[2].close()              # c died first (no bye)
        time.sleep(0.2)
        lines[1].close()              # b was killed afterwards
        dead = watch.first_death()
        assert dead is not None and dead["box"] == "c" and dead["rank"] == 2
    finally:
        watch.close()


def test_announce_to_nobody_is_harmless():
    assert announce("127.0.0.1:1", 0, "a", "vm", 1) is None
    farewell(None)
