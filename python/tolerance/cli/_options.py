"""Options declared once and shared by every command that takes them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _steps_axis(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None or value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an integer or 'none'", ctx, param) from None


def _nonneg(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not value >= 0.0:  # also rejects nan
        raise click.BadParameter(f"{value} must be >= 0", ctx, param)
    return value


# Each bound is optional: an element is inside when it meets every bound that is set, and
# with none set inside means equal (an unset bound is not a zero bound).
atol = click.option("--atol", type=float, default=None, callback=_nonneg,
                    help="Absolute bound: inside when |a-b| <= atol + rtol*max(|a|,|b|) "
                         "(an unset atol counts 0 there when --rtol is set).")
rtol = click.option("--rtol", type=float, default=None, callback=_nonneg,
                    help="Relative bound (symmetric: no input is the reference).")
ulp = click.option("--ulp", type=click.IntRange(min=0), default=None,
                   help="Require the ULP distance to be <= this (same float type only); "
                        "alone, it means 'within ULP'. No bound at all: equal required.")
steps_axis = click.option("--steps-axis", default="0", show_default=True, callback=_steps_axis,
                          help="Axis that indexes steps, or 'none' for one step.")
threads = click.option("--threads", type=click.IntRange(min=1), default=None,
                       help="Kernel threads (default: the cores this process may use).")
chunk_mb = click.option("--chunk-mb", type=click.FloatRange(min=0.0625, max=1024), default=16.0,
                        show_default=True,
                        help="Byte budget of one block (whole steps) per input: what is read, "
                             "hashed and, in a run, sent between boxes at a time.")
as_json = click.option("--json", "as_json", is_flag=True,
                       help="Print exactly one JSON document on stdout (on an error: "
                            "{\"error\": {\"code\", \"message\", \"file\"}}).")

ERROR_SCHEMA = "tolerance.error/1"


def named_file(message: str) -> str | None:
    """The file an error line names: its text before the first ': ' when that is a path
    (our errors open with the file at fault), else None."""
    head = message.split(": ", 1)[0] if ": " in message else ""
    if not head or any(ch.isspace() for ch in head):
        return None
    if "/" in head or Path(head).suffix or Path(head).exists():
        return head
    return None


def error_document(code: int, message: str, *, file: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The one JSON document a --json command prints when it fails:
    `{"schema": "tolerance.error/1", "error": {"code", "message", "file", ...},
    "exit_code"}`; `file` defaults to the file the message names (or null)."""
    err = {"code": code, "message": message,
           "file": file if file is not None else named_file(message), **extra}
    return {"schema": ERROR_SCHEMA, "error": err, "exit_code": code}


def echo_error_json(code: int, message: str, **extra: Any) -> None:
    """Print error_document(...) on stdout, as one line."""
    click.echo(json.dumps(error_document(code, message, **extra), allow_nan=False))
quiet = click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
no_legend = click.option("--no-legend", "no_legend", is_flag=True,
                         help="Leave out the legend printed after the rows.")
# no click checks on config paths: the loader names a directory, a FIFO, a missing file in one line
cluster = click.option("--cluster", "cluster_path", type=click.Path(),
                       default=None, envvar="TOLERANCE_CLUSTER",
                       help="The registry (default: ./cluster.yaml, else the one shipped "
                            "at the repository root).")
specs = click.option("--specs", "specs_dir", type=click.Path(file_okay=False), default=None,
                     help="Directory of run specs (default: specs/ next to the cluster file).")


def bounds(f):
    """--atol, --rtol, --ulp together."""
    return atol(rtol(ulp(f)))


def _keys(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise click.BadParameter("no key given", ctx, param)
    return keys


keys = click.option("--keys", default=None, callback=_keys, metavar="K1,K2",
                    help="Keys to compare (default: the keys common to all inputs).")
series = click.option("--series", "series_path", type=click.Path(dir_okay=False), default=None,
                      metavar="FILE.npz",
                      help="Write the per-step series of every row to this .npz.")


def _env_pairs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        name, sep, val = item.partition("=")
        if not sep or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx, param)
        out[name] = val
    return out


bounds_file = click.option("--bounds", "bounds_path", type=click.Path(),
                           default=None, metavar="FILE",
                           help="A calibrated bounds file (tolerance calibrate): its bound "
                                "(per step where it has one) on every key it bounds; a "
                                "spec's own per-key bounds win.")
run_env = click.option("--env", "run_env", multiple=True, callback=_env_pairs, metavar="NAME=VALUE",
                       help="Set a variable for the workload on every box, over the box's env "
                            "(repeatable; part of the run's identity).")
run_dir = click.option("--run-dir", "run_dir", default=None, metavar="DIR",
                       help="Run directory to use instead of runs/<stem>/<stamp> (relative "
                            "to each box's root); a box's directory in it must not exist.")
