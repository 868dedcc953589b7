"""The bootstrap's value types: what a chip is given (ChipConfig), what it publishes when it
is up (ChipContext), and the error of a failed bring-up (BootstrapError)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tolerance._errors import ToleranceError
from tolerance.config.chips import Chip, knob_env, parse_chip

__all__ = ["BootstrapError", "ChipConfig", "ChipContext", "SEGMENT_PREFIX", "SEGMENT_TAG_ENV",
           "segment_tag"]

#: prefix of every shared-memory segment this project creates (``/dev/shm/tol-<pid hex>-...``)
SEGMENT_PREFIX = "tol-"
#: environment variable: a tag (1-4 characters of 0-9a-z) that every segment made by this
#: process and its children carries (``tol-...-<random>.<tag>``), so that a job or a test
#: suite finds its own segments while other tolerance jobs run on the same machine
SEGMENT_TAG_ENV = "TOLERANCE_SHM_TAG"


def segment_tag() -> str:
    """This process's segment tag ("" when unset). BootstrapError when it is malformed."""
    tag = os.environ.get(SEGMENT_TAG_ENV, "")
    if len(tag) > 4 or not all(c in "0123456789abcdefghijklmnopqrstuvwxyz" for c in tag):
        raise BootstrapError(f"{SEGMENT_TAG_ENV}={tag!r}: a segment tag is at most 4 "
                             "characters of 0-9a-z")
    return tag


class BootstrapError(ToleranceError):
    """A chip did not come up: its message names the chip and the cause."""


@dataclass(frozen=True)
class ChipConfig:
    """One chip of a box: what to bring up and what to run on it."""

    chip: str                               # the chip grammar (config.chips): "cpu:0-3", "cuda:1"
    #                                         (or a parsed config.chips.Chip); kept normalised
    argv: Sequence[str] | None = None       # workload to exec after bring-up, or None
    python: str | None = None               # "module:function" called as fn(ctx, out_dir)
    out_dir: str = "."                      # the chip's output directory (cwd of the workload)
    env: Mapping[str, str] = field(default_factory=dict)  # the box's (and spec's) env: wins
    threads: int | None = None              # every thread variable (below `env`)
    stdout: str | None = None               # log file paths (None: inherit the parent's)
    stderr: str | None = None
    python_exe: str = sys.executable        # interpreter for the chip shim

    @property
    def parsed(self) -> Chip:
        """The chip, parsed once (config.chips, the one chip grammar) when this was made."""
        return self._parsed

    def knobs(self) -> dict[str, str]:
        """The workload's environment knobs, resolved in the one documented order
        (config.chips.knob_env): derived from the chip, then `threads`, then `env`."""
        return knob_env(self._parsed, threads=self.threads, env=self.env)

    def __post_init__(self) -> None:
        if isinstance(self.chip, Chip):  # parsed already (the runner's registry chips)
            parsed = self.chip
        elif not isinstance(self.chip, str) or not self.chip:
            raise ValueError(f"chip must be a non-empty string, not {self.chip!r}")
        else:
            parsed = parse_chip(self.chip)  # ValueError: not a chip
        object.__setattr__(self, "_parsed", parsed)
        object.__setattr__(self, "chip", str(parsed))
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


@dataclass(frozen=True)
class ChipContext:
    """What a chip published when it came up."""

    device: str                   # cpu | cuda | rocm
    device_id: int                # -1 for cpu; the physical index for cuda/rocm
    rank: int                     # the chip's index in its group
    nranks: int
    # extras (not needed to use the context; recorded for reports)
    cpus: str = ""                # CPU set the chip runs on ("0-3"); "" when unknown
    affinity_applied: bool = False
    threads: int | None = None    # value of the thread variables, None if not set
    pid: int = 0                  # the chip's process

    @classmethod
    def from_published(cls, published: Mapping[str, Any], pid: int = 0) -> "ChipContext":
        """Build from a mailbox payload (what ``Mailbox.read()["context"]`` holds)."""
        return cls(device=published["device"], device_id=int(published["device_id"]),
                   rank=int(published["rank"]), nranks=int(published["nranks"]),
                   cpus=published.get("cpus", ""),
                   affinity_applied=bool(published.get("affinity_applied", False)),
                   threads=int(published["threads"]) or None if "threads" in published else None,
                   pid=pid)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "device_id": self.device_id, "rank": self.rank,
                "nranks": self.nranks, "cpus": self.cpus, "affinity_applied": self.affinity_applied,
                "threads": self.threads, "pid": self.pid}
