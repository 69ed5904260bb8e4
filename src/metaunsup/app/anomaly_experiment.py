"""``metaunsup experiment anomaly-mnist``: MT-MNIST few-shot one-class detection as one command.

The protocol (Frikha et al., AAAI 2021, OC-MAML's MT-MNIST): one digit is normal, the other
nine anomalous. For each test digit ``d`` the models that follow the protocol are meta-trained
on the eight digits left after holding out ``d`` and its validation digit ``(d + 1) % 10`` —
one run per test digit — and tested on MNIST *test* tasks of ``d``: a support of ``K`` normal
images (``K`` = 2, 5, 10) and a query of 500 normal and 500 anomalous images. Every method scores
the identical tasks: ``tasks / 10`` per digit, from ``seeds`` task seeds. Scores per task
(:mod:`metaunsup.evaluation.anomaly`): AUROC, AUPRC, balanced accuracy and the false-alarm rate
of the flags at ``fpr = 0.05``, each as mean ± 95% CI over all tasks, with the spread of the
per-seed means. Also measured: the AUROC drop with a 10% contaminated support (``K = 10``), ROC
curves and score histograms.

Models (:data:`ANOMALY_MODELS`): Meta-SVDD meta-trained without labels (strict: only the eight
meta-training digits' images, 64 channels, or 32 channels with 4000 SimCLR pre-training steps,
meta-trained 300 or 2000 steps; and on all train images: 64 channels, and 32 channels with
4000 SimCLR pre-training steps, which the packaged ``mnist-anomaly`` is a training of),
Meta-SVDD and OC-MAML meta-trained with the eight digits' labels, OC-MAML on CACTUs one-class
pseudo-tasks and Meta-GMVAE's density score (both label-free, all train images); beside them
every anomaly baseline (PyOD's detectors when installed, raw and on PCA(0.95); Mahalanobis; the
pixel centroid). Runs are trained (or resumed) when missing and calibrated when uncalibrated;
finished evaluations are cached in ``runs/anomaly-eval/`` (keyed by the methods scored and the
bytes of the models' weights, thresholds included), so an
interrupted experiment continues where it stopped.

A subset can be run (``models``, ``baselines``): the models and baselines left out are listed
in the report and on the page with the reason given (``note``), never dropped silently. Without
training (``train=False``) a per-digit model is evaluated on the test digits whose run is
finished; the digits without one are listed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaunsup import data
from metaunsup.checkpoint import read_checkpoint
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.evaluation.anomaly import ScorerMethod, anomaly_scores, boundary_scores
from metaunsup.evaluation.protocol import Method, environment
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.metrics import mean_ci
from metaunsup.tasks.anomaly import AnomalyTaskSampler

__all__ = ["ANOMALY_MODELS", "AnomalyModel", "run_anomaly_mnist"]

Echo = Callable[[str], None]


@dataclass(frozen=True)
class AnomalyModel:
    """A model of the experiment: its label, config file, whether it is trained once per test
    digit (holding the test and validation digits out) and which labels it read. A model with
    ``packaged`` (a packaged checkpoint's name, trained from ``config``) is that checkpoint's
    weights, never trained again here: a training of the same config is another model (the
    spread over trainings is on the results pages). ``--model`` names a model by its
    :attr:`stem`."""

    label: str
    config: str
    per_digit: bool
    labels: str
    packaged: str | None = None

    @property
    def stem(self) -> str:
        """The name ``--model`` takes: the packaged checkpoint's, else the config's stem."""
        return self.packaged or self.config.removesuffix(".toml")


ANOMALY_MODELS = (
    AnomalyModel("Meta-SVDD, label-free, strict", "mnist-anomaly-strict.toml", True, "none"),
    AnomalyModel(
        "Meta-SVDD, label-free, all train images", "mnist-anomaly-full.toml", False, "none"
    ),
    AnomalyModel(
        "mnist-anomaly (packaged: Meta-SVDD, 32 channels, label-free, all train images, 4000 "
        "pre-training steps)",
        "mnist-anomaly-pretrain4k.toml",
        False,
        "none",
        packaged="mnist-anomaly",
    ),
    AnomalyModel(
        "Meta-SVDD, 32 channels, label-free, all train images, 4000 pre-training steps",
        "mnist-anomaly-pretrain4k.toml",
        False,
        "none",
    ),
    AnomalyModel(
        "Meta-SVDD, 32 channels, label-free, strict, 4000 pre-training steps",
        "mnist-anomaly-strict-pretrain4k.toml",
        True,
        "none",
    ),
    AnomalyModel(
        "Meta-SVDD, 32 channels, label-free, strict, 4000 pre-training steps, 2000 meta-steps",
        "mnist-anomaly-strict-pretrain4k-meta2000.toml",
        True,
        "none",
    ),
    AnomalyModel("Meta-SVDD, supervised", "mnist-anomaly-supervised.toml", True, "8 digits"),
    AnomalyModel("OC-MAML, supervised", "mnist-ocmaml-supervised.toml", True, "8 digits"),
    AnomalyModel("OC-MAML, label-free, all train images", "mnist-ocmaml-unsup.toml", False, "none"),
    AnomalyModel(
        "Meta-GMVAE density, label-free, all train images",
        "mnist-anomaly-gmvae.toml",
        False,
        "none",
    ),
)
#: Support sizes, queries per side, digits.
K_SHOTS = (2, 5, 10)
N_QUERY = 500
DIGITS = tuple(range(10))
#: Support size and contamination of the contaminated-support measurement.
CONTAMINATED_K, CONTAMINATION = 10, 0.1
#: What a cached cell holds, part of its cache key: "2" added the scores at a learner's
#: meta-learned boundary (``boundary_ba``, ``boundary_fpr``), "3" that boundary at the task's
#: support size (Meta-SVDD's ``r_K``).
CELL_SCORES = "cell scores 3"
#: Methods whose ROC curves and score histograms are drawn (those present).
FIGURE_METHODS = 4


def validation_digit(d: int) -> int:
    """The validation digit held out with test digit ``d``."""
    return (d + 1) % 10


def meta_train_digits(d: int) -> list[int]:
    """The eight digits a per-digit run meta-trains on."""
    return [c for c in DIGITS if c not in (d, validation_digit(d))]


def _run(
    model: AnomalyModel,
    digit: int | None,
    configs: Path,
    runs: Path,
    train: bool,
    echo: Echo,
) -> tuple[Path, dict[str, Any]]:
    """The weights file of the finished, calibrated run of ``model`` (for ``digit``), trained
    here if missing (:class:`ConfigError` when it is missing and ``train`` is false), or of
    its packaged checkpoint; and the record of its training."""
    from metaunsup.training.build import train_run
    from metaunsup.training.config import load_config
    from metaunsup.training.recalibrate import ensure_calibrated
    from metaunsup.training.trainer import LAST

    if model.packaged is not None:
        return _packaged(model)
    overrides: dict[str, Any] = {}
    base = load_config(configs / model.config)
    if digit is not None:
        overrides = {"name": f"{base.name}-d{digit}", "data.classes": meta_train_digits(digit)}
    cfg = load_config(configs / model.config, overrides)
    run_dir = runs / cfg.name
    last = run_dir / LAST
    step = read_checkpoint(last)[1]["step"] if last.exists() else 0
    if step < cfg.train.steps:
        if not train:
            raise ConfigError(
                f"{model.label}: {last} is missing or unfinished ({step}/{cfg.train.steps} "
                "steps); drop --no-train to train it"
            )
        echo(f"training {cfg.name} into {run_dir} ({'resuming' if step else 'from scratch'})")
        train_run(cfg, run_dir, resume=step > 0, progress=False)
    if ensure_calibrated(cfg, run_dir):
        echo(f"calibrated {run_dir}")
    record = _record(read_checkpoint(last)[1], str(run_dir), model)
    return run_dir / "best.safetensors", {**record, "classes": cfg.data.classes or list(DIGITS)}


def _packaged(model: AnomalyModel) -> tuple[Path, dict[str, Any]]:
    """A packaged checkpoint's file and the record of its training (from its metadata)."""
    from metaunsup.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(str(model.packaged))
    meta = read_checkpoint(path)[1]
    classes = (meta.get("run", {}).get("data") or {}).get("classes") or list(DIGITS)
    return path, {**_record(meta, f"packaged checkpoint {model.packaged}", model),
                  "classes": classes}  # fmt: skip


def _record(meta: dict[str, Any], run: str, model: AnomalyModel) -> dict[str, Any]:
    unsup = meta.get("run", {}).get("unsupervised_record") or {}
    return {
        "run": run,
        "labels_used": model.labels,
        "meta_training_seconds": round(float(meta.get("seconds", 0.0)), 1),
        "pretraining_seconds": (unsup.get("pretrain") or {}).get("seconds", 0.0),
        "steps": meta["step"],
    }


def _methods(
    digit: int, runs: dict[str, dict[int | None, Path]], baselines: Sequence[str]
) -> list[Method]:
    """The methods that score the tasks of test digit ``digit``."""
    from metaunsup.evaluation.kinds import task_kind
    from metaunsup.learners import load_learner

    kind = task_kind("anomaly")
    methods: list[Method] = []
    for label, by_digit in runs.items():
        path = by_digit.get(digit) or by_digit.get(None)
        if path is not None:  # None: a per-digit model without a finished run for this digit
            methods.append(kind.method_of(label, load_learner(path)))
    return methods + kind.resolve(baselines)


def _evaluate_cell(
    test: Dataset,
    methods: Sequence[Method],
    digit: int,
    k: int,
    seed: int,
    n_tasks: int,
    contamination: float = 0.0,
) -> dict[str, Any]:
    """Per-task scores ``{method: {score: [n_tasks]}}``, milliseconds and a sample task's query
    scores, for ``n_tasks`` tasks of normal ``digit`` with ``k`` support examples."""
    sampler = AnomalyTaskSampler(
        test,
        k,
        N_QUERY,
        seed=1000 * seed + 10 * digit + k,
        normal_classes=[digit],
        contamination=contamination,
    )
    scores: dict[str, dict[str, list[float]]] = {m.name: {} for m in methods}
    seconds = dict.fromkeys(scores, 0.0)
    sample: dict[str, Any] = {}
    for i, batch in enumerate(sampler.batches(n_tasks, 10)):
        for method in methods:
            start = time.perf_counter()
            out = method.run(batch, seed)
            seconds[method.name] += time.perf_counter() - start
            learner = method.learner if isinstance(method, ScorerMethod) else None
            at_boundary = boundary_scores(learner, batch.query_y, out, k)
            for name, values in {**anomaly_scores(batch.query_y, out), **at_boundary}.items():
                scores[method.name].setdefault(name, []).extend(values.tolist())
            if i == 0:
                sample[method.name] = out[0, :, 0].tolist()
        if i == 0:
            sample["labels"] = batch.query_y[0].tolist()
    ms = {name: 1000.0 * s / n_tasks for name, s in seconds.items()}
    return {"scores": scores, "ms_per_task": ms, "sample": sample}


def _model_files(digit: int, runs: dict[str, dict[int | None, Path]]) -> list[Path]:
    """The weights files that score the tasks of test digit ``digit`` (as in :func:`_methods`)."""
    found = (by_digit.get(digit) or by_digit.get(None) for by_digit in runs.values())
    return [path for path in found if path is not None]


def _cache_tag(methods: Sequence[Method], model_files: Sequence[Path]) -> str:
    """The cache key of a digit's evaluations: what a cell measures (:data:`CELL_SCORES`), the
    methods' names and the bytes of the models' weights files, so that a retrained or
    recalibrated model (its thresholds are buffers in the file) is scored again instead of read
    from an earlier cache, and so are cells cached before a score was added."""
    digest = hashlib.sha1("\n".join([CELL_SCORES, *(m.name for m in methods)]).encode())
    for path in model_files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def _cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    atomic_write_json(path, result)
    return result


def _summarise(cells: dict[tuple[int, int, int], dict[str, Any]], k: int) -> list[dict]:
    """Per method at support size ``k``: every score's mean ± 95% CI over all its tasks, the
    standard deviation of the per-seed means, milliseconds per task, per-digit means and the
    test digits it scored (a per-digit model lacking a run misses that digit's tasks)."""
    every = [key for key in cells if key[1] == k]
    names = list(dict.fromkeys(n for key in every for n in cells[key]["scores"]))
    rows = []
    for name in names:
        keys = [key for key in every if name in cells[key]["scores"]]
        row: dict[str, Any] = {"method": name, "digits": sorted({key[0] for key in keys})}
        for score in cells[keys[0]]["scores"][name]:
            values = np.concatenate([cells[key]["scores"][name][score] for key in keys])
            mean, ci = mean_ci(values)
            seeds = sorted({key[2] for key in keys})
            per_seed = [
                np.mean([np.mean(cells[key]["scores"][name][score]) for key in keys if key[2] == s])
                for s in seeds
            ]
            per_digit = {
                str(d): float(
                    np.mean(
                        np.concatenate(
                            [cells[key]["scores"][name][score] for key in keys if key[0] == d]
                        )
                    )
                )
                for d in sorted({key[0] for key in keys})
            }
            row[score] = {
                "mean": float(mean),
                "ci95": float(ci),
                "seed_sd": float(np.std(per_seed)),
                "per_digit": per_digit,
            }
        row["ms_per_task"] = float(np.mean([cells[key]["ms_per_task"][name] for key in keys]))
        rows.append(row)
    return rows


def run_anomaly_mnist(
    out_dir: str | Path,
    *,
    configs_dir: str | Path = "configs",
    runs_dir: str | Path = "runs",
    tasks: int = 1000,
    seeds: int = 5,
    baselines: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    note: str = "",
    train: bool = True,
    data_root: str | None = None,
    dataset: str = "mnist",
    echo: Echo = print,
) -> dict[str, Any]:
    """Run the experiment; returns the dict written to ``anomaly_mnist.json``.

    ``tasks`` per support size, spread over the ten digits and ``seeds`` seeds; ``baselines``
    (default: every anomaly baseline whose library is installed); ``models``: the stems
    (:attr:`AnomalyModel.stem`) of :data:`ANOMALY_MODELS` to run (default: all); ``note``: why
    some were left out (on the page); ``dataset``: the test data (``"mnist"``; the tests run
    the same code on ``digits``).
    """
    per = tasks // (len(DIGITS) * seeds)
    if per < 1:
        raise ConfigError(
            f"--tasks {tasks} is fewer than one task per digit and seed "
            f"({len(DIGITS) * seeds}); give at least that many"
        )
    started = time.perf_counter()
    out, runs_root = Path(out_dir), Path(runs_dir) / "anomaly"
    out.mkdir(parents=True, exist_ok=True)
    names = list(_default_baselines() if baselines is None else baselines)
    chosen = _chosen_models(models)
    runs, training = _train_all(chosen, Path(configs_dir), runs_root, train, echo)
    test = data.load(dataset, "test", root=data_root)
    cache = Path(runs_dir) / "anomaly-eval"
    cache.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[int, int, int], dict[str, Any]] = {}
    contaminated: dict[tuple[int, int, int], dict[str, Any]] = {}
    for d in DIGITS:
        methods = _methods(d, runs, names)
        echo(f"digit {d}: {len(methods)} methods, {per} tasks per seed and support size")
        tag = _cache_tag(methods, _model_files(d, runs))
        for k in K_SHOTS:
            for s in range(seeds):
                path = cache / f"{dataset}-d{d}-k{k}-s{s}-n{per}-{tag}.json"
                run = functools.partial(_evaluate_cell, test, methods, d, k, s, per)
                cells[(d, k, s)] = _cached(path, run)
        path = cache / f"{dataset}-d{d}-k{CONTAMINATED_K}-c{CONTAMINATION}-n{per}-{tag}.json"
        run = functools.partial(
            _evaluate_cell, test, methods, d, CONTAMINATED_K, 0, per, CONTAMINATION
        )
        contaminated[(d, CONTAMINATED_K, 0)] = _cached(path, run)
    report = {
        "protocol": _protocol(dataset, per, seeds),
        "results": {str(k): _summarise(cells, k) for k in K_SHOTS},
        "contaminated": _summarise(contaminated, CONTAMINATED_K),
        "training": training,
        "not_run": {
            "models": [{"label": m.label, "config": m.config} for m in _left_out(chosen)],
            "baselines": [b for b in _all_baselines() if b not in names],
            "note": note,
        },
        "samples": {str(d): cells[(d, K_SHOTS[-1], 0)]["sample"] for d in DIGITS},
        "command": _command(tasks, seeds, models, baselines, note),
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "anomaly_mnist.json", report)
    from metaunsup.app.anomaly_page import results_page, write_figures

    write_figures(report, out)
    atomic_write_text(out / "anomaly_mnist.md", results_page(report))
    return report


def _protocol(dataset: str, per: int, seeds: int) -> dict[str, Any]:
    """The protocol block of the report: what was sampled, how many tasks."""
    return {
        "dataset": f"{dataset}/test",
        "k_shots": list(K_SHOTS),
        "n_query": N_QUERY,
        "tasks_per_k": per * len(DIGITS) * seeds,
        "seeds": seeds,
        "tasks_per_digit_and_seed": per,
        "fpr": 0.05,
        "contamination": {
            "k_shot": CONTAMINATED_K,
            "fraction": CONTAMINATION,
            "tasks": per * len(DIGITS),
        },
    }


def _left_out(chosen: Sequence[AnomalyModel]) -> list[AnomalyModel]:
    return [m for m in ANOMALY_MODELS if m not in chosen]


def _command(
    tasks: int,
    seeds: int,
    models: Sequence[str] | None,
    baselines: Sequence[str] | None,
    note: str,
) -> str:
    """The CLI command that reproduces the experiment."""
    words = ["metaunsup experiment anomaly-mnist", f"--tasks {tasks}", f"--seeds {seeds}"]
    words += [f"--model {m}" for m in models or ()]
    words += [f"--method {b}" for b in baselines or ()]
    if note:
        words.append(f"--note {json.dumps(note)}")
    return " ".join(words)


def _chosen_models(models: Sequence[str] | None) -> list[AnomalyModel]:
    """The models named by :attr:`AnomalyModel.stem` (``mnist-anomaly-strict``), in
    :data:`ANOMALY_MODELS`' order; all when ``models`` is ``None``."""
    if models is None:
        return list(ANOMALY_MODELS)
    stems = {m.stem: m for m in ANOMALY_MODELS}
    unknown = sorted(set(models) - set(stems))
    if unknown:
        raise ConfigError(
            f"unknown anomaly-mnist model(s) {', '.join(unknown)}; choose from {', '.join(stems)}"
        )
    return [m for stem, m in stems.items() if stem in models]


def _all_baselines() -> list[str]:
    from metaunsup.evaluation.anomaly_baselines import ANOMALY_BASELINES

    return list(ANOMALY_BASELINES)


def _default_baselines() -> list[str]:
    from metaunsup.evaluation.anomaly_baselines import ANOMALY_BASELINES, PYOD_DETECTORS

    try:
        import pyod  # noqa: F401
    except ImportError:
        return [n for n in ANOMALY_BASELINES if n.removeprefix("pca95-") not in PYOD_DETECTORS]
    return list(ANOMALY_BASELINES)


def _train_all(
    models: Sequence[AnomalyModel], configs: Path, runs: Path, train: bool, echo: Echo
) -> tuple[dict[str, dict[int | None, Path]], dict[str, Any]]:
    """Every model's weights file(s), by label and test digit (``None``: one for all).

    Without ``train``, a per-digit model's digits without a finished run are skipped and
    listed (``missing_digits``); a model without any finished run raises :class:`ConfigError`.
    """
    found: dict[str, dict[int | None, Path]] = {}
    training: dict[str, Any] = {}
    for model in models:
        digits: list[int | None] = list(DIGITS) if model.per_digit else [None]
        found[model.label] = {}
        records: list[dict[str, Any]] = []
        missing: list[int] = []
        for d in digits:
            try:
                path, record = _run(model, d, configs, runs, train, echo)
            except ConfigError:
                if train or d is None or (d == digits[-1] and not records):
                    raise
                missing.append(d)
                continue
            found[model.label][d] = path
            records.append(record)
        training[model.label] = {
            "config": str(configs / model.config),
            "labels_used": model.labels,
            "runs": records,
            "missing_digits": missing,
        }
    return found, training
