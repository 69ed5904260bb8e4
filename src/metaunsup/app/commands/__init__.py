"""Commands added to the ``metaunsup`` command line: ``cluster``, ``detect`` and ``report``.

Each command lives in its own module and imports its heavy dependencies (torch, matplotlib)
only when it runs, so ``metaunsup --help`` stays fast.
"""

from __future__ import annotations

import click

__all__ = ["register_commands"]


def register_commands(group: click.Group) -> None:
    """Add the commands of this package to the ``metaunsup`` group."""
    from metaunsup.app.commands.cluster import cluster
    from metaunsup.app.commands.detect import detect
    from metaunsup.app.commands.report import report

    group.add_command(cluster)
    group.add_command(detect)
    group.add_command(report)
