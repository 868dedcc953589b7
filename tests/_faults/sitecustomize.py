"""Test-only fault injection for processes started by the tests (never shipped).

A test puts this directory on PYTHONPATH (`inject_faults` in tests/_bootstrap_helpers.py)
and sets one of:

- TOLERANCE_TEST_KILL_BOX=NAME: the rank whose box is NAME SIGKILLs itself when it enters
  the compare (every rank is past its run by then): a rank dies mid-job.
- TOLERANCE_TEST_RAISE_BOX=NAME: that rank raises RuntimeError as it enters the compare (its
  abort guard calls MPI_Abort: the job's other ranks and every chip must end).
  NAME@run: instead of running its box, that rank waits until a chip of another box has
  written `started` in its directory (`<run dir>/*/*/started`, at most 60 s), then raises:
  a rank aborts the job while the other boxes' workloads run.
- TOLERANCE_TEST_MUTE_RAISE=1: with TOLERANCE_TEST_RAISE_BOX, that rank's stderr goes to
  /dev/null just before it raises: its error line never reaches mpiexec (as when the
  runtime kills a rank before forwarding its output).
- TOLERANCE_TEST_FILL_DISK=PATH: the first rank to leave the compare fills the file system
  that holds PATH, writing PATH until the disk says ENOSPC (a tiny tmpfs in the test's
  private mount namespace): the report is written onto a really full disk.
- TOLERANCE_CHIP_TEST_FAULT=[rank:]fault,...: a chip child (`python -m
  tolerance.bootstrap.child MAILBOX CONFIG`) of that rank (no rank: every chip) does, before
  its bring-up, one of: `die` (SIGKILL itself before publishing), `hang` (never publish),
  `error` (publish ERROR), `exit` (exit 5 before publishing), `garbage` (scribble random
  bytes and an invalid state over the mailbox past its header, then exit), `badmagic`
  (publish SUCCESS over a broken magic, then exit 0).

Nothing in the package knows of this.
"""
import importlib.abc
import importlib.util
import os
import sys

_BOX = os.environ.get("TOLERANCE_TEST_KILL_BOX")
_RAISE = os.environ.get("TOLERANCE_TEST_RAISE_BOX")
_FILL = os.environ.get("TOLERANCE_TEST_FILL_DISK")
_MUTE = os.environ.get("TOLERANCE_TEST_MUTE_RAISE") == "1"


def _mute() -> None:
    if _MUTE:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
        os.close(fd)
_TARGET = "tolerance.collective.exchange"


def _fill(path: str) -> None:
    """Write `path` until its file system is full (only the first caller: O_EXCL)."""
    import errno

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[:len(block) // 2]
    finally:
        os.close(fd)


def _patch(module):
    real = module.exchange

    def exchange(comm, sources, failures, *args, **kwargs):
        labels = [s.label.split("/")[0] for s in sources] + [f[0].split("/")[0] for f in failures]
        if _BOX and _BOX in labels:
            os.kill(os.getpid(), 9)
        if _RAISE and _RAISE in labels:
            _mute()
            raise RuntimeError(f"injected test fault on box {_RAISE}")
        out = real(comm, sources, failures, *args, **kwargs)
        if _FILL:
            _fill(_FILL)
        return out

    module.exchange = exchange


def _patch_job(module):
    real = module.run_on_box
    box = _RAISE[:-len("@run")]

    def run_on_box(spec, b, run_dir, *args, **kwargs):
        if b.name != box:
            return real(spec, b, run_dir, *args, **kwargs)
        import glob
        import time

        end = time.monotonic() + 60
        while not glob.glob(os.path.join(str(run_dir), "*", "*", "started")):
            if time.monotonic() > end:
                break
            time.sleep(0.05)
        _mute()
        raise RuntimeError(f"injected test fault on box {box} while the others run")

    module.run_on_box = run_on_box


_PATCHES = {_TARGET: _patch}
if _RAISE and _RAISE.endswith("@run"):
    _PATCHES = {"tolerance.collective.job": _patch_job}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _PATCHES:
            return None
        patch = _PATCHES.pop(name)
        if not _PATCHES:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            patch(module)

        loader.exec_module = patched
        return spec


if _BOX or _RAISE or _FILL:
    sys.meta_path.insert(0, _Finder())


# --------------------------------------------------------------------------- chip faults

FAULT_ENV = "TOLERANCE_CHIP_TEST_FAULT"


def _fault_for(rank: int) -> str:
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        who, sep, what = item.rpartition(":")
        if not sep or who == str(rank):
            return what
    return ""


def _inject(fault: str, mailbox: str, cfg: dict) -> int | None:
    """Test-only faults. Returns an exit status, or None to go on."""
    import signal
    import time

    from tolerance import _native

    if fault == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        while True:
            time.sleep(3600)
    if fault == "exit":
        return 5
    if fault == "error":
        _native.chip_fail(mailbox, f"chip {cfg['chip']}: injected test fault")
        return 3
    if fault in ("garbage", "badmagic"):
        import mmap
        import struct

        off = _native.MAILBOX_OFFSETS
        with open("/dev/shm" + mailbox, "r+b") as fh:
            mm = mmap.mmap(fh.fileno(), _native.MAILBOX_SIZE)
            if fault == "garbage":
                mm[12:] = os.urandom(_native.MAILBOX_SIZE - 12)  # magic, version kept
                mm[off["state"]:off["state"] + 4] = struct.pack("<I", 0xDEADBEEF)
                return 4  # exits: the parent notices the death and the invalid state
            mm[0:8] = b"NOTMAGIC"
            mm[off["child_pid"]:off["child_pid"] + 4] = struct.pack("<i", os.getpid())
            mm[off["state"]:off["state"] + 4] = struct.pack("<I", 2)  # SUCCESS
            return 0  # no FUTEX_WAKE from Python: exiting wakes the parent (death watch)
    return None


def _chip_fault() -> None:
    """In a chip child (argv: -m MAILBOX CONFIG), run the fault its rank was given."""
    import json

    if len(sys.argv) != 3 or sys.argv[0] != "-m" or not sys.argv[1].startswith("/tol-"):
        return
    try:
        cfg = json.loads(sys.argv[2])
        rank = int(cfg["rank"])
    except (ValueError, KeyError, TypeError):
        return
    fault = _fault_for(rank)
    if fault:
        status = _inject(fault, sys.argv[1], cfg)
        if status is not None:
            sys.stdout.flush()
            os._exit(status)


if os.environ.get(FAULT_ENV):
    _chip_fault()
