"""``metaunsup demo``: the bundled digits meta-trained without labels, then clustered beside the
baselines (:func:`metaunsup.app.demo.run_demo`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from metaunsup.app.console import POSITIVE, CommandInterrupted, print_report, progress, set_threads

__all__ = ["demo"]


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="metaunsup-out/demo",
    show_default=True,
    help="Folder for the run, results.json and convergence.png.",
)
@click.option("--tasks", type=POSITIVE, default=1000, show_default=True, help="Test tasks.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=POSITIVE, help="torch threads (default: the idle CPUs).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: str, tasks: int, seed: int, threads: int | None, quiet: bool) -> None:
    """Meta-train on the bundled digits with no labels, then cluster 10 × 20 test tasks.

    Compares the meta-trained model with K-means and the other baselines on the same tasks,
    and measures convergence (quality against adaptation steps and milliseconds per task).
    """
    from metaunsup.app.demo import run_demo

    set_threads(threads)
    Path(out).mkdir(parents=True, exist_ok=True)
    echo = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    show = not quiet and sys.stderr.isatty()
    with progress(tasks, "digits/test", quiet) as update:
        try:
            report = run_demo(out, tasks=tasks, seed=seed, progress=show, echo=echo, update=update)
        except KeyboardInterrupt:
            words = ["metaunsup", "demo", "--out", out, "--seed", str(seed), "--tasks", str(tasks)]
            again = shlex.join(words + (["--threads", str(threads)] if threads else []))
            raise CommandInterrupted(
                f"the run in {Path(out) / 'run'} is kept; continue with: {again}"
            ) from None
    print_report(report)
    click.echo(f"meta-training took {report['training']['seconds']:.0f} s")
    for name, points in report["curves"].items():
        line = ", ".join(f"{p['steps']}: {p['acc']:.3f}" for p in points)
        click.echo(f"{name}: accuracy after {line}")
    click.echo(f"wrote {report['files']['results']}")
    if report["files"]["figure"]:
        click.echo(f"wrote {report['files']['figure']}")
