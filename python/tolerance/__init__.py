"""tolerance: bound how far the same numerical run drifts between machines.

The public API is re-exported here; the native core (`tolerance._native`) is private.
"""
from __future__ import annotations

__version__ = "0.1.0"

from tolerance.compare.kernel import Accumulator, Divergence, assert_bounded, divergence

__all__ = ["__version__", "Accumulator", "Divergence", "assert_bounded", "divergence"]
