"""The evaluation protocol: seeded test tasks, every method on the identical tasks, mean ± 95% CI.

Tasks are drawn once per chunk by a seeded sampler and handed to each method in turn, so all
methods see exactly the same tasks and the comparison is paired. Time is measured per method
(wall clock over all its chunks) and reported as milliseconds per task.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from metaunsup._validation import check_int
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.evaluation.baselines import get_baseline
from metaunsup.learners import ClusteringLearner, FewShotLearner, MetaLearner, load_learner
from metaunsup.metrics import mean_ci, score_clustering
from metaunsup.tasks import ClusteringTaskSampler, TaskBatch


@dataclass(frozen=True)
class ClusteringMethod:
    """A clustering method under evaluation: ``fn(x [B, n, ...], k, seed) -> labels [B, n]``."""

    name: str
    fn: Callable[[torch.Tensor, int, int], torch.Tensor]


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

    def fn(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            labels = learner.cluster(x.to(device), k, seed=seed, steps=steps)
        return labels.cpu()

    return ClusteringMethod(name, fn)


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


@dataclass
class MeanCI:
    """A mean and the half-width of its 95% confidence interval (1.96·std/√n)."""

    mean: float
    ci95: float

    @classmethod
    def of(cls, values: np.ndarray) -> MeanCI:
        mean, ci = mean_ci(values)
        return cls(float(mean), float(ci))


@dataclass
class MethodResult:
    """Scores of one method over all tasks (``nmi``/``ari`` only for clustering tasks)."""

    method: str
    acc: MeanCI
    ms_per_task: float
    nmi: MeanCI | None = None
    ari: MeanCI | None = None


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

    def to_json(self) -> dict:
        """The JSON layout: results keep only the scores that were measured."""
        out = asdict(self)
        out["results"] = [{k: v for k, v in r.items() if v is not None} for r in out["results"]]
        if self.task == "clustering":
            del out["n_query"]
        return out


def resolve_methods(names: Iterable[str]) -> list[ClusteringMethod]:
    """Turn baseline names into :class:`ClusteringMethod` objects (unknown → ConfigError)."""
    methods = []
    seen = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        baseline = get_baseline(name)
        methods.append(ClusteringMethod(baseline.name, baseline.fn))
    if not methods:
        raise ConfigError("no method to evaluate; name at least one")
    return methods


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
    """Run clustering protocol A: ``n_tasks`` tasks of ``n_way`` classes × ``k_shot`` examples.

    Each method sees only the task's examples and ``k = n_way``; the hidden labels score it
    (Hungarian accuracy, NMI, ARI). ``progress(n)`` is called after every chunk with the number of
    tasks just finished. The method seed of a chunk is ``seed + index of its first task``.
    """
    _check_n_tasks(n_tasks)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size!r}")
    sampler = ClusteringTaskSampler(dataset, n_way=n_way, k_shot=k_shot, seed=seed)
    scores: dict[str, dict[str, list[np.ndarray]]] = {
        m.name: {"acc": [], "nmi": [], "ari": []} for m in methods
    }
    seconds = dict.fromkeys(scores, 0.0)
    start = 0
    for batch in sampler.batches(n_tasks, chunk_size):
        for method in methods:
            labels = _timed_call(method, batch, seed + start, seconds)
            for key, values in score_clustering(batch.y, labels).items():
                scores[method.name][key].append(values)
        start += batch.n_tasks
        if progress is not None:
            progress(batch.n_tasks)
    results = [
        MethodResult(
            method=name,
            acc=MeanCI.of(np.concatenate(s["acc"])),
            nmi=MeanCI.of(np.concatenate(s["nmi"])),
            ari=MeanCI.of(np.concatenate(s["ari"])),
            ms_per_task=1000.0 * seconds[name] / n_tasks,
        )
        for name, s in scores.items()
    ]
    return EvaluationReport(
        dataset=dataset.name,
        split=dataset.split,
        task="clustering",
        n_way=n_way,
        k_shot=k_shot,
        tasks=n_tasks,
        seed=seed,
        results=results,
        environment=environment(),
    )


def _check_n_tasks(n_tasks: object) -> None:
    check_int("n_tasks", n_tasks, 1)


def _timed_call(
    method: ClusteringMethod, batch: TaskBatch, seed: int, seconds: dict[str, float]
) -> torch.Tensor:
    t0 = time.perf_counter()
    labels = method.fn(batch.x, batch.n_way, seed)
    seconds[method.name] += time.perf_counter() - t0
    if labels.shape != batch.y.shape:
        raise RuntimeError(
            f"method {method.name!r} returned labels of shape {tuple(labels.shape)}, "
            f"expected {tuple(batch.y.shape)}"
        )
    return labels


def evaluate_fewshot(
    dataset: Dataset,
    learners: Sequence[tuple[str, MetaLearner]],
    *,
    n_way: int,
    k_shot: int,
    n_query: int,
    n_tasks: int,
    seed: int = 0,
    steps: int | None = None,
    chunk_size: int = 50,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Few-shot classification: adapt on each task's support, score its query (accuracy).

    All learners see the identical tasks; ``steps`` overrides the test-time adaptation steps of
    gradient-based learners.
    """
    from metaunsup.tasks import FewShotTaskSampler

    _check_n_tasks(n_tasks)
    for name, learner in learners:
        if not isinstance(learner, FewShotLearner):
            raise ConfigError(
                f"{name!r} holds a {learner.name!r} learner, which does not classify few-shot "
                "tasks; evaluate it with --task clustering"
            )
    sampler = FewShotTaskSampler(dataset, n_way, k_shot, n_query, seed=seed)
    accs: dict[str, list[np.ndarray]] = {name: [] for name, _ in learners}
    seconds = dict.fromkeys(accs, 0.0)
    for batch in sampler.batches(n_tasks, chunk_size):
        batch = batch.to(device)
        for name, learner in learners:
            t0 = time.perf_counter()
            logits = learner.fewshot_logits(batch, steps=steps)
            seconds[name] += time.perf_counter() - t0
            hits = (logits.argmax(-1) == batch.query_y).to(torch.float64).mean(1)
            accs[name].append(hits.cpu().numpy())
        if progress is not None:
            progress(batch.n_tasks)
    results = [
        MethodResult(
            method=name,
            acc=MeanCI.of(np.concatenate(values)),
            ms_per_task=1000.0 * seconds[name] / n_tasks,
        )
        for name, values in accs.items()
    ]
    return EvaluationReport(
        dataset=dataset.name,
        split=dataset.split,
        task="fewshot",
        n_way=n_way,
        k_shot=k_shot,
        n_query=n_query,
        tasks=n_tasks,
        seed=seed,
        results=results,
        environment=environment(),
    )
