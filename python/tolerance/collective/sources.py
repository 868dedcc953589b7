"""A box's output as a source of blocks for the exchange, through the io layer's reader."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from tolerance.compare.rows import MISSING_KEY, Problem
from tolerance.io import Archive
from tolerance.runner.stored import participant_label  # noqa: F401 - collective.job's label


class NpzBlockSource:
    """One chip's output file, opened once (validated, nothing loaded)."""

    def __init__(self, label: str, path) -> None:
        self.label = label
        self.path = str(path)
        self._archive = Archive(self.path)  # raises FormatError naming the file

    def keys(self) -> list[str]:
        """The keys of the output, in file order."""
        return list(self._archive.keys())

    def meta(self, key: str) -> tuple[tuple[int, ...], str] | Problem:
        if key not in self._archive:
            return Problem(MISSING_KEY, f"key {key!r} is missing from {self.path}")
        m = self._archive[key]
        return tuple(m.shape), m.dtype.str

    def blocks(self, key: str, steps_axis: int | None, per_block: int) -> Iterator[np.ndarray]:
        return self._archive[key].chunks(steps_axis, per_block)

    def close(self) -> None:
        self._archive.close()
