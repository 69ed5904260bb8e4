"""The ``clustering`` task kind: ``n_way`` classes × ``k_shot`` examples, labels hidden.

A method sees only the task's examples and ``k = n_way``, and returns labels ``int64 [B, n]``;
the hidden classes score them by Hungarian accuracy, NMI and ARI (protocol A). Baselines:
:mod:`metaunsup.evaluation.baselines`; learners: any
:class:`~metaunsup.learners.ClusteringLearner`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.evaluation.baselines import BASELINES
from metaunsup.evaluation.protocol import EvaluationReport, TaskKind, TaskShape, evaluate
from metaunsup.learners import ClusteringLearner, MetaLearner, load_learner
from metaunsup.learners.fit import learner_example_shape
from metaunsup.metrics import score_clustering
from metaunsup.tasks import ClusteringTaskSampler, TaskBatch

__all__ = [
    "CLUSTERING",
    "ClusteringMethod",
    "checkpoint_method",
    "evaluate_clustering",
    "learner_method",
    "resolve_methods",
]


@dataclass(frozen=True)
class ClusteringMethod:
    """A clustering method under evaluation: ``fn(x [B, n, ...], k, seed) -> labels [B, n]``;
    ``learner``: the trained model behind it, if any (whose fit to the data
    :func:`~metaunsup.evaluation.protocol.evaluate` checks)."""

    name: str
    fn: Callable[[torch.Tensor, int, int], torch.Tensor]
    learner: MetaLearner | None = None

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        """Labels of the batch's tasks: the method sees the examples and ``k`` only."""
        return self.fn(batch.x, batch.n_way, seed)


def learner_method(
    name: str,
    learner: MetaLearner,
    steps: int | None = None,
    device: torch.device | str = "cpu",
) -> ClusteringMethod:
    """A :class:`~metaunsup.learners.ClusteringLearner` (Meta-K-means, Clustering-MAML,
    Meta-GMVAE) as an evaluation method, run without gradients on ``device``; ``steps``
    (``None``: the learner's own) overrides its test-time steps. A learner that does not
    cluster is a :class:`ConfigError` saying which task it is for."""
    if not isinstance(learner, ClusteringLearner):
        raise ConfigError(
            f"{name!r} holds a {learner.name!r} learner, which does not cluster; evaluate it "
            "with --task fewshot"
        )

    shape = learner_example_shape(learner)

    def fn(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
        x = x.reshape(*x.shape[:2], *shape)  # rows of a table for a network of images, ...
        with torch.no_grad():
            labels = learner.cluster(x.to(device), k, seed=seed, steps=steps)
        return labels.cpu()

    return ClusteringMethod(name, fn, learner)


def checkpoint_method(
    name_or_path: str | Path,
    steps: int | None = None,
    device: torch.device | str = "cpu",
    label: str | None = None,
) -> ClusteringMethod:
    """A trained clustering learner, loaded from a checkpoint file or packaged name, as an
    evaluation method (``evaluate --checkpoint``); ``label`` names the method (default: the
    checkpoint as given). See :func:`learner_method`."""
    learner = load_learner(name_or_path, device)
    return learner_method(label or str(name_or_path), learner, steps, device)


def resolve_methods(names: Iterable[str]) -> list[ClusteringMethod]:
    """The clustering baselines called ``names`` (each once; unknown → :class:`ConfigError`)."""
    methods = [_baseline(name) for name in dict.fromkeys(names)]
    if not methods:
        raise ConfigError("no method to evaluate; name at least one")
    return methods


def _baseline(name: str) -> ClusteringMethod:
    if name not in BASELINES:
        raise ConfigError(f"unknown method {name!r}; choose from: {', '.join(BASELINES)}")
    return ClusteringMethod(name, BASELINES[name].fn)


def _sampler(dataset: Dataset, shape: TaskShape, seed: int) -> ClusteringTaskSampler:
    return ClusteringTaskSampler(dataset, n_way=shape.n_way, k_shot=shape.k_shot, seed=seed)


def _score(batch: TaskBatch, labels: torch.Tensor) -> dict[str, np.ndarray]:
    if labels.shape != batch.y.shape:
        raise ConfigError(
            f"a clustering method returned labels of shape {tuple(labels.shape)}, expected "
            f"{tuple(batch.y.shape)}"
        )
    return score_clustering(batch.y, labels)


CLUSTERING = TaskKind(
    name="clustering",
    summary="cluster n_way classes × k_shot examples, labels hidden (accuracy, NMI, ARI)",
    ability=ClusteringLearner,
    scores=("acc", "nmi", "ari"),
    score_labels={"acc": "clustering accuracy", "nmi": "NMI", "ari": "ARI"},
    has_query=False,
    chunk_size=250,
    make_sampler=_sampler,
    score=_score,
    learner_method=learner_method,
    baselines={name: functools.partial(_baseline, name) for name in BASELINES},
    default_baselines=("kmeans",),
)


def evaluate_clustering(
    dataset: Dataset,
    methods: Sequence[ClusteringMethod],
    *,
    n_way: int,
    k_shot: int,
    n_tasks: int,
    seed: int = 0,
    chunk_size: int = 250,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Protocol A: ``n_tasks`` tasks of ``n_way`` classes × ``k_shot`` examples, every method
    on the same tasks (see :func:`~metaunsup.evaluation.protocol.evaluate`)."""
    return evaluate(
        CLUSTERING,
        dataset,
        methods,
        shape=TaskShape(n_way, k_shot),
        n_tasks=n_tasks,
        seed=seed,
        chunk_size=chunk_size,
        progress=progress,
    )
