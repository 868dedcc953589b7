"""Chip shim of the plain-subprocess chip start: `python -m tolerance.runner._pyentry
MODULE:FUNCTION OUT_DIR CONTEXT_FILE` imports the spec's `python:` entry and calls it as
`fn(ctx, out_dir)` in the chip's directory. (tolerance.bootstrap's shim replaces it.)"""
from __future__ import annotations

import importlib
import json
import sys
from types import SimpleNamespace


def main(argv: list[str]) -> int:
    entry, out_dir, context_file = argv
    module_name, _, func_name = entry.partition(":")
    try:
        with open(context_file, encoding="utf-8") as fh:
            context = json.load(fh)
    except (OSError, ValueError):
        context = {}
    ctx = SimpleNamespace(**{**context, "out_dir": out_dir, "context_file": context_file})
    obj = importlib.import_module(module_name)
    for part in func_name.split("."):
        obj = getattr(obj, part)
    obj(ctx, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
