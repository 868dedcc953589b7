"""`tolerance matrix RECIPE`: a mitigation x environment matrix of a stem (docs/matrix.md)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from tolerance.cli import _options


@click.command("matrix")
@click.argument("recipe_path", metavar="RECIPE", required=False,
                type=click.Path(dir_okay=False))
@_options.cluster
@click.option("--dry-run", is_flag=True,
              help="Full preflight (recipe, cluster, spec, baseline, paths, MPI runtime); "
                   "print the cells; touch nothing on disk.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              default=None, metavar="RUN_DIR",
              help="Go on with a matrix directory: skip the cell-trials that are done and "
                   "whose outputs load, run the rest (from the matrix's own snapshot).")
@_options.as_json
@click.pass_context
def matrix(ctx: click.Context, recipe_path: str | None, cluster_path: str | None,
           dry_run: bool, resume_dir: str | None, as_json: bool) -> None:
    """Run RECIPE's cells (the stem under each cell's env, on every box, TRIALS times),
    classify each against the baseline and write matrix.md, matrix.json and
    recipe.resolved.yaml under runs/matrix/<name>/<stamp>/.

    \b
    Exit codes: 0 every cell-trial ran and reconciles (whatever the verdicts),
    2 error, or some cell-trial is missing or unreadable (resume with --resume).
    """
    from tolerance._errors import ToleranceError
    from tolerance.collective import matrix as mx
    from tolerance.collective.code_fingerprint import code_fingerprint
    from tolerance.collective.launch import find_mpiexec
    from tolerance.config import load_default_cluster, load_spec
    from tolerance.config.recipe import load_recipe

    if (recipe_path is None) == (resume_dir is None):
        raise click.UsageError("give RECIPE, or --resume RUN_DIR (not both)")
    if resume_dir is not None:
        mdir = Path(resume_dir).resolve()
        recipe = load_recipe(mx.resume_recipe(mdir))
        specs = mdir / mx.SNAPSHOT / "specs"
    else:
        recipe = load_recipe(recipe_path)
        mdir, specs = None, None
    cluster = load_default_cluster(cluster_path)
    if len(cluster.boxes) < 2:
        raise ToleranceError(f"{cluster.path}: boxes: a matrix needs at least 2 boxes")
    spec = load_spec(recipe.stem, specs if specs is not None else cluster.specs_dir)
    find_mpiexec(None)
    root = Path(cluster.boxes[0].root).resolve()
    commit = code_fingerprint(root).head
    say = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))

    if dry_run:
        where = mdir or (root / "runs" / "matrix" / recipe.name / "<stamp>")
        m = mx.plan(recipe, spec, where, commit)
        if as_json:
            click.echo(json.dumps({"schema": mx.SCHEMA, "dry_run": True, "name": recipe.name,
                                   "stem": recipe.stem, "baseline": recipe.baseline,
                                   "cells": [{"cell": t.cell, "trial": t.trial, "env": t.env,
                                              "identity": t.identity, "dir": str(t.path)}
                                             for t in m.trials]}))
        else:
            click.echo(f"matrix {recipe.name}: stem {recipe.stem}, {len(recipe.cells)} cells x "
                       f"{recipe.trials} trials, baseline {recipe.baseline} ({recipe.baseline_rule})")
            for t in m.trials:
                env = " ".join(f"{k}={v}" for k, v in t.env.items()) or "-"
                click.echo(f"  {t.cell:<16} trial {t.trial}  {env}  -> {t.path}")
        ctx.exit(0)

    if mdir is None:
        mx.path_map(recipe, root / "runs" / "matrix" / recipe.name / "x")  # before anything
        mdir = mx.claim_matrix_dir(root, recipe.name)
        specs = mx.snapshot(recipe, spec, mdir)
        recipe = load_recipe(mdir / mx.SNAPSHOT / "recipe.yaml")
        spec = load_spec(recipe.stem, specs)
    m = mx.plan(recipe, spec, mdir, commit)
    say(f"matrix {recipe.name}: {len(m.trials)} cell-trials in {mdir}")
    mx.run_matrix(m, cluster=cluster, cluster_path=cluster_path, specs_dir=specs, say=say,
                  resume=resume_dir is not None)
    mx.reconcile(m)
    doc = mx.matrix_document(m, mx.classify(m))
    mx.write_outputs(m, doc)
    if as_json:
        click.echo(json.dumps(doc, allow_nan=False))
    else:
        click.echo((mdir / "matrix.md").read_text(), nl=False)
        click.echo(f"wrote {mdir / 'matrix.md'}, matrix.json, {mx.RESOLVED}")
    ctx.exit(doc["exit_code"])
