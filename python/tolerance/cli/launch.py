"""`tolerance launch STEM`: build the mpiexec line for the registry, print it, run it."""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import click

from tolerance.cli import _options


@click.command("launch", context_settings={"ignore_unknown_options": True})
@click.argument("stem")
@_options.cluster
@_options.specs
@click.option("--sync", "sync_mode", type=click.Choice(["verify", "push", "off"]),
              default="verify", show_default=True,
              help="verify: refuse unless every box runs the same code; push: ship this "
                   "checkout's commit to every box first; off: do not compare code.")
@click.option("--no-sync", "no_sync", is_flag=True, help="Same as --sync off (warned loudly).")
@click.option("--dry-run", is_flag=True,
              help="Print the command and validate cluster and spec; start nothing.")
@click.option("--mpiexec", "mpiexec_path", default=None,
              help="The MPI launcher (default: the one beside this Python, else on PATH).")
@click.option("--mpiexec-arg", "mpiexec_args", multiple=True, metavar="ARG",
              help="One argument for mpiexec itself, before the ranks (repeatable): site "
                   "flags such as hydra's `-iface eth1` or Open MPI's `--mca btl tcp,self`.")
@click.option("--lost-after", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              help="Seconds a box may be silent on the watch line before it counts as lost.")
@click.option("--hello-within", type=click.FloatRange(min=1.0), default=25.0,
              show_default=True, help="Seconds every box has to start and say hello.")
@_options.bounds_file
@_options.no_legend
@click.option("--json", "as_json", is_flag=True,
              help="Print exactly one JSON document on stdout: the run's report "
                   "(tolerance.run/1, as report.json; with --dry-run the command), or "
                   "{\"error\": {\"code\", \"message\", \"file\"}} when it fails.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def launch(ctx: click.Context, stem: str, cluster_path: str | None, specs_dir: str | None,
           sync_mode: str, no_sync: bool, dry_run: bool, mpiexec_path: str | None,
           mpiexec_args: tuple[str, ...], lost_after: float, hello_within: float,
           bounds_path: str | None, no_legend: bool, as_json: bool,
           extra: tuple[str, ...]) -> None:
    """Run STEM on every box of the registry: one MPI rank per box.

    The registry and the spec are read here and handed to every box; a box never needs
    this machine's paths. Arguments after `--` are passed to every rank's `tolerance run`.

    Exit codes: 0 within bounds, 1 a bound exceeded, 2 error (a box lost, silent or
    unreachable included), 3 unmeasured; 130/143/129 after SIGINT/SIGTERM/SIGHUP.
    """
    from tolerance._errors import ToleranceError
    from tolerance.collective.handshake import this_host
    from tolerance.collective.inputs import parse_inputs, resolve_inputs
    from tolerance.collective.launch import (build_plan, find_mpiexec, is_remote, mpiexec_flavor,
                                             run_plan)
    from tolerance.collective.watch import Watch

    from tolerance._errors import ConfigError
    from tolerance.cli.run import run as run_command
    from tolerance.config import list_stems, load_default_cluster

    try:
        inputs = resolve_inputs(stem, cluster_path, specs_dir, bounds_path)
    except ConfigError as exc:
        if "no such file" not in str(exc):
            raise
        sdir = Path(specs_dir) if specs_dir else load_default_cluster(cluster_path).specs_dir
        known = list_stems(sdir)
        raise ConfigError(f"{exc} (stems in {sdir}: {', '.join(known) or 'none'})") from None
    cluster, spec = parse_inputs(inputs)
    # what would fail on a box of this machine is one line here, before mpiexec starts
    from tolerance.config import SchemaProblems
    from tolerance.config.local import cluster_problems

    if problems := cluster_problems(cluster, stems=[spec.stem],
                                    display=inputs["cluster"]["display"]):
        raise SchemaProblems(problems)
    # the options after `--` are checked here, once, before MPI starts anything
    try:
        run_command.make_context("tolerance run", [stem, *extra])
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        raise click.UsageError(f"after --: {exc.format_message()}") from None
    if len(cluster.boxes) < 2:
        raise ToleranceError(f"{cluster.path}: boxes: a run needs at least 2 boxes, "
                             f"found {len(cluster.boxes)}")
    mode = "off" if no_sync else sync_mode
    if mode == "push":  # this checkout's HEAD goes to every box with the inputs
        from tolerance.collective.code_fingerprint import make_push

        inputs["push"] = make_push(Path.cwd())
    run_args = ["--sync", mode, *(["--no-legend"] if no_legend else []),
                *(["--json"] if as_json and "--json" not in extra else []), *extra]
    mpiexec = find_mpiexec(mpiexec_path)
    flavor = mpiexec_flavor(mpiexec)
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    if dry_run:
        plan = build_plan(cluster, stem, mpiexec=mpiexec, flavor=flavor, run_args=run_args,
                          mpiexec_args=mpiexec_args)
        if as_json:
            click.echo(json.dumps({"schema": "tolerance.launch/1", "dry_run": True,
                                   "stem": stem, "argv": list(plan.argv),
                                   "command": plan.shell(), "hostfile": plan.hostfile}))
            ctx.exit(0)
        if plan.hostfile:
            click.echo("# hostfile:\n" + "".join(f"#   {ln}\n" for ln in plan.hostfile.splitlines()),
                       nl=False)
        click.echo(plan.shell())
        ctx.exit(0)
    remote = is_remote(cluster)
    names = [b.name for b in cluster.boxes]
    watch = (Watch(inputs, lost_after=lost_after, bind_host="0.0.0.0", advertise_host=this_host(),
                   boxes=names)
             if remote else Watch(inputs, lost_after=lost_after, boxes=names))
    hostfile = None
    try:
        plan = build_plan(cluster, stem, mpiexec=mpiexec, flavor=flavor, run_args=run_args,
                          mpiexec_args=mpiexec_args)
        if plan.hostfile:
            fd, hostfile = tempfile.mkstemp(prefix="tolerance-hosts-")
            with os.fdopen(fd, "w") as f:
                f.write(plan.hostfile)
            plan = build_plan(cluster, stem, mpiexec=mpiexec, flavor=flavor, run_args=run_args,
                              mpiexec_args=mpiexec_args, hostfile_path=hostfile)
        click.echo(f"+ {plan.shell()}", err=True)
        out = io.StringIO() if as_json else None
        errors: list[str] = []
        code = run_plan(plan, watch, stem=stem, hello_within=hello_within, debug=debug,
                        stdout=out, errors=errors)
    finally:
        watch.close()
        if hostfile:
            os.unlink(hostfile)
    if out is not None:
        doc = _one_document(out.getvalue(), code, errors)
        click.echo(json.dumps(doc, allow_nan=False))
        code = doc["exit_code"] if isinstance(doc.get("exit_code"), int) else code
    ctx.exit(code)


def _one_document(stdout: str, code: int, errors: list[str]) -> dict:
    """What `launch --json` prints: rank 0's document (the run's report, or its error),
    unless the launcher itself ended the job; then (or when rank 0 printed none) an error
    document. Any other line the ranks printed goes to stderr, so stdout stays one
    document."""
    docs = []
    for line in stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            docs.append(doc)
        elif line.strip():
            click.echo(line, err=True)
    if errors:
        return _options.error_document(code, errors[0])
    if len(docs) == 1 and isinstance(docs[0].get("exit_code"), int):
        return docs[0]
    why = (f"the ranks printed {len(docs)} documents" if docs
           else "the job ended without a report") + f" (exit {code})"
    return _options.error_document(code if code else 2, why)
