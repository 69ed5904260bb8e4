"""The commands of the ``metaunsup`` command line, one module each.

Each command lives in its own module and imports its heavy dependencies (torch, matplotlib)
only when it runs, so ``metaunsup --help`` stays fast.
"""

from __future__ import annotations

import click

__all__ = ["register_commands"]


def register_commands(group: click.Group) -> None:
    """Add the commands of this package to the ``metaunsup`` group."""
    from metaunsup.app.commands.cluster import cluster
    from metaunsup.app.commands.datasets import datasets
    from metaunsup.app.commands.demo import demo
    from metaunsup.app.commands.detect import detect
    from metaunsup.app.commands.evaluate import evaluate
    from metaunsup.app.commands.experiment import experiment
    from metaunsup.app.commands.report import report
    from metaunsup.app.commands.train import train

    for command in (cluster, datasets, demo, detect, evaluate, experiment, report, train):
        group.add_command(command)
