"""`tolerance hosts`: list the boxes of the registry."""
from __future__ import annotations

import json

import click

from tolerance.cli import _options
from tolerance.config import default_cluster_path, load_default_cluster


@click.command("hosts", epilog="Exit codes: 0 listed, 2 error (the registry is missing or invalid).")
@_options.cluster
@_options.as_json
def hosts(cluster_path: str | None, as_json: bool) -> None:
    """List the boxes of cluster.yaml: name, host, chips, env, tags."""
    cluster = load_default_cluster(cluster_path)
    if as_json:
        click.echo(json.dumps(cluster.to_dict(), indent=2, sort_keys=True))
        return
    rows = [("BOX", "HOST", "CHIPS", "ENV", "TAGS")]
    for b in cluster.boxes:
        env = " ".join(f"{k}={v}" for k, v in b.resolved_env().items()) or "-"
        rows.append((b.name, b.host, ",".join(b.chips), env, ",".join(b.tags) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    click.echo(f"# {default_cluster_path(cluster_path)}: {len(cluster.boxes)} boxes")
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
