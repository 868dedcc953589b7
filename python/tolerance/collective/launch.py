"""`tolerance launch`: build the `mpiexec` line for a registry, run it, explain how it ended.

The controller does not join the MPI job; it builds one MPMD command with one rank per
box (its host, its root as working directory, its python, `TOLERANCE_BOX`), recognising
MPICH/hydra and Open MPI spellings. Rank 0 of the job writes the rank table (rank, box,
host, pid) to the file named by TOLERANCE_LAUNCH_STATE, so that when the MPI runtime
reports a dead process by pid, the launcher can name the box.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tolerance._errors import EXIT_ERROR, ToleranceError
from tolerance.bootstrap.segments import remove_orphaned_mpi_segments, remove_stale_segments
from tolerance.collective.handshake import LOCAL_HOSTS
from tolerance.collective.watch import WATCH_ENV, DeathWatch

BOX_ENV = "TOLERANCE_BOX"
_VERSION_TIMEOUT_S = 20


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    flavor: str              # "hydra" | "openmpi"
    hostfile: str | None     # contents of the hostfile, when any box is remote
    boxes: list[str]

    def shell(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


def find_mpiexec(explicit: str | None) -> str:
    """The mpiexec to use: --mpiexec, else the one beside this Python, else on PATH."""
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise ToleranceError(f"--mpiexec: {explicit!r} is not an executable")
        return path
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    for name in ("mpiexec", "mpirun"):
        path = shutil.which(name)
        if path:
            return path
    raise ToleranceError("mpiexec: no MPI runtime found; install one "
                         "(`pip install 'tolerance-bound[mpich]'`) or pass --mpiexec PATH")


def mpiexec_flavor(mpiexec: str) -> str:
    """'hydra' (MPICH, Intel MPI) or 'openmpi', from `mpiexec --version`."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=_VERSION_TIMEOUT_S, stdin=subprocess.DEVNULL)
        text = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToleranceError(f"--mpiexec: {mpiexec}: cannot run it: {exc}") from None
    if "Open MPI" in text or "OpenRTE" in text or "open-mpi" in text.lower():
        return "openmpi"
    if "HYDRA" in text.upper() or "MPICH" in text.upper() or "Intel" in text:
        return "hydra"
    raise ToleranceError(f"--mpiexec: {mpiexec}: not MPICH/hydra nor Open MPI "
                         f"(`--version` said: {text.strip().splitlines()[0] if text.strip() else 'nothing'})")


def box_python(box) -> str:
    """The interpreter a box runs: on a local box the default `python3` means this one."""
    if box.host in LOCAL_HOSTS and box.python in ("python3", "python"):
        return sys.executable
    return box.python


def build_plan(cluster, stem: str, *, mpiexec: str, flavor: str, cluster_path: str | None,
               specs_dir: str | None, extra: Sequence[str] = (), watch: str | None = None,
               hostfile_path: str | None = None) -> LaunchPlan:
    boxes = list(cluster.boxes)
    remote = any(b.host not in LOCAL_HOSTS for b in boxes)
    argv = [mpiexec]
    hostfile = None
    if remote:
        counts: dict[str, int] = {}
        for b in boxes:
            counts[b.host] = counts.get(b.host, 0) + 1
        if flavor == "hydra":
            hostfile = "".join(f"{h}:{n}\n" for h, n in counts.items())
            argv += ["-f", hostfile_path or "hostfile"]
        else:
            hostfile = "".join(f"{h} slots={n}\n" for h, n in counts.items())
            argv += ["--hostfile", hostfile_path or "hostfile"]
    if watch:
        argv += (["-genv", WATCH_ENV, watch] if flavor == "hydra"
                 else ["-x", f"{WATCH_ENV}={watch}"])
    for k, b in enumerate(boxes):
        if k:
            argv.append(":")
        ctx = ["-n", "1"]
        if remote:
            ctx += ["-host", b.host] if flavor == "hydra" else ["--host", b.host]
        ctx += ["-wdir", str(b.root)]
        ctx += (["-env", BOX_ENV, b.name] if flavor == "hydra" else ["-x", f"{BOX_ENV}={b.name}"])
        cmd = [box_python(b), "-m", "tolerance", "run", stem]
        if cluster_path:
            cmd += ["--cluster", cluster_path]
        if specs_dir:
            cmd += ["--specs", specs_dir]
        argv += ctx + cmd + list(extra)
    return LaunchPlan(argv=argv, flavor=flavor, hostfile=hostfile, boxes=[b.name for b in boxes])


def run_plan(plan: LaunchPlan, watch: DeathWatch) -> int:
    """Run the job (its output goes straight through); name the box that died, if one did."""
    started = time.time() - 1.0  # mtime granularity
    proc = subprocess.Popen(plan.argv, stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    if rc in (0, 1, 2, 3) and rc != 2:
        return rc
    # An Abort or a killed rank leaves shared memory behind: the runtime's segments, and
    # the mailboxes of chips whose rank was killed while they ran.
    remove_orphaned_mpi_segments(started)
    remove_stale_segments()
    if rc == 2:
        return rc
    dead = watch.first_death()
    how = f"signal {-rc}" if rc < 0 else f"status {rc}"
    if dead is not None:
        why = (f"box {dead['box']} (rank {dead['rank']}, pid {dead['pid']}, host {dead['host']}) "
               f"died; the MPI runtime ended the job (mpiexec {how})")
    else:
        why = f"the MPI job ended abnormally (mpiexec {how}) before every box said hello"
    sys.stderr.write(f"tolerance: error: {why}\n")
    return EXIT_ERROR
