"""The evaluation protocol, the same for every task kind: seeded test tasks, every method on
the identical tasks, each score as mean ± 95% CI over tasks.

Tasks are drawn once per chunk by the kind's seeded sampler and handed to each method in turn,
so all methods see exactly the same tasks and the comparison is paired. Time is measured per
method (wall clock over all its chunks) and reported as milliseconds per task. Evaluation
streams: a chunk's tasks are dropped once scored, and each score is kept as running moments
(:class:`RunningMeanCI`), so memory does not grow with the number of tasks.

A task kind (:class:`TaskKind`, registered in :mod:`metaunsup.evaluation.kinds`) says how its
tasks are drawn, what a method returns for them and how that is scored, which learners can be
evaluated on it and which baselines stand beside them; :func:`evaluate` runs any of them.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from metaunsup._validation import check_int
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners import MetaLearner
from metaunsup.learners.fit import check_fits
from metaunsup.metrics import mean_ci
from metaunsup.tasks import TaskBatch

__all__ = [
    "EvaluationReport",
    "MeanCI",
    "Method",
    "MethodResult",
    "RunningMeanCI",
    "TaskKind",
    "TaskShape",
    "environment",
    "evaluate",
]


@dataclass(frozen=True)
class TaskShape:
    """The shape of a task: ``n_way`` classes × ``k_shot`` examples (+ ``n_query`` each)."""

    n_way: int
    k_shot: int
    n_query: int = 0


class Method(Protocol):
    """A method under evaluation: ``run(batch, seed)`` → what its task kind scores (labels
    ``int64 [B, n]`` for clustering, query predictions ``[B, m]`` for few-shot tasks)."""

    @property
    def name(self) -> str: ...

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class TaskKind:
    """What the protocol needs to know about one kind of task.

    Attributes
    ----------
    name, summary:
        The kind's name (``task.kind`` in configs, ``--task`` on the command line) and one
        line about it.
    ability:
        The learner ability (:mod:`metaunsup.learners.base`) a model needs to be evaluated
        (and validated) on these tasks.
    scores:
        The scores each method gets, the headline first (meta-validation keeps the best
        checkpoint by it).
    score_labels:
        How reports name each score (their columns and axes), e.g. ``{"acc": "accuracy"}``.
    has_query:
        Whether tasks hold query examples besides their support (``n_query`` matters).
    chunk_size:
        Tasks drawn and run at a time (memory; and, with the method seed of each chunk,
        part of what makes a run reproducible).
    make_sampler:
        ``(dataset, shape, seed) -> sampler`` of labelled tasks (``batches(n, chunk)``), for
        evaluation, meta-validation and supervised meta-training alike.
    score:
        ``(batch, output) -> {score: float64 [B]}``; checks the output's shape.
    learner_method:
        ``(name, learner, steps, device) -> Method`` for a learner with the ability.
    baselines:
        Baseline methods by name (factories), and ``default_baselines`` those evaluated when
        none is named.
    fixed_n_way:
        The number of classes every task of the kind has whatever the shape says (one-class
        tasks: 1); reports show it.
    describe:
        ``(report) -> str``: the task shape in words for report titles (default: "N-way K-shot").
    pseudo_source:
        ``(unlabeled view, CACTUs partitions [P, n], shape, seed, groups) -> task source``: the
        kind's pseudo-tasks for meta-training without labels (default: CACTUs few-shot or
        clustering tasks); ``groups`` ``[P, k]``: the group of each cluster
        (``unsupervised.pseudo_groups``), or ``None``.
    calibrate:
        ``(trained learner, its training source, seed) -> None``: a last step after
        meta-training that stores what the kind needs in the learner (one-class kinds: the
        scores of pseudo-normal examples that set thresholds).
    """

    name: str
    summary: str
    ability: type
    scores: tuple[str, ...]
    score_labels: Mapping[str, str]
    has_query: bool
    chunk_size: int
    make_sampler: Callable[[Dataset, TaskShape, int], Any]
    score: Callable[[TaskBatch, torch.Tensor], dict[str, np.ndarray]]
    learner_method: Callable[[str, MetaLearner, int | None, torch.device | str], Method]
    baselines: Mapping[str, Callable[[], Method]] = field(default_factory=dict)
    default_baselines: tuple[str, ...] = ()
    fixed_n_way: int | None = None
    describe: Callable[[Mapping[str, Any]], str] | None = None
    pseudo_source: Callable[[Any, torch.Tensor, TaskShape, int, Any], Any] | None = None
    calibrate: Callable[[MetaLearner, Any, int], None] | None = None

    def baseline(self, name: str) -> Method:
        """The baseline called ``name``; :class:`ConfigError` naming the choices otherwise."""
        if name not in self.baselines:
            choices = ", ".join(self.baselines) or "none: evaluate trained models (--checkpoint)"
            raise ConfigError(f"unknown method {name!r} for {self.name} tasks; choose from: "
                              f"{choices}")  # fmt: skip
        return self.baselines[name]()

    def resolve(self, names: Iterable[str]) -> list[Method]:
        """Baselines by name, each once, in order (unknown names: :class:`ConfigError`)."""
        return [self.baseline(name) for name in dict.fromkeys(names)]

    def method_of(
        self,
        name: str,
        learner: MetaLearner,
        steps: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Method:
        """``learner`` as a method; the kind's ``learner_method`` raises a
        :class:`ConfigError` saying which kind fits when the learner lacks the ability."""
        return self.learner_method(name, learner, steps, device)


@dataclass
class MeanCI:
    """A mean and the half-width of its 95% confidence interval (1.96·std/√n)."""

    mean: float
    ci95: float

    @classmethod
    def of(cls, values: np.ndarray) -> MeanCI:
        mean, ci = mean_ci(values)
        return cls(float(mean), float(ci))


class RunningMeanCI:
    """Mean and 95% CI of a stream of values, from running moments (memory independent of the
    stream's length).

    Each :meth:`add` merges a batch's count, mean and sum of squared deviations into the
    running ones (Chan, Golub & LeVeque 1979, the pairwise update), which is as accurate as
    two passes over all values; :meth:`result` equals ``MeanCI.of`` of the concatenated values
    (sample standard deviation, ``ddof=1``) up to rounding.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, values: np.ndarray) -> None:
        """Merge a batch of values (finite, else :class:`~metaunsup.errors.DataError`)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)):
            raise DataError("a score was NaN or infinite")
        n, mean = v.size, float(v.mean())
        m2 = float(((v - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    def result(self) -> MeanCI:
        if self.count == 0:
            raise DataError("no values to average")
        if self.count == 1:
            return MeanCI(self.mean, 0.0)
        std = math.sqrt(max(self.m2, 0.0) / (self.count - 1))
        return MeanCI(self.mean, 1.96 * std / math.sqrt(self.count))


@dataclass
class MethodResult:
    """Scores of one method over all tasks, by name (``scores["acc"]``), and its time."""

    method: str
    scores: dict[str, MeanCI]
    ms_per_task: float

    def to_json(self) -> dict[str, Any]:
        """``{"method", <score>: {"mean", "ci95"}, ..., "ms_per_task"}``."""
        out: dict[str, Any] = {"method": self.method}
        out.update({k: {"mean": v.mean, "ci95": v.ci95} for k, v in self.scores.items()})
        out["ms_per_task"] = self.ms_per_task
        return out


@dataclass
class EvaluationReport:
    """Everything one evaluation run measured, in the JSON layout the CLI writes."""

    dataset: str
    split: str
    task: str
    n_way: int
    k_shot: int
    tasks: int
    seed: int
    results: list[MethodResult]
    n_query: int = 0
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON layout (``n_query`` only for kinds whose tasks have a query)."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "task": self.task,
            "n_way": self.n_way,
            "k_shot": self.k_shot,
            "tasks": self.tasks,
            "seed": self.seed,
            "results": [r.to_json() for r in self.results],
        }
        if self.n_query:
            out["n_query"] = self.n_query
        out["environment"] = dict(self.environment)
        return out


def environment() -> dict[str, str]:
    """Versions, threads and date, stored beside every result so numbers can be traced."""
    from metaunsup import __version__

    return {
        "metaunsup": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch_threads": str(torch.get_num_threads()),
        "date": _dt.date.today().isoformat(),
    }


def evaluate(
    kind: TaskKind,
    dataset: Dataset,
    methods: Sequence[Method],
    *,
    shape: TaskShape,
    n_tasks: int,
    seed: int = 0,
    chunk_size: int | None = None,
    method_seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Run ``methods`` on ``n_tasks`` seeded tasks of ``kind`` from ``dataset``.

    Each method sees only what the kind shows it (clustering: the points and ``k``; few-shot:
    the labelled support and the query); the hidden labels only score. The tasks come from
    ``kind.make_sampler(dataset, shape, seed)`` in chunks of ``chunk_size`` (default: the
    kind's); the methods of a chunk get the seed ``method_seed + index of its first task``
    (``method_seed`` defaults to ``seed``). ``progress(n)`` is called after every chunk with
    the number of tasks just finished.
    """
    check_int("n_tasks", n_tasks, 1)
    chunk = kind.chunk_size if chunk_size is None else check_int("chunk_size", chunk_size, 1)
    if not methods:
        raise ConfigError("no method to evaluate; name at least one")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"two methods share a name: {names}")
    for method in methods:  # a trained model must fit the data before it is scored on them
        learner = getattr(method, "learner", None)
        if isinstance(learner, MetaLearner):
            check_fits(
                learner,
                dataset.example_shape,
                f"model {method.name!r}",
                f"or evaluate it on a dataset of such examples (not {dataset.name})",
            )
    sampler = kind.make_sampler(dataset, shape, seed)
    base = seed if method_seed is None else method_seed
    scores: dict[str, dict[str, RunningMeanCI]] = {
        n: {s: RunningMeanCI() for s in kind.scores} for n in names
    }
    seconds = dict.fromkeys(names, 0.0)
    start = 0
    for batch in sampler.batches(n_tasks, chunk):
        for method in methods:
            t0 = time.perf_counter()
            out = method.run(batch, base + start)
            seconds[method.name] += time.perf_counter() - t0
            for key, values in kind.score(batch, out.cpu()).items():
                scores[method.name][key].add(values)
            del out
        done = batch.n_tasks
        del batch  # before the next chunk is drawn: one chunk in memory at a time
        start += done
        if progress is not None:
            progress(done)
    results = [
        MethodResult(
            method=name,
            scores={k: v.result() for k, v in per_score.items()},
            ms_per_task=1000.0 * seconds[name] / n_tasks,
        )
        for name, per_score in scores.items()
    ]
    return EvaluationReport(
        dataset=dataset.name,
        split=dataset.split,
        task=kind.name,
        n_way=shape.n_way if kind.fixed_n_way is None else kind.fixed_n_way,
        k_shot=shape.k_shot,
        n_query=shape.n_query if kind.has_query else 0,
        tasks=n_tasks,
        seed=seed,
        results=results,
        environment=environment(),
    )
