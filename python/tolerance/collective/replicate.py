"""One replicated run started from the controller into a run directory it chose, through
`tolerance launch` (the same launch line, watch line, teardown and report): what
`tolerance calibrate` (a replica) and `tolerance matrix` (a cell-trial) are made of."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

#: how many of a failed run's last lines are searched for its reason
_TAIL = 12


@dataclass(frozen=True)
class LaunchedRun:
    run_dir: Path            # where the controller finds it (this machine's path)
    exit_code: int
    wall_s: float            # the whole launch, as the controller timed it
    reason: str | None       # for exit 2: the run's own one-line reason

    @property
    def failed(self) -> bool:
        return self.exit_code not in (0, 1, 3)


def boxes_share_root(cluster) -> bool:
    root = Path(cluster.boxes[0].root).resolve()
    return all(Path(b.root).resolve() == root for b in cluster.boxes)


def reason_of(stdout: str, stderr: str) -> str:
    """The one line that says why a launch failed (its `tolerance: error:` line, else the
    last warning or error it printed)."""
    said = [ln for ln in (stderr + "\n" + stdout).splitlines()
            if ln.strip() and not ln.startswith("+ ")][-_TAIL:]
    last = next((ln for ln in said if ln.startswith("tolerance: error:")),
                next((ln for ln in said if "(warn)" in ln or "error" in ln),
                     said[-1] if said else "no message"))
    return last.removeprefix("tolerance: error: ").strip()


def launch_into(stem: str, run_dir: Path, *, cluster, cluster_path: str | None,
                specs_dir: str | None, env: Mapping[str, str] | None = None,
                launch_args: Sequence[str] = (), root: Path | None = None) -> LaunchedRun:
    """`tolerance launch STEM -- --run-dir DIR --env K=V ...`, its output captured.

    run_dir is a path on this machine under `root` (default the first box's root): the
    boxes get it as it is when they share that root, else relative to their own roots.
    """
    root = Path(root if root is not None else cluster.boxes[0].root)
    given = run_dir if boxes_share_root(cluster) else run_dir.relative_to(root)
    argv = [sys.executable, "-m", "tolerance", "launch", stem]
    if cluster_path:
        argv += ["--cluster", str(Path(cluster_path).resolve())]
    if specs_dir:
        argv += ["--specs", str(Path(specs_dir).resolve())]
    argv += list(launch_args) + ["--", "--run-dir", str(given)]
    for k, v in (env or {}).items():
        argv += ["--env", f"{k}={v}"]
    start = time.monotonic()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    failed = proc.returncode not in (0, 1, 3)
    return LaunchedRun(run_dir=run_dir, exit_code=proc.returncode, wall_s=wall,
                       reason=reason_of(proc.stdout, proc.stderr) if failed else None)
