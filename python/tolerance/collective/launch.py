"""`tolerance launch`: build the `mpiexec` line for a registry, run it, explain how it ended.

The controller does not join the MPI job; it builds one MPMD command with one rank per
box (its host, its root as working directory, its python, `TOLERANCE_BOX`), recognising
MPICH/hydra and Open MPI spellings. Rank 0 of the job writes the rank table (rank, box,
host, pid) to the file named by TOLERANCE_LAUNCH_STATE, so that when the MPI runtime
reports a dead process by pid, the launcher can name the box.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tolerance._errors import EXIT_ERROR, ToleranceError
from tolerance.collective.handshake import LOCAL_HOSTS

STATE_ENV = "TOLERANCE_LAUNCH_STATE"
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
               specs_dir: str | None, extra: Sequence[str] = (), state_file: str | None = None,
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
    if state_file:
        argv += (["-genv", STATE_ENV, state_file] if flavor == "hydra"
                 else ["-x", f"{STATE_ENV}={state_file}"])
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


_PID_RE = re.compile(r"\bPID\s+(\d+)\b")
_SIGNAL_RE = re.compile(r"(?:KILLED BY SIGNAL|signal)\s*:?\s*(\d+)", re.IGNORECASE)
_EXIT_RE = re.compile(r"EXIT CODE:\s*(\d+)")


def explain_abnormal_end(output: str, state: dict | None) -> str | None:
    """Name the box behind an MPI runtime's 'bad termination' report, if there is one."""
    pids = [int(p) for p in _PID_RE.findall(output)]
    if not pids and "BAD TERMINATION" not in output:
        return None
    ranks = (state or {}).get("ranks", [])
    by_pid = {int(r["pid"]): r for r in ranks if "pid" in r}
    sig = _SIGNAL_RE.search(output)
    code = _EXIT_RE.search(output)
    how = (f"killed by signal {sig.group(1)}" if sig else
           f"exit code {code.group(1)}" if code else "ended abnormally")
    for pid in pids:
        if pid in by_pid:
            r = by_pid[pid]
            return (f"box {r['box']} (rank {r['rank']}, pid {pid}, host {r.get('host', '?')}) "
                    f"died: {how}; the MPI runtime aborted the job")
    if pids:
        return f"an MPI process (pid {pids[0]}) died: {how}; the MPI runtime aborted the job"
    return f"an MPI process died: {how}; the MPI runtime aborted the job"


def run_plan(plan: LaunchPlan, state_file: str) -> int:
    """Run the job; pass its output through; name the box if the runtime killed the job."""
    tail: list[str] = []
    proc = subprocess.Popen(plan.argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=False)

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)
            if len(tail) > 400:
                del tail[:200]

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    t.join(timeout=5)
    if rc in (0, 1, 2, 3):
        return rc
    try:
        state = json.loads(Path(state_file).read_text())
    except (OSError, ValueError):
        state = None
    why = explain_abnormal_end("".join(tail), state)
    sys.stderr.write(f"tolerance: error: {why or f'mpiexec exited with status {rc}'}\n")
    return EXIT_ERROR


def state_path() -> str:
    fd, path = tempfile.mkstemp(prefix="tolerance-launch-", suffix=".json")
    os.close(fd)
    return path
