"""``metaunsup experiment mnist-clustering``: the reference experiment as one command.

Protocol A of ``docs/protocols.md`` on MNIST: tasks of 10 classes × 20 test images, labels hidden.
The command trains (or loads, when already trained) the models named in :data:`MNIST_MODELS`
from their configs, clusters the same ``tasks`` test tasks with every model and every classical
baseline, measures convergence curves, and writes a results page with its figures and JSON:

* ``mnist_fewshot_clustering.md`` — the table (accuracy, NMI, ARI as mean ± 95% CI, ms/task),
  training times, convergence summary, and the command and date;
* ``mnist_fewshot_clustering.json`` — everything measured;
* ``mnist_convergence.png`` — accuracy and NMI against adaptation steps, accuracy against
  milliseconds per task; ``mnist_kmeans_lloyd.png`` — K-means against its Lloyd iterations.

The two tracks: **unsupervised** (meta-trained on MNIST *train* images without labels) and
**cross-domain** (meta-trained on labelled Omniglot; no MNIST label is ever read in training).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaunsup import data
from metaunsup.app.report.figures import plot_curves
from metaunsup.app.report.tables import report_title, results_table
from metaunsup.checkpoint import read_checkpoint
from metaunsup.errors import ConfigError
from metaunsup.evaluation.clustering import evaluate_clustering, learner_method, resolve_methods
from metaunsup.evaluation.convergence import kmeans_curve, learner_curve
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import MetaLearner
from metaunsup.training.config import load_config

__all__ = ["MNIST_MODELS", "ModelSpec", "run_mnist_clustering"]


@dataclass(frozen=True)
class ModelSpec:
    """A model of the experiment: its label in the tables, config file and track.

    ``controls``: also evaluate the same network with random weights and with its
    pre-training only (unsupervised track), to show what meta-training adds.
    """

    label: str
    config: str
    track: str
    controls: bool = True


MNIST_MODELS = (
    ModelSpec("Meta-K-means, unsupervised (MNIST train, no labels)", "mnist-unsup.toml", "unsup"),
    ModelSpec(
        "Meta-K-means, unsupervised, 14×14 input (fast)",
        "mnist-unsup-fast.toml",
        "unsup",
        controls=False,
    ),
    ModelSpec(
        "Meta-K-means, cross-domain (Omniglot labels)", "omniglot-xdomain-meta-kmeans.toml", "xd"
    ),
)
CURVE_STEPS = (0, 1, 2, 5, 10, 20, 50)
KMEANS_ITERS = (1, 2, 3, 5, 10, 20, 50, 100)
BASELINES = ("kmeans", "sklearn-kmeans", "pca-kmeans", "gmm")


def _trained(
    spec: ModelSpec,
    configs_dir: Path,
    runs_dir: Path,
    train: bool,
    progress: bool,
    echo: Callable[[str], None],
) -> tuple[Any, Path, dict[str, Any]]:
    """``(cfg, run folder, record)`` of a finished run, training or resuming it if allowed."""
    from metaunsup.training.build import run_state, train_run
    from metaunsup.training.trainer import LAST

    cfg = load_config(configs_dir / spec.config)
    run_dir = runs_dir / cfg.name
    last = run_dir / LAST
    step = read_checkpoint(last)[1]["step"] if last.exists() else 0
    if step < cfg.train.steps:
        if not train:
            raise ConfigError(
                f"{spec.label}: {last} is missing or unfinished ({step}/{cfg.train.steps} steps); "
                f"run `metaunsup train {configs_dir / spec.config} --out {run_dir}` or drop "
                "--no-train"
            )
        echo(f"training {cfg.name} into {run_dir} ({'resuming' if step else 'from scratch'})")
        train_run(cfg, run_dir, resume=run_state(run_dir).resumable, progress=progress)
    _, meta = read_checkpoint(last)
    record = {
        "config": str(configs_dir / spec.config),
        "run": str(run_dir),
        "meta_steps": meta["step"],
        "meta_training_seconds": round(float(meta.get("seconds", 0.0)), 1),
        "unsupervised": meta.get("run", {}).get("unsupervised_record"),
        "command": f"metaunsup train {configs_dir / spec.config} --out {run_dir}",
    }
    return cfg, run_dir, record


def steps_to_fraction(points: list[dict[str, float]], fraction: float = 0.95) -> int:
    """The fewest steps whose accuracy reaches ``fraction`` of the accuracy at the most steps."""
    final = points[-1]["acc"]
    return next(int(p["steps"]) for p in points if p["acc"] >= fraction * final)


def run_mnist_clustering(
    out_dir: str | Path,
    *,
    configs_dir: str | Path = "configs",
    runs_dir: str | Path = "runs",
    tasks: int = 1000,
    curve_tasks: int = 300,
    seed: int = 0,
    train: bool = True,
    data_root: str | None = None,
    dataset: str = "mnist",
    progress: bool = False,
    echo: Callable[[str], None] = print,
    update: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the experiment; returns the dict written to ``mnist_fewshot_clustering.json``.

    ``dataset`` names the test data (``"mnist"``; the tests run the same code on digits).
    """
    from metaunsup.learners import load_learner
    from metaunsup.training.build import fresh_learner
    from metaunsup.training.trainer import BEST
    from metaunsup.training.unsupervised import pretrained_only_learner

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs, runs = Path(configs_dir), Path(runs_dir)
    started = time.perf_counter()
    trained = [_trained(spec, configs, runs, train, progress, echo) for spec in MNIST_MODELS]
    test = data.load(dataset, "test", root=data_root)

    models: list[tuple[ModelSpec, MetaLearner]] = []
    training: dict[str, Any] = {}
    methods = list(resolve_methods(BASELINES))
    for spec, (cfg, run_dir, record) in zip(MNIST_MODELS, trained, strict=True):
        learner = load_learner(run_dir / BEST)  # the validated best (the last without validation)
        models.append((spec, learner))
        training[spec.label] = record
        if spec.track == "unsup" and spec.controls:
            untrained = fresh_learner(cfg, test.example_shape).eval()
            methods.append(learner_method("Conv4, not meta-trained (random weights)", untrained))
            pre = pretrained_only_learner(fresh_learner(cfg, test.example_shape), run_dir)
            if pre is not None:
                label = "Conv4, SimCLR pre-trained only (no meta-training)"
                methods.append(learner_method(label, pre))
    methods += [learner_method(spec.label, learner) for spec, learner in models]

    echo(f"clustering {tasks} MNIST test tasks of 10 × 20 with {len(methods)} methods")
    report = evaluate_clustering(
        test, methods, n_way=10, k_shot=20, n_tasks=tasks, seed=seed, progress=update
    ).to_json()
    echo(f"convergence curves on {min(tasks, curve_tasks)} of the tasks")
    args = {"n_way": 10, "k_shot": 20, "n_tasks": min(tasks, curve_tasks), "seed": seed}
    curves = {
        spec.label: [p.to_json() for p in learner_curve(learner, test, CURVE_STEPS, **args)]
        for spec, learner in models
    }
    curves["K-means, pixels (Lloyd iterations)"] = [
        p.to_json() for p in kmeans_curve(test, KMEANS_ITERS, **args)
    ]
    report["curves"] = curves
    report["training"] = training
    report["command"] = f"metaunsup experiment mnist-clustering --tasks {tasks} --seed {seed}"
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "mnist_fewshot_clustering.json", report)
    _plot_mnist_curves(curves, out, test.name, args["n_tasks"])
    atomic_write_text(out / "mnist_fewshot_clustering.md", results_page(report))
    return report


def _plot_mnist_curves(curves: dict[str, Any], out: Path, dataset: str, n_tasks: int) -> None:
    """The experiment's two figures: every model's curve beside K-means', and K-means alone."""
    kmeans_key = "K-means, pixels (Lloyd iterations)"
    plot_curves(
        {k: v for k, v in curves.items() if not k.startswith("K-means")}
        | {kmeans_key: curves[kmeans_key]},
        out / "mnist_convergence.png",
        title=f"{dataset}/test, 10 × 20 clustering tasks ({n_tasks} tasks)",
        metrics=("acc", "nmi"),
        step_label="adaptation steps (soft k-means / Lloyd iterations)",
    )
    plot_curves(
        {"K-means, pixels": curves[kmeans_key]},
        out / "mnist_kmeans_lloyd.png",
        title=f"K-means on {dataset} 10 × 20 tasks against its Lloyd iterations",
        metrics=("acc", "nmi"),
        step_label="Lloyd iterations (10 k-means++ restarts)",
    )


def results_page(report: dict[str, Any]) -> str:
    """The markdown results page of a finished experiment."""
    by_name = {r["method"]: r for r in report["results"]}
    sk = by_name.get("sklearn-kmeans")
    lines = [
        "# Few-shot clustering on MNIST (protocol A): meta-learned clustering against K-means",
        "",
        f"Measured {report['environment']['date']} on this machine "
        f"({report['environment']['torch_threads']} torch threads), with",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        "(it trains the models below from their configs when their runs are missing, then "
        "evaluates; the whole command took "
        f"{report['seconds'] / 60:.1f} min here).",
        "",
        f"## {report_title(report)}",
        "",
        "Every method clusters the identical tasks and is told k = 10; labels only score.",
        "",
        results_table(report),
        "",
        "## Convergence",
        "",
        "![accuracy and NMI against adaptation steps and ms per task](mnist_convergence.png)",
        "",
        "![K-means against its Lloyd iterations](mnist_kmeans_lloyd.png)",
        "",
        "| method | accuracy after N steps (N: accuracy) | steps to 95% of final |",
        "|---|---|---|",
    ]
    for name, points in report["curves"].items():
        accs = ", ".join(f"{p['steps']}: {p['acc']:.3f}" for p in points)
        lines.append(f"| {name} | {accs} | {steps_to_fraction(points)} |")
    lines += ["", "## Training", ""]
    for label, rec in report["training"].items():
        unsup = rec.get("unsupervised") or {}
        pre = unsup.get("pretrain")
        pre_text = f"SimCLR pre-training {pre['seconds'] / 60:.1f} min, " if pre else ""
        if unsup.get("features_from"):
            pre_text += (
                f"CACTUs pseudo-classes from the pre-trained features of the "
                f"`{unsup['features_from']}` run, "
            )
        speed = ""
        if sk is not None and label in by_name:
            ratio = sk["ms_per_task"] / by_name[label]["ms_per_task"]
            speed = f" At test time {ratio:.1f}× the speed of scikit-learn K-means (10 restarts)."
        lines += [
            f"- **{label}**: {pre_text}meta-training {rec['meta_steps']} steps in "
            f"{rec['meta_training_seconds'] / 60:.1f} min on this CPU; "
            f"`{rec['command']}`.{speed}",
        ]
    lines += [
        "",
        "The same tasks clustered with other embeddings meta-trained on Omniglot (the "
        "cross-domain track's best, a ProtoNet embedding with spectral clustering): "
        "[mnist_xdomain.md](mnist_xdomain.md), `python benchmarks/mnist_xdomain.py`.",
        "",
        f"Numbers and curves: `mnist_fewshot_clustering.json` (written "
        f"{_dt.date.today().isoformat()}).",
        "",
    ]
    return "\n".join(lines)
