"""Chips and box-local knobs: the one chip grammar, and the one place where a chip's
environment knobs (thread variables, device visibility) are resolved.

Chip grammar (docs/formats.md): `cpu:LIST` where LIST is comma-separated `N` or `N-M`
items (`cpu:0-3`, `cpu:2`, `cpu:0,2,4-5`; cores 0..1023, none twice), `cpu:*` (every core
this process may use), `cuda:N`, `rocm:N` (N in 0..65535). A chip string means the same
everywhere: it is parsed here only (`parse_chip`); the runner and the bootstrap keep the
parsed `Chip`, and a chip child's native bring-up is handed its device, index and cores.

Knob order (`knob_env`), later wins:
  1. values derived from the chip: device visibility (`cuda:N` -> CUDA_VISIBLE_DEVICES=N;
     `rocm:N` -> ROCR_VISIBLE_DEVICES=N and HIP_VISIBLE_DEVICES=N) and, for a `cpu:LIST`
     chip, every thread variable = its number of cores;
  2. the box's `threads:` -> every thread variable;
  3. the box's own `env` (then the spec's `env`, which the caller passes after it).
So a box with `OMP_NUM_THREADS: "1"` in its env gives its workload OMP_NUM_THREADS=1 on a
chip `cpu:0-1`, whatever the chip would imply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

CHIP_GRAMMAR = "cpu:N-M | cpu:* | cuda:N | rocm:N"  # N-M: also a list, cpu:0,2,4-5
#: highest core id a chip may name (the native bring-up's limit too)
MAX_CPU = 1023
#: the thread variables a chip's thread count sets
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_GPU = re.compile(r"^(cuda|rocm):(\d{1,5})$")
_ITEM = re.compile(r"^(\d{1,9})(?:-(\d{1,9}))?$")


def format_cpu_list(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 8) -> "0-3,8" (sorted cores)."""
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


@dataclass(frozen=True)
class Chip:
    """One compute slot of a box, parsed from its chip string."""

    kind: str                           # "cpu" | "cuda" | "rocm"
    index: int | None = None            # gpu: device index
    cores: tuple[int, ...] | None = None  # cpu:LIST: sorted cores; None for cpu:* and gpus

    def __str__(self) -> str:
        if self.kind == "cpu":
            return "cpu:*" if self.cores is None else f"cpu:{format_cpu_list(self.cores)}"
        return f"{self.kind}:{self.index}"

    @property
    def slug(self) -> str:
        """Directory name of the chip: `cpu-all`, `cpu-0-3`, `cpu-2`, `cpu-0_2`, `cuda-1`."""
        return str(self).replace(":", "-").replace("*", "all").replace(",", "_")

    @property
    def cpus(self) -> tuple[int, ...] | None:
        """The cores of a `cpu:LIST` chip; None for `cpu:*` and gpus."""
        return self.cores


def chip_problem(text: str) -> str | None:
    """Why `text` is not a chip string, or None."""
    if not isinstance(text, str):
        return f"{text!r} is not a chip ({CHIP_GRAMMAR})"
    kind, sep, rest = text.partition(":")
    if not sep:
        return f"{text!r} is not a chip ({CHIP_GRAMMAR})"
    if kind in ("cuda", "rocm"):
        m = _GPU.match(text)
        if not m or int(m.group(2)) > 65535:
            return f"{text!r} is not a chip: device index must be an integer in 0..65535"
        return None
    if kind != "cpu":
        return f"{text!r} is not a chip ({CHIP_GRAMMAR})"
    if rest == "*":
        return None
    if not rest:
        return f"{text!r} is not a chip: empty core list"
    seen: set[int] = set()
    for item in rest.split(","):
        m = _ITEM.match(item)
        if not m:
            return f"{text!r} is not a chip: bad core list item {item!r} (expected N or N-M)"
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            return f"{text!r} is not a chip: range {lo}-{hi} runs backwards"
        if hi > MAX_CPU:
            return f"{text!r} is not a chip: core {hi} exceeds the supported maximum {MAX_CPU}"
        for c in range(lo, hi + 1):
            if c in seen:
                return f"{text!r} is not a chip: core {c} is listed twice"
            seen.add(c)
    return None


def parse_chip(text: str) -> Chip:
    """Parse a chip string; ValueError naming the grammar when it is not one."""
    problem = chip_problem(text)
    if problem:
        raise ValueError(problem)
    kind, _, rest = text.partition(":")
    if kind != "cpu":
        return Chip(kind, index=int(rest))
    if rest == "*":
        return Chip("cpu")
    cores: set[int] = set()
    for item in rest.split(","):
        lo, _, hi = item.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return Chip("cpu", cores=tuple(sorted(cores)))


def knob_env(chip: Chip, *, threads: int | None = None,
             env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The box-local knobs of one chip, in the documented order (module docstring): what
    the chip derives, then `threads`, then `env` (the box's own, then the spec's)."""
    out: dict[str, str] = {}
    if chip.kind == "cuda":
        out["CUDA_VISIBLE_DEVICES"] = str(chip.index)
    elif chip.kind == "rocm":
        out["ROCR_VISIBLE_DEVICES"] = out["HIP_VISIBLE_DEVICES"] = str(chip.index)
    elif chip.cores is not None:
        out.update({v: str(len(chip.cores)) for v in THREAD_VARS})
    if threads is not None:
        out.update({v: str(threads) for v in THREAD_VARS})
    out.update({str(k): str(v) for k, v in (env or {}).items()})
    return out
