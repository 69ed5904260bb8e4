"""``metaunsup experiment NAME``: a reference experiment end to end (train or load the models,
evaluate, write the results page).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from metaunsup.app.console import POSITIVE, interrupted_runs, print_report, progress, set_threads

__all__ = ["experiment"]


@click.command()
@click.argument("name", type=click.Choice(["mnist-clustering", "anomaly-mnist"]))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="docs/results",
    show_default=True,
    help="Folder for the results page, its figures and JSON.",
)
@click.option(
    "--configs",
    "configs_dir",
    type=click.Path(file_okay=False),
    default="configs",
    show_default=True,
    help="Folder of the models' TOML configs.",
)
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False),
    default="runs",
    show_default=True,
    help="Folder of the training runs (trained here if missing).",
)
@click.option("--no-train", is_flag=True, help="Fail instead of training a missing model.")
@click.option("--tasks", type=POSITIVE, default=1000, show_default=True, help="Test tasks.")
@click.option(
    "--curve-tasks",
    type=POSITIVE,
    default=300,
    show_default=True,
    help="Tasks of the convergence curves (the first of the test tasks).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--seeds",
    type=POSITIVE,
    default=5,
    show_default=True,
    help="anomaly-mnist: task seeds (--tasks per support size are spread over digits and seeds).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="anomaly-mnist: run only these models (config stems, or mnist-anomaly for the "
    "packaged model; repeatable; default: all).",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="anomaly-mnist: run only these baselines (repeatable; default: all installed).",
)
@click.option("--note", default="", help="anomaly-mnist: why models or baselines were left out.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the datasets.")
@click.option("--threads", type=POSITIVE, help="torch threads (default: the idle CPUs).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def experiment(
    name: str,
    out: str,
    configs_dir: str,
    runs_dir: str,
    no_train: bool,
    tasks: int,
    curve_tasks: int,
    seed: int,
    seeds: int,
    models: tuple[str, ...],
    methods: tuple[str, ...],
    note: str,
    data_dir: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Run a reference experiment end to end (train or load, evaluate, write the results page).

    mnist-clustering: protocol A on MNIST 10 × 20 test tasks; the unsupervised and cross-domain
    Meta-K-means models against K-means, scikit-learn K-means, PCA + K-means, a GMM and the
    network without meta-training, with convergence curves.

    anomaly-mnist: MT-MNIST one-class tasks (K = 2, 5, 10 normal images, 500 + 500 queries),
    meta-learned scorers (label-free and supervised, one run per held-out test digit) against
    PyOD's detectors, Mahalanobis and the pixel centroid.
    """
    from metaunsup.app.experiment import run_mnist_clustering

    set_threads(threads)
    echo = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    if name == "anomaly-mnist":
        from metaunsup.app.anomaly_experiment import run_anomaly_mnist

        result = run_anomaly_mnist(
            out,
            configs_dir=configs_dir,
            runs_dir=runs_dir,
            tasks=tasks,
            seeds=seeds,
            models=list(models) or None,
            baselines=list(methods) or None,
            note=note,
            train=not no_train,
            data_root=data_dir,
            echo=echo,
        )
        click.echo(f"wrote {Path(out) / 'anomaly_mnist.md'} ({result['seconds'] / 60:.0f} min)")
        return
    with progress(tasks, "mnist/test", quiet) as update, interrupted_runs(runs_dir):
        report = run_mnist_clustering(
            out,
            configs_dir=configs_dir,
            runs_dir=runs_dir,
            tasks=tasks,
            curve_tasks=curve_tasks,
            seed=seed,
            train=not no_train,
            data_root=data_dir,
            progress=not quiet and sys.stderr.isatty(),
            echo=echo,
            update=update,
        )
    print_report(report)
    click.echo(f"wrote {Path(out) / 'mnist_fewshot_clustering.md'}")
