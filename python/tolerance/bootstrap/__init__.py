"""Start chip children, wait for their bring-up through shared-memory mailboxes, fail fast,
clean up (docs/run.md "Chips and the bootstrap mailbox").

    from tolerance.bootstrap import ChipConfig, ChipGroup, BootstrapError

    with ChipGroup() as group:
        group.start([ChipConfig("cpu:0-1", ["./sim", "--out", "run0"]),
                     ChipConfig("cpu:2-3", None, python="mymod:main")])
        contexts = group.wait(120)          # BootstrapError naming the chip on any failure
        while None in group.poll(): ...     # the workloads run to a terminal state

Every chip is a child process started with exec (``python -m tolerance.bootstrap.child``; never a bare
fork: the parent may be an MPI process). Before any child starts, the parent creates one
4096-byte mailbox per chip; the child brings its chip up in native code and publishes
SUCCESS with its context, or ERROR with a message. The wait (native, GIL released) wakes on
every state change and on the death of any child, with one monotonic deadline.

No segment outlives its group: ``close()`` (and any failed ``wait``) kills and reaps the
children first, then unlinks every mailbox; while a group is open,
SIGINT/SIGTERM handlers clean up before the signal's usual effect, and an ``atexit`` hook
covers an interpreter that exits with a group still open. Segments of a parent that was
killed outright (SIGKILL) are removed by ``tolerance doctor --clean-shm``.
"""
from __future__ import annotations

from tolerance.bootstrap.group import ChipGroup
from tolerance.bootstrap.types import SEGMENT_PREFIX, BootstrapError, ChipConfig, ChipContext

__all__ = ["BootstrapError", "ChipConfig", "ChipContext", "ChipGroup", "SEGMENT_PREFIX"]
