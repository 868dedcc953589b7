"""Runs a spec's `python: module:function` entry in its own exec'd interpreter:
`python -m tolerance.runner._pyentry MODULE:FUNCTION OUT_DIR CONTEXT_FILE`.

The runner starts `python:` entries through this module rather than calling them inside
the chip shim, so the resolved env (box + spec + chip) is the process environment from
its first instruction: variables such as OPENBLAS_CORETYPE or OMP_NUM_THREADS act only if
they are set before NumPy (hence its BLAS) is imported, and importing `tolerance` at all
imports NumPy.

`fn(ctx, out_dir)` is called in the chip's directory. `ctx` is the bootstrap's ChipContext
when the chip was brought up by tolerance.bootstrap (TOLERANCE_CHIP_CONTEXT is set), else
a namespace of the runner's context file. An int return value is the exit status.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from types import SimpleNamespace


def _context(out_dir: str, context_file: str):
    if os.environ.get("TOLERANCE_CHIP_CONTEXT"):
        try:
            from tolerance.bootstrap.child import context  # type: ignore[attr-defined]

            return context()
        except (ImportError, RuntimeError, KeyError, ValueError):
            pass
    try:
        with open(context_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        data = {}
    return SimpleNamespace(**{**data, "out_dir": out_dir, "context_file": context_file})


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m tolerance.runner._pyentry MODULE:FUNCTION OUT_DIR CONTEXT_FILE",
              file=sys.stderr)
        return 2
    entry, out_dir, context_file = argv
    module_name, _, func_name = entry.partition(":")
    obj = importlib.import_module(module_name)
    for part in func_name.split("."):
        obj = getattr(obj, part)
    rc = obj(_context(out_dir, context_file), out_dir)
    sys.stdout.flush()
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
