"""Runs a spec's `python: module:function` entry in its own exec'd interpreter:
`python -m tolerance.runner._pyentry MODULE:FUNCTION OUT_DIR CONTEXT_FILE`.

The runner starts `python:` entries through this module rather than calling them inside
the chip shim, so the resolved env (box + spec + chip) is the process environment from
its first instruction: variables such as OPENBLAS_CORETYPE or OMP_NUM_THREADS act only if
they are set before NumPy (hence its BLAS) is imported, and importing `tolerance` at all
imports NumPy.

The module is imported with the box's root (TOLERANCE_ROOT) first on `sys.path`, so
`python: mywork.ode:main` finds `<root>/mywork/ode.py`. `fn(ctx, out_dir)` is called with
the chip's output directory as the working directory; `ctx` is a namespace (see
`workload_context`). An int return value is the exit status; anything else means 0.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from types import SimpleNamespace

#: the fields every `ctx` has (from the runner's context file, `chip.json`)
CONTEXT_FIELDS = ("box", "host", "chip", "stem", "spec_hash", "out_dir", "run_dir", "root",
                  "env", "context_file")
#: the fields the chip bring-up adds when it published a context (else None)
CHIP_FIELDS = ("device", "device_id", "cpus", "threads")


def workload_context(out_dir: str, context_file: str) -> SimpleNamespace:
    """The `ctx` a `python:` entry gets: every CONTEXT_FIELDS entry (box, host, chip (e.g.
    "cpu:*"), stem, spec_hash, out_dir, run_dir, root, env (the variables the runner added),
    context_file), and CHIP_FIELDS (device "cpu"|"cuda"|"rocm", device_id, cpus, threads)
    from the chip bring-up, None where it published none."""
    try:
        with open(context_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        data = {}
    fields = {k: data.get(k) for k in CONTEXT_FIELDS}
    fields.update(out_dir=out_dir, context_file=context_file,
                  root=fields["root"] or os.environ.get("TOLERANCE_ROOT"))
    fields.update({k: None for k in CHIP_FIELDS})
    if os.environ.get("TOLERANCE_CHIP_CONTEXT"):
        try:
            from tolerance.bootstrap.child import context

            chip = context()
            fields.update({k: getattr(chip, k, None) for k in CHIP_FIELDS})
        except (ImportError, RuntimeError, KeyError, ValueError):
            pass
    return SimpleNamespace(**fields)


def _import_entry(entry: str):
    root = os.environ.get("TOLERANCE_ROOT")
    if root:
        while root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    module_name, _, func_name = entry.partition(":")
    obj = importlib.import_module(module_name)
    for part in func_name.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m tolerance.runner._pyentry MODULE:FUNCTION OUT_DIR CONTEXT_FILE",
              file=sys.stderr)
        return 2
    entry, out_dir, context_file = argv
    try:
        fn = _import_entry(entry)
    except (ImportError, AttributeError) as exc:
        print(f"tolerance: python: {entry}: cannot import: {exc} (sys.path starts with "
              f"{sys.path[0]!r}, the box root)", file=sys.stderr)
        return 2
    rc = fn(workload_context(out_dir, context_file), out_dir)
    sys.stdout.flush()
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
