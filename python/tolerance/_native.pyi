"""Type stubs of the private native module `tolerance._native`."""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

class Stats:
    """Partial divergence statistics; merge is associative (threads, chunks, ranks)."""

    max_abs: float  # -1.0: no compared pair
    arg_step: int
    arg_inner: int
    max_rel: float  # -1.0: no compared pair
    rel_step: int
    rel_inner: int
    max_ulp: int
    count_over: int
    nan_mismatch: int
    nan_both: int
    inf_mismatch: int
    size: int
    step0: int
    series: npt.NDArray[np.float64]  # per-step max |a-b|; -1.0 where no pair was compared
    series_over: npt.NDArray[np.int64]
    def __init__(self) -> None: ...
    def copy(self) -> Stats: ...
    def merge(self, other: Stats, step_shift: int = 0, inner_shift: int = 0) -> None: ...

def compute(a: np.ndarray, a_code: int, a_swap: bool, b: np.ndarray, b_code: int, b_swap: bool,
            atol: float, rtol: float, ulp: int, want_ulp: bool, step_offset: int,
            inner_offset: int, threads: int) -> Stats: ...
def _read_bandwidth(a: np.ndarray, b: np.ndarray, threads: int = 1) -> int: ...
def kernel_isa() -> str: ...
def _set_kernel(name: str) -> str: ...
def _available_kernels() -> list[str]: ...
