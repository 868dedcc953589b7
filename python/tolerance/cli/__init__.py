"""The `tolerance` command line: one click group, thin commands.

Commands live in sibling modules and are registered at the bottom of this file.
Every ToleranceError becomes one line on stderr and its exit code; an unexpected
exception becomes one line too (`--debug` shows the traceback).
"""
from __future__ import annotations

import sys

import click

from tolerance import __version__
from tolerance._errors import EXIT_ERROR, ToleranceError


class _Group(click.Group):
    """A click group that turns every failure into one line and an exit code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ToleranceError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"tolerance: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("tolerance: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"tolerance: internal error: {type(exc).__name__}: {exc} "
                       "(rerun with --debug for a traceback)", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
