"""Strict YAML reading: bounded, linear, safe types only, every fault one line naming the file.

Every configuration file the tool reads (cluster.yaml, specs, calibrated bounds files,
recipes, and the registry and spec text a job carries to its ranks) goes through
`load_yaml` / `loads_yaml`:

1. the input is capped: a file is `stat`ed first and must be a regular file (a FIFO, a
   device such as `/dev/zero`, a directory is named and refused before it is opened), at
   most `MAX_BYTES` bytes are read (`MAX_BYTES + 1` tells a file that grew);
2. the text must be UTF-8 (a bad byte is named by line and column) without control
   characters (NUL and friends are named by line and column);
3. the parser's events are composed into nodes by one iterative pass (no recursion) that
   counts every node *as expanded* (an alias counts as the whole node it names), so an
   alias bomb stops at `MAX_NODES` nodes after reading its first kilobyte; nesting (also
   through aliases) stops at `MAX_DEPTH` levels; an alias inside its own anchor is
   refused; duplicate mapping keys (which `yaml.safe_load` lets the last one win) are
   found in the same pass with one dict per mapping;
4. the nodes are constructed with a SafeLoader whose floats are read the YAML 1.2 way too
   (`1e-6` is a number, not the string '1e-6'); a value that cannot be built (an unknown
   tag, a date that does not exist, an integer of 10,000 digits) is named by line.

Each step is linear in the input, so any file is answered within a fraction of a second.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (AliasEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent, StreamEndEvent)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from tolerance._errors import ConfigError

#: the largest configuration file read (bytes)
MAX_BYTES = 1 << 20
#: the most nodes a document may hold once every alias is expanded
MAX_NODES = 200_000
#: the deepest nesting of sequences and mappings (also through aliases)
MAX_DEPTH = 64

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# what YAML 1.1 (and PyYAML's reader) allows in a stream
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_CONTROL_NAMES = {0: "NUL", 0x1B: "ESC", 0x7F: "DEL", 0xFEFF: "BOM"}


def key_path(parent: str, key: object) -> str:
    """`boxes[2]`, `bounds.z_b`, `env["a.b"]`: the printable path of one child."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{parent}[{key}]"
    text = str(key)
    if len(text) > 80:
        text = text[:77] + "..."
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


class _Resolver(Resolver):
    """The SafeLoader's resolver plus YAML 1.2 floats (`1e-6`)."""


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class _Constructor(SafeConstructor):
    """SafeConstructor that names the node of a value it cannot build (ValueError and the
    like become a ConstructorError with the node's line)."""

    def construct_object(self, node, deep=False):  # type: ignore[override]
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise ConstructorError(None, None, f"cannot read this value: {exc}",
                                   node.start_mark) from None


class _Builder(_Constructor, _Resolver):
    """Resolves tags while composing and constructs the composed document."""

    def __init__(self) -> None:
        _Constructor.__init__(self)
        _Resolver.__init__(self)


class StrictLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                   yaml.composer.Composer, _Constructor, _Resolver):
    """A plain-Python SafeLoader with YAML 1.2 floats (`1e-6`), for callers that want a
    Loader class; `load_yaml` itself adds the caps and checks of this module."""

    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


class _PyEvents(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """Events from the pure-Python parser (when libyaml is not available)."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


try:  # libyaml's parser (about 20x faster), when PyYAML was built with it
    from yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover - a PyYAML without libyaml
    _CParser = None


def _events(text: str):
    return _CParser(text) if _CParser is not None else _PyEvents(text)


class _Refused(Exception):
    """A limit or a structural fault found while composing: (where, problem)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.where, self.problem = where, problem


def _at(mark) -> str:
    return f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "top level"


class _Frame:
    __slots__ = ("node", "path", "size", "height", "key", "seen", "anchor")

    def __init__(self, node, path: str, anchor: str | None) -> None:
        self.node, self.path, self.anchor = node, path, anchor
        self.size = 1        # this node and everything below it, aliases expanded
        self.height = 1      # levels of collections from here down, aliases expanded
        self.key = None      # a mapping's key node waiting for its value
        self.seen: dict[Any, int] | None = {} if isinstance(node, MappingNode) else None


_STR_TAG = "tag:yaml.org,2002:str"


def _key_value(keys: _Constructor, node) -> Any:
    """The value a scalar key stands for (so `1` and `0x1` are one key), else its text."""
    if node.tag == _STR_TAG:
        return node.value
    try:
        key = keys.construct_object(node, deep=True)
        hash(key)
        return key
    except Exception:  # noqa: BLE001 - an unbuildable key is compared by its text
        keys.recursive_objects.clear()
        keys.constructed_objects.clear()
        return node.value


def _compose(parser, builder: _Builder, display: str, dups: list[str]):
    """The document's root node (None for an empty stream), composed in one pass."""
    parser.get_event()                                   # StreamStart
    if parser.check_event(StreamEndEvent):
        parser.get_event()
        return None
    parser.get_event()                                   # DocumentStart
    anchors: dict[str, Any] = {}
    sizes: dict[int, tuple[int, int]] = {}               # id(anchored node) -> (size, height)
    open_anchors: set[int] = set()
    keys = _Constructor()
    stack: list[_Frame] = []
    total = 0
    root = None

    def child_path() -> str:
        if not stack:
            return ""
        top = stack[-1]
        if isinstance(top.node, SequenceNode):
            return key_path(top.path, len(top.node.value))
        if top.key is None or not isinstance(top.key, ScalarNode):
            return top.path
        return key_path(top.path, _key_value(keys, top.key))

    def anchor(name: str | None, node, event) -> None:
        if name is None:
            return
        if name in anchors:
            raise _Refused(_at(event.start_mark),
                           f"YAML: anchor &{name} is defined twice (first on line "
                           f"{anchors[name].start_mark.line + 1})")
        anchors[name] = node

    def attach(node, size: int, height: int, path: str) -> None:
        nonlocal root
        if len(stack) + height > MAX_DEPTH:
            raise _Refused(_at(node.start_mark),
                           f"nested more than {MAX_DEPTH} levels deep (aliases expanded)")
        if not stack:
            root = node
            return
        top = stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.node, SequenceNode):
            top.node.value.append(node)
            return
        if top.key is None:
            top.key = node
            return
        knode, top.key = top.key, None
        top.node.value.append((knode, node))
        if isinstance(knode, ScalarNode):
            key = _key_value(keys, knode)
            line = knode.start_mark.line + 1
            first = top.seen.get(key)  # type: ignore[union-attr]
            if first is not None:
                dups.append(f"{display}: {key_path(top.path, key)}: duplicate key "
                            f"(line {line}; first on line {first})")
            else:
                top.seen[key] = line  # type: ignore[index]

    implicit_resolvers = builder.yaml_implicit_resolvers
    wildcard = implicit_resolvers.get(None, [])
    get_event = parser.get_event
    while root is None:
        event = get_event()
        cls = type(event)
        if cls is ScalarEvent:           # the common case first, and kept short
            total += 1
            if total > MAX_NODES:
                raise _Refused(_at(event.start_mark), f"more than {MAX_NODES} nodes")
            tag, value = event.tag, event.value
            if tag is None or tag == "!":
                tag = None
                if event.implicit[0]:    # Resolver.resolve, inlined for speed
                    for rtag, regexp in implicit_resolvers.get(value[:1], []) + wildcard:
                        if regexp.match(value):
                            tag = rtag
                            break
                if tag is None:
                    tag = builder.DEFAULT_SCALAR_TAG
            node = ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
            if event.anchor is not None:
                anchor(event.anchor, node, event)
                sizes[id(node)] = (1, 0)
            if stack and stack[-1].seen is None:   # an item of a sequence
                top = stack[-1]
                top.size += 1
                top.node.value.append(node)
            else:
                attach(node, 1, 0, "")
        elif cls is AliasEvent:
            target = anchors.get(event.anchor)
            if target is None:
                raise _Refused(_at(event.start_mark), f"YAML: alias *{event.anchor} names no anchor")
            if id(target) in open_anchors:
                raise _Refused(_at(event.start_mark),
                               f"YAML: recursive alias *{event.anchor} (used inside its own anchor)")
            size, height = sizes.get(id(target), (1, 0))
            total += size
            if total > MAX_NODES:
                raise _Refused(_at(event.start_mark),
                               f"more than {MAX_NODES} nodes once aliases are expanded "
                               f"(alias *{event.anchor} adds {size})")
            attach(target, size, height, child_path())
        elif isinstance(event, (SequenceStartEvent, MappingStartEvent)):
            total += 1
            if total > MAX_NODES:
                raise _Refused(_at(event.start_mark), f"more than {MAX_NODES} nodes")
            if len(stack) + 1 > MAX_DEPTH:
                raise _Refused(_at(event.start_mark), f"nested more than {MAX_DEPTH} levels deep")
            seq = isinstance(event, SequenceStartEvent)
            kind = SequenceNode if seq else MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = builder.resolve(kind, None, event.implicit)
            node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
            anchor(event.anchor, node, event)
            path = child_path()
            if event.anchor is not None:
                open_anchors.add(id(node))
            stack.append(_Frame(node, path, event.anchor))
        elif isinstance(event, (SequenceEndEvent, MappingEndEvent)):
            frame = stack.pop()
            frame.node.end_mark = event.end_mark
            if frame.anchor is not None:
                open_anchors.discard(id(frame.node))
                sizes[id(frame.node)] = (frame.size, frame.height)
            # the node's own 1 was counted at its start; only its shape is checked here
            size, height = frame.size, frame.height
            if not stack:
                if len(stack) + height > MAX_DEPTH:
                    raise _Refused(_at(frame.node.start_mark),
                                   f"nested more than {MAX_DEPTH} levels deep (aliases expanded)")
                root = frame.node
            else:
                attach(frame.node, size, height, frame.path)
        else:  # pragma: no cover - the parser yields nothing else inside a document
            raise _Refused(_at(getattr(event, "start_mark", None)),
                           f"YAML: unexpected {type(event).__name__}")
    parser.get_event()                                   # DocumentEnd
    if not parser.check_event(StreamEndEvent):
        event = parser.peek_event()
        raise _Refused(_at(event.start_mark),
                       "YAML: more than one document (a configuration file holds one)")
    return root


def _text_problem(text: str) -> str | None:
    """Why `text` cannot be YAML (a control character), as `line L column C: ...`."""
    m = _NON_PRINTABLE.search(text)
    if m is None:
        return None
    k = m.start()
    line = text.count("\n", 0, k) + 1
    col = k - (text.rfind("\n", 0, k) + 1) + 1
    code = ord(m.group())
    name = _CONTROL_NAMES.get(code)
    what = f"U+{code:04X}" + (f" ({name})" if name else "")
    return f"line {line} column {col}: control character {what} is not allowed in YAML"


def read_config(path: Path | str, display: str | None = None, *, limit: int = MAX_BYTES) -> str:
    """The text of one configuration file: a regular file of at most `limit` bytes of
    UTF-8. Raises SchemaProblems naming the file (never blocks on a FIFO or a device)."""
    display = display if display is not None else str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SchemaProblems([f"{display}: no such file"]) from None
    except OSError as exc:
        raise SchemaProblems([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    if not stat.S_ISREG(st.st_mode):
        raise SchemaProblems([f"{display}: {_kind(st.st_mode)}, not a regular file "
                              "(a configuration file must be a plain YAML file)"])
    if st.st_size > limit:
        raise SchemaProblems([f"{display}: {st.st_size} bytes, more than the {limit}-byte "
                              "limit of a configuration file"])
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SchemaProblems([f"{display}: no such file"]) from None
    except OSError as exc:
        raise SchemaProblems([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
            raise SchemaProblems([f"{display}: {_kind(st.st_mode)}, not a regular file"])
        chunks, got = [], 0
        while got <= limit:
            block = os.read(fd, min(1 << 16, limit + 1 - got))
            if not block:
                break
            chunks.append(block)
            got += len(block)
    except OSError as exc:
        raise SchemaProblems([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise SchemaProblems([f"{display}: more than the {limit}-byte limit of a "
                              "configuration file"])
    return decode_config(data, display)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def decode_config(data: bytes, display: str) -> str:
    """UTF-8 bytes (an optional BOM) as text; SchemaProblems naming the first bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SchemaProblems([f"{display}: line 1 column 1: UTF-16 text (save it as UTF-8)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        k = exc.start
        line = data.count(b"\n", 0, k) + 1
        col = k - (data.rfind(b"\n", 0, k) + 1) + 1
        raise SchemaProblems([f"{display}: line {line} column {col}: not UTF-8 text "
                              f"(byte 0x{data[k]:02x}: {exc.reason})"]) from None
    return text[1:] if text.startswith("\ufeff") else text


def load_yaml(path: Path | str, display: str | None = None) -> Any:
    """Read one YAML document strictly. Raises SchemaProblems naming the file."""
    display = display if display is not None else str(path)
    return loads_yaml(read_config(path, display), display)


def loads_yaml(text: str, display: str) -> Any:
    """One YAML document from `text` (the content of `display`), with every check of this
    module. Raises SchemaProblems naming `display`."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SchemaProblems([f"{display}: more than the {MAX_BYTES}-byte limit of a "
                              "configuration file"])
    if (why := _text_problem(text)) is not None:
        raise SchemaProblems([f"{display}: {why}"])
    builder = _Builder()
    dups: list[str] = []
    parser = None
    try:
        parser = _events(text)
        node = _compose(parser, builder, display, dups)
        if node is None:
            return None
        if dups:
            raise SchemaProblems(dups)
        return builder.construct_document(node)
    except _Refused as exc:
        raise SchemaProblems([f"{display}: {exc.where}: {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        syntax = not isinstance(exc, ConstructorError)
        problem = " ".join(str(x) for x in (exc.context, exc.problem) if x) if syntax \
            else str(exc.problem)
        problem = " ".join(problem.split())
        raise SchemaProblems([f"{display}: {_at(mark)}: YAML{' syntax' if syntax else ''}: "
                              f"{problem}"]) from None
    except yaml.YAMLError as exc:
        raise SchemaProblems([f"{display}: top level: YAML: {' '.join(str(exc).split())}"]) from None
    except RecursionError:
        raise SchemaProblems([f"{display}: top level: nested too deeply to read"]) from None
    except MemoryError:
        raise SchemaProblems([f"{display}: top level: too large to read in memory"]) from None
    finally:
        if parser is not None and hasattr(parser, "dispose"):
            parser.dispose()
