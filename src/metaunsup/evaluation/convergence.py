"""Convergence curves: clustering quality against adaptation steps and against time.

A meta-learned clustering learner adapts to a task in ``steps`` (soft k-means iterations for
Meta-K-means, gradient steps for Clustering-MAML); K-means converges over Lloyd iterations.
Both curves are measured on the same tasks, each point timed on its own (the learner is run
afresh with that many steps, as a user would run it), so quality can be read against
milliseconds per task as well as against steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from metaunsup.cluster import kmeans
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.learners import ClusteringLearner, MetaLearner
from metaunsup.metrics import mean_ci, score_clustering
from metaunsup.tasks import ClusteringTaskSampler

__all__ = ["CurvePoint", "kmeans_curve", "learner_curve", "measure_curve"]


@dataclass
class CurvePoint:
    """Quality after ``steps`` adaptation steps: means and 95% half-widths over the tasks."""

    steps: int
    acc: float
    acc_ci95: float
    nmi: float
    nmi_ci95: float
    ms_per_task: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def measure_curve(
    dataset: Dataset,
    run: Callable[[torch.Tensor, int, int, int], torch.Tensor],
    steps: Sequence[int],
    *,
    n_way: int,
    k_shot: int,
    n_tasks: int,
    seed: int = 0,
    chunk_size: int = 100,
) -> list[CurvePoint]:
    """``run(x [B, n, ...], k, seed, steps) -> labels [B, n]`` scored after each of ``steps``.

    The tasks are protocol A's (:class:`~metaunsup.tasks.ClusteringTaskSampler` with ``seed``),
    so a curve lines up with an evaluation report of the same seed.
    """
    if not steps:
        raise ConfigError("a convergence curve needs at least one number of steps")
    sampler = ClusteringTaskSampler(dataset, n_way=n_way, k_shot=k_shot, seed=seed)
    acc: dict[int, list[np.ndarray]] = {s: [] for s in steps}
    nmi: dict[int, list[np.ndarray]] = {s: [] for s in steps}
    seconds = dict.fromkeys(steps, 0.0)
    start = 0
    for batch in sampler.batches(n_tasks, chunk_size):
        for s in steps:
            t0 = time.perf_counter()
            labels = run(batch.x, batch.n_way, seed + start, s)
            seconds[s] += time.perf_counter() - t0
            scores = score_clustering(batch.y, labels)
            acc[s].append(scores["acc"])
            nmi[s].append(scores["nmi"])
        start += batch.n_tasks
    points = []
    for s in steps:
        a_mean, a_ci = mean_ci(np.concatenate(acc[s]))
        n_mean, n_ci = mean_ci(np.concatenate(nmi[s]))
        points.append(
            CurvePoint(
                steps=int(s),
                acc=float(a_mean),
                acc_ci95=float(a_ci),
                nmi=float(n_mean),
                nmi_ci95=float(n_ci),
                ms_per_task=1000.0 * seconds[s] / n_tasks,
            )
        )
    return points


def learner_curve(
    learner: MetaLearner, dataset: Dataset, steps: Sequence[int], **kwargs
) -> list[CurvePoint]:
    """:func:`measure_curve` of a clustering learner's ``cluster(x, k, seed=, steps=)``
    (:class:`ConfigError` for a learner that does not cluster)."""
    if not isinstance(learner, ClusteringLearner):
        raise ConfigError(f"a {learner.name!r} learner does not cluster: it has no curve")

    def run(x: torch.Tensor, k: int, seed: int, s: int) -> torch.Tensor:
        with torch.no_grad():
            return learner.cluster(x, k, seed=seed, steps=s)

    return measure_curve(dataset, run, steps, **kwargs)


def kmeans_curve(
    dataset: Dataset, iterations: Sequence[int], n_init: int = 10, **kwargs
) -> list[CurvePoint]:
    """:func:`measure_curve` of K-means on the pixels, capped at each number of Lloyd
    iterations (``>= 1``; ``n_init`` k-means++ restarts, the best inertia kept)."""
    if any(int(s) < 1 for s in iterations):
        raise ConfigError(f"K-means needs at least one Lloyd iteration, got {list(iterations)}")

    def run(x: torch.Tensor, k: int, seed: int, s: int) -> torch.Tensor:
        flat = x.reshape(x.shape[0], x.shape[1], -1).to(torch.float32)
        return kmeans(flat, k, n_init=n_init, max_iter=s, seed=seed).labels

    return measure_curve(dataset, run, iterations, **kwargs)
