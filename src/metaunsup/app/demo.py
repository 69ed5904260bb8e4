"""``metaunsup demo``: meta-learned clustering of the bundled digits, trained with no labels.

1. Meta-train the packaged config ``digits-unsup`` (:data:`DEMO_CONFIG`) on the
   unlabeled ``train`` half: SimCLR pre-training of a small Conv4, CACTUs pseudo-classes from
   the consensus of k-means partitions of the spectral embeddings of several nearest-neighbour
   graphs of its features (chosen without labels, see
   :func:`~metaunsup.training.unsupervised.consensus_partitions`), Meta-K-means on 10 × 20
   pseudo clustering tasks.
2. Cluster 10 × 20 tasks of the ``test`` half (labels hidden, used only to score) with the
   meta-trained model, the same network before meta-training (random weights; pre-trained
   only) and the classical baselines on the pixels.
3. Measure convergence: quality against soft k-means iterations for the model and against
   Lloyd iterations for K-means, with milliseconds per task.

Writes ``results.json`` (the evaluation report plus curves and training time),
``convergence.png`` and the run folder ``run/`` (checkpoints) under the output folder. A second
call with the same folder reuses the finished run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metaunsup import data
from metaunsup.app.report.figures import plot_curves
from metaunsup.evaluation.clustering import evaluate_clustering, learner_method, resolve_methods
from metaunsup.evaluation.convergence import kmeans_curve, learner_curve
from metaunsup.fileio import atomic_write_json
from metaunsup.training.config import RunConfig, load_config

__all__ = ["DEMO_CONFIG", "run_demo"]

#: The demo's run: a config packaged with metaunsup (``metaunsup train digits-unsup``).
DEMO_CONFIG = "digits-unsup"

#: Adaptation steps of the model's curve and Lloyd iterations of K-means' curve.
MODEL_STEPS = (0, 1, 2, 5, 10, 20)
KMEANS_ITERS = (1, 2, 3, 5, 10, 20, 50)


def demo_config(seed: int = 0, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The demo's run with ``train.seed = seed`` and any other ``"table.key"`` overrides."""
    return load_config(DEMO_CONFIG, {**(overrides or {}), "train.seed": seed})


def run_demo(
    out_dir: str | Path,
    *,
    tasks: int = 1000,
    curve_tasks: int = 200,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    update: Callable[[int], None] | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns the results dict written to ``results.json``.

    ``config_overrides``: ``"table.key"`` changes of the demo's run (e.g. fewer steps for a
    quick look); the numbers in ``docs/results/README.md`` are those of the run as packaged.
    """
    from metaunsup.learners import load_learner
    from metaunsup.training.build import fresh_learner, run_state, train_run
    from metaunsup.training.trainer import BEST
    from metaunsup.training.unsupervised import pretrained_only_learner

    out = Path(out_dir)
    run_dir = out / "run"
    cfg = demo_config(seed, config_overrides)
    start = time.perf_counter()
    resume = run_state(run_dir).resumable  # an interrupted demo continues where it stopped
    assert cfg.unsupervised is not None  # the demo's run makes its tasks without labels
    echo(
        f"meta-training {cfg.name} on digits/train without labels "
        f"({cfg.unsupervised.pretrain_steps} pre-training + {cfg.train.steps} meta-steps)"
        + (" — resuming the run in " + str(run_dir) if resume else "")
    )
    result = train_run(cfg, run_dir, resume=resume, progress=progress)
    train_seconds = time.perf_counter() - start

    test = data.load("digits", "test")
    model = load_learner(run_dir / BEST)  # the last step, or the one validation chose
    untrained = fresh_learner(cfg, test.example_shape).eval()
    pretrained = pretrained_only_learner(fresh_learner(cfg, test.example_shape), run_dir)
    assert pretrained is not None  # the demo's run pre-trains its backbone
    methods = [
        *resolve_methods(["kmeans", "pca-kmeans", "gmm"]),
        learner_method("network, random weights", untrained),
        learner_method("network, pre-trained only", pretrained),
        learner_method("meta-trained, no labels", model),
    ]
    echo(f"clustering {tasks} tasks of 10 × 20 from digits/test")
    report = evaluate_clustering(
        test, methods, n_way=10, k_shot=20, n_tasks=tasks, seed=seed, progress=update
    ).to_json()
    curve_args = {"n_way": 10, "k_shot": 20, "n_tasks": min(tasks, curve_tasks), "seed": seed}
    model_curve = learner_curve(model, test, MODEL_STEPS, **curve_args)
    km_curve = kmeans_curve(test, KMEANS_ITERS, **curve_args)
    report["training"] = {
        "config": cfg.to_dict(),
        "seconds": round(train_seconds, 1),
        "meta_steps": result.steps,
        "command": "metaunsup demo",
    }
    report["curves"] = {
        "meta-trained, no labels (soft k-means iterations)": [p.to_json() for p in model_curve],
        "kmeans (Lloyd iterations)": [p.to_json() for p in km_curve],
    }
    atomic_write_json(out / "results.json", report)
    figure = plot_curves(
        report["curves"],
        out / "convergence.png",
        title="digits/test, 10 × 20 clustering tasks",
        step_label="adaptation steps (soft k-means / Lloyd iterations)",
    )
    report["files"] = {"results": str(out / "results.json"), "figure": figure}
    return report
