"""MPI, initialized only by the commands that need it, and never left hanging.

`world()` imports mpi4py on first use (so `tolerance diff` never starts MPI).
`abort_on_error` is the `python -m mpi4py` rule: an exception on any rank prints one line
naming the rank and its box, then aborts the whole job, so no peer waits forever.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from tolerance._errors import EXIT_ERROR, ToleranceError


def world():
    """COMM_WORLD, importing (and so initializing) MPI on first use."""
    from mpi4py import MPI  # noqa: PLC0415 - lazy on purpose

    return MPI.COMM_WORLD


class RankContext:
    """Who this rank is, for error lines (the box is known after the handshake)."""

    def __init__(self, comm) -> None:
        self.comm = comm
        self.box: str | None = None
        self.line = None  # the rank's watch line to its launcher, when it has one

    def who(self) -> str:
        r = self.comm.Get_rank()
        return f"rank {r} (box {self.box})" if self.box else f"rank {r}"


@contextlib.contextmanager
def abort_on_error(ctx: RankContext, *, debug: bool = False) -> Iterator[RankContext]:
    """Any exception on this rank: one line, then Abort the job (exit code 2)."""
    try:
        yield ctx
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure must end the whole job
        if debug:
            import traceback
            traceback.print_exc()
        msg = str(exc) if isinstance(exc, ToleranceError) else f"{type(exc).__name__}: {exc}"
        said = f"tolerance: error: {ctx.who()}: {msg}"
        sys.stderr.write(said + "\n")
        sys.stderr.flush()
        if ctx.line is not None:
            # the runtime may kill this rank before it forwards our stderr: the launcher
            # gets the line over the watch line too, and prints it if mpiexec did not
            ctx.line.note(error=said)
        from tolerance.bootstrap._registry import teardown_all  # noqa: PLC0415

        teardown_all()  # Abort and os._exit skip atexit: no chip may outlive this rank
        ctx.comm.Abort(EXIT_ERROR)
        os._exit(EXIT_ERROR)  # Abort may return before the runtime kills us: say nothing more
