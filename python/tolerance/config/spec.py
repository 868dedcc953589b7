"""Run specs, schema v1: `specs/<stem>.yaml` says what to run, what to compare, how close."""
from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from tolerance.config._check import Checker, name_problem
from tolerance.config._yaml import SchemaProblems, key_path, load_yaml
from tolerance.config.chips import THREAD_VARS
from tolerance.config.local import KEY_SUFFIX, STEM_SUFFIX, name_length_problem

SCHEMA = 1
DEFAULT_OUTPUTS = "*.npz"
DEFAULT_TIMEOUT = 600.0
#: placeholders a `command` may use: the chip's output directory, its context file, the
#: interpreter that runs the chip (the one running tolerance on that box), and the box's
#: root (its project checkout, `boxes[].root` in cluster.yaml)
PLACEHOLDERS = ("out", "chip", "python", "root")
#: placeholders a spec's `env` values may use (the same values as in `command`)
ENV_PLACEHOLDERS = PLACEHOLDERS
#: what the report and `check` say when a spec lists no `keys:`
ALL_KEYS_NOTE = "keys: every key common to all boxes' outputs (the spec lists none)"

_SPEC_KEYS = ("schema", "description", "command", "python", "outputs", "keys", "bounds",
              "steps_axis", "env", "timeout", "bounds_file", "code")
_BOUND_KEYS = ("atol", "rtol", "ulp")
_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
                    r":[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

_BOX_LOCAL = "a box-local knob: it belongs in cluster.yaml ({where}), never in a spec"
_BOX_LOCAL_KEYS = {
    "threads": "boxes[].threads or boxes[].env",
    "nthreads": "boxes[].threads or boxes[].env",
    "num_threads": "boxes[].threads or boxes[].env",
    "chips": "boxes[].chips",
    "chip": "boxes[].chips",
    "memory": "the box's env or its scheduler",
    "mem": "the box's env or its scheduler",
    "memory_limit": "the box's env or its scheduler",
    "max_memory": "the box's env or its scheduler",
    "host": "boxes[].host",
    "hosts": "boxes[].host",
    "root": "boxes[].root",
    "boxes": "boxes",
    "box": "boxes",
}
#: environment variables that are box-local knobs (thread counts, device visibility,
#: BLAS kernel choice): never part of a run's identity
BOX_LOCAL_ENV = THREAD_VARS + ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                               "ROCR_VISIBLE_DEVICES", "OPENBLAS_CORETYPE")


@dataclass(frozen=True)
class Bounds:
    """The bound of one key. Each part is optional (None = unset): an element is inside when
    it meets every bound that is set (|a-b| <= atol + rtol*max(|a|,|b|) when atol or rtol is
    set, ULP <= ulp when ulp is set); a key with no bound set must be equal."""

    atol: float | None = None
    rtol: float | None = None
    ulp: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol, "ulp": self.ulp}


@dataclass(frozen=True)
class Spec:
    """One run spec (a stem). Exactly one of `command` and `python` is set."""

    stem: str
    command: tuple[str, ...] | None = None
    python: str | None = None
    outputs: str = DEFAULT_OUTPUTS
    #: the keys to compare; None: every key common to all boxes' outputs
    keys: tuple[str, ...] | None = None
    default_bounds: Bounds = Bounds()
    key_bounds: Mapping[str, Bounds] = field(default_factory=dict)
    steps_axis: int | None = 0
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    description: str | None = None
    path: Path | None = None
    #: a calibrated bounds file (`tolerance calibrate`), resolved against the spec's folder
    bounds_file: Path | None = None
    code: tuple[str, ...] = ()   # globs of untracked files that count as code (fingerprint)
    #: keys whose bound came from a bounds file (a later file may replace them; a bound
    #: written in the spec itself never is)
    calibrated: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.command is None) == (self.python is None):
            raise ValueError("a Spec needs exactly one of command and python")

    def bounds_for(self, key: str) -> Bounds:
        """The bound of `key`: its own entry, fields it leaves out taken from `default`."""
        return self.key_bounds.get(key, self.default_bounds)

    @property
    def bounds(self) -> dict[str, Bounds]:
        """Every listed key's resolved bound (with no `keys:`, the keys bounds names)."""
        keys = self.keys if self.keys is not None else tuple(self.key_bounds)
        return {k: self.bounds_for(k) for k in keys}

    def argv(self, *, out: str, chip: str, python: str, root: str) -> list[str]:
        """`command` with its placeholders filled in."""
        if self.command is None:
            raise ValueError(f"spec {self.stem!r} has no command (it uses python: {self.python})")
        values = {"out": out, "chip": chip, "python": python, "root": root}
        return [arg.format_map(values) for arg in self.command]

    def resolved_env(self, *, out: str, chip: str, python: str, root: str) -> dict[str, str]:
        """The spec's `env` with its placeholders ({root}, {out}, ...) filled in."""
        values = {"out": out, "chip": chip, "python": python, "root": root}
        return {k: v.format_map(values) for k, v in self.env.items()}

    def normalized(self) -> dict[str, Any]:
        """The spec as its identity sees it: every default filled in, no comments."""
        return {
            "schema": SCHEMA,
            "stem": self.stem,
            "command": list(self.command) if self.command is not None else None,
            "python": self.python,
            "outputs": self.outputs,
            "keys": list(self.keys) if self.keys is not None else None,
            "bounds": {"default": self.default_bounds.to_dict(),
                       **{k: b.to_dict() for k, b in sorted(self.key_bounds.items())}},
            "steps_axis": self.steps_axis,
            "env": dict(sorted(self.env.items())),
            "timeout": self.timeout,
            # only when set, so that every spec without it keeps its identity
            **({"code": list(self.code)} if self.code else {}),
        }

    def published(self) -> dict[str, Any]:
        """`normalized()` with every box-local knob stripped: what a reference publishes.

        The parser already refuses box-local keys and env variables in a spec; this
        strips them again so that no path can carry one into a published manifest.
        """
        d = self.normalized()
        d["env"] = {k: v for k, v in d["env"].items() if k not in BOX_LOCAL_ENV}
        for k in _BOX_LOCAL_KEYS:
            d.pop(k, None)
        return d

    def identity_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of `normalized()`: equal on every box that
        runs the same spec, whatever the box-local knobs."""
        text = json.dumps(self.normalized(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = self.normalized()
        d["description"] = self.description
        d["path"] = str(self.path) if self.path is not None else None
        return d


def _bounds(ck: Checker, raw: Any, path: str, base: Bounds) -> Bounds | None:
    data = ck.mapping(raw, path)
    if data is None:
        return None
    ck.keys(data, path, _BOUND_KEYS)
    before = len(ck.problems)
    atol, rtol, ulp = base.atol, base.rtol, base.ulp
    if "atol" in data:  # `atol: null` unsets an inherited bound
        atol = None if data["atol"] is None else \
            ck.number(data["atol"], key_path(path, "atol"), minimum=0.0)
    if "rtol" in data:
        rtol = None if data["rtol"] is None else \
            ck.number(data["rtol"], key_path(path, "rtol"), minimum=0.0)
    if "ulp" in data and data["ulp"] is not None:
        ulp = ck.integer(data["ulp"], key_path(path, "ulp"), minimum=0)
    elif "ulp" in data:
        ulp = None
    if len(ck.problems) > before:
        return None
    return Bounds(atol=None if atol is None else float(atol),  # type: ignore[arg-type]
                  rtol=None if rtol is None else float(rtol), ulp=ulp)


def _bounds_section(ck: Checker, raw: Any, keys: tuple[str, ...] | None
                    ) -> tuple[Bounds, dict[str, Bounds]]:
    """A `bounds:` mapping (`default` and one entry per key) -> (default, per-key bounds)."""
    default = Bounds()
    key_bounds: dict[str, Bounds] = {}
    listed = frozenset(keys) if keys is not None else None   # linear in the keys
    if raw is None:
        return default, key_bounds
    bdoc = ck.mapping(raw, "bounds")
    if bdoc is None:
        return default, key_bounds
    if "default" in bdoc:
        default = _bounds(ck, bdoc["default"], key_path("bounds", "default"), Bounds()) or default
    for key, braw in bdoc.items():
        if key == "default":
            continue
        kp = key_path("bounds", key)
        if key in _BOUND_KEYS and (listed is None or key not in listed):
            ck.add(kp, f"put {key} under bounds.default or under a key "
                       f"(bounds.{keys[0] if keys else 'KEY'}.{key})")
            continue
        if listed is not None and key not in listed:
            shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} keys)" if len(keys) > 10 else "")
            ck.add(kp, f"{key!r} is not one of keys ({shown})")
            continue
        b = _bounds(ck, braw, kp, default)
        if b is not None:
            key_bounds[key] = b
    return default, key_bounds


def load_bounds(path: Path | str, keys: tuple[str, ...],
                spec: "Spec | None" = None) -> dict[str, Bounds]:
    """The bounds of a file given on the command line, per key it bounds.

    Either `bounds:` as in a spec (`default` and one entry per key: every key of `keys`
    gets its resolved bound), or a calibrated bounds file (`tolerance calibrate`, schema
    `tolerance.bounds/1`: the keys it gives a scalar atol/rtol; it must have been made
    for `spec`). Raises SchemaProblems / ConfigError naming the file.
    """
    p = Path(path)
    data = load_yaml(p, str(p))
    if isinstance(data, dict) and "schema" in data:
        from tolerance.config.bounds_file import SCHEMA as CALIBRATED, parse_bounds_file

        if data["schema"] == CALIBRATED:
            bf = parse_bounds_file(data, path=p, display=str(p))
            why = bf.mismatch(spec) if spec is not None else []
            if why:
                raise SchemaProblems([f"{p}: top level: {'; '.join(why)}"])
            return {k: Bounds(**{n: v for n, v in (("atol", kc.atol), ("rtol", kc.rtol))
                                 if v is not None})
                    for k, kc in bf.keys.items() if kc.atol is not None or kc.rtol is not None}
    ck = Checker(str(p))
    doc = ck.mapping(data, "")
    if doc is not None:
        ck.keys(doc, "", ("bounds",))
        if "bounds" not in doc:
            ck.add("bounds", "missing (write 'bounds: {default: {atol: ...}, KEY: {...}}')")
    if ck.problems:
        raise SchemaProblems(ck.problems)
    default, key_bounds = _bounds_section(ck, doc["bounds"], tuple(keys))
    if ck.problems:
        raise SchemaProblems(ck.problems)
    return {k: key_bounds.get(k, default) for k in keys}


def spec_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the fields where two spec documents differ (sorted)."""
    out: list[str] = []
    for k in sorted(set(a) | set(b), key=str):
        name = f"{prefix}{k}"
        va, vb = a.get(k, _ABSENT), b.get(k, _ABSENT)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(spec_differences(va, vb, name + "."))
        elif va != vb or type(va) is not type(vb) and not (
                isinstance(va, (int, float)) and isinstance(vb, (int, float))
                and not isinstance(va, bool) and not isinstance(vb, bool)):
            out.append(name)
    return out


_ABSENT = object()


def _placeholder_problem(text: str) -> str | None:
    """Why `text` is not a valid template of PLACEHOLDERS, or None. A placeholder is only
    `{name}`: a format spec (`{out:>300000}` would make a 300 kB argument) or a conversion
    (`{out!r}`) is refused."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text)
                 if f is not None]
    except ValueError as exc:
        return f"bad placeholder in {shown!r}: {exc} (write '{{{{' for a literal brace)"
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for field, spec, conv in parts:
        if field not in PLACEHOLDERS:
            name = field if len(field) <= 40 else field[:37] + "..."
            return (f"unknown placeholder {{{name}}} in {shown!r} (known: {known}; "
                    "write '{{' for a literal brace)")
        if spec or conv:
            extra = (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            extra = extra if len(extra) <= 40 else extra[:37] + "..."
            return (f"placeholder {{{field}{extra}}} in {shown!r}: a placeholder takes no "
                    f"format spec or conversion (write {{{field}}})")
    return None


def _command(ck: Checker, raw: Any, path: str) -> tuple[str, ...] | None:
    if isinstance(raw, str):
        ck.add(path, "must be a list of arguments (argv), not a string: "
                     f"write [{', '.join(raw.split()[:3])}{', ...' if len(raw.split()) > 3 else ''}]")
        return None
    items = ck.list_of(raw, path)
    if items is None:
        return None
    if not items:
        ck.add(path, "must not be empty")
        return None
    out: list[str] = []
    ok = True
    for i, item in enumerate(items):
        ip = key_path(path, i)
        text = ck.scalar_string(item, ip)
        if text is None:
            ok = False
            continue
        if (why := _placeholder_problem(text)) is not None:
            ck.add(ip, why)
            ok = False
            continue
        out.append(text)
    return tuple(out) if ok else None


def parse_spec(data: Any, *, stem: str, display: str | None = None,
               path: Path | None = None, check_files: bool = True) -> Spec:
    """Validate a decoded spec document. Raises SchemaProblems listing every problem.
    check_files: whether a file the spec names (`bounds_file:`) must exist here (False
    where its content travels with the job's inputs, collective.inputs)."""
    display = display if display is not None else f"specs/{stem}.yaml"
    ck = Checker(display)
    if (why := name_problem(stem) or name_length_problem(stem, STEM_SUFFIX)) is not None:
        ck.add("", f"stem {why}")
    if data is None:
        ck.add("", "empty file (expected 'schema: 1' and 'command:' or 'python:')")
        raise SchemaProblems(ck.problems)
    doc = ck.mapping(data, "")
    if doc is None:
        raise SchemaProblems(ck.problems)
    hints = {k: _BOX_LOCAL.format(where=w) for k, w in _BOX_LOCAL_KEYS.items()}
    ck.keys(doc, "", _SPEC_KEYS, hints)

    if "schema" not in doc:
        ck.add("schema", f"missing (required; write 'schema: {SCHEMA}')")
    elif isinstance(doc["schema"], bool) or doc["schema"] != SCHEMA:
        ck.add("schema", f"unsupported schema {doc['schema']!r} (this tolerance reads schema {SCHEMA})")

    description = None
    if doc.get("description") is not None:
        description = ck.string(doc["description"], "description", nonempty=False)

    command = python = None
    has_cmd, has_py = doc.get("command") is not None, doc.get("python") is not None
    if has_cmd and has_py:
        ck.add("python", "give either 'command' or 'python', not both")
    elif not has_cmd and not has_py:
        ck.add("command", "missing (required: 'command' (argv list) or 'python' (module:function))")
    elif has_cmd:
        command = _command(ck, doc["command"], "command")
    else:
        python = ck.string(doc["python"], "python")
        if python is not None and not _ENTRY.match(python):
            ck.add("python", f"{python!r} is not module:function (e.g. 'tolerance.examples.lorenz:main')")
            python = None

    outputs = DEFAULT_OUTPUTS
    if "outputs" in doc:
        text = ck.string(doc["outputs"], "outputs")
        if text is not None:
            parts = PurePosixPath(text).parts
            if text.startswith(("/", "\\")) or "\\" in text or ".." in parts or "." in parts:
                ck.add("outputs", f"{text!r} must be a glob relative to the chip's directory "
                                  "(no absolute path, no '.' or '..' parts)")
            else:
                outputs = text

    keys: tuple[str, ...] | None = None  # unset: every key common to all boxes' outputs
    if "keys" in doc and doc["keys"] is not None:
        items = ck.string_list(doc["keys"], "keys")
        for i, key in enumerate(list(items)):
            if (why := name_length_problem(key, KEY_SUFFIX)) is not None:
                ck.add(key_path("keys", i), f"key {why}")
        if isinstance(doc["keys"], list) and not doc["keys"]:
            ck.add("keys", "must list at least one key (or leave 'keys' out to compare "
                           "every key common to all boxes)")
        keys = tuple(items)

    default, key_bounds = _bounds_section(ck, doc.get("bounds"), keys)

    steps_axis: int | None = 0
    if "steps_axis" in doc and doc["steps_axis"] is not None:
        steps_axis = ck.integer(doc["steps_axis"], "steps_axis")
    elif "steps_axis" in doc:
        steps_axis = None

    env: dict[str, str] = {}
    if "env" in doc and doc["env"] is not None:
        env = ck.env(doc["env"], "env")
        for name in list(env):
            if name in BOX_LOCAL_ENV:
                ck.add(key_path("env", name),
                       _BOX_LOCAL.format(where="boxes[].env" + (" or boxes[].threads"
                                                                if name in THREAD_VARS else "")))
                del env[name]
        for name, text in list(env.items()):
            if (why := _placeholder_problem(text)) is not None:
                ck.add(key_path("env", name), why)
                del env[name]

    bounds_file = None
    if doc.get("bounds_file") is not None:
        text = ck.string(doc["bounds_file"], "bounds_file")
        if text is not None:
            bounds_file = Path(text) if path is None else (path.parent / text)
            if check_files and path is not None and not bounds_file.is_file():
                ck.add("bounds_file", f"{bounds_file}: no such file (make it with "
                                      f"`tolerance calibrate {stem}`)")

    timeout = DEFAULT_TIMEOUT
    if "timeout" in doc:
        t = ck.number(doc["timeout"], "timeout", positive=True)
        timeout = t if t is not None else timeout

    code: tuple[str, ...] = ()
    if doc.get("code") is not None:
        globs = ck.string_list(doc["code"], "code")
        for i, g in enumerate(globs or []):
            parts = PurePosixPath(g).parts
            if g.startswith("/") or "\\" in g or ".." in parts:
                ck.add(key_path("code", i), f"{g!r} must be a glob relative to the box root "
                                            "(no absolute path, no '..')")
        code = tuple(globs or ())

    if ck.problems:
        raise SchemaProblems(ck.problems)
    return Spec(stem=stem, command=command, python=python, outputs=outputs, keys=keys,
                default_bounds=default, key_bounds=key_bounds, steps_axis=steps_axis, env=env,
                timeout=timeout, description=description, path=path, bounds_file=bounds_file,
                code=code)


def spec_path(stem: str, specs_dir: Path | str) -> Path:
    """`<specs_dir>/<stem>.yaml` for a path-safe stem (ConfigError otherwise)."""
    if (why := name_problem(stem)) is not None:
        raise SchemaProblems([f"{Path(specs_dir) / (stem + '.yaml')}: top level: stem {why}"])
    return Path(specs_dir) / f"{stem}.yaml"


def load_spec(stem_or_path: str | Path, specs_dir: Path | str | None = None) -> Spec:
    """Load a spec by stem (looked up in `specs_dir`, default `./specs`) or by the path of
    a `.yaml`/`.yml` file (its stem is the file name without the suffix)."""
    text = str(stem_or_path)
    if isinstance(stem_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        p = Path(stem_or_path)
        stem = p.stem if p.suffix in (".yaml", ".yml") else p.name
    else:
        p = spec_path(text, specs_dir if specs_dir is not None else "specs")
        stem = text
    data = load_yaml(p, str(p))
    spec = parse_spec(data, stem=stem, display=str(p), path=p)
    if spec.bounds_file is not None:
        spec = with_run_overrides(spec, bounds_path=spec.bounds_file)
    return spec


def list_stems(specs_dir: Path | str) -> list[str]:
    """The stems of every `*.yaml` file in `specs_dir`, sorted."""
    d = Path(specs_dir)
    if not d.is_dir():
        return []
    # `<stem>.bounds.yaml` files are calibrated bounds (tolerance calibrate), not specs
    return sorted(p.stem for p in d.glob("*.yaml")
                  if p.is_file() and not p.name.endswith(".bounds.yaml"))


def with_run_overrides(spec: Spec, *, env: Mapping[str, str] | None = None,
                       bounds_path: str | Path | None = None) -> Spec:
    """The spec one run uses: `env` over the spec's env (a run's extra variables, e.g. a
    calibration replica's or a triage cell's: part of the run's identity), and a
    calibrated bounds file's bounds on the keys the spec leaves unbounded."""
    from dataclasses import replace

    if env:
        spec = replace(spec, env={**spec.env, **env})
    if bounds_path is not None:
        from tolerance.config.bounds_file import apply_bounds_file, load_bounds_file

        spec = apply_bounds_file(spec, load_bounds_file(bounds_path))
    return spec
