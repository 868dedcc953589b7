"""Start chip children, wait for their bring-up through shared-memory mailboxes, fail fast,
clean up (DESIGN.md "Chips and the bootstrap mailbox").

    from tolerance.bootstrap import ChipConfig, ChipGroup, BootstrapError

    with ChipGroup() as group:
        group.start([ChipConfig("cpu:0-1", ["./sim", "--out", "run0"]),
                     ChipConfig("cpu:2-3", None, python="mymod:main",
                                buffers={"z": ((100, 8), "float64")})])
        contexts = group.wait(120)          # BootstrapError naming the chip on any failure
        while None in group.poll(): ...     # the workloads run to a terminal state
        z = group.read_buffer(1, "z")       # a copy of chip 1's window buffer "z"

Every chip is a child process started with exec (``python -m tolerance.chip``; never a bare
fork: the parent may be an MPI process). Before any child starts, the parent creates one
4096-byte mailbox per chip; the child brings its chip up in native code and publishes
SUCCESS with its context, or ERROR with a message. The wait (native, GIL released) wakes on
every state change and on the death of any child, with one monotonic deadline.

No segment outlives its group: ``close()`` (and any failed ``wait``) kills and reaps the
children first, then unlinks every mailbox and output window; while a group is open,
SIGINT/SIGTERM handlers clean up before the signal's usual effect, and an ``atexit`` hook
covers an interpreter that exits with a group still open. Segments of a parent that was
killed outright (SIGKILL) are removed by ``tolerance doctor --clean-shm``.
"""
from __future__ import annotations

import atexit
import json
import math
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tolerance import _native
from tolerance._errors import ToleranceError

__all__ = ["BootstrapError", "ChipConfig", "ChipContext", "ChipGroup"]

#: prefix of every shared-memory segment this project creates (``/dev/shm/tol-<pid hex>-...``)
SEGMENT_PREFIX = "tol-"


class BootstrapError(ToleranceError):
    """A chip did not come up: its message names the chip and the cause."""


def _dtype_str(dtype: Any) -> str:
    import numpy as np

    dt = np.dtype(dtype)
    if dt.hasobject or dt.kind in "OV" or dt.itemsize == 0:
        raise ValueError(f"dtype {dt} cannot live in a shared-memory buffer")
    return dt.str


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    import numpy as np

    return math.prod(shape) * np.dtype(dtype).itemsize


@dataclass(frozen=True)
class ChipConfig:
    """One chip of a box: what to bring up and what to run on it."""

    chip: str                               # "cpu:0-3" | "cpu:2" | "cpu:*" | "cuda:1" | "rocm:0"
    argv: Sequence[str] | None = None       # workload to exec after bring-up, or None
    python: str | None = None               # "module:function" called as fn(ctx, out_dir)
    out_dir: str = "."                      # the chip's output directory (cwd of the workload)
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for the workload
    threads: int | None = None              # OMP/OPENBLAS/MKL_NUM_THREADS for the workload
    buffers: Mapping[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    stdout: str | None = None               # log file paths (None: inherit the parent's)
    stderr: str | None = None
    python_exe: str = sys.executable        # interpreter for the chip shim

    def __post_init__(self) -> None:
        if not isinstance(self.chip, str) or not self.chip:
            raise ValueError(f"chip must be a non-empty string, not {self.chip!r}")
        if (self.argv is None) == (self.python is None):
            raise ValueError(f"chip {self.chip}: give exactly one of argv and python")
        if self.argv is not None:
            if isinstance(self.argv, (str, bytes)) or not self.argv:
                raise ValueError(f"chip {self.chip}: argv must be a non-empty sequence of strings")
            object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        if self.python is not None:
            mod, sep, fn = str(self.python).partition(":")
            if not sep or not mod or not fn:
                raise ValueError(f"chip {self.chip}: python must be 'module:function', "
                                 f"not {self.python!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"chip {self.chip}: threads must be a positive integer")
        object.__setattr__(self, "env", {str(k): str(v) for k, v in dict(self.env).items()})
        bufs: dict[str, tuple[tuple[int, ...], str]] = {}
        for name, spec in dict(self.buffers).items():
            try:
                shape, dtype = spec
                shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
                if any(s < 0 for s in shape):
                    raise ValueError("negative dimension")
                bufs[str(name)] = (shape, _dtype_str(dtype))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"chip {self.chip}: buffer {name!r} must be (shape, dtype): "
                                 f"{exc}") from None
        if len(bufs) > _native.MAX_BUFFERS:
            raise ValueError(f"chip {self.chip}: {len(bufs)} buffers exceed the maximum "
                             f"{_native.MAX_BUFFERS}")
        object.__setattr__(self, "buffers", bufs)


@dataclass(frozen=True)
class ChipContext:
    """What a chip published when it came up."""

    device: str                   # cpu | cuda | rocm
    device_id: int                # -1 for cpu; the physical index for cuda/rocm
    rank: int                     # the chip's index in its group
    nranks: int
    window_name: str              # the output window's segment ("" without buffers)
    window_size: int
    buffer_ptrs: dict[str, int]   # buffer name -> byte offset in the window
    # extras (not needed to use the context; recorded for reports)
    cpus: str = ""                # CPU set the chip runs on ("0-3"); "" when unknown
    affinity_applied: bool = False
    threads: int | None = None    # value of the thread variables, None if not set
    pid: int = 0                  # the chip's process

    @classmethod
    def from_published(cls, published: Mapping[str, Any], declared: Sequence[str],
                       pid: int = 0) -> "ChipContext":
        """Build from a mailbox payload; `declared` are the buffer names the config declared.

        A published buffer count that differs from the declared one raises RuntimeError
        naming both counts (never a silently truncated dict)."""
        bufs = list(published["buffers"])
        if len(bufs) != len(declared):
            raise RuntimeError(f"chip context publishes {len(bufs)} buffers but "
                               f"{len(declared)} were declared")
        ptrs = {str(name): int(off) for name, off, _n in bufs}
        if len(ptrs) != len(bufs) or set(ptrs) != set(declared):
            raise RuntimeError(f"chip context publishes buffers {sorted(ptrs)} but "
                               f"{sorted(declared)} were declared")
        return cls(device=published["device"], device_id=int(published["device_id"]),
                   rank=int(published["rank"]), nranks=int(published["nranks"]),
                   window_name=published["window_name"],
                   window_size=int(published["window_size"]),
                   buffer_ptrs=ptrs, cpus=published.get("cpus", ""),
                   affinity_applied=bool(published.get("affinity_applied", False)),
                   threads=int(published["threads"]) or None if "threads" in published else None,
                   pid=pid)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "device_id": self.device_id, "rank": self.rank,
                "nranks": self.nranks, "window_name": self.window_name,
                "window_size": self.window_size, "buffer_ptrs": dict(self.buffer_ptrs),
                "cpus": self.cpus, "affinity_applied": self.affinity_applied,
                "threads": self.threads, "pid": self.pid}


# --------------------------------------------------------------------------- cleanup registry

_lock = threading.RLock()
_open_groups: set["ChipGroup"] = set()
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


def _register(group: "ChipGroup") -> None:
    global _atexit_done
    with _lock:
        if not _atexit_done:
            atexit.register(_close_all_at_exit)
            _atexit_done = True
        _open_groups.add(group)
        _install_handlers()


def _unregister(group: "ChipGroup") -> None:
    with _lock:
        _open_groups.discard(group)
        if not _open_groups:
            _restore_handlers()


def _fmt_seconds(t: float) -> str:
    return f"{t:g}"


def _last_line(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def _kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child that is not reaped yet (its pid, hence its group, cannot be reused)."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the chip leads its own session and group
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


# --------------------------------------------------------------------------- ChipGroup


class ChipGroup:
    """The chips of one box: start them at once, wait for bring-up, watch, clean up."""

    def __init__(self) -> None:
        self._configs: list[ChipConfig] = []
        self._mailboxes: list[Any] = []     # _native.Mailbox
        self._mailbox_names: list[str] = []
        self._window_names: list[str] = []  # chosen here, so the parent can always unlink them
        self._procs: list[subprocess.Popen] = []
        self._windows: dict[int, Any] = {}  # parent mappings (_native.Window), by chip
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
        """Every shared-memory segment of this group (mailboxes, then windows)."""
        return list(self._mailbox_names) + [w for w in self._window_names if w]

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
        self._configs = configs
        self._state = "started"
        self._owner_pid = os.getpid()
        _register(self)
        i = 0
        try:
            for c in configs:
                mb = _native.Mailbox.create(_native.make_segment_name("m"))
                self._mailboxes.append(mb)
                self._mailbox_names.append(mb.name)
                self._window_names.append(_native.make_segment_name("w") if c.buffers else "")
            for i, c in enumerate(configs):
                self._procs.append(self._spawn(i, c))
        except _native.MailboxError as exc:
            self._teardown()
            raise BootstrapError(f"cannot create the bootstrap mailboxes: {exc}") from None
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
                for i, (mb, cfg) in enumerate(zip(mailboxes, self._configs)):
                    try:
                        rep = mb.read()
                        contexts.append(ChipContext.from_published(
                            rep["context"], list(cfg.buffers), pid=self._procs[i].pid))
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
                _kill_process_group(p)
            for p in procs:
                p.wait()

    def read_buffer(self, i: int, name: str):
        """A copy (numpy array) of chip i's output buffer `name`, shaped as declared."""
        import numpy as np

        ctx = self.contexts[i]
        cfg = self._configs[i]
        if name not in cfg.buffers:
            raise KeyError(f"chip {i} ({cfg.chip}) has no buffer {name!r} "
                           f"(declared: {', '.join(cfg.buffers) or 'none'})")
        shape, dtype = cfg.buffers[name]
        nbytes = _nbytes(shape, dtype)
        off = ctx.buffer_ptrs[name]
        if nbytes == 0:
            return np.empty(shape, dtype)
        with self._tlock:
            if self._state == "closed":
                raise RuntimeError("the group is closed: its windows are gone")
            win = self._windows.get(i)
            if win is None:
                win = _native.Window.open(ctx.window_name, ctx.window_size, False)
                self._windows[i] = win
            view = np.ndarray(shape, np.dtype(dtype), buffer=memoryview(win), offset=off)
            return view.copy()

    def close(self) -> None:
        """Kill workloads still running and reap every child, then unlink every mailbox and
        output window. Idempotent."""
        self._teardown()

    # -- internals
    def _spawn(self, i: int, c: ChipConfig) -> subprocess.Popen:
        out_dir = os.path.abspath(c.out_dir)
        payload = {
            "chip": c.chip, "rank": i, "nranks": len(self._configs), "threads": c.threads,
            "window": self._window_names[i],
            "buffers": [[n, list(shape), dt, _nbytes(shape, dt)]
                        for n, (shape, dt) in c.buffers.items()],
            "argv": list(c.argv) if c.argv is not None else None, "python": c.python,
            "out_dir": out_dir, "env": dict(c.env),
        }
        cmd = [c.python_exe, "-m", "tolerance.chip", self._mailbox_names[i],
               json.dumps(payload, separators=(",", ":"))]
        # The workload env is the shim's own from its first instruction: variables such as
        # OPENBLAS_CORETYPE act only if set before NumPy is imported, and the shim imports
        # `tolerance` (hence NumPy) before it brings the chip up.
        env = dict(os.environ)
        env.update(c.env)
        if c.threads:  # also for the shim's own interpreter, before any BLAS starts
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(c.threads)
        files = []
        try:
            out = err = None
            if c.stdout:
                out = open(c.stdout, "ab")
                files.append(out)
            if c.stderr:
                if c.stderr == c.stdout:
                    err = out
                else:
                    err = open(c.stderr, "ab")
                    files.append(err)
            return subprocess.Popen(cmd, cwd=out_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, close_fds=True,
                                    start_new_session=True)
        finally:
            for fh in files:
                fh.close()

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
            tail = _last_line(self._configs[i].stderr)
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
                _kill_process_group(p)
            for p in list(self._procs):
                try:
                    p.wait()
                except BaseException:  # noqa: BLE001 - a second signal must not leak segments
                    pass
            # Mappings are dropped, not unmapped by hand: one may be in use right now (a wait in
            # another thread, a read_buffer interrupted by a signal); each is unmapped when its
            # last user lets go. Unlinking by name is safe while mapped.
            self._windows = {}
            self._mailboxes = []
            for name in list(self._mailbox_names) + list(self._window_names):
                if name:
                    try:
                        _native.unlink_segment(name)
                    except _native.MailboxError:
                        pass
            self._state = "closed"
            _unregister(self)
