"""The keeper: a tiny process that cleans up after a process that died without cleaning.

Started by `tolerance.bootstrap.keeper` with `python -I -S <this file>` in its own session
(so a kill aimed at its owner's process group misses it), it imports nothing of the
package. Its owner writes lines on its stdin:

    g PGID   a chip's process group: SIGKILL it if the owner dies
    r PGID   released (the owner killed and reaped it itself)
    s NAME   a shared-memory segment of the owner's (a mailbox): unlink it if the owner dies
    m NAME   a segment the owner shares with its MPI job: unlink it if the owner dies, once
             no live process maps it any more
    u NAME   released

At end of file (the owner closed the pipe, or died: the kernel closes it either way) it
kills every group still listed, then unlinks every segment still listed, and exits. An
owner that ends normally has released everything first, so there is nothing to do.
"""
import os
import signal
import sys
import time

SHM_DIR = "/dev/shm"
_SHARED_WAIT_S = 3.0   # how long a shared segment may stay mapped by the job's other ranks


def _group_members(pgid):
    """Pids in process group `pgid` whose session is `pgid` too (a chip leads its own
    session and group: a group id reused by some other process's new group would lead
    another session). None where /proc cannot tell."""
    if not os.path.isdir("/proc/self"):
        return None
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp, session, ...
        if len(fields) > 3 and fields[0] not in (b"Z", b"X") and \
                int(fields[2]) == pgid and int(fields[3]) == pgid:
            out.append(int(entry))
    return out


def _kill_group(pgid):
    end = time.monotonic() + 2.0
    while True:
        members = _group_members(pgid)
        if members is not None and not members:
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            return
        if members is None or time.monotonic() > end:
            return
        time.sleep(0.02)


def _mapped_names():
    names = set()
    if not os.path.isdir("/proc/self"):
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as fh:
                for line in fh:
                    at = line.find(b" " + SHM_DIR.encode() + b"/")
                    if at >= 0:
                        names.add(line[at + len(SHM_DIR) + 2:].split(b" ")[0].strip().decode(
                            "utf-8", "replace"))
        except OSError:
            continue
    return names


def _unlink(name):
    try:
        os.unlink(os.path.join(SHM_DIR, name.lstrip("/")))
    except OSError:
        pass


def main():
    try:
        os.nice(19)  # it mostly sleeps on a pipe: never take a core from the chips
    except OSError:
        pass
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # a terminal's Ctrl-C is the owner's to handle
    groups, segments, shared = set(), set(), set()
    for raw in sys.stdin.buffer:
        try:
            verb, arg = raw.decode("utf-8").split()
        except ValueError:
            continue
        if verb == "g":
            groups.add(int(arg))
        elif verb == "r":
            groups.discard(int(arg))
        elif verb == "s":
            segments.add(arg)
        elif verb == "m":
            shared.add(arg)
        elif verb == "u":
            segments.discard(arg)
            shared.discard(arg)
    for pgid in groups:
        if pgid > 1:
            _kill_group(pgid)
    for name in segments:
        _unlink(name)
    end = time.monotonic() + _SHARED_WAIT_S
    while shared:
        mapped = _mapped_names()
        for name in list(shared):
            if mapped is None or name.lstrip("/") not in mapped:
                _unlink(name)
                shared.discard(name)
        if not shared or time.monotonic() > end:
            break
        time.sleep(0.2)


if __name__ == "__main__":
    main()
