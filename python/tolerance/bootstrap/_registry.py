"""The open chip groups of this process, torn down on SIGINT/SIGTERM and at exit.

While a group is open, SIGINT/SIGTERM handlers call its ``_teardown`` before the signal's
usual effect, and an ``atexit`` hook covers an interpreter that exits with a group still
open.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
from typing import Any

__all__ = ["install_handlers", "register", "teardown_all", "unregister"]

_lock = threading.RLock()
_open_groups: set[Any] = set()
_saved_handlers: dict[int, Any] = {}
_atexit_done = False


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM while a group is open: clean up, then the signal's usual effect."""
    for group in list(_open_groups):
        group._teardown()
    prev = _saved_handlers.get(signum, signal.SIG_DFL)
    _restore_handlers()
    if callable(prev):
        prev(signum, frame)  # e.g. default_int_handler raises KeyboardInterrupt
    elif prev == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_handlers() -> None:
    """Install the SIGINT/SIGTERM handlers now (main thread only): a caller that will make
    its groups in a worker thread (where no handler can be installed) calls this first."""
    with _lock:
        _install_handlers()


def _install_handlers() -> None:
    if _saved_handlers or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        cur = signal.getsignal(sig)
        if cur is None or cur == signal.SIG_IGN or cur is _on_signal:
            continue  # ignored signals stay ignored; handlers set outside Python stay
        _saved_handlers[sig] = cur
        signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # restored by the next close on the main thread, or harmless until then
    for sig, handler in list(_saved_handlers.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, handler)
        del _saved_handlers[sig]


def _close_all_at_exit() -> None:
    for group in list(_open_groups):
        group._teardown()


def teardown_all() -> None:
    """Kill every open group's chips (their process groups) and unlink their segments: for an
    exit path that skips atexit (os._exit, MPI_Abort)."""
    for group in list(_open_groups):
        try:
            group._teardown()
        except BaseException:  # noqa: BLE001 - on the way out; the next group still matters
            pass


def register(group: Any) -> None:
    global _atexit_done
    with _lock:
        if not _atexit_done:
            atexit.register(_close_all_at_exit)
            _atexit_done = True
        _open_groups.add(group)
        _install_handlers()


def unregister(group: Any) -> None:
    with _lock:
        _open_groups.discard(group)
        if not _open_groups:
            _restore_handlers()
