"""Small helpers that validate one decoded YAML value and collect every problem."""
from __future__ import annotations

import difflib
import math
import re
from typing import Any, Iterable

from tolerance.config._yaml import key_path

#: box names and stems: path-safe, never `.`/`..`, never a leading `-`
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_MISSING = object()


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def name_problem(value: str) -> str | None:
    """Why `value` is not a path-safe name, or None when it is."""
    if value in (".", ".."):
        return f"{value!r} is not a safe name (not '.' or '..')"
    if not SAFE_NAME.match(value):
        return (f"{value!r} is not a safe name (letters, digits, '_', '.', '-'; "
                "not starting with '.' or '-'; no '/')")
    return None


class Checker:
    """Collects `<file>: <key path>: <problem>` lines."""

    #: unknown keys that get a "did you mean" hint (difflib is not cheap: a file with
    #: 45,000 unknown keys must still be answered at once)
    HINTS = 20

    def __init__(self, display: str):
        self.display = display
        self.problems: list[str] = []
        self._hints = 0

    def add(self, path: str, problem: str) -> None:
        self.problems.append(f"{self.display}: {path or 'top level'}: {problem}")

    # -- containers ------------------------------------------------------------------
    def mapping(self, value: Any, path: str) -> dict | None:
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, not {type_name(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        for k in bad:
            self.add(key_path(path, str(k)), f"key {k!r} must be a string")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def keys(self, data: dict, path: str, allowed: Iterable[str],
             hints: dict[str, str] | None = None) -> None:
        allowed = sorted(allowed)
        known = frozenset(allowed)
        for key in data:
            if key in known:
                continue
            if hints and key in hints:
                self.add(key_path(path, key), hints[key])
                continue
            close: list[str] = []
            if self._hints < self.HINTS:
                self._hints += 1
                close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.add(key_path(path, key),
                     f"unknown key (expected one of: {', '.join(allowed)}){hint}")

    def list_of(self, value: Any, path: str) -> list | None:
        if not isinstance(value, list):
            self.add(path, f"must be a list, not {type_name(value)}")
            return None
        return value

    # -- scalars -----------------------------------------------------------------------
    def string(self, value: Any, path: str, *, nonempty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {type_name(value)}")
            return None
        if nonempty and not value.strip():
            self.add(path, "must not be empty")
            return None
        return value

    def scalar_string(self, value: Any, path: str) -> str | None:
        """A string, or an integer/number written without quotes (converted to text)."""
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return repr(value)
        self.add(path, f"must be a string, not {type_name(value)} (quote it)")
        return None

    def integer(self, value: Any, path: str, *, minimum: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, f"must be an integer, not {type_name(value)}")
            return None
        if minimum is not None and value < minimum:
            self.add(path, f"must be >= {minimum}, not {value}")
            return None
        return value

    def number(self, value: Any, path: str, *, minimum: float | None = None,
               positive: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.add(path, f"must be a number, not {type_name(value)}")
            return None
        value = float(value)
        if not math.isfinite(value):
            self.add(path, f"must be finite, not {value}")
            return None
        if positive and not value > 0:
            self.add(path, f"must be > 0, not {value:g}")
            return None
        if minimum is not None and value < minimum:
            self.add(path, f"must be >= {minimum:g}, not {value:g}")
            return None
        return value

    def env(self, value: Any, path: str) -> dict[str, str]:
        data = self.mapping(value, path)
        out: dict[str, str] = {}
        if data is None:
            return out
        for name, raw in data.items():
            sub = key_path(path, name)
            if not ENV_NAME.match(name):
                self.add(sub, f"{name!r} is not an environment variable name")
                continue
            text = self.scalar_string(raw, sub)
            if text is not None:
                if "\0" in text:
                    self.add(sub, "must not contain a NUL character")
                    continue
                out[name] = text
        return out

    def string_list(self, value: Any, path: str, *, unique: bool = True) -> list[str]:
        items = self.list_of(value, path)
        out: list[str] = []
        if items is None:
            return out
        first: dict[str, int] = {}      # one dict: linear, however long the list
        for i, item in enumerate(items):
            text = self.string(item, key_path(path, i))
            if text is None:
                continue
            if unique and text in first:
                self.add(key_path(path, i), f"{text!r} is listed twice (first at "
                                            f"{key_path(path, first[text])})")
                continue
            first.setdefault(text, i)
            out.append(text)
        return out
