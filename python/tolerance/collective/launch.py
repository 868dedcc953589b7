"""`tolerance launch`: build the `mpiexec` line for a registry, run it, watch it, end it.

The controller does not join the MPI job. It builds one MPMD command with one rank per
box, recognising MPICH/hydra and Open MPI spellings:

- hydra: remote hosts through a hostfile only (hydra refuses a hostfile together with
  per-segment hosts), one `host:1` line per box in box order, so rank r lands on box r's
  host (several boxes on one host are several lines);
- Open MPI: a hostfile with each host's slot count and `--host H` per segment.

Every rank starts through a tiny `/bin/sh` prelude that enters the box's root and checks
its python, so a root or python missing on a host is one line naming the box within a
second, not hydra noise. The box's name is the prelude's `TOLERANCE_BOX`; where the rank
really landed is checked by the handshake.

While the job runs, the launcher follows every rank on the watch line (`watch.py`):
every box must say hello within `hello_within` seconds, and a box silent for longer than
`lost_after` is lost. Either ends the job on every reachable host (every rank is told to
end, then mpiexec's whole process group is killed), prints one line naming the box and
why, writes a partial report.json and returns 2. SIGINT, SIGTERM and SIGHUP end the job
the same way and return 130, 143, 129. Shared memory is swept only once every process of
the job is gone, and only the segments this job's ranks said were theirs.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tolerance._errors import EXIT_ERROR, ToleranceError, say
from tolerance.bootstrap.segments import process_alive, remove_job_segments
from tolerance.collective.handshake import LOCAL_HOSTS, this_host
from tolerance.collective.watch import WATCH_ENV, Watch
from tolerance.config.local import box_python

_VERSION_TIMEOUT_S = 20
DEFAULT_HELLO_WITHIN_S = 25.0
_TERM_GRACE_S = 2.0
_END_GRACE_S = 5.0
_GONE_WITHIN_S = 10.0
_START_MARK = "@tolerance-start "

# The rank prelude: $1 root, $2 python, $3 box; then the python's arguments.
_PRELUDE = (
    'cd "$1" 2>/dev/null || { echo "' + _START_MARK + 'box=$3 its root $1 does not exist on '
    'host $(uname -n)" >&2; exit 2; }; '
    'command -v "$2" >/dev/null 2>&1 || { echo "' + _START_MARK + 'box=$3 its python $2 is '
    'not found on host $(uname -n)" >&2; exit 2; }; '
    'TOLERANCE_BOX=$3; export TOLERANCE_BOX; p=$2; shift 3; exec "$p" "$@"'
)

# Lines of the MPI runtimes' own reports of a job they ended (the launcher says it in one).
_NOISE = re.compile(
    r"^[=\s]*(=+$|BAD TERMINATION|PID \d+ RUNNING AT|EXIT CODE:|CLEANING UP REMAINING|"
    r"YOUR APPLICATION TERMINATED|YOU CAN IGNORE THE BELOW|This typically refers|Please see the FAQ|\[mpiexec@|"
    r"\[proxy:|\[prterun|prterun |mpiexec noticed|mpirun noticed|Primary job|"
    r"Warning: Permanently added|Abort\(\d+\) on node \d+ \(rank \d+ in comm|-{20,}$)")
_SSH = (re.compile(r"ssh: connect to host (\S+) port \d+: (.+)"),
        re.compile(r"ssh: Could not resolve hostname (\S+?): (.+)"))
_SSH_ANY = re.compile(r"(Permission denied \(|Host key verification failed|Connection closed by|"
                      r"kex_exchange_identification)")


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    flavor: str              # "hydra" | "openmpi"
    hostfile: str | None     # contents of the hostfile, when one is used
    boxes: list[str]
    hosts: dict[str, str] = field(default_factory=dict)   # box -> host

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


def is_remote(cluster) -> bool:
    return any(b.host not in LOCAL_HOSTS for b in cluster.boxes)


def build_plan(cluster, stem: str, *, mpiexec: str, flavor: str, run_args: Sequence[str] = (),
               mpiexec_args: Sequence[str] = (), hostfile_path: str | None = None) -> LaunchPlan:
    """The mpiexec line: rank r is box r, on box r's host, in box r's root."""
    boxes = list(cluster.boxes)
    remote = is_remote(cluster)
    argv = [mpiexec]
    hostfile = None
    if flavor == "hydra":
        if remote:
            # One line per box, in box order: hydra fills hosts in hostfile order, so rank
            # r lands on box r's host, whatever the boxes' order or how many share a host.
            hostfile = "".join(f"{b.host}:1\n" for b in boxes)
            argv += ["-f", hostfile_path or "hostfile"]
    else:
        counts: dict[str, int] = {}
        for b in boxes:
            counts[b.host] = counts.get(b.host, 0) + 1
        hostfile = "".join(f"{h} slots={n}\n" for h, n in counts.items())
        argv += ["--hostfile", hostfile_path or "hostfile", "-x", WATCH_ENV]
        if remote and not any(a == "--prefix" or a.startswith("--prefix=") for a in mpiexec_args):
            # the remote daemons (prted) are found where this mpiexec is installed
            argv += ["--prefix", str(Path(mpiexec).resolve().parent.parent)]
    argv += list(mpiexec_args)
    for k, b in enumerate(boxes):
        if k:
            argv.append(":")
        ctx = ["-n", "1"]
        if flavor == "openmpi":
            ctx += ["--host", f"{b.host}:{counts[b.host]}"]
        py = box_python(b)
        cmd = ["/bin/sh", "-c", _PRELUDE, "tolerance-rank", str(b.root), py, b.name,
               "-m", "tolerance", "run", stem, *run_args]
        argv += ctx + cmd
    return LaunchPlan(argv=argv, flavor=flavor, hostfile=hostfile, boxes=[b.name for b in boxes],
                      hosts={b.name: b.host for b in boxes})


class _Output:
    """Pumps one of mpiexec's streams through, keeping what the launcher must read."""

    def __init__(self, src, dst, job: "_Job") -> None:
        self._src, self._dst, self._job = src, dst, job
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        in_block = False
        for raw in iter(self._src.readline, b""):
            line = raw.decode("utf-8", "replace")
            text = line.rstrip("\n")
            k = text.find(_START_MARK)
            if k >= 0:
                self._job.start_problem(text[k + len(_START_MARK):])
                continue
            if self._job.note_ssh(text):
                continue
            if self._job.ending.is_set() and not self._job.debug:
                continue
            if not self._job.debug:
                if re.match(r"^-{20,}$", text.strip()):
                    in_block = not in_block
                    continue
                if in_block or _NOISE.match(text):
                    continue
            if text.startswith("tolerance: error: "):
                self._job.said.add(text)
            try:
                self._dst.write(line)
                self._dst.flush()
            except (OSError, ValueError):
                pass


class _Job:
    def __init__(self, plan: LaunchPlan, watch: Watch, debug: bool) -> None:
        self.plan, self.watch, self.debug = plan, watch, debug
        self.ending = threading.Event()
        self._lock = threading.Lock()
        self.problems: list[tuple[str, str]] = []     # (box, cause) from the prelude
        self.ssh: list[tuple[str | None, str]] = []   # (host or None, what ssh said)
        self.said: set[str] = set()                   # error lines the ranks' output held

    def start_problem(self, text: str) -> None:
        m = re.match(r"box=(\S+) (.*)", text)
        if m:
            with self._lock:
                self.problems.append((m.group(1), m.group(2)))

    def note_ssh(self, text: str) -> bool:
        for rx in _SSH:
            m = rx.search(text)
            if m:
                with self._lock:
                    self.ssh.append((m.group(1), m.group(2).strip()))
                return True
        if _SSH_ANY.search(text):
            with self._lock:
                self.ssh.append((None, text.strip()))
            return True
        return False

    def boxes_on(self, host: str) -> list[str]:
        return [b for b, h in self.plan.hosts.items() if h == host]


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the runtime's ssh clients, proxies, local ranks)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for e in entries:
        try:
            with open(f"/proc/{e}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    """End mpiexec and everything it started on this host: TERM, a grace, then KILL.

    The runtime may put its ssh clients in process groups of their own, so every
    descendant is signalled by pid as well as mpiexec's group."""
    known: set[int] = set()
    for sig, grace in ((signal.SIGTERM, _TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        known |= set(_descendants(proc.pid))
        for pid in known:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            known |= set(_descendants(proc.pid))
            for pid in known:   # what outlived mpiexec's TERM goes now
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return


def _sweep(watch: Watch) -> None:
    """Once every process of the job on this host is gone, remove this job's segments."""
    me = this_host()
    peers = [p for p in watch.snapshot().values() if p.host == me]
    deadline = time.monotonic() + _GONE_WITHIN_S
    while time.monotonic() < deadline and any(process_alive(p.pid) for p in peers):
        time.sleep(0.05)
    if any(process_alive(p.pid) for p in peers):
        return  # a rank still maps them: never unlink what a live process uses
    names = [n for p in watch.snapshot().values() for n in p.shm]
    remove_job_segments(names, {p.pid for p in peers})


def _partial_report(plan: LaunchPlan, watch: Watch, stem: str, error: str,
                    lost: dict[str, str]) -> str | None:
    """report.json of a job that did not finish: every box's status, no rows."""
    from tolerance.io import write_json  # noqa: PLC0415
    from tolerance.runner import claim_run_dir  # noqa: PLC0415

    peers = watch.snapshot()
    r0 = next((p for p in peers.values() if p.rank == 0), None)
    run_id = r0.notes.get("run_id") if r0 else None
    run_dir = Path(r0.notes["run_dir"]) if r0 and r0.notes.get("run_dir") else None
    try:
        if run_dir is None or not run_dir.is_dir():
            run_dir = (Path.cwd() / "runs" / stem / str(run_id)) if run_id else None
            if run_dir is not None:
                run_dir.mkdir(parents=True, exist_ok=True)
            else:
                run_dir = claim_run_dir(Path.cwd(), stem)
        boxes = []
        for name in plan.boxes:
            p = peers.get(name)
            status = lost.get(name) or ("not started" if p is None else
                                        ("finished" if p.bye else "ended"))
            boxes.append({"name": name, "host": plan.hosts[name],
                          "rank": p.rank if p else None, "status": status,
                          "phase": p.phase if p else None,
                          "hostname": p.host if p else None})
        doc = {"schema": "tolerance.run/1", "partial": True, "stem": stem,
               "run_id": run_id or run_dir.name, "run_dir": str(run_dir), "exit_code": EXIT_ERROR,
               "error": error, "boxes": boxes, "rows": []}
        path = run_dir / "report.json"
        write_json(path, doc, overwrite=True)
        return str(path)
    except (OSError, ToleranceError):
        return None


def run_plan(plan: LaunchPlan, watch: Watch, *, stem: str,
             hello_within: float = DEFAULT_HELLO_WITHIN_S, debug: bool = False,
             stdout=None, errors: list[str] | None = None) -> int:
    """Run the job; end it on a silent box, a lost box or a signal; the exit code.

    The ranks' stdout goes to `stdout` (default: this process's); the one line saying
    why the launcher ended the job goes to stderr and, when given, onto `errors`."""
    job = _Job(plan, watch, debug)
    caught: list[int] = []
    saved = {}

    def on_signal(signum, frame):  # noqa: ARG001
        caught.append(signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, on_signal)
    env = {**os.environ, WATCH_ENV: watch.env_value}
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(plan.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        for sig, h in saved.items():
            signal.signal(sig, h)
        raise ToleranceError(f"mpiexec: cannot start {plan.argv[0]}: {exc}") from None
    pumps = [_Output(proc.stdout, stdout if stdout is not None else sys.stdout, job),
             _Output(proc.stderr, sys.stderr, job)]
    why: str | None = None
    code = EXIT_ERROR
    lost: dict[str, str] = {}
    report = False
    try:
        while True:
            if caught:
                sig = caught[0]
                why = f"interrupted by {_signal_name(sig)}: the job was ended on every host"
                code = 128 + sig
                break
            rc = proc.poll()
            if rc is not None:
                break
            peers = watch.snapshot()
            if job.problems:
                box, cause = job.problems[0]
                why = f"box {box}: {cause}"
                lost[box] = "failed to start"
                break
            silent = [b for b in plan.boxes if b not in peers]
            for host, said in job.ssh:
                if host is not None and any(b in silent for b in job.boxes_on(host)):
                    names = ", ".join(b for b in job.boxes_on(host) if b in silent)
                    why = f"box {names} (host {host}) cannot be reached: ssh: {said}"
                    lost.update({b: "unreachable" for b in job.boxes_on(host)})
                    break
            if why:
                break
            elapsed = time.monotonic() - t0
            if silent and elapsed > hello_within:
                names = ", ".join(f"{b} (host {plan.hosts[b]})" for b in silent)
                hint = f"; ssh said: {job.ssh[0][1]}" if job.ssh else ""
                why = (f"box {names} did not say hello within {hello_within:g} s "
                       f"(host down or unreachable, or its tolerance cannot start there{hint})")
                lost.update({b: "silent" for b in silent})
                break
            if not silent:
                gone = watch.lost()
                if gone is not None:
                    peer, quiet = gone
                    why = (f"box {peer.box} (rank {peer.rank}, host {peer.host}) was lost: "
                           f"silent for {quiet:.1f} s (more than --lost-after "
                           f"{watch.lost_after:g} s) while {peer.phase}; its host or link is down")
                    lost[peer.box] = "lost"
                    report = True
                    break
            watch.changed.wait(0.1)
            watch.changed.clear()
        if why is not None:
            job.ending.set()
            watch.end_all()
            # each reachable rank ends its chips and itself on `end`: give them that moment
            # before the runtime's kill (which would not wait for the chips)
            deadline = time.monotonic() + _END_GRACE_S
            while time.monotonic() < deadline and proc.poll() is None and any(
                    p.closed_at is None and p.box not in lost
                    for p in watch.snapshot().values()):
                time.sleep(0.05)
            _kill_group(proc)
            rc = proc.returncode
        else:
            rc = proc.returncode
            try:  # mpiexec is gone; its group's stragglers (local ranks) go too
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    finally:
        for sig, h in saved.items():
            signal.signal(sig, h)
    for p in pumps:
        p.thread.join(timeout=5)
    if why is None and rc not in (0, 1, 3) and job.problems:
        box, cause = job.problems[0]   # mpiexec ended first; the prelude said why
        why = f"box {box}: {cause}"
    elif why is None and rc not in (0, 1, 3) and job.ssh:
        host, said = job.ssh[0]
        names = ", ".join(job.boxes_on(host)) if host else "?"
        why = (f"box {names} (host {host}) cannot be reached: ssh: {said}" if host
               else f"a host cannot be reached: ssh: {said}")
    _sweep(watch)
    if why is not None:
        if report:
            path = _partial_report(plan, watch, stem, why, lost)
            if path:
                why += f"; partial report {path}"
        say(f"tolerance: error: {why}")
        if errors is not None:
            errors.append(why)
        return code
    if rc in (0, 1, 3):
        return rc
    if rc == 2:
        # a rank that aborted the job sent its line over the watch line as well: say it
        # here when the runtime killed the rank before forwarding its stderr
        watch.first_death()   # (waits briefly until every rank's line has ended)
        notes = [p.notes.get("error") for p in sorted(watch.snapshot().values(),
                                                       key=lambda p: p.rank)]
        if not job.said:
            for said in dict.fromkeys(n for n in notes if isinstance(n, str)):
                say(said[:4096])
                if errors is not None:
                    errors.append(said.removeprefix("tolerance: error: "))
        return rc
    dead = watch.first_death()
    how = f"signal {-rc}" if rc < 0 else f"status {rc}"
    if dead is not None:
        msg = (f"box {dead.box} (rank {dead.rank}, pid {dead.pid}, host {dead.host}) "
               f"died; the MPI runtime ended the job (mpiexec {how})")
    else:
        silent = [b for b in plan.boxes if b not in watch.snapshot()]
        msg = (f"the MPI job ended abnormally (mpiexec {how}) before "
               + (f"box {', '.join(silent)} said hello" if silent else "every box said hello"))
    say(f"tolerance: error: {msg}")
    if errors is not None:
        errors.append(msg)
    return EXIT_ERROR
