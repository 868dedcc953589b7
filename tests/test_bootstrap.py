"""Chip bring-up through the shared-memory mailbox: happy paths, every failure mode ends fast
with a message naming the chip, and no segment ever outlives its group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from _bootstrap_helpers import (faults_env, inject_faults, no_leaked_segments,  # noqa: F401
                                tol_segments)
from tolerance import _native
from tolerance.bootstrap import BootstrapError, ChipConfig, ChipContext, ChipGroup

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /dev/shm")

HERE = str(Path(__file__).resolve().parent)
WL_ENV = {"PYTHONPATH": HERE}
NCPU = len(os.sched_getaffinity(0))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _cpu_list(cpus) -> str:
    out, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _wait_done(group: ChipGroup, timeout: float = 20) -> list:
    end = time.monotonic() + timeout
    while None in group.poll():
        assert time.monotonic() < end, "workloads did not finish"
        time.sleep(0.01)
    return group.poll()


# --------------------------------------------------------------------------- happy paths


def test_four_chips_come_up(tmp_path):
    chips = ["cpu:0", f"cpu:{NCPU - 1}", "cpu:*", f"cpu:0-{NCPU - 1}"]
    with ChipGroup() as g:
        g.start([ChipConfig(c, ["true"], out_dir=str(tmp_path)) for c in chips])
        ctxs = g.wait(60)
        assert [c.rank for c in ctxs] == [0, 1, 2, 3]
        assert all(c.nranks == 4 and c.device == "cpu" and c.device_id == -1 for c in ctxs)
        assert ctxs[0].cpus == "0" and ctxs[0].affinity_applied and ctxs[0].threads == 1
        assert ctxs[2].cpus == _cpu_list(os.sched_getaffinity(0))
        assert not ctxs[2].affinity_applied and ctxs[2].threads is None
        assert [c.pid for c in ctxs] == g.pids
        assert g.contexts == ctxs
        assert _wait_done(g) == [0, 0, 0, 0]
    assert all(not _alive(p) for p in g.pids)


def test_python_workload_gets_its_context(tmp_path):
    cfgs = [ChipConfig(f"cpu:{i % NCPU}", None, python="_chip_workloads:fill",
                       out_dir=str(tmp_path), env=WL_ENV) for i in range(3)]
    with ChipGroup() as g:
        g.start(cfgs)
        g.wait(60)
        assert _wait_done(g) == [0, 0, 0]
        for r in range(3):
            assert (tmp_path / f"done-{r}").read_text() == "cpu"
            with np.load(tmp_path / f"out-{r}.npz") as z:
                np.testing.assert_array_equal(z["z"], np.arange(15.0).reshape(5, 3) * (r + 1))


def test_exec_workload_sees_chip_env_and_context(tmp_path):
    script = textwrap.dedent("""
        import os, json
        from tolerance.bootstrap.child import context
        keys = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "MY_VAR"]
        print(json.dumps({k: os.environ.get(k) for k in keys} | {"cwd": os.getcwd(),
              "rank": context().rank}))
    """)
    (tmp_path / "w.py").write_text(script)
    out = [tmp_path / f"out{i}.txt" for i in range(3)]
    cfgs = [
        ChipConfig("cuda:3", [sys.executable, "w.py"], out_dir=str(tmp_path), env={"MY_VAR": "x"},
                   threads=2, stdout=str(out[0]), stderr=str(out[0])),
        ChipConfig("rocm:1", [sys.executable, "w.py"], out_dir=str(tmp_path),
                   stdout=str(out[1])),
        ChipConfig("cpu:0", [sys.executable, "w.py"], out_dir=str(tmp_path),
                   stdout=str(out[2])),
    ]
    with ChipGroup() as g:
        g.start(cfgs)
        ctxs = g.wait(60)
        assert (ctxs[0].device, ctxs[0].device_id) == ("cuda", 3)
        assert (ctxs[1].device, ctxs[1].device_id) == ("rocm", 1)
        assert _wait_done(g) == [0, 0, 0], [o.read_text() for o in out]
        envs = [json.loads(o.read_text().strip().splitlines()[-1]) for o in out]
        assert envs[0]["CUDA_VISIBLE_DEVICES"] == "3" and envs[0]["OMP_NUM_THREADS"] == "2"
        assert envs[0]["MY_VAR"] == "x" and envs[0]["cwd"] == str(tmp_path)
        assert envs[1]["HIP_VISIBLE_DEVICES"] == "1" and envs[1]["OMP_NUM_THREADS"] is None
        assert envs[2]["OPENBLAS_NUM_THREADS"] == "1" and envs[2]["MKL_NUM_THREADS"] == "1"
        assert [e["rank"] for e in envs] == [0, 1, 2]


def test_poll_and_kill_report_workload_status(tmp_path):
    cfgs = [ChipConfig("cpu:0", ["sleep", "30"]),
            ChipConfig("cpu:0", None, python="_chip_workloads:exit_seven", env=WL_ENV),
            ChipConfig("cpu:0", None, python="_chip_workloads:boom", env=WL_ENV,
                       stderr=str(tmp_path / "err"))]
    with ChipGroup() as g:
        g.start(cfgs)
        g.wait(60)
        end = time.monotonic() + 20
        while g.poll()[1:] == [None, None] or None in g.poll()[1:]:
            assert time.monotonic() < end
            time.sleep(0.01)
        assert g.poll() == [None, 7, 1]
        assert "workload failed on purpose" in (tmp_path / "err").read_text()
        g.kill(0)
        assert g.poll() == [-signal.SIGKILL, 7, 1]


def test_close_kills_running_workloads_and_restores_signal_handlers():
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    g = ChipGroup()
    g.start([ChipConfig("cpu:0", ["sleep", "30"])])
    assert signal.getsignal(signal.SIGTERM) is not before[1]
    g.wait(60)
    t = time.monotonic()
    g.close()
    g.close()  # idempotent
    assert time.monotonic() - t < 5
    assert g.poll() == [-signal.SIGKILL]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_close_from_another_thread_ends_a_wait(monkeypatch):
    import threading

    inject_faults(monkeypatch, "hang")
    g = ChipGroup()
    g.start([ChipConfig("cpu:0", ["true"]) for _ in range(2)])
    errors = []

    def waiter():
        try:
            g.wait(30)
        except BootstrapError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.3)
    t = time.monotonic()
    g.close()
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t < 2
    assert errors == ["the chip group was closed while waiting for bring-up"]


# --------------------------------------------------------------------------- failures


def test_contexts_before_wait_raise():
    g = ChipGroup()
    with pytest.raises(RuntimeError, match="after wait"):
        g.contexts
    with g:
        g.start([ChipConfig("cpu:0", ["true"])])
        with pytest.raises(RuntimeError, match="after wait"):
            g.contexts
        g.wait(60)
        assert len(g.contexts) == 1
    with pytest.raises(RuntimeError, match="only once"):
        g.start([ChipConfig("cpu:0", ["true"])])


def test_core_outside_allowed_set_is_an_error_naming_the_chip():
    bad = f"cpu:0,{NCPU + 40}"
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["sleep", "30"]), ChipConfig(bad, ["true"])])
        with pytest.raises(BootstrapError) as ei:
            g.wait(60)
        pids = g.pids
    msg = str(ei.value)
    assert msg.startswith(f"chip 1 ({bad}) bootstrap failed: core {NCPU + 40} is not in the CPU set")
    assert all(not _alive(p) for p in pids)  # the healthy chip was killed and reaped


@pytest.mark.parametrize("chip,why", [
    ("tpu:0", "is not a chip"),
    ("cpu:3-1", "runs backwards"),
    ("cpu:", "empty core list"),
    ("cpu:0,0", "core 0 is listed twice"),
    ("cpu:5000", "exceeds the supported maximum"),
    ("cuda:x", "must be an integer"),
    ("cpu0", "is not a chip"),
])
def test_bad_chip_strings(chip, why):
    """A chip string is parsed once, by the config's grammar, before any child starts."""
    with pytest.raises(ValueError, match=why):
        ChipConfig(chip, ["true"])


def test_box_env_wins_over_the_chip_in_the_workload(tmp_path):
    """Regression: OMP_NUM_THREADS=1 in the box env with chip cpu:0-1 reached the workload
    as 2 (the chip's derived value used to win)."""
    if NCPU < 2:
        pytest.skip("needs two usable cores")
    out = tmp_path / "env.txt"
    code = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'])"
    cfg = ChipConfig("cpu:0-1", [sys.executable, "-c", code], out_dir=str(tmp_path),
                     env={"OMP_NUM_THREADS": "1"}, stdout=str(out))
    with ChipGroup() as g:
        g.start([cfg])
        (ctx,) = g.wait(60)
        assert _wait_done(g) == [0]
    assert out.read_text().split() == ["1", "2"]  # the box's own env wins; the rest derived
    assert ctx.threads == 1 and ctx.cpus == "0-1"


def test_a_core_list_reaches_the_bring_up_as_parsed(tmp_path):
    """Regression: `cpu:0,2` was parsed twice (config and the native bring-up), and the two
    parsers disagreed. Now the parent parses once and the bring-up takes the cores: the
    workload runs on exactly the listed cores (or, where core 2 is not usable here, the
    bring-up says so, naming core 2: the list arrived whole)."""
    out = tmp_path / "cores.txt"
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    cfg = ChipConfig("cpu:2,0", [sys.executable, "-c", code], out_dir=str(tmp_path),
                     stdout=str(out))
    assert cfg.chip == "cpu:0,2" and cfg.parsed.cores == (0, 2)
    usable = os.sched_getaffinity(0)
    with ChipGroup() as g:
        g.start([cfg])
        if {0, 2} <= usable:
            (ctx,) = g.wait(60)
            assert _wait_done(g) == [0]
            assert ctx.cpus == "0,2" and ctx.affinity_applied and ctx.threads == 2
            assert out.read_text().strip() == "[0, 2]"
        else:
            with pytest.raises(BootstrapError, match=r"^chip 0 \(cpu:0,2\) bootstrap failed: "
                               r"core 2 is not in the CPU set this process may use"):
                g.wait(60)


def test_injected_error(monkeypatch):
    inject_faults(monkeypatch, "2:error")
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["sleep", "30"]) for _ in range(3)])
        with pytest.raises(BootstrapError,
                           match=r"^chip 2 \(cpu:0\) bootstrap failed: injected test fault$"):
            g.wait(60)


def test_death_before_publishing_fails_fast(monkeypatch):
    inject_faults(monkeypatch, "1:die,0:hang,2:hang")
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"]) for _ in range(3)])
        t = time.monotonic()
        with pytest.raises(BootstrapError, match=r"^chip 1 exited with signal 9 before bootstrap$"):
            g.wait(120)
        assert time.monotonic() - t < 1.0
        pids = g.pids
    assert all(not _alive(p) for p in pids)


def test_exit_before_publishing_names_status(monkeypatch, tmp_path):
    inject_faults(monkeypatch, "0:exit")
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"], stderr=str(tmp_path / "e"))])
        t = time.monotonic()
        with pytest.raises(BootstrapError, match=r"^chip 0 exited with status 5 before bootstrap"):
            g.wait(120)
        assert time.monotonic() - t < 1.0


def test_interpreter_that_cannot_import_fails_fast(tmp_path):
    err = tmp_path / "err"
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"], python_exe="/bin/false", stderr=str(err))])
        with pytest.raises(BootstrapError, match=r"^chip 0 exited with status 1 before bootstrap"):
            g.wait(120)


def test_unstartable_child_is_a_bootstrap_error(tmp_path):
    g = ChipGroup()
    with pytest.raises(BootstrapError, match=r"^chip 1 \(cpu:0\) could not be started: "):
        g.start([ChipConfig("cpu:0", ["sleep", "30"]),
                 ChipConfig("cpu:0", ["true"], out_dir=str(tmp_path / "missing"))])
    assert all(not _alive(p) for p in g.pids)


def test_hang_times_out_naming_the_chip(monkeypatch):
    inject_faults(monkeypatch, "1:hang,2:hang")
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["sleep", "30"]) for _ in range(3)])
        t = time.monotonic()
        with pytest.raises(BootstrapError,
                           match=r"^chip 1 did not report within 1.5 s \(nor did chip 2\)$"):
            g.wait(1.5)
        assert 1.4 < time.monotonic() - t < 4
        pids = g.pids
    assert all(not _alive(p) for p in pids)


def test_corrupted_state_word_is_a_clean_error(monkeypatch):
    inject_faults(monkeypatch, "0:garbage")
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"]), ChipConfig("cpu:0", ["sleep", "30"])])
        with pytest.raises(BootstrapError, match=r"^chip 0 \(cpu:0\) bootstrap failed: mailbox "
                                                 r"corrupted: invalid state 0xdeadbeef$"):
            g.wait(60)


def test_corrupted_payload_is_a_clean_error(monkeypatch):
    inject_faults(monkeypatch, "1:badmagic")
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"]), ChipConfig("cpu:0", ["true"])])
        with pytest.raises(BootstrapError, match=r"^chip 1 \(cpu:0\) bootstrap failed: mailbox "
                                                 r"corrupted: bad magic 0x"):
            g.wait(60)


def test_context_from_a_published_payload():
    pub = {"device": "cuda", "device_id": 2, "rank": 1, "nranks": 3, "cpus": "",
           "affinity_applied": False, "threads": 0}
    ctx = ChipContext.from_published(pub, pid=7)
    assert (ctx.device, ctx.device_id, ctx.rank, ctx.nranks, ctx.threads, ctx.pid) == \
        ("cuda", 2, 1, 3, None, 7)
    assert ChipContext(**{k: v for k, v in ctx.to_dict().items()}) == ctx


def test_config_validation():
    with pytest.raises(ValueError, match="exactly one of argv and python"):
        ChipConfig("cpu:0", None)
    with pytest.raises(ValueError, match="exactly one of argv and python"):
        ChipConfig("cpu:0", ["x"], python="m:f")
    with pytest.raises(ValueError, match="module:function"):
        ChipConfig("cpu:0", None, python="nofunction")
    with pytest.raises(TypeError):
        ChipConfig("cpu:0", ["x"], buffers={"x": (3, "f4")})  # no output windows: files only
    c = ChipConfig("cpu:0", ["x"], env={"A": 1})
    assert c.env == {"A": "1"} and c.argv == ("x",)


# --------------------------------------------------------------------------- parent processes

PARENT = textwrap.dedent("""
    import os, sys, time
    from tolerance.bootstrap import ChipConfig, ChipGroup
    g = ChipGroup()
    g.start([ChipConfig("cpu:0", ["sleep", "60"]) for _ in range(3)])
    print(" ".join(map(str, g.pids)), " ".join(g.segment_names), flush=True)
    g.wait(float(sys.argv[1]))
    print("READY", flush=True)
    time.sleep(60)
""")


def _parent(tmp_path, env_extra, wait_s):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = dict(os.environ, **env_extra)
    return subprocess.Popen([sys.executable, str(script), str(wait_s)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_parent_killed_mid_bootstrap_leaves_nothing(tmp_path, sig):
    p = _parent(tmp_path, faults_env("hang"), 120)
    try:
        first = p.stdout.readline().split()
        pids, names = [int(x) for x in first[:3]], first[3:]
        assert len(names) == 3 and all(n.startswith(f"/tol-{p.pid:x}-") for n in names)
        time.sleep(0.3)  # the parent is inside wait(120) now
        p.send_signal(sig)
        rc = p.wait(20)
    finally:
        p.kill()
        p.wait()
    # SIGINT: KeyboardInterrupt after cleanup; an uncaught one exits by SIGINT (Python >= 3.8)
    assert rc == -sig, p.stderr.read()
    assert not any(n.startswith(f"tol-{p.pid:x}-") for n in tol_segments())
    assert all(not _alive(x) for x in pids)


def test_parent_killed_after_bootstrap_leaves_nothing(tmp_path):
    p = _parent(tmp_path, {}, 60)
    try:
        pids = [int(x) for x in p.stdout.readline().split()[:3]]
        assert p.stdout.readline().strip() == "READY"
        p.terminate()
        rc = p.wait(20)
    finally:
        p.kill()
        p.wait()
    assert rc == -signal.SIGTERM
    assert not any(n.startswith(f"tol-{p.pid:x}-") for n in tol_segments())
    assert all(not _alive(x) for x in pids)


FALLBACK = textwrap.dedent("""
    import sys, time
    from tolerance import _native
    from tolerance.bootstrap import BootstrapError, ChipConfig, ChipGroup
    print(_native.wait_mechanism())
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"]) for _ in range(3)])
        print(len(g.wait(60)))
    import os
    os.environ["TOLERANCE_CHIP_TEST_FAULT"] = "1:die,0:hang,2:hang"  # with tests/_faults on the path
    with ChipGroup() as g:
        g.start([ChipConfig("cpu:0", ["true"]) for _ in range(3)])
        t = time.monotonic()
        try:
            g.wait(120)
        except BootstrapError as e:
            print(e)
        print(time.monotonic() - t < 1.0)
""")


@pytest.mark.parametrize("env", [{"TOLERANCE_NO_FUTEX_WAITV": "1"}, {"TOLERANCE_NO_PIDFD": "1"},
                                 {"TOLERANCE_NO_FUTEX_WAITV": "1", "TOLERANCE_NO_PIDFD": "1"}])
def test_fallback_wait_mechanisms(tmp_path, env):
    out = subprocess.run([sys.executable, "-c", FALLBACK], env=dict(faults_env(""), **env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == ("futex" if "TOLERANCE_NO_FUTEX_WAITV" in env else "futex_waitv") + (
        "+waitid-poll" if "TOLERANCE_NO_PIDFD" in env else "+pidfd")
    assert lines[1:4] == ["3", "chip 1 exited with signal 9 before bootstrap", "True"]


# --------------------------------------------------------------------------- doctor


def test_doctor_cleans_only_stale_segments():
    from click.testing import CliRunner

    from tolerance.cli import main

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"tol-{dead.pid:x}-0m-abcdef"
    live = f"tol-{os.getpid():x}-fffm-abcdef"
    for n in (stale, live):
        Path("/dev/shm", n).write_bytes(b"x")
    try:
        res = CliRunner().invoke(main, ["doctor"])
        assert res.exit_code == 0 and f"stale /{stale}" in res.output and live not in res.output
        res = CliRunner().invoke(main, ["doctor", "--clean-shm"])
        assert res.exit_code == 0, res.output
        assert f"removed /{stale} (owner pid {dead.pid} is gone)" in res.output
        assert not Path("/dev/shm", stale).exists() and Path("/dev/shm", live).exists()
        res = CliRunner().invoke(main, ["doctor", "--clean-shm", "--json"])
        removed = [r["name"] for r in json.loads(res.output)["removed"]]
        assert f"/{stale}" not in removed and f"/{live}" not in removed  # other jobs' may be
    finally:
        for n in (stale, live):
            Path("/dev/shm", n).unlink(missing_ok=True)


# --------------------------------------------------------------------------- the shim


def test_shim_outside_a_chip(tmp_path, monkeypatch):
    import tolerance.bootstrap.child as chip

    monkeypatch.delenv(chip.CONTEXT_ENV, raising=False)
    monkeypatch.setattr(chip, "_context", None)
    with pytest.raises(RuntimeError, match="not running inside a tolerance chip"):
        chip.context()
    out = subprocess.run([sys.executable, "-m", "tolerance.bootstrap.child"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "usage: python -m tolerance.bootstrap.child" in out.stderr


def test_shim_reports_an_unreadable_config_through_the_mailbox(tmp_path):
    mb = _native.Mailbox.create(_native.make_segment_name("m"))
    try:
        out = subprocess.run([sys.executable, "-m", "tolerance.bootstrap.child", mb.name,
                              "@" + str(tmp_path / "missing.json")],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 3
        rep = mb.read()
        assert rep["state"] == "ERROR" and rep["error"].startswith("chip config unreadable: ")
    finally:
        mb.close()
        mb.unlink()
