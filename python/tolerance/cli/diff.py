"""`tolerance diff INPUT INPUT [INPUT ...]`: every pair of output files, or stored runs box
by box; every key, streamed through the one pair engine."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click
from click.core import ParameterSource

from tolerance._errors import FormatError, ToleranceError
from tolerance.cli import _options as opt
from tolerance.cli.runs import root_option, run_roots

EXIT_CODES_HELP = ("Exit codes: 0 every row within bound, 1 a bound exceeded (or a NaN/inf "
                   "mismatch), 2 error (unreadable or malformed input, a report file given as "
                   "an input, a run with no boxes, runs mixed with files), 3 some row "
                   "unmeasured (missing key or box, a box without output, shape or dtype "
                   "mismatch) and none exceeded.")


@click.command("diff", epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, required=True, metavar="INPUT...")
@opt.keys
@opt.bounds
@opt.steps_axis
@opt.chunk_mb
@opt.threads
@opt.as_json
@opt.series
@opt.quiet
@opt.no_legend
@opt.bounds_file
@click.option("--spec", "spec_name", default=None, metavar="STEM",
              help="Take the bounds per key, the steps axis and the keys of this spec "
                   "(a stem of --specs, or a .yaml path); --atol/--rtol/--ulp, "
                   "--steps-axis and --keys given on the command line still win.")
@opt.specs
@opt.cluster
@click.option("--all-pairs", is_flag=True,
              help="Runs: compare every box of one run with every box of the other (default: "
                   "the same box in each run).")
@root_option
@click.pass_context
def diff(ctx, paths, keys, atol, rtol, ulp, steps_axis, chunk_mb, threads, as_json,
         series_path, quiet, no_legend, bounds_path, spec_name, specs_dir, cluster_path,
         all_pairs, roots):
    """Compare output files pairwise, or stored runs box by box: max |a-b| per key and step.

    An INPUT is an .npz/.npy file, a directory (its newest .npz by modification time; a
    run's <box>/ directory: that box's outputs), or a stored run: a run directory
    (runs/STEM/RUN_ID), or by name STEM/RUN_ID, STEM (its newest run) or STEM~N (the run N
    before the newest). One run: every pair of its boxes. Two runs: the same box in each
    (--all-pairs: every box of one against every box of the other). The bounds of a stored
    run are the ones its report.json recorded, unless --spec or --atol/--rtol/--ulp say
    otherwise. Report files (report.json, series.npz, summary.md, box.json) are never
    inputs.
    """
    from tolerance.compare.report import (diff_document, legend_lines, outlier_lines,
                                          series_arrays, summarize)
    from tolerance.compare.rows import as_bound
    from tolerance.io.atomic import write_npz

    file_bounds = None
    if bounds_path is not None:  # read first (as before): a bad bounds file is said first
        from tolerance.config.bounds_file import load_bounds_file

        file_bounds = load_bounds_file(bounds_path)
    if len(paths) == 1 and (Path(paths[0]).is_file() or paths[0].endswith((".npz", ".npy"))):
        raise click.UsageError("give at least two inputs (or one stored run)")
    runs, (files, file_labels) = _classify(paths, lambda: run_roots(roots, cluster_path))
    if runs and files:
        raise ToleranceError(f"{files[0]} is not a stored run and {runs[0]} is: give runs "
                             "only, or output files only")
    if not runs and len(files) < 2:
        raise click.UsageError("give at least two inputs (or one stored run)")
    if all_pairs and len(runs) < 2:
        raise click.UsageError("--all-pairs compares the boxes of two or more stored runs")
    cli_bound = any(v is not None for v in (atol, rtol, ulp))
    axis_given = ctx.get_parameter_source("steps_axis") not in (ParameterSource.DEFAULT, None)

    from tolerance.config.spec import Bounds

    bound, key_bounds, source, warnings = Bounds(atol=atol, rtol=rtol, ulp=ulp), {}, None, []
    source_file = None
    if cli_bound:
        source = "the command line"
    run_inputs = []
    if runs:
        from tolerance.runner.stored_diff import label_runs, open_run, recorded_terms

        run_inputs = [open_run(p, k) for k, p in enumerate(runs)]
        label_runs(run_inputs)
    if spec_name is not None:
        from tolerance.config.spec import with_run_overrides

        spec = _load_spec(spec_name, specs_dir, cluster_path)
        if not cli_bound:
            if bounds_path is not None:  # as `run --bounds`: the spec's own per-key bounds win
                spec = with_run_overrides(spec, bounds_path=bounds_path)
                source_file, bounds_path = bounds_path, None
            bound, key_bounds = spec.default_bounds, dict(spec.key_bounds)
            source = f"spec {spec.stem} ({spec.path})"
            if source_file is not None:
                source += f" and bounds file {source_file}"
        if not axis_given:
            steps_axis = spec.steps_axis
        if keys is None and spec.keys is not None:
            keys = list(spec.keys)
    elif run_inputs:
        rec, warnings = recorded_terms(run_inputs)
        if rec is not None:
            if not cli_bound:
                bound, key_bounds = Bounds(), dict(rec["bounds"])
                source = (f"run {rec['run']}'s report.json (stem {rec['stem']}; the bounds the "
                          "run used)")
            if not axis_given:
                steps_axis = rec["steps_axis"]
            if keys is None and rec["keys"] is not None:
                keys = list(rec["keys"])
    if bounds_path is not None:  # a calibrated bounds file: its bound on every key it bounds
        from tolerance.config.bounds_file import file_key_bounds

        key_bounds.update(file_key_bounds(file_bounds))
        source = (source + " and " if source else "") + f"bounds file {bounds_path}"
    show = not as_json and not quiet
    shown: list = []   # the rows printed (the legend explains their columns)

    if run_inputs:
        result, n_inputs = _diff_runs(run_inputs, all_pairs=all_pairs, keys=keys, bound=bound,
                                      key_bounds=key_bounds, steps_axis=steps_axis,
                                      threads=threads, budget=int(chunk_mb * (1 << 20)),
                                      show=show, shown=shown, quiet=quiet, as_json=as_json,
                                      source=source, warnings=warnings)
    else:
        if show and source is not None and spec_name is not None:
            _header_bounds(bound, key_bounds, keys, source, steps_axis)
        result, n_inputs = _diff_files(files, file_labels, keys=keys, bound=bound, key_bounds=key_bounds,
                                       steps_axis=steps_axis, threads=threads,
                                       budget=int(chunk_mb * (1 << 20)), show=show,
                                       shown=shown, quiet=quiet, as_json=as_json)
    code = result.exit_code
    written = None
    if series_path is not None:
        write_npz(series_path, series_arrays(result.rows, steps_axis), overwrite=True)
        written = os.path.abspath(series_path)
    doc = diff_document(result, series=written)
    if run_inputs:
        doc["runs"] = [r.describe() for r in run_inputs]
        doc["pairing"] = result.pairing
    doc["bounds_from"] = source
    doc["key_bounds"] = {k: as_bound(b).to_dict() for k, b in key_bounds.items()}
    if as_json:
        click.echo(json.dumps(doc, allow_nan=False))
    else:
        for line in outlier_lines(doc["outliers"]):
            click.echo(line)
        if show and not no_legend:
            for line in legend_lines(shown, steps=steps_axis is not None):
                click.echo(line)
    if written is not None:  # where it wrote: stdout with the rows, else beside the JSON
        click.echo(f"series: {written}", err=as_json or quiet)
    if not as_json:
        click.echo(summarize(result.rows, n_inputs, len(result.keys), code))
    if code:
        ctx.exit(code)


def _classify(paths, roots):
    """(runs, files): each INPUT as a stored run's directory, or as a file/directory input.
    A report file, a stem's directory of runs, or a name that is neither a path nor a run
    is refused with one line."""
    from tolerance.runner.stored import (find_run, is_box_dir, is_run_dir, is_stem_dir,
                                         load_stored_box, participant_label, tool_file_problem)

    runs: list[Path] = []
    files: list[tuple[str, str | None]] = []   # (path, label or None)
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            if is_run_dir(p):
                runs.append(p)
            elif is_box_dir(p):  # a run's <box>/: the outputs of its chips
                box = load_stored_box(p.parent, p.name)
                multi = len(box.outputs) > 1
                files += [(str(out), participant_label(p.name, chip, multi))
                          for chip, out in box.outputs]
            elif is_stem_dir(p):
                raise FormatError(f"{arg}: the directory of a stem's runs, not one run (give "
                                  f"{p / '<RUN_ID>'}, or {p.name} for its newest run; "
                                  f"`tolerance runs {p.name}` lists them)")
            else:
                files.append((arg, None))
        elif p.exists():
            why = tool_file_problem(p)
            if why is not None:
                raise FormatError(f"{arg}: {why}, not an output: never an input (give the "
                                  "run's directory, or an output file)")
            files.append((arg, None))
        elif arg.endswith((".npz", ".npy")) or arg.strip("/").count("/") >= 2:
            raise FormatError(f"{arg}: no such file or directory")
        else:
            where = roots()
            try:
                runs.append(find_run(arg, where))
            except ToleranceError as exc:
                if not str(exc).startswith(f"{arg}: no such run"):
                    raise
                raise FormatError(
                    f"{arg}: no such file or directory, and no stored run of that name (a run "
                    f"is named STEM, STEM/RUN_ID or STEM~N; looked under "
                    f"{', '.join(str(Path(r) / 'runs') for r in where)})") from None
    return runs, _file_labels(files)


def _file_labels(files):
    """(paths, labels): a box directory's outputs keep their box (or box/chip) label, the
    run id in front where two are alike; other inputs get unique_labels."""
    from tolerance.compare.engine import unique_labels

    if not files:
        return [], None
    paths = [f for f, _ in files]
    if all(lab is None for _, lab in files):
        return paths, None
    auto = unique_labels(paths)
    labels = [lab if lab is not None else a for (_, lab), a in zip(files, auto)]
    first = list(labels)
    for k, ((path, lab), cur) in enumerate(zip(files, first)):
        if lab is not None and first.count(cur) > 1:  # <run>/<box>/<chip>/<file>
            labels[k] = f"{Path(path).parent.parent.parent.name}/{lab}"
    if len(set(labels)) != len(labels):
        labels = unique_labels(paths)
    return paths, labels


def _load_spec(name, specs_dir, cluster_path):
    from tolerance._errors import ConfigError
    from tolerance.config import load_default_cluster, load_spec

    if specs_dir is None:
        try:
            specs_dir = load_default_cluster(cluster_path).specs_dir
        except ConfigError:
            if cluster_path is not None:
                raise
            specs_dir = Path("specs")
    return load_spec(name, Path(specs_dir))


def _header_bounds(bound, key_bounds, keys, source, steps_axis):
    """The bounds line: each key's bound (the keys compared when they are known), and where
    the bounds come from."""
    from tolerance.compare.report import describe_bounds

    if keys is not None:
        parts = [f"{k} {describe_bounds(key_bounds.get(k, bound))}" for k in keys]
    else:
        parts = [f"{k} {describe_bounds(b)}" for k, b in key_bounds.items()]
        parts.append(f"other keys {describe_bounds(bound)}" if parts else describe_bounds(bound))
    click.echo(f"bounds from {source}: " + "; ".join(parts) +
               f"; steps axis {'none' if steps_axis is None else steps_axis}")


def _printer(cols, keys, steps_axis, show, shown):
    """on_rows for console output: one aligned line per row, on widths fixed before any row
    is measured (a key's missing-key rows are said once by its (warn) line when the keys
    were not asked for by name)."""
    from tolerance.compare.report import format_row
    from tolerance.compare.rows import KEY_NOT_EVERYWHERE, MISSING_KEY, UNMEASURED

    def on_rows(rows):
        if show:
            for r in rows:
                if r.status == UNMEASURED and keys is None and \
                        r.code in (MISSING_KEY, KEY_NOT_EVERYWHERE):
                    continue  # said once by the key's (warn) line
                click.echo(format_row(r, columns=cols, steps=steps_axis is not None))
                shown.append(r)
    return on_rows


def _notice_printer(quiet, as_json):
    from tolerance.compare.engine import PartialKey

    def on_notice(n):
        if quiet:
            return
        if isinstance(n, PartialKey):
            click.echo(f"(warn) key {n.key!r} is only in {', '.join(n.have)} (missing in "
                       f"{', '.join(n.lack)}): not compared (pass --keys to compare the "
                       f"inputs that have it)", err=as_json)
        else:
            click.echo(f"(warn) key {n.key!r} is missing in {', '.join(n.lack)}", err=as_json)
    return on_notice


def _diff_files(paths, labels, *, keys, bound, key_bounds, steps_axis, threads, budget, show,
                shown, quiet, as_json):
    """Output files (and directories standing for one): every pair, every key."""
    from tolerance.compare.engine import diff_inputs, open_inputs
    from tolerance.compare.report import columns_for_inputs
    from tolerance.runner.stored import tool_file_problem

    inputs = open_inputs(paths, labels)
    try:
        for arg, d in zip(paths, inputs):  # a directory's newest .npz may be a report file
            why = tool_file_problem(d.path)
            if why is not None:
                raise FormatError(f"{arg}: its newest .npz {d.path} is {why}: never an input "
                                  "(give the output file itself)")
        names = keys if keys is not None else {k for d in inputs for k in d.archive.keys()}
        cols = columns_for_inputs(inputs, names, steps_axis,  # rows print as keys finish
                                  [bound, *(key_bounds or {}).values()])
        result = diff_inputs(inputs, keys=keys, bound=bound, steps_axis=steps_axis,
                             threads=threads, budget=budget,
                             on_rows=_printer(cols, keys, steps_axis, show, shown),
                             on_notice=_notice_printer(quiet, as_json),
                             key_bounds=key_bounds or None)
    finally:
        for d in inputs:
            d.archive.close()
    return result, len(inputs)


def _diff_runs(runs, *, all_pairs, keys, bound, key_bounds, steps_axis, threads, budget, show,
               shown, quiet, as_json, source, warnings):
    """Stored runs: the outputs they stand for, paired by box (or every pair), each group
    through the one engine; rows of every group in one result."""
    from tolerance.compare.engine import DiffResult
    from tolerance.compare.report import columns_for_shapes
    from tolerance.compare.rows import as_bound
    from tolerance.runner.stored_diff import (ALL_PAIRS, SAME_BOX, compare_group, output_metas,
                                              plan_groups)

    pairing, groups = plan_groups(runs, all_pairs=all_pairs)
    outputs = [o for r in runs for o in r.outputs]
    metas = output_metas(outputs)
    shapes = {k: [shp for shp, _ in ms] for k, ms in metas.items()
              if keys is None or k in keys}
    for k in keys or ():
        shapes.setdefault(k, [])
    labels = [o.label for g in groups for o in g]
    # rows pair any two outputs: every label may stand on either side
    cols = columns_for_shapes(labels + labels, shapes, steps_axis,
                              floats=any(kind == "f" for ms in metas.values() for _, kind in ms),
                              bounds=[as_bound(b) for b in (bound, *(key_bounds or {}).values())])
    if not quiet:
        say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
        if not as_json:
            if len(runs) == 1:
                r = runs[0]
                click.echo(f"run {r.path} (stem {r.stem}): every pair of its "
                           f"{len(r.outputs)} outputs")
            else:
                for r in runs:
                    click.echo(f"run {r.label}: {r.path} (stem {r.stem}; "
                               f"{len({o.box for o in r.outputs})} boxes)")
                click.echo("pairs: " + ("the same box in each run" if pairing == SAME_BOX else
                                        "every box of one run with every box of another"
                                        if pairing == ALL_PAIRS else ""))
            _header_bounds(bound, key_bounds, keys, source or "nowhere (equal required; "
                           "--spec STEM or --atol/--rtol/--ulp set one)", steps_axis)
        for w in warnings:
            say(f"(warn) {w}")
    on_rows = _printer(cols, keys, steps_axis, show, shown)
    on_notice = _notice_printer(quiet, as_json)
    result = DiffResult(inputs=[], bound=as_bound(bound), steps_axis=steps_axis, keys=[])
    seen_inputs: set[str] = set()
    for group in groups:
        g = compare_group(group, keys=keys, bound=bound, key_bounds=key_bounds or None,
                          steps_axis=steps_axis, threads=threads, budget=budget,
                          on_notice=on_notice)
        on_rows(g.rows)
        result.rows.extend(g.rows)
        for d in g.inputs:
            if d["label"] not in seen_inputs:
                seen_inputs.add(d["label"])
                result.inputs.append(d)
        result.keys += [k for k in g.keys if k not in result.keys]
        if g.stats is not None:
            result.stats.blocks += g.stats.blocks
            result.stats.blocks_equal += g.stats.blocks_equal
    result.pairing = pairing
    return result, len(outputs)


__all__ = ["diff"]
