"""Meta-train a clustering learner on pseudo-tasks made from the user's own unlabelled table.

When no trained checkpoint fits the data (any table of numbers), :class:`~metaunsup.MetaKMeans`
meta-trains a small Meta-K-means learner on the data itself, in the spirit of CACTUs (Hsu et
al., ICLR 2019) and STUNT (Nam et al., "STUNT: Few-shot Tabular Learning with Self-generated
Tasks from Unlabeled Tables", ICLR 2023):

1. :func:`graph_partitions`: ``P`` spectral partitions of the examples. Partition ``p`` builds
   the ``m``-nearest-neighbour graph of the rows (``m`` from ``neighbors``, cosine or Euclidean
   neighbourhoods from ``metrics``, cycling through every combination), embeds it spectrally
   (:func:`metaunsup.cluster.graph.spectral_embedding`: the top eigenvectors of the
   regularised normalised adjacency, rows scaled to unit length) and runs k-means on that
   embedding (Ng, Jordan & Weiss, NIPS 2001). Neighbourhoods are far purer than k-means'
   round clusters, so these partitions are better pseudo-labels than k-means on the raw
   features (``docs/python.md``). The embedding keeps ``ceil(1.5 k)`` eigenvectors, not
   ``k``: with only ``k``, two groups that the graph links weakly often share one
   eigenvector and are merged by every partition; a few more eigenvectors keep them apart
   (the measurements are in ``docs/python.md``). Graphs are built on at most 10,000 random
   examples (their cost grows with the square of the examples); the others take the
   partition's label of their nearest sampled example.
2. Small data fall back to :func:`subset_partitions`: k-means partitions each computed on a
   random 3/4 of the features (STUNT). "Small" is fewer than 100 examples or fewer than 5 per
   cluster, where a neighbourhood graph says little.
3. A :class:`~metaunsup.tasks.pseudo.cactus.CactusTaskSource` (``shuffle=True``) turns the
   partitions into clustering tasks: ``n_way`` clusters of one partition with ``k_shot``
   examples each, the cluster ids hidden from the learner and read only by its pairwise meta-loss;
4. a :class:`~metaunsup.learners.MetaKMeansLearner` over an :class:`~metaunsup.nets.MLP`
   embedding learns, by plain Adam steps on that meta-loss, an embedding in which its soft
   k-means recovers such partitions.

Each example of a task has a fraction ``corruption`` (default 0.2) of its features replaced by
the same features of random other examples (the marginal corruption of SCARF, Bahri et al.,
ICLR 2022), so the embedding must group examples from partial evidence.

Measured on all 1797 scikit-learn digits by ``benchmarks/bench_estimator.py``: see
``docs/python.md`` for the table. The learned embedding generalises the partitions (k-means in
it scores about as well as the best single partition and better than their mean), which
k-means partitions could not teach.

Everything is seeded: the same data, settings and seed give the same learner (on one CPU
thread count). Shapes: data ``[n, d]`` ``float32``; partitions ``int64 [P, n]``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from metaunsup._validation import check_int
from metaunsup.cluster import kmeans
from metaunsup.cluster.graph import METRICS, observed_sqdist, spectral_embedding
from metaunsup.errors import ConfigError, DataError
from metaunsup.estimators.guard import FEATURES, GuardDecision
from metaunsup.estimators.missing import FilledFeatures
from metaunsup.learners import MetaKMeansLearner
from metaunsup.nets import MLP, MaskedMLP
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.pseudo.cactus import CactusTaskSource
from metaunsup.training.config import TrainConfig
from metaunsup.training.trainer import Trainer

__all__ = [
    "SelfTrainResult",
    "SelfTrainSettings",
    "filled",
    "graph_partitions",
    "self_train",
    "subset_partitions",
    "uses_graph",
]

log = logging.getLogger(__name__)

#: Points each feature-subset partition's k-means is fitted on (all points are then assigned
#: to its centres).
_FIT_POINTS = 4000
#: Most points of a neighbourhood graph (the others take their nearest graph point's label).
_GRAPH_POINTS = 10_000
#: Eigenvectors per cluster of a graph partition's spectral embedding (see the module text).
_EIGENVECTORS_PER_CLUSTER = 1.5
#: Fewest examples, and fewest examples per cluster, for graph partitions.
_GRAPH_MIN_POINTS = 100
_GRAPH_MIN_PER_CLUSTER = 5
#: Above this many examples the graph partitions share one sample of rows.
_SHARED_ROWS = 100_000
#: Pseudo-label sources of :class:`SelfTrainSettings`.
PSEUDO_LABELS = ("graph", "kmeans")


@dataclass(frozen=True)
class SelfTrainSettings:
    """How :func:`self_train` builds pseudo-tasks and meta-trains.

    Attributes
    ----------
    steps:
        Meta-training steps (Adam updates); ``0`` keeps the randomly initialised embedding.
    meta_batch:
        Pseudo-tasks per step.
    pseudo_labels:
        ``"graph"``: spectral partitions (:func:`graph_partitions`), or k-means ones on feature
        subsets when the data are too small for a graph (:func:`uses_graph`); ``"kmeans"``:
        always k-means on feature subsets (:func:`subset_partitions`).
    n_partitions:
        ``P``, the partitions the tasks are drawn from.
    neighbors:
        Neighbour counts of the graphs (cycled through, with ``metrics``).
    metrics:
        Neighbourhoods of the graphs: ``"cosine"`` and/or ``"euclidean"``.
    eigenvectors_per_cluster:
        The graphs' spectral embeddings keep ``ceil(eigenvectors_per_cluster * k)``
        eigenvectors (at least ``k``).
    graph_rows:
        Most rows of a neighbourhood graph (a random sample; the other rows take the label of
        their nearest sampled row). Time and memory of a graph grow with its square.
    feature_fraction:
        Fraction of the features each partition is computed on (at least one feature).
        ``None``: all of them for graph partitions (their graphs already differ), 3/4 for
        k-means ones (which need other views of the data to differ).
    task_shots:
        Most examples per cluster in a pseudo-task (fewer on small data).
    hidden:
        Widths of the MLP's layers; the last is the embedding's dimension.
    lr:
        Adam's learning rate.
    corruption:
        Fraction of each task example's features replaced from random other examples.
    """

    steps: int = 300
    meta_batch: int = 4
    pseudo_labels: str = "graph"
    n_partitions: int = 12
    neighbors: tuple[int, ...] = (5, 10, 15)
    metrics: tuple[str, ...] = METRICS
    eigenvectors_per_cluster: float = _EIGENVECTORS_PER_CLUSTER
    graph_rows: int = _GRAPH_POINTS
    feature_fraction: float | None = None
    task_shots: int = 20
    hidden: tuple[int, ...] = (128, 64)
    lr: float = 1e-3
    corruption: float = 0.2

    def __post_init__(self) -> None:
        for name in ("steps", "meta_batch", "n_partitions", "task_shots"):
            value = getattr(self, name)
            check_int(name, value, 0 if name == "steps" else 1)
        check_int("graph_rows", self.graph_rows, 3)
        if self.pseudo_labels not in PSEUDO_LABELS:
            raise ConfigError(
                f"pseudo_labels must be one of {PSEUDO_LABELS}, got {self.pseudo_labels!r}"
            )
        if not self.neighbors:
            raise ConfigError("neighbors must be one or more integers >= 1, got none")
        for m in self.neighbors:
            check_int("neighbors", m, 1)
        if not self.metrics or any(m not in METRICS for m in self.metrics):
            raise ConfigError(f"metrics must be one or more of {METRICS}, got {self.metrics!r}")
        if not self.eigenvectors_per_cluster >= 1.0:
            raise ConfigError(
                f"eigenvectors_per_cluster must be >= 1, got {self.eigenvectors_per_cluster!r}"
            )
        if self.feature_fraction is not None and not 0.0 < self.feature_fraction <= 1.0:
            raise ConfigError(f"feature_fraction must be in (0, 1], got {self.feature_fraction!r}")
        if not 0.0 <= self.corruption < 1.0:
            raise ConfigError(f"corruption must be in [0, 1), got {self.corruption!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be one or more positive widths, got {self.hidden!r}")


@dataclass
class SelfTrainResult:
    """The meta-trained learner (in evaluation mode) and what its training did."""

    learner: MetaKMeansLearner
    steps: int
    seconds: float
    n_way: int
    k_shot: int
    pseudo_labels: str = "none"
    losses: list[float] = field(default_factory=list)
    decision: GuardDecision | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly facts about the training (no learner)."""
        last = self.losses[-min(len(self.losses), 20) :]
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "task": f"{self.n_way} clusters x {self.k_shot}",
            "pseudo_labels": self.pseudo_labels,
            "final_loss": round(sum(last) / len(last), 4) if last else None,
        }


def _nearest(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``int64 [n]``: nearest of ``centers`` ``[k, m]`` for each row of ``x`` ``[n, m]``.

    ``argmin_j ‖x_i − c_j‖² = argmin_j (‖c_j‖² − 2 x_i·c_j)`` (``‖x_i‖²`` is the same for every
    ``j``): one matrix product per chunk of rows (at most about 16 MiB of scores), no square
    roots (``torch.cdist`` computes the distances themselves, which the argmin does not need).
    Rows or centres with missing cells (NaN): distances over the observed features
    (:func:`~metaunsup.cluster.graph.observed_sqdist`).
    """
    sq = (centers * centers).sum(1).unsqueeze(0)  # [1, k]
    step = max(1, (1 << 22) // max(1, centers.shape[0]))
    missing = bool(torch.isnan(x).any() or torch.isnan(centers).any())
    out = torch.empty(len(x), dtype=torch.int64)
    for s in range(0, len(x), step):
        if missing:
            scores = observed_sqdist(x[s : s + step], centers)
        else:
            scores = torch.addmm(sq, x[s : s + step], centers.t(), alpha=-2.0)
        out[s : s + step] = scores.argmin(1)
    return out


def subset_partitions(
    x: torch.Tensor, k: int, n_partitions: int, feature_fraction: float, seed: int
) -> torch.Tensor:
    """``int64 [P, n]``: k-means partitions of ``x`` ``[n, d]``, each on random features.

    Partition ``p`` runs k-means (k-means++ seeding, one restart) on a random subset of
    ``max(1, round(feature_fraction * d))`` columns, fitted on at most ``4000`` random examples
    and then assigning every example to its nearest centre.
    """
    n, d = x.shape
    if not 1 <= k <= n:
        raise ConfigError(f"cannot partition {n} examples into {k} clusters")
    g = torch.Generator().manual_seed(seed)
    m = max(1, round(feature_fraction * d))
    cols = torch.stack([torch.randperm(d, generator=g)[:m] for _ in range(n_partitions)])
    n_fit = min(n, _FIT_POINTS)
    rows = torch.stack([torch.randperm(n, generator=g)[:n_fit] for _ in range(n_partitions)])
    views = torch.nan_to_num(x[rows.unsqueeze(-1), cols.unsqueeze(1)])  # [P, n_fit, m]
    km_seeds = torch.randint(0, 2**62, (n_partitions,), generator=g).tolist()
    fit = kmeans(views, k, n_init=1, max_iter=100, seed=km_seeds)
    if n_fit == n:
        out = torch.empty((n_partitions, n), dtype=torch.int64)
        out[torch.arange(n_partitions).unsqueeze(1), rows] = fit.labels
        return out
    return torch.stack([_nearest(x[:, cols[p]], fit.centers[p]) for p in range(n_partitions)])


def filled(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[n, d]`` with each missing cell (NaN) replaced by the mean of its feature over the
    row's 5 nearest rows that observe it, by Euclidean distances over the features both rows
    observe (scikit-learn's ``KNNImputer`` rule, :class:`FilledFeatures` with every row a
    donor). Returns ``float32 [n, d]`` with no NaN."""
    out = FilledFeatures(x.double().numpy(), 0, donors=len(x)).rows
    return torch.from_numpy(out).to(torch.float32)


def uses_graph(n: int, k: int) -> bool:
    """Whether :func:`self_train` makes graph partitions of ``n`` examples into ``k`` clusters:
    at least 100 examples and 5 per cluster (below that, k-means on feature subsets)."""
    return n >= _GRAPH_MIN_POINTS and n >= _GRAPH_MIN_PER_CLUSTER * k


def graph_partitions(
    x: torch.Tensor,
    k: int,
    n_partitions: int,
    neighbors: tuple[int, ...] = (5, 10, 15),
    metrics: tuple[str, ...] = METRICS,
    feature_fraction: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    eigenvectors_per_cluster: float = _EIGENVECTORS_PER_CLUSTER,
    graph_rows: int = _GRAPH_POINTS,
) -> torch.Tensor:
    """``int64 [P, n]``: spectral partitions of ``x`` ``[n, d]`` into ``k`` clusters.

    Partition ``p`` uses the ``p``-th (metric, neighbour count) pair of ``metrics x neighbors``
    (cycling), a random ``max(1, round(feature_fraction * d))`` of the columns, and at most
    ``graph_rows`` random rows: the spectral embedding of their neighbourhood graph
    (:func:`~metaunsup.cluster.graph.spectral_embedding`, ``ceil(eigenvectors_per_cluster *
    k)`` components, fewer than the graph's rows), clustered by k-means into ``k`` clusters
    (k-means++, 4 restarts). Rows left out of the graph take the label of their nearest
    (Euclidean) graph row, in chunks (memory stays bounded on millions of rows). On more than
    100,000 rows with all columns (``feature_fraction=1``; with missing cells, on more than
    ``graph_rows``, where filling and searching over observed features cost as much as a
    partition), the partitions share one sample of graph rows, so each row's nearest graph
    row is found once; their graphs differ by metric, neighbour count (at most a fifth of the
    graph's rows) and k-means seed. ``progress``: a bar on stderr.

    Missing cells (NaN): the graph rows are filled first (:func:`filled`, from their 5 nearest
    graph rows over the features both observe), so the graph sees whole rows; the rows left out
    of the graph take the label of their nearest filled graph row by distances over their own
    observed features.
    """
    n, d = x.shape
    n_fit = min(n, graph_rows)
    if not 2 <= k < n_fit:
        raise ConfigError(f"cannot make graph partitions of {n} examples into {k} clusters")
    components = max(k, min(math.ceil(eigenvectors_per_cluster * k), n_fit - 1))
    g = torch.Generator().manual_seed(seed)
    m = max(1, round(feature_fraction * d))
    pairs = [(metric, count) for count in neighbors for metric in metrics]
    out = torch.empty((n_partitions, n), dtype=torch.int64)
    missing = bool(torch.isnan(x).any())
    shared = (n > _SHARED_ROWS or (missing and n > n_fit)) and m == d
    if shared:  # one sample of graph rows, and one search for each row's nearest of them
        shared_rows = torch.randperm(n, generator=g)[:n_fit]
        shared_nearest = _nearest(x, x[shared_rows])
    # every graph row the same whole-table fill: filled once
    whole = (
        filled(x[shared_rows] if shared else x)
        if missing and m == d and (shared or n_fit == n)
        else None
    )
    bar = tqdm(
        range(n_partitions),
        desc="pseudo-label partitions",
        unit="partition",
        file=sys.stderr,
        leave=False,
        disable=not (progress and sys.stderr.isatty()),
    )
    for p in bar:
        metric, count = pairs[p % len(pairs)]
        cols = torch.randperm(d, generator=g)[:m] if m < d else torch.arange(d)
        if shared:
            rows = shared_rows
        else:
            rows = torch.randperm(n, generator=g)[:n_fit] if n_fit < n else torch.arange(n)
        view = x[:, cols] if m < d else x  # all columns: no copy of the table
        fit = view[rows] if whole is None else whole
        if missing and whole is None:
            fit = filled(fit)
        count = max(1, min(count, n_fit // 5))
        emb = spectral_embedding(fit, components, n_neighbors=count, metric=metric)
        km_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        labels = kmeans(emb, k, n_init=4, seed=km_seed).labels
        if n_fit == n:
            out[p] = labels
        else:
            out[p] = labels[shared_nearest if shared else _nearest(view, fit)]
    return out


def _task_shape(n: int, k: int, task_shots: int) -> tuple[int, int]:
    """``(n_way, k_shot)`` of the pseudo-tasks for ``n`` examples and ``k`` clusters.

    At least 2 clusters per task (a one-cluster task teaches nothing), at most ``n``; about a
    half of the examples of a cluster go into a task, capped at ``task_shots``.
    """
    n_way = min(max(2, k), n)
    k_shot = max(1, min(task_shots, n // (2 * n_way)))
    return n_way, k_shot


def _task_source(
    x: torch.Tensor, parts: torch.Tensor, n_way: int, k_shot: int, seed: int
) -> tuple[CactusTaskSource, int]:
    """The task source, with ``k_shot`` lowered to 1 when no partition has clusters that big."""
    try:
        return CactusTaskSource(x, parts, n_way, k_shot, 0, seed=seed, shuffle=True), k_shot
    except ConfigError:
        if k_shot == 1:
            raise
        return CactusTaskSource(x, parts, n_way, 1, 0, seed=seed, shuffle=True), 1


class CorruptedTasks:
    """A task source whose tasks have a fraction ``rate`` of each example's features taken
    from random rows of ``x`` ``[n, d]`` (a denoising view of the pseudo-tasks, drawn from its
    own generator seeded with ``seed``).

    ``cells``: the features of one example when ``x``'s columns are several blocks of them
    (``d`` a multiple of ``cells``, e.g. filled values beside their observed-cell mask): a
    corrupted feature is taken from the donor in every block, so a value and its mask move
    together. Default ``d``."""

    def __init__(
        self,
        tasks: CactusTaskSource,
        x: torch.Tensor,
        rate: float,
        seed: int,
        cells: int | None = None,
    ) -> None:
        self.tasks, self.x, self.rate = tasks, x, rate
        self.cells = x.shape[1] if cells is None else cells
        if self.x.shape[1] % self.cells:
            raise ConfigError(f"{x.shape[1]} columns are not blocks of {self.cells} cells")
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, n_tasks: int) -> TaskBatch:
        batch = self.tasks.sample(n_tasks)
        if self.rate <= 0:
            return batch
        B, n, d = batch.x.shape
        mask = torch.rand((B, n, self.cells), generator=self.generator) < self.rate
        mask = mask.repeat(1, 1, d // self.cells)
        donors = self.x[torch.randint(0, self.x.shape[0], (B, n), generator=self.generator)]
        return dataclasses.replace(batch, x=torch.where(mask, donors, batch.x))

    def state_dict(self) -> dict[str, Any]:
        return {**self.tasks.state_dict(), "corruption_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.generator.set_state(state.pop("corruption_generator"))
        self.tasks.load_state_dict(state)


def self_train(
    x: torch.Tensor,
    k: int,
    settings: SelfTrainSettings | None = None,
    seed: int = 0,
    progress: bool = False,
    guard: Callable[[torch.Tensor], GuardDecision] | None = None,
    device: str | torch.device = "cpu",
    inputs: torch.Tensor | None = None,
) -> SelfTrainResult:
    """Meta-train a Meta-K-means learner on pseudo-tasks from the rows of ``x`` ``[n, d]``.

    ``progress`` shows bars (with ETA) over the partitions and the meta-training steps when
    stderr is a terminal;
    ``device``: where the meta-training runs (the partitions are computed on the CPU).
    ``guard`` (see :mod:`metaunsup.estimators.guard`) sees the pseudo-partitions ``[P, n]``
    before meta-training; when it decides for the features, meta-training is skipped (the
    embedding stays random, ``steps == 0``) and its decision is in ``result.decision``.
    ``x`` should be scaled already (e.g. centred, divided by its overall standard deviation);
    ``k`` is the number of clusters of the partitions and tasks (at least 2 are used). Returns
    the learner in evaluation mode, on the CPU, in ``float32``. Data too uniform to give
    pseudo-tasks (e.g. all rows equal) leave the embedding at its random initialisation, and
    say so in the log.

    ``inputs`` ``[n, c * d]``: what the network reads of each row of ``x``, in ``c`` blocks of
    ``d`` columns (e.g. the row with its missing cells filled beside its observed-cell mask,
    :class:`~metaunsup.estimators.missing.FilledFeatures`); the partitions still come from
    ``x``. Default ``x`` itself, through a :class:`~metaunsup.nets.MaskedMLP` where it has
    missing cells.
    """
    settings = settings or SelfTrainSettings()
    if x.dim() != 2 or x.shape[0] < 2:
        raise DataError(f"self-training needs a table [n >= 2, d], got shape {tuple(x.shape)}")
    x = x.detach().to(torch.float32).cpu()
    n, d = x.shape
    rows = x if inputs is None else inputs.detach().to(torch.float32).cpu()
    if rows.dim() != 2 or len(rows) != n or rows.shape[1] % d:
        raise DataError(f"inputs must be [{n}, a multiple of {d}], got {tuple(rows.shape)}")
    n_way, k_shot = _task_shape(n, k, settings.task_shots)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        masked = bool(torch.isnan(rows).any())  # missing cells: the mask-as-input network
        net = (MaskedMLP if masked else MLP)(rows.shape[1], n_way=None, hidden=settings.hidden)
        learner = MetaKMeansLearner(net, n_iter=5, temperature=0.1)
    result = SelfTrainResult(learner, 0, 0.0, n_way, k_shot)
    if settings.steps == 0:
        return _finish(result)
    t0 = time.perf_counter()
    parts, result.pseudo_labels = _partitions(x, n_way, settings, seed, progress)
    if guard is not None:
        result.decision = guard(parts)
        if result.decision.use == FEATURES:
            log.info("self-training skipped: %s", result.decision.reason)
            result.seconds = time.perf_counter() - t0
            return _finish(result)
    try:
        source, result.k_shot = _task_source(rows, parts, n_way, k_shot, seed)
    except ConfigError as err:
        log.warning("no pseudo-tasks could be made from the data (%s); embedding left random", err)
        return _finish(result)
    tasks = CorruptedTasks(source, rows, settings.corruption, seed + 1, cells=d)
    trainer = Trainer(
        learner,
        learner.meta_loss,
        tasks,
        TrainConfig(steps=settings.steps, meta_batch=settings.meta_batch, lr=settings.lr),
        device=device,
        progress=progress,
        name="meta-training on the data",
        remedy="standardise the columns or cluster with a checkpoint",
    )
    result.losses = trainer.fit().losses
    result.steps = settings.steps
    result.seconds = time.perf_counter() - t0
    log.info("self-training: %s", result.summary())
    return _finish(result)


def _partitions(
    x: torch.Tensor, k: int, settings: SelfTrainSettings, seed: int, progress: bool = False
) -> tuple[torch.Tensor, str]:
    """The pseudo-label partitions ``int64 [P, n]`` and which kind they are."""
    fraction = settings.feature_fraction
    if settings.pseudo_labels == "graph" and uses_graph(x.shape[0], k):
        parts = graph_partitions(
            x,
            k,
            settings.n_partitions,
            settings.neighbors,
            settings.metrics,
            1.0 if fraction is None else fraction,
            seed,
            progress,
            settings.eigenvectors_per_cluster,
            settings.graph_rows,
        )
        return parts, "spectral"
    parts = subset_partitions(
        x, k, settings.n_partitions, 0.75 if fraction is None else fraction, seed
    )
    return parts, "kmeans"


def _finish(result: SelfTrainResult) -> SelfTrainResult:
    result.learner.to("cpu").eval()
    for p in result.learner.parameters():
        p.requires_grad_(False)
    return result
