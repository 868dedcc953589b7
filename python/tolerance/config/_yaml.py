"""Strict YAML reading: safe types only, duplicate keys rejected with their key path.

A YAML document is composed to nodes first, checked for duplicate mapping keys (which
`yaml.safe_load` silently lets the last one win), then constructed with a SafeLoader.
Floats are read the YAML 1.2 way too, so `1e-6` is a number, not the string '1e-6'.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tolerance._errors import ConfigError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def key_path(parent: str, key: object) -> str:
    """`boxes[2]`, `bounds.z_b`, `env["a.b"]`: the printable path of one child."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{parent}[{key}]"
    text = str(key)
    if _IDENT.match(text):
        return f"{parent}.{text}" if parent else text
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{parent}[{quoted}]"


class SchemaProblems(ConfigError):
    """One or more problems in one or more files.

    `problems` holds every line (`<file>: <key path>: <problem>`); `str()` is one line:
    the first problem, and how many more there are.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        first = self.problems[0] if self.problems else "invalid configuration"
        more = len(self.problems) - 1
        if more > 0:
            first += f" (and {more} more problem{'s' if more > 1 else ''}: run 'tolerance check')"
        super().__init__(first)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-6`)."""


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _duplicates(node: yaml.Node, path: str, loader: StrictLoader, out: list[str],
                display: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                try:
                    key = loader.construct_object(key_node, deep=True)
                except yaml.YAMLError:
                    key = key_node.value
                try:
                    hash(key)
                except TypeError:
                    key = key_node.value
                line = key_node.start_mark.line + 1
                if key in seen:
                    out.append(f"{display}: {key_path(path, key)}: duplicate key "
                               f"(line {line}; first on line {seen[key]})")
                else:
                    seen[key] = line
                child = key_path(path, key)
            else:
                child = path
            _duplicates(value_node, child, loader, out, display)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, key_path(path, i), loader, out, display)


def load_yaml(path: Path | str, display: str | None = None) -> Any:
    """Read one YAML document strictly. Raises SchemaProblems naming the file."""
    display = display if display is not None else str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaProblems([f"{display}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaProblems([f"{display}: cannot read: {exc}"]) from None
    return loads_yaml(text, display)


def loads_yaml(text: str, display: str) -> Any:
    loader = StrictLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "top level"
            problem = " ".join(str(x) for x in (exc.context, exc.problem) if x)
            raise SchemaProblems([f"{display}: {where}: YAML syntax: {problem}"]) from None
        except yaml.YAMLError as exc:
            raise SchemaProblems([f"{display}: top level: YAML: {exc}"]) from None
        if node is None:
            return None
        dups: list[str] = []
        _duplicates(node, "", loader, dups, display)
        if dups:
            raise SchemaProblems(dups)
        try:
            return loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "top level"
            raise SchemaProblems([f"{display}: {where}: YAML: {exc.problem}"]) from None
    finally:
        loader.dispose()
