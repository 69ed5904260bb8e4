"""``metaunsup report RESULTS.json... --out DIR``: a markdown page with figures from results.

See :mod:`metaunsup.app.report.page` for what is drawn. matplotlib (the ``plot`` extra) draws the
figures; without it the command stops with one line saying how to install it (exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

__all__ = ["report"]


@click.command()
@click.argument("results", metavar="RESULTS.json...", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out", required=True, type=click.Path(), help="Folder for report.md and the PNG figures."
)
@click.option("--title", default="Results", show_default=True, help="Title of the page.")
def report(results: Sequence[str], out: str, title: str) -> None:
    """Write a markdown page with figures from results JSON.

    RESULTS.json are files written by evaluate --json or demo. OUT receives comparison.png
    (scores with 95% CIs), convergence-NAME.png for files with curves, and report.md.
    """
    from metaunsup.app.report.page import read_report, require_matplotlib, write_report

    require_matplotlib()
    reports = [read_report(path) for path in results]
    for path in write_report(reports, out, title=title):
        click.echo(f"wrote {path}")
