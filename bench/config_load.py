"""Configuration loading on hostile inputs: how long each case of the hostile corpus takes.

For every case of tests/_hostile_yaml.py (and the valid 45,000-tag registry): the loader's
time in this process (CPU seconds, best of 3), and the wall time of `tolerance check
--cluster CASE` in a fresh process next to `tolerance --version` measured in the same run
(the cost of starting Python and the CLI). Prints one row per case and the slowest.

    python bench/config_load.py            # every case
    python bench/config_load.py --no-cli   # the loader only
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _hostile_yaml import corpus, materialize, tags_45000  # noqa: E402
from tolerance.config import SchemaProblems, load_cluster  # noqa: E402


def loader_seconds(path: Path) -> tuple[float, str]:
    best, outcome = float("inf"), ""
    for _ in range(3):
        t0 = time.process_time()
        try:
            load_cluster(path)
            outcome = "accepted"
        except SchemaProblems as exc:
            outcome = f"refused ({len(exc.problems)} line{'s' if len(exc.problems) > 1 else ''})"
        best = min(best, time.process_time() - t0)
    return best, outcome


def cli_seconds(args: list[str], cwd: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tolerance", *args], cwd=cwd,
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, r.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-cli", action="store_true", help="time the loader only")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tolerance-bench-config-") as tmp:
        work = Path(tmp)
        (work / "specs").mkdir()
        cases = [(c.id, c.fault, materialize(c, work / c.id)) for c in corpus()]
        good = work / "tags-45000.yaml"
        good.write_bytes(tags_45000())
        cases.append(("tags-45000 (valid)", "quadratic", good))
        base = min(cli_seconds(["--version"], work)[0] for _ in range(3)) if not opts.no_cli else 0
        if not opts.no_cli:
            print(f"baseline: `tolerance --version` {base:.3f} s wall (best of 3)")
        print(f"{'case':<28} {'fault':<16} {'loader CPU s':>12} {'check wall s':>12} "
              f"{'- baseline':>10}  rc  outcome")
        worst = ("", 0.0, 0.0)
        for cid, fault, path in cases:
            cpu, outcome = loader_seconds(path)
            wall, rc = (cli_seconds(["check", "--cluster", str(path), "--specs", "specs"], work)
                        if not opts.no_cli else (0.0, 0))
            print(f"{cid:<28} {fault:<16} {cpu:>12.4f} {wall:>12.3f} {wall - base:>10.3f}  "
                  f"{rc:>2}  {outcome}")
            if wall - base > worst[2] or (opts.no_cli and cpu > worst[1]):
                worst = (cid, cpu, wall - base)
        print(f"slowest: {worst[0]}: loader {worst[1]:.4f} s CPU, check {worst[2]:.3f} s over "
              "the baseline")


if __name__ == "__main__":
    main()
