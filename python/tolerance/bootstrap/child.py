"""The chip child: ``python -m tolerance.bootstrap.child MAILBOX CONFIG``.

Started by :class:`tolerance.bootstrap.ChipGroup` (never by hand). CONFIG is the chip's JSON
config, inline or ``@path``. The shim opens its mailbox, brings the chip up in native code
(affinity, device visibility, thread variables, output window), publishes SUCCESS or ERROR,
then runs the workload in the chip's output directory: ``exec`` of its argv, or an
import-and-call of ``module:function`` as ``fn(ctx, out_dir)`` (an int return value is the
exit status).

A workload writes its arrays into the chip's output window with :func:`buffer`; the box
process reads them back without touching disk. An exec'd workload finds its context in the
environment variable ``TOLERANCE_CHIP_CONTEXT`` (JSON), so :func:`buffer` works there too.

Test-only fault injection: ``TOLERANCE_CHIP_TEST_FAULT`` = comma-separated ``[rank:]fault``
items (no rank: every chip) with fault one of ``die`` (SIGKILL itself before publishing),
``hang`` (never publish), ``error`` (publish ERROR), ``exit`` (exit 5 before publishing),
``garbage`` (scribble random bytes and an invalid state over the mailbox past its
header, then exit),
``badmagic`` (publish SUCCESS over a broken magic, then exit 0). Never set it outside tests.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

#: environment variable carrying the chip's context to its workload (JSON)
CONTEXT_ENV = "TOLERANCE_CHIP_CONTEXT"
#: test-only fault injection (see the module docstring)
FAULT_ENV = "TOLERANCE_CHIP_TEST_FAULT"

_window: Any = None                 # this chip's mapping of its output window
_buffers: dict[str, tuple[list[int], str, int, int]] = {}  # name -> shape, dtype, offset, nbytes
_context: Any = None


def context():
    """This chip's ChipContext (in a ``python:`` workload, or an exec'd one via the env)."""
    global _context
    if _context is None:
        data = _published("not running inside a tolerance chip")
        from tolerance.bootstrap import ChipContext

        _context = ChipContext.from_published(data["published"], list(_buffers),
                                              pid=os.getpid())
    return _context


def _published(missing: str) -> dict:
    """The chip's published context from its environment (buffers loaded), else RuntimeError."""
    raw = os.environ.get(CONTEXT_ENV)
    if not raw:
        raise RuntimeError(missing)
    data = json.loads(raw)
    _load_buffers(data)
    return data


def _load_buffers(data: dict) -> None:
    if not _buffers:
        offsets = {n: (off, nb) for n, off, nb in data["published"]["buffers"]}
        for name, shape, dtype, _nbytes in data["buffers"]:
            off, nb = offsets[name]
            _buffers[name] = (list(shape), dtype, int(off), int(nb))


def buffer(name: str, shape: Any = None, dtype: Any = None):
    """A writable NumPy view onto this chip's output buffer `name` (declared shape and dtype
    unless given; a view may not be larger than the declared buffer)."""
    global _window
    import numpy as np

    if _window is None:
        pub = _published("not running inside a tolerance chip with an output window")["published"]
        if not pub["window_name"]:
            raise KeyError(f"this chip declared no output buffers (asked for {name!r})")
        from tolerance import _native

        _window = _native.Window.open(pub["window_name"], int(pub["window_size"]), True)
    if name not in _buffers:
        raise KeyError(f"no output buffer {name!r} (declared: {', '.join(_buffers) or 'none'})")
    dshape, ddtype, off, nbytes = _buffers[name]
    shape = tuple(dshape) if shape is None else ((shape,) if isinstance(shape, int) else tuple(shape))
    dt = np.dtype(ddtype if dtype is None else dtype)
    need = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if need > nbytes:
        raise ValueError(f"buffer {name!r} holds {nbytes} bytes; shape {shape} of {dt} needs {need}")
    return np.ndarray(shape, dt, buffer=memoryview(_window), offset=off)


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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tolerance.bootstrap.child MAILBOX CONFIG-JSON|@PATH "
              "(started by tolerance.bootstrap.ChipGroup)", file=sys.stderr)
        return 2
    mailbox, raw = args
    from tolerance import _native

    try:
        if raw.startswith("@"):
            with open(raw[1:], encoding="utf-8") as fh:
                raw = fh.read()
        cfg = json.loads(raw)
        chip = str(cfg["chip"])
        rank, nranks = int(cfg["rank"]), int(cfg["nranks"])
        buffers = [(str(n), int(nb)) for n, _shape, _dt, nb in cfg["buffers"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"chip config unreadable: {type(exc).__name__}: {exc}"
        print(f"tolerance.bootstrap.child: {msg}", file=sys.stderr)
        _native.chip_fail(mailbox, msg)
        return 3

    fault = _fault_for(rank)
    if fault:
        status = _inject(fault, mailbox, cfg)
        if status is not None:
            return status

    ok, info, env, window = _native.chip_bring_up(mailbox, chip, rank, nranks,
                                                  int(cfg.get("threads") or 0),
                                                  str(cfg.get("window") or ""), buffers)
    if not ok:
        print(f"tolerance.bootstrap.child: {info}", file=sys.stderr)
        return 3

    global _window
    _window = window
    data = {"published": info, "buffers": cfg["buffers"]}
    _load_buffers(data)
    os.environ.update({str(k): str(v) for k, v in (cfg.get("env") or {}).items()})
    os.environ.update(dict(env))  # chip variables win over the workload env
    os.environ[CONTEXT_ENV] = json.dumps(data, separators=(",", ":"))
    out_dir = cfg.get("out_dir") or os.getcwd()

    if cfg.get("argv"):
        argv_w = [str(a) for a in cfg["argv"]]
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvpe(argv_w[0], argv_w, os.environ)
        except OSError as exc:
            print(f"tolerance.bootstrap.child: chip {chip}: cannot exec {argv_w[0]!r}: {exc}", file=sys.stderr)
            return 127

    import importlib

    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)
    mod_name, _, fn_name = str(cfg["python"]).partition(":")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    rc = fn(context(), out_dir)
    sys.stdout.flush()
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
