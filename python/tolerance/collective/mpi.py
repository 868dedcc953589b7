"""MPI, initialized only by the commands that need it, and never left hanging.

`world()` imports mpi4py on first use (so `tolerance diff` never starts MPI).
`abort_on_error` is the `python -m mpi4py` rule: an exception on any rank prints one line
naming the rank and its box, then aborts the whole job, so no peer waits forever.
`wait_yielding` and `arrive` wait for peers without taking the core a peer needs.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, Sequence

from tolerance._errors import EXIT_ERROR, ToleranceError, say


def world():
    """COMM_WORLD, importing (and so initializing) MPI on first use."""
    from mpi4py import MPI  # noqa: PLC0415 - lazy on purpose

    return MPI.COMM_WORLD


#: polls of a request before the first nap, then naps from _FIRST_NAP doubling to _MAX_NAP s
_SPINS = 64
_FIRST_NAP = 20e-6
_MAX_NAP = 500e-6


def wait_yielding(requests: Sequence) -> None:
    """Wait for every request, giving the core up while they are not done.

    MPI's own waits spin: on a box that runs more ranks than it has cores, a rank spinning
    for a peer takes the core that peer needs to get there. This polls a little, then naps
    (20 us doubling to 0.5 ms) between polls. A peer that dies ends the job as before: the
    runtime kills this rank, or the launcher does (docs/faults.md).
    """
    if not requests:
        return
    testall = type(requests[0]).Testall
    for _ in range(_SPINS):
        if testall(requests):
            return
    nap = _FIRST_NAP
    while not testall(requests):
        time.sleep(nap)
        nap = min(2 * nap, _MAX_NAP)


def arrive(comm) -> None:
    """Wait (yielding the core) until every rank of `comm` has come here: the blocking
    collective that follows finds its peers already there instead of spinning for them."""
    wait_yielding([comm.Ibarrier()])


def spare_cores(ranks_here: int) -> bool:
    """Whether a rank may use more than one core: its box runs fewer ranks (`ranks_here`,
    this one included) than the cores this process may run on. A reader thread only pays
    off with a core to spare; otherwise it takes turns with the ranks on the same cores and
    costs its hand-offs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS: no affinity call
        cores = os.cpu_count() or 1
    return cores > ranks_here


class RankContext:
    """Who this rank is, for error lines (the box is known after the handshake)."""

    def __init__(self, comm) -> None:
        self.comm = comm
        self.box: str | None = None
        self.line = None  # the rank's watch line to its launcher, when it has one

    def who(self) -> str:
        r = self.comm.Get_rank()
        return f"rank {r} (box {self.box})" if self.box else f"rank {r}"


#: how long a failing rank under a plain mpiexec waits, after its error line, before it
#: aborts the job (the runtime forwards stderr in milliseconds on an idle box)
ABORT_FORWARD_S = 0.25


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
        say(said)   # a broken stderr must not skip the teardown and the Abort below
        if ctx.line is not None:
            # the runtime may kill this rank before it forwards our stderr: the launcher
            # gets the line over the watch line too, and prints it if mpiexec did not
            ctx.line.note(error=said)
        from tolerance.bootstrap._registry import teardown_all  # noqa: PLC0415

        teardown_all()  # Abort and os._exit skip atexit: no chip may outlive this rank
        if ctx.line is None:
            # under a plain mpiexec the line reaches the user only through the runtime's
            # stderr forwarding, and Abort kills this rank at once: on a busy box (CI, 2
            # cores) the proxy had not read the pipe yet and the line was lost. A bounded
            # pause gives it the time; it is not a guarantee (`tolerance launch` has one,
            # the watch line above)
            time.sleep(ABORT_FORWARD_S)
        ctx.comm.Abort(EXIT_ERROR)
        os._exit(EXIT_ERROR)  # Abort may return before the runtime kills us: say nothing more
