"""Golden arrays in pytest: the `tolerance_golden` fixture (registered through the
`pytest11` entry point, so installing tolerance is enough).

    def test_solver(tolerance_golden):
        z = solve(...)
        tolerance_golden.check("state", {"z": z}, atol=1e-7, steps_axis=0)

`check` compares every array with `golden/<test module>/<test name>/<name>.npz` beside the
test file, through the one canonical kernel (`tolerance.assert_bounded`); a failure lists,
per key outside its bound, the count and share of elements outside, the worst element and
its index, the onset step and the bound. A missing golden fails with the command that
creates it; `pytest --tolerance-update` writes (or refreshes) the goldens instead of
comparing, with `<name>.json` beside each: the bounds, the code commit and the
environment fingerprint it was made with. Goldens are read with the safe reader (no
pickle) and written to a temporary name and renamed (safe under pytest-xdist).

This module sits at the top of the layer table, beside the command line: it only wires
pytest to the public API and to io; nothing imports it.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Mapping

import pytest

GOLDEN_DIR = "golden"
META_SCHEMA = "tolerance.golden/1"
_UPDATE = "--tolerance-update"
_WRITTEN = "tolerance_golden_written"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\],=+]")


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("tolerance", "tolerance golden arrays")
    group.addoption(_UPDATE, action="store_true", default=False,
                    help="Write or refresh the golden arrays of tolerance_golden.check "
                         "instead of comparing with them.")


def _safe_part(text: str) -> str:
    """A path component from a test name (parameters kept, path characters replaced)."""
    out = _UNSAFE.sub("_", text)
    return "_" + out if out.startswith((".", "-")) or not out else out


def golden_dir(test_file: Path, cls_name: str | None, test_name: str) -> Path:
    """`golden/<test module>/<test name>/` beside the test file (a class prefixes the name)."""
    name = f"{cls_name}.{test_name}" if cls_name else test_name
    return test_file.parent / GOLDEN_DIR / _safe_part(test_file.stem) / _safe_part(name)


def _whole(member: Any) -> Any:
    """A golden member as one array (goldens are small: a test holds them in memory)."""
    import numpy as np

    pieces = [np.asarray(c).reshape(-1) for c in member.chunks(None)]
    return np.concatenate(pieces).reshape(member.shape) if pieces else \
        np.empty(member.shape, member.dtype)


_code_cache: dict[str, dict[str, Any]] = {}


def _code(root: Path) -> dict[str, Any]:
    key = str(root)
    if key not in _code_cache:
        from tolerance.collective.code_fingerprint import code_fingerprint

        fp = code_fingerprint(root).to_dict()
        _code_cache[key] = {"head": fp.get("head"), "digest": fp.get("digest"),
                            "dirty": bool(fp.get("files"))}
    return _code_cache[key]


class Golden:
    """What `tolerance_golden` gives a test: `check(name, arrays, ...)`."""

    def __init__(self, request: Any):
        self._request = request
        node = request.node
        self._nodeid = node.nodeid
        cls = getattr(request, "cls", None)
        self.dir = golden_dir(Path(str(request.path)), cls.__name__ if cls else None,
                              node.name)
        self.update = bool(request.config.getoption(_UPDATE))
        self._root = Path(str(request.config.rootpath))

    def path(self, name: str) -> Path:
        """The golden file of `name` (`<dir>/<name>.npz`)."""
        from tolerance.config._check import name_problem

        if not isinstance(name, str) or (why := name_problem(name)) is not None:
            raise ValueError(f"golden name: {why or 'must be a string'}")
        return self.dir / f"{name}.npz"

    def _shown(self, p: Path) -> str:
        try:
            return str(p.relative_to(self._root))
        except ValueError:
            return str(p)

    def check(self, name: str, arrays: Mapping[str, Any], *, atol: float | None = None,
              rtol: float | None = None, ulp: int | None = None,
              steps_axis: int | None = 0) -> None:
        """Compare `arrays` ({key: array}) with the golden `name`; with --tolerance-update,
        write them as the golden instead. Fails the test (no traceback into this module)
        when a key is outside its bound, missing on one side, or of another shape/dtype."""
        import numpy as np

        from tolerance.io.reference import key_problem

        path = self.path(name)
        if not isinstance(arrays, Mapping) or not arrays:
            raise TypeError("arrays must be a non-empty mapping {key: array}")
        actual: dict[str, Any] = {}
        for key, value in arrays.items():
            if (why := key_problem(key)) is not None:
                raise ValueError(f"key {why}")
            a = np.asarray(value)
            if a.dtype.hasobject:
                raise TypeError(f"key {key!r}: object arrays cannot be golden (no pickle)")
            actual[key] = a
        bounds = {k: v for k, v in (("atol", atol), ("rtol", rtol), ("ulp", ulp))
                  if v is not None}
        if self.update:
            self._write(path, actual, bounds, steps_axis)
            return
        if not path.is_file():
            pytest.fail(f"golden {self._shown(path)} is missing; create it with:\n"
                        f"  pytest {_UPDATE} {self._nodeid!r}", pytrace=False)
        problems = self._compare(path, actual, bounds, steps_axis)
        if problems:
            shown = ", ".join(f"{k}" for k, _ in problems)
            lines = [f"golden {self._shown(path)}: {len(problems)} of {len(actual)} keys "
                     f"differ ({shown})"]
            for key, text in problems:
                lines.append(f"key {key!r}:")
                lines.append(textwrap.indent(text, "  "))
            lines.append(f"(refresh with: pytest {_UPDATE} {self._nodeid!r})")
            pytest.fail("\n".join(lines), pytrace=False)

    def _compare(self, path: Path, actual: Mapping[str, Any], bounds: Mapping[str, Any],
                 steps_axis: int | None) -> list[tuple[str, str]]:
        from tolerance import assert_bounded
        from tolerance._errors import FormatError
        from tolerance.compare.rows import incompatibility
        from tolerance.io.npz import Archive

        problems: list[tuple[str, str]] = []
        try:
            with Archive(path, verify_crc=True) as arc:
                for key in arc.keys():
                    if key not in actual:
                        problems.append((key, "in the golden, not given to check()"))
                for key, a in actual.items():
                    if key not in arc:
                        problems.append((key, "not in the golden (refresh it to add it)"))
                        continue
                    m = arc[key]
                    why = incompatibility(a.shape, a.dtype, m.shape, m.dtype,
                                          ulp=bounds.get("ulp"), steps_axis=steps_axis)
                    if why:
                        text = getattr(why, "message", why)  # a rows.Problem
                        problems.append((key, f"{text} (given vs golden)"))
                        continue
                    try:
                        assert_bounded(a, _whole(m), steps_axis=steps_axis, **bounds)
                    except AssertionError as exc:
                        problems.append((key, str(exc)))
        except FormatError as exc:
            pytest.fail(f"golden {self._shown(path)}: unreadable: {exc}", pytrace=False)
        return problems

    def _write(self, path: Path, actual: Mapping[str, Any], bounds: Mapping[str, Any],
               steps_axis: int | None) -> None:
        from tolerance.io.atomic import write_json, write_npz
        from tolerance.runner.env_fingerprint import (environment_fingerprint,
                                                      publishable_fingerprint)

        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, actual, overwrite=True)
        meta = {"schema": META_SCHEMA, "test": self._nodeid,
                "bounds": {k: bounds.get(k) for k in ("atol", "rtol", "ulp")},
                "steps_axis": steps_axis,
                "keys": {k: {"shape": list(a.shape), "dtype": a.dtype.str}
                         for k, a in actual.items()},
                "code": _code(path.parent),
                "environment": publishable_fingerprint(environment_fingerprint())}
        write_json(path.with_suffix(".json"), meta, overwrite=True)
        self._request.node.user_properties.append((_WRITTEN, str(path)))


@pytest.fixture
def tolerance_golden(request: Any) -> Golden:
    """Compare arrays with golden files beside the test: `tolerance_golden.check(name,
    {"key": array}, atol=None, rtol=None, ulp=None, steps_axis=0)`."""
    return Golden(request)


# --- the update summary (reports carry user_properties across pytest-xdist workers) ------

class _Summary:
    """Counts the goldens written in one session (on the controller under xdist)."""

    def __init__(self, config: Any):
        self.config = config
        self.written: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call":
            self.written += [v for k, v in getattr(report, "user_properties", ())
                             if k == _WRITTEN]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.getoption(_UPDATE):
            terminalreporter.write_line(f"tolerance: wrote {len(self.written)} golden "
                                        f"file(s) ({_UPDATE})")


def pytest_configure(config: Any) -> None:
    config.pluginmanager.register(_Summary(config), "tolerance-golden-summary")
