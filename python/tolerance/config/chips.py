"""Chip strings: `cpu:N-M`, `cpu:N`, `cpu:*`, `cuda:N`, `rocm:N`."""
from __future__ import annotations

import re
from dataclasses import dataclass

CHIP_GRAMMAR = "cpu:N-M | cpu:* | cuda:N | rocm:N"
_CHIP = re.compile(r"^(?:(cpu):(?:(\*)|(\d+)(?:-(\d+))?)|(cuda|rocm):(\d+))$")


@dataclass(frozen=True)
class Chip:
    """One compute slot of a box, parsed from its chip string."""

    kind: str                   # "cpu" | "cuda" | "rocm"
    first: int | None = None    # cpu: first core (None for cpu:*); gpu: device index
    last: int | None = None     # cpu: last core, inclusive (None for cpu:* and gpus)

    def __str__(self) -> str:
        if self.kind == "cpu":
            if self.first is None:
                return "cpu:*"
            return f"cpu:{self.first}" if self.first == self.last else f"cpu:{self.first}-{self.last}"
        return f"{self.kind}:{self.first}"

    @property
    def slug(self) -> str:
        """Directory name of the chip: `cpu-all`, `cpu-0-3`, `cpu-2`, `cuda-1`."""
        return str(self).replace(":", "-").replace("*", "all")

    @property
    def cpus(self) -> tuple[int, ...] | None:
        """The cores of a `cpu:N-M` chip; None for `cpu:*` and gpus."""
        if self.kind != "cpu" or self.first is None or self.last is None:
            return None
        return tuple(range(self.first, self.last + 1))

    def env(self) -> dict[str, str]:
        """Device visibility the chip implies (the chip's share of the resolved env)."""
        if self.kind == "cuda":
            return {"CUDA_VISIBLE_DEVICES": str(self.first)}
        if self.kind == "rocm":
            return {"ROCR_VISIBLE_DEVICES": str(self.first), "HIP_VISIBLE_DEVICES": str(self.first)}
        return {}


def chip_problem(text: str) -> str | None:
    """Why `text` is not a chip string, or None."""
    m = _CHIP.match(text)
    if not m:
        return f"{text!r} is not a chip ({CHIP_GRAMMAR})"
    if m.group(3) is not None and m.group(4) is not None and int(m.group(4)) < int(m.group(3)):
        return f"{text!r} is not a chip: range {m.group(3)}-{m.group(4)} runs backwards"
    return None


def parse_chip(text: str) -> Chip:
    """Parse a chip string; ValueError with the grammar when it is not one."""
    problem = chip_problem(text) if isinstance(text, str) else f"{text!r} is not a chip ({CHIP_GRAMMAR})"
    if problem:
        raise ValueError(problem)
    m = _CHIP.match(text)
    assert m is not None
    if m.group(1):
        if m.group(2):
            return Chip("cpu")
        first = int(m.group(3))
        last = int(m.group(4)) if m.group(4) is not None else first
        return Chip("cpu", first, last)
    return Chip(m.group(5), int(m.group(6)))
