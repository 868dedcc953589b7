"""The ONE place the runner starts chips: `start_chips(configs)`, through
`tolerance.bootstrap.ChipGroup` (every chip brought up through its shared-memory mailbox,
started with exec, never a bare `os.fork`).
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

from tolerance.bootstrap import BootstrapError, ChipConfig, ChipGroup
from tolerance.io.atomic import write_text

__all__ = ["BootstrapError", "ChipConfig", "ChipGroup", "start_chips", "write_context"]


def start_chips(configs: Sequence[ChipConfig]) -> ChipGroup:
    """Start every chip at once; returns the started group (a context manager)."""
    group = ChipGroup()
    try:
        group.start(list(configs))
    except BaseException:
        group.close()
        raise
    return group


def write_context(path: str, context: Mapping) -> None:
    """The chip's context file (`{chip}` in a command): JSON, written to a temporary name
    then renamed (io.atomic: a refused write names the file, and leaves no temporary)."""
    write_text(path, json.dumps(dict(context), indent=2, sort_keys=True) + "\n",
               overwrite=True)
