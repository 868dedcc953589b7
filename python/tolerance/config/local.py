"""What would fail at run time, found before anything starts (`tolerance check`, `launch`).

Two kinds of rules, each problem one line `<file>: <key path>: <problem>`:

- names that become path components (`runs/<stem>/<stamp>/<box>/<chip>/`,
  `specs/<stem>.bounds.yaml`, `plots/<key>.png`) must fit one (`NAME_MAX`, 255 bytes) with
  their suffix. These hold wherever a box runs; `parse_cluster` and `parse_spec` apply
  them. No name of the configuration enters a shared-memory segment name (segments are
  `/tol-<pid>-<n><kind>-<random>[.<tag>]`, at most 30 characters), so no other length
  limit applies;
- a box that runs on this machine (host `localhost`, `127.0.0.1`, `::1` or this host's
  name) must have a `root` that is a writable directory, a `python` that is an executable
  file (a bare name is looked up on PATH, as the rank's shell does; a relative path is
  taken from the root), `cpu:LIST` chips whose cores are all in the set this process may
  use, and room for its deepest run path (`<root>/runs/<stem>/<stamp>-N/<box>/<chip>/`)
  within PATH_MAX. A box elsewhere is checked on its host when it starts.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
from typing import Iterable

from tolerance.config._yaml import key_path

#: bytes in one path component (Linux, macOS)
NAME_MAX = 255
#: bytes in a whole path (Linux; macOS allows 1024)
PATH_MAX = 4096
#: hosts that are always this machine
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})
#: the longest suffix each kind of name gets in a file name
STEM_SUFFIX = ".bounds.yaml"        # specs/<stem>.bounds.yaml (calibrate)
KEY_SUFFIX = ".png"                 # plots/<key>.png (and <key>.npy in a reference)
#: the deepest file the runner writes for a chip, below its directory
_CHIP_FILE = "stderr.log"
_RUN_ID = "YYYYmmddTHHMMSSZ-99999"   # a run id at its longest


def name_length_problem(name: str, suffix: str = "") -> str | None:
    """Why `name` (+ `suffix`) does not fit one path component, or None."""
    n = len(name.encode("utf-8", "surrogatepass"))
    room = NAME_MAX - len(suffix.encode())
    if n <= room:
        return None
    shown = name if len(name) <= 40 else name[:37] + "..."
    return (f"{shown!r} is {n} bytes: too long for a file name (at most {room} bytes"
            + (f", as it becomes <name>{suffix})" if suffix else ")"))


def host_is_here(host: str) -> bool:
    """Whether a box's host is this machine (localhost, or this host's own name)."""
    if host in LOCAL_HOSTS:
        return True
    here = socket.gethostname()
    return host in (here, here.split(".")[0]) or host.split(".")[0] == here


def box_python(box) -> str:
    """The interpreter a box runs: on a box of this machine the default `python3` (or
    `python`) means the interpreter running tolerance here."""
    if box.host in LOCAL_HOSTS and box.python in ("python3", "python"):
        return sys.executable
    return box.python


def allowed_cores() -> frozenset[int] | None:
    """The cores this process may use (its affinity), or None where that is unknown."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return frozenset(os.sched_getaffinity(0))
        except OSError:
            return None
    n = os.cpu_count()
    return frozenset(range(n)) if n else None


def _cores_text(cores: Iterable[int]) -> str:
    from tolerance.config.chips import format_cpu_list

    return format_cpu_list(tuple(sorted(cores)))


def _python_problem(box) -> str | None:
    py = box_python(box)
    if "/" in py:
        path = py if os.path.isabs(py) else os.path.join(box.root, py)
        if not os.path.exists(path):
            return f"{py}: no such file on this machine"
        if os.path.isdir(path):
            return f"{py}: a directory, not an interpreter"
        if not os.access(path, os.X_OK):
            return f"{py}: not executable"
        return None
    if shutil.which(py) is None:
        where = os.environ.get("PATH", "")
        return f"{py!r} is not an executable on PATH ({where or 'PATH is empty'})"
    return None


def box_problems(box, index: int, display: str, *, stems: Iterable[str] = (),
                 cores: frozenset[int] | None = None) -> list[str]:
    """What would fail when `box` (boxes[index] of the registry `display`) runs on this
    machine; [] for a box of another host."""
    if not host_is_here(box.host):
        return []
    out: list[str] = []
    at = key_path("boxes", index)

    def add(field: str, problem: str) -> None:
        out.append(f"{display}: {key_path(at, field)}: {problem}")

    root = box.root
    if not os.path.exists(root):
        add("root", f"{root}: no such directory on this machine (box {box.name} runs here, "
                    f"host {box.host})")
    elif not os.path.isdir(root):
        add("root", f"{root}: not a directory")
    elif not os.access(root, os.W_OK | os.X_OK):
        add("root", f"{root}: not writable (each run makes runs/ there)")
    else:
        longest = max((len(s.encode()) for s in stems), default=0)
        chip_max = max((len(c.slug) for c in box.chip_specs()), default=0)
        deepest = (len(os.path.abspath(root).encode()) + len("/runs/") + longest + 1
                   + len(_RUN_ID) + 1 + len(box.name.encode()) + 1 + chip_max + 1
                   + len(_CHIP_FILE))
        if longest and deepest >= PATH_MAX:
            add("root", f"{root}: a run's deepest path would be {deepest} bytes, more than "
                        f"PATH_MAX ({PATH_MAX})")
    if (why := _python_problem(box)) is not None:
        add("python", why)
    cores = allowed_cores() if cores is None else cores
    if cores is not None:
        for j, chip in enumerate(box.chip_specs()):
            if chip.kind != "cpu" or chip.cores is None:
                continue
            missing = [c for c in chip.cores if c not in cores]
            if missing:
                out.append(f"{display}: {key_path(key_path(at, 'chips'), j)}: {chip} names "
                           f"core{'s' if len(missing) > 1 else ''} {_cores_text(missing)}, "
                           f"not in the cores this process may use here "
                           f"({_cores_text(cores)})")
    return out


def cluster_problems(cluster, *, stems: Iterable[str] = (), display: str | None = None
                     ) -> list[str]:
    """`box_problems` of every box of the registry (boxes of other hosts say nothing);
    `display` names the registry (default: its path)."""
    if display is None:
        display = str(cluster.path) if cluster.path is not None else "cluster.yaml"
    stems = tuple(stems)
    cores = allowed_cores()
    out: list[str] = []
    for i, box in enumerate(cluster.boxes):
        out += box_problems(box, i, display, stems=stems, cores=cores)
    return out


__all__ = ["KEY_SUFFIX", "LOCAL_HOSTS", "NAME_MAX", "PATH_MAX", "STEM_SUFFIX", "allowed_cores",
           "box_problems", "box_python", "cluster_problems", "host_is_here",
           "name_length_problem"]
