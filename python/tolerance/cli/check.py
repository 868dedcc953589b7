"""`tolerance check`: validate cluster.yaml and run specs, printing every problem."""
from __future__ import annotations

import json
from pathlib import Path

import click

from tolerance._errors import EXIT_ERROR, EXIT_OK, ConfigError
from tolerance.cli import _options
from tolerance.config.local import cluster_problems
from tolerance.config.spec import ALL_KEYS_NOTE
from tolerance.config import (SchemaProblems, default_cluster_path, list_stems,
                              load_default_cluster, load_spec)


def _problems(exc: ConfigError) -> list[str]:
    return list(exc.problems) if isinstance(exc, SchemaProblems) else [str(exc)]


@click.command("check", epilog="Exit codes: 0 no problem, 2 any problem.")
@click.argument("stems", nargs=-1)
@_options.cluster
@_options.specs
@_options.as_json
@click.pass_context
def check(ctx: click.Context, stems: tuple[str, ...], cluster_path: str | None,
          specs_dir: str | None, as_json: bool) -> None:
    """Validate cluster.yaml and the specs STEM... (default: every specs/*.yaml).

    Prints every problem, one line each (`<file>: <key path>: <problem>`); exits 2 on any.
    """
    problems: list[str] = []
    path = default_cluster_path(cluster_path)
    cluster = None
    try:
        cluster = load_default_cluster(cluster_path)
    except ConfigError as exc:
        problems += _problems(exc)
    sdir = Path(specs_dir) if specs_dir is not None else (
        cluster.specs_dir if cluster is not None else path.parent / "specs")
    names = list(stems)
    if not names:
        if not sdir.is_dir():
            problems.append(f"{sdir}: no such specs directory")
        names = list_stems(sdir)
    checked: dict[str, str] = {}
    all_keys: list[str] = []
    notes: list[str] = []
    for stem in names:
        try:
            spec = load_spec(stem, sdir)
        except ConfigError as exc:
            problems += _problems(exc)
            continue
        checked[spec.stem] = spec.identity_hash()
        if spec.keys is None:
            all_keys.append(spec.stem)
        named, found = _bounds_files_problems(spec, sdir, cluster)
        problems += named
        notes += found

    if cluster is not None:  # what would fail at run time on a box of this machine
        problems += cluster_problems(cluster, stems=list(checked))

    if as_json:
        click.echo(json.dumps({"cluster": str(path),
                               "boxes": list(cluster.names) if cluster else None,
                               "specs": checked, "all_keys": all_keys, "problems": problems,
                               "warnings": notes}, indent=2, sort_keys=True))
    else:
        for line in problems:
            click.echo(line)
        for line in notes:
            click.echo(f"(warn) {line}")
        if cluster is not None:
            click.echo(f"ok: {path}: {len(cluster.boxes)} boxes ({', '.join(cluster.names)})")
        for stem, digest in checked.items():
            click.echo(f"ok: {sdir / (stem + '.yaml')}: spec {digest[:12]}"
                       + (f"; {ALL_KEYS_NOTE}" if stem in all_keys else ""))
        if problems:
            click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}", err=True)
    ctx.exit(EXIT_ERROR if problems else EXIT_OK)


def _bounds_files_problems(spec, sdir: Path, cluster) -> tuple[list[str], list[str]]:
    """A spec's calibrated bounds files: the one it names (`bounds_file:`; a mismatch is a
    problem) and `<stem>.bounds.yaml` beside it (a mismatch is a warning). A different
    code commit is always only a warning: code moves on, bounds may still hold."""
    from tolerance.collective.code_fingerprint import code_fingerprint
    from tolerance.config.bounds_file import load_bounds_file

    problems: list[str] = []
    warnings: list[str] = []
    candidates = []
    if spec.bounds_file is not None:
        candidates.append((Path(spec.bounds_file), True))
    beside = sdir / f"{spec.stem}.bounds.yaml"
    if beside.is_file() and (spec.bounds_file is None
                             or beside.resolve() != Path(spec.bounds_file).resolve()):
        candidates.append((beside, False))
    commit = None
    if candidates and cluster is not None and cluster.boxes:
        commit = code_fingerprint(cluster.boxes[0].root).head
    for path, named in candidates:
        try:
            bf = load_bounds_file(path)
        except ConfigError as exc:
            (problems if named else warnings).extend(_problems(exc))
            continue
        for why in bf.mismatch(spec):
            (problems if named else warnings).append(f"{path}: {why}")
        if commit and bf.code_commit and commit != bf.code_commit:
            warnings.append(f"{path}: made at commit {bf.code_commit[:12]}, "
                            f"this checkout is at {commit[:12]}")
    return problems, warnings
