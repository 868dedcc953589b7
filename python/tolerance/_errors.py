"""Exit codes, the error types every layer raises (docs/numbers.md "Exit codes"), and
`say`, the one line a failing process prints.

This module sits below every layer: it imports nothing from the package.
"""
from __future__ import annotations

import sys

#: every compared row is inside its bound
EXIT_OK = 0
#: a bound is exceeded (or a NaN/inf mismatch)
EXIT_EXCEEDED = 1
#: error: usage, config, unreadable or malformed input, a box that failed to run
EXIT_ERROR = 2
#: some row could not be compared and no row exceeded its bound
EXIT_UNMEASURED = 3

# Precedence: 2, then 1, then 3, then 0.
_PRECEDENCE = (EXIT_ERROR, EXIT_EXCEEDED, EXIT_UNMEASURED, EXIT_OK)


def combine_exit_codes(*codes: int) -> int:
    """The exit code of a whole job from the codes of its parts, by the precedence of docs/numbers.md "Exit codes"."""
    present = set(codes)
    for code in _PRECEDENCE:
        if code in present:
            return code
    return EXIT_OK


class ToleranceError(Exception):
    """An error the user can act on: printed as one line, exit code 2, no traceback.

    The message must name the file and the key or field at fault.
    """

    exit_code = EXIT_ERROR


class ConfigError(ToleranceError):
    """cluster.yaml or a run spec is invalid."""


class FormatError(ToleranceError):
    """An input file is unreadable or structurally malformed."""


def say(line: str) -> None:
    """Write one line to stderr, now, and never raise.

    For the paths that end a process: a rank whose runtime is gone has a stderr pipe that
    nobody reads (EPIPE), and a write that raised there would skip the teardown and the
    exit that follow it, leaving the process running.
    """
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):   # a closed or broken stderr: the line is lost, not the exit
        pass
