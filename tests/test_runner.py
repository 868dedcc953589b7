"""The box runner: run dirs, the four terminal states, fresh outputs, resolved env."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tolerance._errors import ToleranceError
from tolerance.config import Box, parse_spec
from tolerance.runner import (BoxResult, ChipResult, claim_run_dir, environment_fingerprint,
                              newest_output, open_run_dir, run_on_box, utc_stamp)
from tolerance.runner import box as box_module

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
STAMP = "20260102T030405Z"


def make_spec(script: str, **kw):
    data = {"schema": 1, "command": ["{python}", "-c", script, "{out}", "{chip}"], **kw}
    return parse_spec(data, stem="t")


def make_box(tmp_path, chips=("cpu:*",), env=None, name="b1"):
    return Box(name=name, host="localhost", root=str(tmp_path), env=dict(env or {}),
               chips=tuple(chips))


# -- run directories ---------------------------------------------------------------------

def test_utc_stamp():
    assert utc_stamp(NOW) == STAMP
    assert utc_stamp(dt.datetime(2026, 1, 2, 3, 4, 5)) == STAMP  # naive = UTC
    cet = dt.timezone(dt.timedelta(hours=1))
    assert utc_stamp(dt.datetime(2026, 1, 2, 4, 4, 5, tzinfo=cet)) == STAMP
    assert utc_stamp(NOW.timestamp()) == STAMP
    assert len(utc_stamp()) == len(STAMP)


def test_claim_same_timestamp_gets_suffixes(tmp_path):
    got = [claim_run_dir(tmp_path, "lorenz", now=NOW) for _ in range(4)]
    base = tmp_path / "runs" / "lorenz"
    assert got == [base / STAMP, base / f"{STAMP}-2", base / f"{STAMP}-3", base / f"{STAMP}-4"]
    assert all(p.is_dir() for p in got)


def test_claim_never_reuses_a_file_or_dir(tmp_path):
    base = tmp_path / "runs" / "s"
    base.mkdir(parents=True)
    (base / STAMP).write_text("not mine")
    (base / f"{STAMP}-2").mkdir()
    (base / f"{STAMP}-2" / "keep").write_text("x")
    assert claim_run_dir(tmp_path, "s", now=NOW) == base / f"{STAMP}-3"
    assert (base / STAMP).read_text() == "not mine"
    assert (base / f"{STAMP}-2" / "keep").read_text() == "x"


def test_concurrent_claims_threads(tmp_path):
    n = 8
    barrier = threading.Barrier(n)
    got: list[Path] = []
    lock = threading.Lock()

    def claim():
        barrier.wait(timeout=30)
        p = claim_run_dir(tmp_path, "s", now=NOW)
        with lock:
            got.append(p)

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(p.name for p in got) == sorted([STAMP] + [f"{STAMP}-{i}" for i in range(2, n + 1)])


def test_concurrent_claims_processes(tmp_path):
    code = ("import sys, datetime as dt, time\n"
            "from tolerance.runner import claim_run_dir\n"
            "now = dt.datetime(2026, 1, 2, 3, 4, 5)\n"
            "t0 = float(sys.argv[2])\n"
            "time.sleep(max(0.0, t0 - time.time()))\n"
            "print(claim_run_dir(sys.argv[1], 's', now=now).name)\n")
    start = str(time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), start],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    names = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            names.append(out.strip())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(names) == sorted([STAMP, f"{STAMP}-2", f"{STAMP}-3", f"{STAMP}-4"])


@pytest.mark.parametrize("stem", ["..", ".", "a/b", "-x", ""])
def test_claim_rejects_unsafe_stems(tmp_path, stem):
    with pytest.raises(ToleranceError, match="stem"):
        claim_run_dir(tmp_path, stem, now=NOW)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_open_run_dir(tmp_path):
    with pytest.raises(ToleranceError, match=r"run id '20260102T030405Z': no such run"):
        open_run_dir(tmp_path, "s", STAMP)  # a mistyped id never makes a new run
    assert not (tmp_path / "runs").exists()
    claimed = claim_run_dir(tmp_path, "s", now=NOW)
    p = open_run_dir(tmp_path, "s", STAMP)
    assert p == claimed == tmp_path / "runs" / "s" / STAMP and p.is_dir()
    with pytest.raises(ToleranceError, match="run id"):
        open_run_dir(tmp_path, "s", "../x")


# -- terminal states ---------------------------------------------------------------------

FOUR = r"""
import os, signal, sys, time
import numpy as np
out, which = sys.argv[1], os.environ["CUDA_VISIBLE_DEVICES"]
if which == "0":
    np.savez(os.path.join(out, "out.npz"), z_b=np.arange(3.0))
elif which == "1":
    sys.stderr.write("about to fail\nboom: bad input\n")
    sys.exit(1)
elif which == "2":
    os.kill(os.getpid(), signal.SIGKILL)
else:
    time.sleep(60)
"""


def test_four_terminal_states_at_once(tmp_path):
    spec = make_spec(FOUR, timeout=3)
    box = make_box(tmp_path, chips=["cuda:0", "cuda:1", "cuda:2", "cuda:3"])
    run_dir = claim_run_dir(tmp_path, "t", now=NOW)
    t0 = time.monotonic()
    result = run_on_box(spec, box, run_dir, poll=0.02)
    elapsed = time.monotonic() - t0
    assert elapsed < 20
    by = {c.chip: c for c in result.chips}
    assert [by[f"cuda:{i}"].status for i in range(4)] == ["finished", "failed", "vanished", "timeout"]
    assert result.status == "failed" and not result.finished

    ok = by["cuda:0"]
    assert ok.returncode == 0 and ok.reason is None
    assert ok.output == str(run_dir.resolve() / "b1" / "cuda-0" / "out.npz")
    assert ok.seconds is not None and 0 <= ok.seconds < 3

    failed = by["cuda:1"]
    assert failed.returncode == 1
    assert failed.reason == "exited with code 1: boom: bad input"
    assert failed.stderr_tail[-2:] == ["about to fail", "boom: bad input"]
    assert failed.output is None

    gone = by["cuda:2"]
    assert gone.returncode == -signal.SIGKILL and "SIGKILL" in gone.reason
    timed = by["cuda:3"]
    assert timed.returncode is None and "timeout" in timed.reason and "killed" in timed.reason
    assert timed.seconds >= 3 - 0.1

    for c in result.chips:  # logs in each chip's own directory
        d = Path(c.dir)
        assert d.parent == run_dir.resolve() / "b1"
        assert (d / "stdout.log").exists() and (d / "stderr.log").exists()
        assert c.pid is not None
        with pytest.raises(ProcessLookupError):  # every child is gone and reaped
            os.kill(c.pid, 0)
    stored = json.loads((run_dir / "b1" / "box.json").read_text())
    assert [c["status"] for c in stored["chips"]] == ["finished", "failed", "vanished", "timeout"]
    json.dumps(result.to_dict(), allow_nan=False)
    again = BoxResult.from_dict(result.to_dict())
    assert again.to_dict() == result.to_dict()


def test_chips_start_at_once(tmp_path):
    script = ("import time, sys, os; t = time.time(); time.sleep(2.0); "
              "open(os.path.join(sys.argv[1], 'o.npz'), 'w').write(repr(t))")
    spec = make_spec(script, timeout=60)
    box = make_box(tmp_path, chips=["cuda:0", "cuda:1", "cuda:2", "cuda:3"])
    t0 = time.monotonic()
    result = run_on_box(spec, box, claim_run_dir(tmp_path, "t"), poll=0.02)
    assert result.status == "finished", [c.reason for c in result.chips]
    assert time.monotonic() - t0 < 6.0  # one wall clock (~2 s), not four (>= 8 s)
    began = [float(Path(c.output).read_text()) for c in result.chips]
    assert max(began) - min(began) < 1.5


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_cpu_chip_is_pinned(tmp_path):
    script = ("import os, sys, time; time.sleep(0.5); "
              "open(os.path.join(sys.argv[1], 'o.npz'), 'w').write(repr(sorted(os.sched_getaffinity(0))))")
    cpu = sorted(os.sched_getaffinity(0))[0]
    result = run_on_box(make_spec(script), make_box(tmp_path, chips=[f"cpu:{cpu}"]),
                     claim_run_dir(tmp_path, "t"))
    (chip,) = result.chips
    assert chip.status == "finished", chip.reason
    assert Path(chip.output).read_text() == repr([cpu])


THREADED_KILL = r"""
import os, signal, threading, time
ready = threading.Barrier(65)
def spin():
    ready.wait()
    while True:
        sum(range(1000))
for _ in range(64):
    threading.Thread(target=spin, daemon=True).start()
ready.wait()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_many_threaded_workload_reports_its_signal(tmp_path):
    """The leader of a killed multi-threaded process is a zombie before its last thread has
    exited, and its exit status comes only then: a chip seen as a zombie without a status yet
    is waited for, not settled as gone without one (with 64 threads busy on 2 cores the
    window is wide)."""
    spec = make_spec(THREADED_KILL, timeout=20)
    for attempt in range(3):
        box = make_box(tmp_path / str(attempt), chips=["cuda:0", "cuda:1", "cuda:2", "cuda:3"])
        result = run_on_box(spec, box, claim_run_dir(tmp_path / str(attempt), "t", now=NOW),
                            poll=0.001)
        for c in result.chips:
            assert c.status == "vanished" and c.returncode == -signal.SIGKILL, c
            assert c.reason == "killed by SIGKILL (no exit status)"


def test_max_polls_stops_a_runaway(tmp_path):
    spec = make_spec("import time; time.sleep(60)", timeout=600)
    result = run_on_box(spec, make_box(tmp_path), claim_run_dir(tmp_path, "t"), poll=0.01, max_polls=3)
    (chip,) = result.chips
    assert chip.status == "timeout" and "3 polls" in chip.reason


def test_finished_without_output_is_failed(tmp_path):
    spec = make_spec("print('done, but wrote nothing')", outputs="*.npz")
    result = run_on_box(spec, make_box(tmp_path), claim_run_dir(tmp_path, "t"))
    (chip,) = result.chips
    assert chip.status == "failed" and chip.returncode == 0
    assert chip.reason.startswith("finished, but wrote no file matching '*.npz' in ")
    assert (Path(chip.dir) / "stdout.log").read_text() == "done, but wrote nothing\n"


def test_cannot_start_is_failed_with_reason(tmp_path):
    spec = parse_spec({"schema": 1, "command": [str(tmp_path / "no-such-program"), "{out}"]},
                      stem="t")
    result = run_on_box(spec, make_box(tmp_path, chips=["cuda:0", "cuda:1"]),
                     claim_run_dir(tmp_path, "t"))
    assert [c.status for c in result.chips] == ["failed", "failed"]
    # subprocess start: the exec fails at bring-up; ChipGroup: the shim's exec exits 127
    assert all("no-such-program" in c.reason for c in result.chips), result.chips


def test_python_entry_and_context(tmp_path, monkeypatch):
    mod = tmp_path / "mods" / "tol_test_entry.py"
    mod.parent.mkdir()
    mod.write_text("import json, os\n"
                   "def main(ctx, out_dir):\n"
                   "    open(os.path.join(out_dir, 'r.npz'), 'w').write(json.dumps("
                   "{'ctx': ctx is not None, 'cwd': os.getcwd(), 'out': out_dir}))\n")
    monkeypatch.setenv("PYTHONPATH", str(mod.parent))
    spec = parse_spec({"schema": 1, "python": "tol_test_entry:main"}, stem="t")
    result = run_on_box(spec, make_box(tmp_path, chips=["cpu:0"]), claim_run_dir(tmp_path, "t"))
    (chip,) = result.chips
    assert chip.status == "finished", (chip.reason, chip.stderr_tail)
    seen = json.loads(Path(chip.output).read_text())
    assert seen["ctx"]  # ChipContext (bootstrap) or the runner's context namespace
    assert seen["cwd"] == seen["out"] == chip.dir
    ctx = json.loads((Path(chip.dir) / "chip.json").read_text())
    assert ctx["chip"] == "cpu:0" and ctx["box"] == "b1" and ctx["stem"] == "t" and ctx["spec_hash"] == spec.identity_hash()


def test_env_chip_then_box_then_spec(tmp_path, monkeypatch):
    """The documented knob order: what the chip implies, then the box's env, then the
    spec's env (the box's own CUDA_VISIBLE_DEVICES wins over the cuda:3 chip's)."""
    monkeypatch.setenv("TOL_TEST_PARENT", "parent")
    monkeypatch.setenv("TOL_TEST_X", "parent")
    script = ("import json, os, sys; json.dump(dict((k, os.environ.get(k)) for k in "
              "['TOL_TEST_PARENT', 'TOL_TEST_X', 'TOL_TEST_Y', 'TOL_TEST_Z', "
              "'CUDA_VISIBLE_DEVICES']), open(os.path.join(sys.argv[1], 'env.npz'), 'w'))")
    spec = make_spec(script, env={"TOL_TEST_Y": "spec", "TOL_TEST_Z": "spec"})
    box = make_box(tmp_path, chips=["cuda:3"],
                   env={"TOL_TEST_X": "box", "TOL_TEST_Y": "box", "CUDA_VISIBLE_DEVICES": "9"})
    result = run_on_box(spec, box, claim_run_dir(tmp_path, "t"))
    (chip,) = result.chips
    seen = json.loads(Path(chip.output).read_text())
    assert seen == {"TOL_TEST_PARENT": "parent", "TOL_TEST_X": "box", "TOL_TEST_Y": "spec",
                    "TOL_TEST_Z": "spec", "CUDA_VISIBLE_DEVICES": "9"}
    # the record is the resolved extra env, not the whole os.environ
    assert chip.env == {"TOL_TEST_X": "box", "TOL_TEST_Y": "spec", "TOL_TEST_Z": "spec",
                        "CUDA_VISIBLE_DEVICES": "9", "TOLERANCE_ROOT": str(tmp_path.resolve())}


# -- a stem's own code: {root}, TOLERANCE_ROOT, python: with the root on sys.path ----------

_ODE = """\
import json, os, sys
import numpy as np


def main(ctx, out_dir):
    info = {"cwd": os.getcwd(), "root_env": os.environ.get("TOLERANCE_ROOT"),
            "data": os.environ.get("ODE_DATA"), "path0": sys.path[0],
            "ctx": ctx and {k: getattr(ctx, k) for k in ("box", "host", "chip", "stem", "out_dir",
                                                   "run_dir", "root", "context_file",
                                                   "device", "cpus")}}
    with open(os.path.join(out_dir, "info.json"), "w") as fh:
        json.dump(info, fh)
    np.savez(os.path.join(out_dir, "ode.npz"), y=np.arange(4.0))
    return 0


if __name__ == "__main__":
    sys.exit(main(None, sys.argv[1]))
"""


def _project(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "mywork").mkdir(parents=True)
    (root / "mywork" / "__init__.py").write_text("")
    (root / "mywork" / "ode.py").write_text(_ODE)
    return root


def test_command_finds_code_through_root(tmp_path):
    root = _project(tmp_path)
    spec = parse_spec({"schema": 1, "command": ["{python}", "{root}/mywork/ode.py", "{out}"],
                       "env": {"ODE_DATA": "{root}/data"}}, stem="ode")
    box = make_box(root)
    result = run_on_box(spec, box, claim_run_dir(root, "ode"))
    (chip,) = result.chips
    assert chip.status == "finished", chip.reason
    info = json.loads((Path(chip.dir) / "info.json").read_text())
    assert info["cwd"] == chip.dir  # the working directory stays the chip's output directory
    assert info["root_env"] == str(root.resolve())
    assert info["data"] == f"{root.resolve()}/data"
    assert Path(chip.output).name == "ode.npz"


def test_python_entry_imports_from_root(tmp_path):
    root = _project(tmp_path)
    spec = parse_spec({"schema": 1, "python": "mywork.ode:main"}, stem="ode")
    box = make_box(root)
    result = run_on_box(spec, box, claim_run_dir(root, "ode"))
    (chip,) = result.chips
    assert chip.status == "finished", (chip.reason, chip.stderr_tail)
    info = json.loads((Path(chip.dir) / "info.json").read_text())
    assert info["path0"] == str(root.resolve()) and info["cwd"] == chip.dir
    c = info["ctx"]
    assert c["box"] == "b1" and c["chip"] == "cpu:*" and c["stem"] == "ode"
    assert c["out_dir"] == chip.dir and c["root"] == str(root.resolve())
    assert c["context_file"] == str(Path(chip.dir) / "chip.json")
    assert Path(c["run_dir"]) == Path(chip.dir).parent.parent


def test_python_entry_import_error_is_one_line(tmp_path):
    root = _project(tmp_path)
    spec = parse_spec({"schema": 1, "python": "mywork.nosuch:main"}, stem="ode")
    result = run_on_box(spec, make_box(root), claim_run_dir(root, "ode"))
    (chip,) = result.chips
    assert chip.status == "failed"
    assert "cannot import" in chip.reason and "mywork.nosuch" in chip.reason
    assert not any("Traceback" in ln for ln in chip.stderr_tail)


# -- outputs -------------------------------------------------------------------------------

def test_newest_by_mtime_beats_a_later_name(tmp_path):
    script = ("import os, sys, time\n"
              "out = sys.argv[1]\n"
              "open(os.path.join(out, 'zzz.npz'), 'w').write('old')\n"
              "open(os.path.join(out, 'aaa.npz'), 'w').write('new')\n"
              "t = time.time()\n"
              "os.utime(os.path.join(out, 'zzz.npz'), (t - 100, t - 100))\n")
    result = run_on_box(make_spec(script), make_box(tmp_path), claim_run_dir(tmp_path, "t"))
    (chip,) = result.chips
    assert Path(chip.output).name == "aaa.npz"


def test_newest_output_unit(tmp_path):
    for name, age in [("b.npz", 10), ("c.npz", 20), ("a.npz", 1), ("z.txt", 0)]:
        p = tmp_path / name
        p.write_text(name)
        os.utime(p, (time.time() - age, time.time() - age))
    (tmp_path / "d.npz").mkdir()  # a directory never counts
    assert newest_output(tmp_path, "*.npz") == tmp_path / "a.npz"
    assert newest_output(tmp_path, "*") == tmp_path / "z.txt"
    assert newest_output(tmp_path, "*.h5") is None
    (tmp_path / "stderr.log").write_text("runner's own")
    assert newest_output(tmp_path, "*.log") is None


def test_box_dir_is_never_overwritten(tmp_path):
    spec = make_spec("pass")
    run_dir = claim_run_dir(tmp_path, "t")
    run_on_box(spec, make_box(tmp_path), run_dir)
    marker = run_dir / "b1" / "cpu-all" / "stdout.log"
    marker.write_text("keep me")
    with pytest.raises(ToleranceError, match="already exists"):
        run_on_box(spec, make_box(tmp_path), run_dir)
    assert marker.read_text() == "keep me"


def test_environment_fingerprint():
    fp = environment_fingerprint({"OPENBLAS_CORETYPE": "Prescott", "OMP_NUM_THREADS": "1"})
    assert fp["machine"] and fp["python"]["version"] and fp["numpy"]["version"]
    assert fp["env"]["OPENBLAS_CORETYPE"] == "Prescott" and fp["env"]["OMP_NUM_THREADS"] == "1"
    assert isinstance(fp["cpu"]["flags"], list)
    json.dumps(fp, allow_nan=False)


def test_chip_result_to_dict_round_trip():
    c = ChipResult(chip="cpu:*", status="failed", returncode=2, reason="r", stderr_tail=["x"],
                   started=1.0, ended=3.5, env={"A": "1"}, dir="/d", pid=7)
    d = c.to_dict()
    assert d["seconds"] == 2.5 and ChipResult.from_dict(d) == c


def test_start_failure_is_a_status(tmp_path, monkeypatch):
    def refuse(configs):
        raise box_module._chips.BootstrapError("chip 0 (cpu:*) could not be started: no shm")

    monkeypatch.setattr(box_module._chips, "start_chips", refuse)
    result = run_on_box(make_spec("pass"), make_box(tmp_path), claim_run_dir(tmp_path, "t"))
    (chip,) = result.chips
    assert chip.status == "failed" and chip.reason.startswith("could not start: chip 0")
    assert result.status == "failed" and (Path(result.run_dir) / "box.json").is_file()
