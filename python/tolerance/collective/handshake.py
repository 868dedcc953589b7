"""Rank <-> box, and the handshake that checks every box is ready to run the same thing.

`assign_boxes` and `check_handshake` are pure (no MPI) so their rules are tested
directly; `job.py` feeds them what the ranks all-gathered.
"""
from __future__ import annotations

import os
import platform
import socket
import sys
from dataclasses import dataclass, field
from typing import Sequence

from tolerance._errors import ToleranceError
from tolerance.collective.code_fingerprint import CodeFingerprint, differing_files
from tolerance.config.local import LOCAL_HOSTS  # noqa: F401 - also this module's name for it



@dataclass(frozen=True)
class RankInfo:
    """What one rank says about itself in the handshake."""

    rank: int
    box: str
    hostname: str
    pid: int
    arch: str
    python: str
    versions: dict = field(default_factory=dict)
    code: dict = field(default_factory=dict)     # CodeFingerprint.to_dict()
    spec_hash: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def local_versions() -> dict:
    import numpy

    from tolerance import __version__
    return {"tolerance": __version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def this_host() -> str:
    return socket.gethostname()


def host_matches(box_host: str, hostname: str) -> bool:
    """`localhost`/`127.0.0.1` match any host; otherwise the names (or short names) agree."""
    if box_host in LOCAL_HOSTS:
        return True
    names = {hostname, hostname.split(".")[0]}
    try:
        fq = socket.getfqdn(hostname)
        names |= {fq, fq.split(".")[0]}
    except OSError:
        pass
    return box_host in names or box_host.split(".")[0] in names


def assign_boxes(box_names: Sequence[str], nranks: int, overrides: Sequence[str | None],
                 cluster_path: str) -> list[str]:
    """The box of every rank: rank r is box r unless TOLERANCE_BOX says otherwise."""
    if len(box_names) < 2:
        raise ToleranceError(f"{cluster_path}: boxes: a run needs at least 2 boxes, "
                             f"found {len(box_names)}")
    if nranks != len(box_names):
        raise ToleranceError(f"{cluster_path}: boxes: the registry has {len(box_names)} boxes "
                             f"but the job has {nranks} ranks (run with -n {len(box_names)})")
    chosen: list[str] = []
    for r in range(nranks):
        want = overrides[r] if overrides[r] else box_names[r]
        if want not in box_names:
            raise ToleranceError(f"{cluster_path}: boxes: rank {r} asks for box {want!r} "
                                 f"(TOLERANCE_BOX), which is not in the registry")
        chosen.append(want)
    seen: dict[str, int] = {}
    for r, b in enumerate(chosen):
        if b in seen:
            raise ToleranceError(f"{cluster_path}: boxes: box {b!r} is claimed by ranks "
                                 f"{seen[b]} and {r}; each box takes exactly one rank")
        seen[b] = r
    return chosen


def check_hosts(infos: Sequence[RankInfo], box_hosts: dict[str, str], cluster_path: str) -> None:
    for info in infos:
        host = box_hosts[info.box]
        if not host_matches(host, info.hostname):
            raise ToleranceError(f"{cluster_path}: boxes: box {info.box!r} is declared on host "
                                 f"{host!r} but rank {info.rank} runs on {info.hostname!r}")


def sync_problems(infos: Sequence[RankInfo]) -> list[str]:
    """Lines that explain why the boxes would not run the same thing (empty: they agree).

    The controller (rank 0) is the reference for the table; the check itself is symmetric.
    """
    ref = infos[0]
    if all(i.code.get("digest") == ref.code.get("digest") and i.spec_hash == ref.spec_hash
           and i.versions.get("tolerance") == ref.versions.get("tolerance")
           and i.versions.get("numpy") == ref.versions.get("numpy") for i in infos):
        return []
    lines = ["boxes do not run the same code (use --no-sync to run anyway):",
             f"  {'box':<16} {'rank':>4}  {'git HEAD':<12}  {'code':<12}  {'spec':<12}  "
             f"{'tolerance':<10} {'numpy':<10} differs from {ref.box}"]
    ref_fp = CodeFingerprint.from_dict(ref.code)
    for i in infos:
        fp = CodeFingerprint.from_dict(i.code)
        diffs = [] if i is ref else differing_files(ref_fp, fp)
        what = []
        if i is not ref:
            if fp.head != ref_fp.head:
                what.append("git HEAD")
            if diffs:
                shown = ", ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else "")
                what.append(f"files: {shown}")
            if i.spec_hash != ref.spec_hash:
                what.append("spec")
            for v in ("tolerance", "numpy"):
                if i.versions.get(v) != ref.versions.get(v):
                    what.append(v)
        lines.append(f"  {i.box:<16} {i.rank:>4}  {(fp.head or '-')[:12]:<12}  {fp.digest[:12]:<12}  "
                     f"{i.spec_hash[:12]:<12}  {str(i.versions.get('tolerance')):<10} "
                     f"{str(i.versions.get('numpy')):<10} "
                     f"{'(controller)' if i is ref else ('; '.join(what) or 'same')}")
    return lines


def make_rank_info(rank: int, box: str, code: CodeFingerprint, spec_hash: str) -> RankInfo:
    return RankInfo(rank=rank, box=box, hostname=this_host(), pid=os.getpid(),
                    arch=platform.machine(), python=sys.executable, versions=local_versions(),
                    code=code.to_dict(), spec_hash=spec_hash)
