"""The chip child: ``python -m tolerance.bootstrap.child MAILBOX CONFIG``.

Started by :class:`tolerance.bootstrap.ChipGroup` (never by hand). CONFIG is the chip's JSON
config, inline or ``@path``. The shim opens its mailbox, brings the chip up in native code
(affinity; its environment knobs were resolved by the parent), publishes SUCCESS or ERROR,
then runs the workload in the chip's output directory: ``exec`` of its argv, or an
import-and-call of ``module:function`` as ``fn(ctx, out_dir)`` (an int return value is the
exit status).

A workload writes its arrays as ``.npz`` files into its output directory; that is the one
data path from a chip to the comparison. A ``python:`` workload gets its ChipContext as its
first argument; an exec'd one finds it in the environment variable
``TOLERANCE_CHIP_CONTEXT`` (JSON), read by :func:`context`.

"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

#: environment variable carrying the chip's context to its workload (JSON)
CONTEXT_ENV = "TOLERANCE_CHIP_CONTEXT"

_context: Any = None


def context():
    """This chip's ChipContext (in a ``python:`` workload, or an exec'd one via the env)."""
    global _context
    if _context is None:
        raw = os.environ.get(CONTEXT_ENV)
        if not raw:
            raise RuntimeError("not running inside a tolerance chip")
        from tolerance.bootstrap.types import ChipContext

        _context = ChipContext.from_published(json.loads(raw)["published"], pid=os.getpid())
    return _context


def die_with_parent(parent_pid: int) -> None:
    """Tie this process (and what it execs) to its parent: on Linux the kernel SIGKILLs it
    when the parent dies (PR_SET_PDEATHSIG survives exec); a parent already gone before
    that (or no such call on this system, checked once) ends it here."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid > 0 and os.getppid() != parent_pid:
        os._exit(137)  # the parent died before the tie was made: nobody waits for us


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
        device, index = str(cfg["device"]), cfg["index"]
        index = -1 if index is None else int(index)
        cores = None if cfg["cores"] is None else [int(c) for c in cfg["cores"]]
        rank, nranks = int(cfg["rank"]), int(cfg["nranks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"chip config unreadable: {type(exc).__name__}: {exc}"
        print(f"tolerance.bootstrap.child: {msg}", file=sys.stderr)
        _native.chip_fail(mailbox, msg)
        return 3

    die_with_parent(int(cfg.get("parent") or 0))

    ok, info = _native.chip_bring_up(mailbox, chip, device, index, cores, rank, nranks,
                                     int(cfg.get("threads") or 0))
    if not ok:
        print(f"tolerance.bootstrap.child: {info}", file=sys.stderr)
        return 3

    data = {"published": info}
    # the environment knobs were resolved by the parent (config.chips.knob_env) and are
    # this process's own environment already
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
