"""ChipGroup: the chips of one box, started at once, waited on with one deadline, cleaned up."""
from __future__ import annotations

import os
import subprocess
import threading
from typing import Any, Sequence

from tolerance import _native
from tolerance.bootstrap import _registry, keeper
from tolerance.bootstrap.spawn import kill_process_group, last_line, spawn_chip
from tolerance.bootstrap.types import BootstrapError, ChipConfig, ChipContext, segment_tag

__all__ = ["ChipGroup"]


def _fmt_seconds(t: float) -> str:
    return f"{t:g}"


class ChipGroup:
    """The chips of one box: start them at once, wait for bring-up, watch, clean up."""

    def __init__(self) -> None:
        self._configs: list[ChipConfig] = []
        self._mailboxes: list[Any] = []     # _native.Mailbox
        self._mailbox_names: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._contexts: list[ChipContext] | None = None
        self._state = "new"                 # new | started | ready | closed
        self._tlock = threading.RLock()
        self._owner_pid = os.getpid()       # a forked copy of this process must not clean up
        self._closing = False

    # -- context manager
    def __enter__(self) -> "ChipGroup":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- public API
    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def contexts(self) -> list[ChipContext]:
        if self._contexts is None:
            raise RuntimeError("chip contexts are available only after wait() succeeded")
        return list(self._contexts)

    @property
    def configs(self) -> list[ChipConfig]:
        return list(self._configs)

    @property
    def segment_names(self) -> list[str]:
        """Every shared-memory segment of this group (one mailbox per chip)."""
        return list(self._mailbox_names)

    def start(self, configs: Sequence[ChipConfig]) -> None:
        """Create every mailbox, then start every chip child. OSError starting a child ends
        in BootstrapError (after cleaning up what was started)."""
        if self._state != "new":
            raise RuntimeError("ChipGroup.start() can be called only once")
        configs = list(configs)
        if not configs:
            raise ValueError("no chips to start")
        for c in configs:
            if not isinstance(c, ChipConfig):
                raise TypeError(f"expected ChipConfig, got {type(c).__name__}")
        tag = segment_tag()
        self._configs = configs
        self._state = "started"
        self._owner_pid = os.getpid()
        _registry.register(self)
        i = 0
        try:
            for c in configs:
                # the keeper hears the name before the segment exists: a SIGKILL between the
                # two (e.g. the job aborted from another box while the keeper was starting)
                # then leaves nothing behind; unlinking a name never created is harmless
                name = _native.make_segment_name("m", tag)
                keeper.guard_segment(name)
                try:
                    mb = _native.Mailbox.create(name)
                except BaseException:
                    keeper.release_segment(name)
                    raise
                self._mailboxes.append(mb)
                self._mailbox_names.append(mb.name)
            for i, c in enumerate(configs):
                self._procs.append(spawn_chip(c, self._mailbox_names[i], i, len(configs)))
                keeper.guard_group(self._procs[-1].pid)  # its group killed if we die first
        except _native.MailboxError as exc:
            self._teardown()
            need = len(configs) * _native.MAILBOX_SIZE
            raise BootstrapError(f"cannot create the bootstrap mailboxes ({len(configs)} of "
                                 f"{_native.MAILBOX_SIZE} bytes, {need} in all): {exc}") from None
        except OSError as exc:
            self._teardown()
            c = configs[i]
            raise BootstrapError(f"chip {i} ({c.chip}) could not be started: {exc}") from None
        except BaseException:
            self._teardown()
            raise

    def wait(self, timeout: float) -> list[ChipContext]:
        """Wait until every chip is up; returns the contexts. On the first ERROR, death,
        corrupted mailbox or at the deadline, kills and reaps every child, unlinks every
        segment and raises BootstrapError naming the chip."""
        if self._state == "ready":
            return self.contexts
        if self._state != "started":
            raise RuntimeError(f"ChipGroup.wait() needs a started group (it is {self._state})")
        timeout = float(timeout)
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, not {timeout}")
        try:
            # The list (hence every mapping) stays referenced by this call even if another
            # thread or a signal handler tears the group down meanwhile.
            mailboxes = self._mailboxes
            kind, idx, raw = _native.wait_all(mailboxes, self.pids, timeout)
            if self._closing:
                raise BootstrapError("the chip group was closed while waiting for bring-up")
            if kind == "ready":
                contexts = []
                for i, mb in enumerate(mailboxes):
                    try:
                        rep = mb.read()
                        contexts.append(ChipContext.from_published(
                            rep["context"], pid=self._procs[i].pid))
                    except (_native.MailboxError, RuntimeError) as exc:
                        raise BootstrapError(self._failed(i, str(exc))) from None
                self._contexts = contexts
                self._state = "ready"
                return self.contexts
            raise BootstrapError(self._describe(kind, idx, raw, timeout))
        except BaseException:
            self._teardown()
            raise

    def poll(self) -> list[int | None]:
        """Return codes of the chips' workloads (None: running; negative: killed by signal)."""
        with self._tlock:
            return [p.poll() for p in self._procs]

    def kill(self, i: int | None = None) -> None:
        """SIGKILL one chip (or all) with its process group, then reap it."""
        with self._tlock:
            procs = self._procs if i is None else [self._procs[i]]
            for p in procs:
                kill_process_group(p)
            for p in procs:
                p.wait()

    def close(self) -> None:
        """Kill workloads still running and reap every child, then unlink every mailbox.
        Idempotent."""
        self._teardown()

    # -- internals
    def _label(self, i: int) -> str:
        return f"chip {i} ({self._configs[i].chip})"

    def _failed(self, i: int, why: str) -> str:
        prefix = f"chip {self._configs[i].chip}: "
        if why.startswith(prefix):  # the child's message names its chip already
            why = why[len(prefix):]
        return f"{self._label(i)} bootstrap failed: {why}"

    def _describe(self, kind: str, i: int, raw: int, timeout: float) -> str:
        if kind in ("error", "corrupt"):
            try:
                rep = self._mailboxes[i].read()
                why = rep["error"] or "no message"
            except _native.MailboxError as exc:
                why = str(exc)
            return self._failed(i, why)
        if kind == "died":
            proc = self._procs[i]
            rc = proc.wait()  # a zombie already: reaping it is immediate
            if rc < 0:
                return f"chip {i} exited with signal {-rc} before bootstrap"
            tail = last_line(self._configs[i].stderr)
            return (f"chip {i} exited with status {rc} before bootstrap"
                    + (f": {tail}" if tail else ""))
        if kind == "timeout":
            late = [j for j, mb in enumerate(self._mailboxes)
                    if mb.raw_state() not in (2, 3)] or [i]
            more = [j for j in late if j != i]
            msg = f"chip {i} did not report within {_fmt_seconds(timeout)} s"
            if more:
                msg += f" (nor did chip{'s' if len(more) > 1 else ''} " \
                       f"{', '.join(map(str, more))})"
            return msg
        return f"{self._label(i)} bootstrap failed: unexpected wait result {kind}"

    def _teardown(self) -> None:
        """Kill and reap every child, then unmap and unlink every segment. Idempotent."""
        with self._tlock:
            if self._state == "closed" or os.getpid() != self._owner_pid:
                return
            self._closing = True
            # Snapshots throughout: a signal handler may run this again from inside itself.
            for p in list(self._procs):
                kill_process_group(p)
            for p in list(self._procs):
                try:
                    p.wait()
                except BaseException:  # noqa: BLE001 - a second signal must not leak segments
                    pass
                kill_process_group(p)  # reaped: what is left of its group (background jobs)
                keeper.release_group(p.pid)
            # Mappings are dropped, not unmapped by hand: one may be in use right now (a wait in
            # another thread); each is unmapped when its last user lets go. Unlinking by name
            # is safe while mapped.
            self._mailboxes = []
            for name in list(self._mailbox_names):
                try:
                    _native.unlink_segment(name)
                except _native.MailboxError:
                    pass
                keeper.release_segment(name)
            self._state = "closed"
            _registry.unregister(self)
