"""The `tolerance` command line: one click group, thin commands.

Commands live in sibling modules and are registered at the bottom of this file.
Every ToleranceError becomes one line on stderr and its exit code; an unexpected
exception becomes one line too (`--debug` shows the traceback). A command run with
`--json` prints exactly one JSON document on stdout whatever happens: when it fails, the
error document (`{"error": {"code", "message", "file"}}`, cli._options.error_document)
beside that one line on stderr.
"""
from __future__ import annotations

import os
import sys

import click

from tolerance import __version__
from tolerance._errors import EXIT_ERROR, ToleranceError
from tolerance.cli._options import echo_error_json

_JSON = "tolerance.json"
#: the rank variables of MPICH/hydra, Open MPI and PMIx: under mpiexec, rank 0 speaks
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def _wants_json(args: list[str]) -> bool:
    """Whether the command line asks for --json (before any `--`: after it, arguments
    belong to another command)."""
    head = args[:args.index("--")] if "--" in args else args
    return "--json" in head


def _rank_zero() -> bool:
    for var in _RANK_VARS:
        v = os.environ.get(var)
        if v is not None:
            return v.strip() == "0"
    return True


class _Group(click.Group):
    """A click group that turns every failure into one line and an exit code (and, under
    --json, into one JSON document on stdout)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_JSON] = _wants_json(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        as_json = bool(ctx.meta.get(_JSON)) and _rank_zero()
        debug = bool(ctx.obj and ctx.obj.get("debug"))
        try:
            return super().invoke(ctx)
        except ToleranceError as exc:
            if debug:
                raise
            click.echo(f"tolerance: error: {exc}", err=True)
            if as_json:
                echo_error_json(exc.exit_code, str(exc), file=getattr(exc, "file", None))
            ctx.exit(exc.exit_code)
        except click.exceptions.Exit:
            raise
        except click.exceptions.Abort:
            if as_json:
                echo_error_json(1, "aborted")
            raise
        except click.ClickException as exc:  # usage errors: click prints them on stderr
            if as_json:
                echo_error_json(exc.exit_code, exc.format_message())
            raise
        except BrokenPipeError:
            # the reader went away (`tolerance diff ... | head`): stop quietly, as shell
            # tools do, with the status of a SIGPIPE death; nothing more goes to stdout
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            ctx.exit(128 + 13)
        except KeyboardInterrupt:
            click.echo("tolerance: interrupted", err=True)
            if as_json:
                echo_error_json(130, "interrupted")
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
            if debug:
                raise
            msg = f"internal error: {type(exc).__name__}: {exc}"
            click.echo(f"tolerance: {msg} (rerun with --debug for a traceback)", err=True)
            if as_json:
                echo_error_json(EXIT_ERROR, msg)
            ctx.exit(EXIT_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 every row within bound, 1 a bound exceeded (or a NaN/inf "
                    "mismatch), 2 error, 3 some row unmeasured; each command's --help says "
                    "what its own mean.")
@click.version_option(__version__, "--version", prog_name="tolerance")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Bound how far the same run drifts between machines."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# Usage errors exit 2 already (click's convention matches docs/numbers.md).

# --- command registration (one line per command module) ---
from tolerance.cli.hosts import hosts as _hosts; main.add_command(_hosts)  # noqa: E402,E702
from tolerance.cli.check import check as _check; main.add_command(_check)  # noqa: E402,E702
from tolerance.cli.run_box import run_box_command; main.add_command(run_box_command)  # noqa: E402,E702
from tolerance.cli.diff import diff as _diff; main.add_command(_diff)  # noqa: E402,E702
from tolerance.cli.run import run as _run; main.add_command(_run)  # noqa: E402,E702
from tolerance.cli.launch import launch as _launch; main.add_command(_launch)  # noqa: E402,E702
from tolerance.cli.doctor import doctor as _doctor; main.add_command(_doctor)  # noqa: E402,E702
from tolerance.cli.runs import runs as _runs; main.add_command(_runs)  # noqa: E402,E702
from tolerance.cli.report import report as _report; main.add_command(_report)  # noqa: E402,E702
from tolerance.cli.publish import publish as _publish; main.add_command(_publish)  # noqa: E402,E702
from tolerance.cli.verify import verify as _verify; main.add_command(_verify)  # noqa: E402,E702
from tolerance.cli.calibrate import calibrate as _calibrate; main.add_command(_calibrate)  # noqa: E402,E702
from tolerance.cli.plot import plot as _plot; main.add_command(_plot)  # noqa: E402,E702
from tolerance.cli.matrix import matrix as _matrix; main.add_command(_matrix)  # noqa: E402,E702

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
