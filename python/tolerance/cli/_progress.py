"""Progress of `tolerance run` on stderr: one updating line on a terminal, a line per
state change elsewhere (a pipe, a log, `tolerance launch`)."""
from __future__ import annotations

import shutil
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 20)).columns - 1)

    def update(self, text: str, event: bool = False) -> None:
        """On a terminal: rewrite the one status line. Elsewhere: print `text` as a line
        only when it is an event (a box changed state, a large compare began)."""
        if not self.live:
            if event:
                self.stream.write(f"tolerance: {text}\n")
                self.stream.flush()
            return
        width = self._width()
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * self._width() + "\r")
            self.stream.flush()
            self._shown = False
