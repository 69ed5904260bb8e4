"""The ``anomaly`` task kinds: from ``K`` normal examples, score and flag a query.

A task (:mod:`metaunsup.tasks.anomaly`) is a support of ``K = k_shot`` normal examples and a
query of ``n_query`` normal and ``n_query`` anomalous ones; ``n_way`` is always 1 (the normal
class). Two kinds are registered:

* ``anomaly`` — anomalies from every other class (MT-MNIST: the other nine digits), or, when
  the dataset's classes have groups, from the other groups (Omniglot one-class, easy track:
  other alphabets);
* ``anomaly-hard`` — anomalies from the normal class's own group (Omniglot, hard track: other
  characters of the same alphabet).

A method returns ``float64 [B, 2q, 2]``: per query example its anomaly score (higher = more
anomalous) and its flag (1 = anomaly) at the target false-alarm rate ``fpr`` (default 0.05),
whose threshold the method chose from the support alone (and, for meta-learned scorers, the
scores of pseudo-normal examples measured after training: see
:mod:`metaunsup.evaluation.calibration`). The query labels then give, per task:

* ``auroc`` — area under the ROC curve of the scores (ties count half);
* ``auprc`` — average precision with anomalies as positives (scikit-learn's
  ``average_precision_score``; 0.5 is chance on these balanced queries);
* ``balanced_acc`` — ``(TPR + TNR) / 2`` of the flags (accuracy on the balanced query);
* ``fpr`` — the share of normal query examples flagged: the realised false-alarm rate.

Learners: any :class:`~metaunsup.learners.AnomalyScorer`. Baselines:
:mod:`metaunsup.evaluation.anomaly_baselines` (PyOD's detectors, a Ledoit–Wolf Mahalanobis
score, the pixel centroid).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from metaunsup._validation import check_choice
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.errors import ConfigError
from metaunsup.evaluation.anomaly_baselines import ANOMALY_BASELINES, anomaly_baseline
from metaunsup.evaluation.calibration import (
    CALIBRATIONS,
    SCALE_LOO,
    NullTable,
    boundary_flags,
    calibrated_pvalues,
    check_fpr,
    leave_one_out_scores,
    require_boundary,
)
from metaunsup.evaluation.protocol import TaskKind, TaskShape
from metaunsup.learners import AnomalyScorer, BoundaryScorer, MetaLearner
from metaunsup.learners.one_class import (
    NULL_GRID,
    NULL_PRIOR,
    NULL_SIZE,
    NULL_STAT_CODES,
    NullTableMixin,
)
from metaunsup.tasks.anomaly import AnomalyTaskSampler, OneClassStream
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.pseudo.cactus import CactusTaskSource
from metaunsup.tasks.pseudo.cactus_anomaly import CactusAnomalySource, no_groups_error

__all__ = [
    "ANOMALY",
    "ANOMALY_HARD",
    "ScorerMethod",
    "anomaly_kind",
    "anomaly_scores",
    "calibrate_on_training_data",
    "calibration_sources",
    "held_out_pixel_source",
    "learner_null_table",
    "measure_null_table",
    "null_shape",
    "one_class_source",
    "worst_family",
]

log = logging.getLogger(__name__)

#: Fewest and most tasks that measure a null table at one support size ``k``: ``1000 // k``
#: clamped to these (many small tasks at small ``k``, where one support's scale varies much from
#: task to task; fewer at large ``k``, where leave-one-out scoring costs ``O(k)`` per task).
NULL_TASKS = (100, 500)

#: k-means partitions of the training images' pixels whose clusters are the held-out
#: pseudo-classes of a label-free null table (:func:`held_out_pixel_source`).
PIXEL_PARTITIONS = 3


def learner_null_table(learner: Any) -> NullTable | None:
    """The meta-calibration table a learner carries (``None`` when it has none)."""
    if not isinstance(learner, NullTableMixin):
        return None
    return NullTable(
        learner.null_k.cpu(),
        learner.null_scores.detach().cpu(),
        learner.null_spread.detach().cpu(),
        float(learner.null_prior),
        NULL_STAT_CODES[int(learner.null_stat)],
    )


@dataclass(frozen=True)
class ScorerMethod:
    """An :class:`~metaunsup.learners.AnomalyScorer` under evaluation, flagging at ``fpr``
    with ``calibration`` (``"auto"``: conformal where it can reach ``fpr``, else the
    learner's null table; ``"boundary"``: above the learner's meta-learned decision boundary,
    whatever ``fpr``), on ``device``."""

    name: str
    learner: MetaLearner
    fpr: float = 0.05
    calibration: str = "auto"
    device: torch.device | str = "cpu"

    def score(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The learner's scores ``[B, q]`` (on the CPU, ``float64``)."""
        assert isinstance(self.learner, AnomalyScorer)
        with torch.no_grad():
            out = self.learner.score(support.to(self.device), query.to(self.device))
        return out.to("cpu", torch.float64)

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        """``float64 [B, 2q, 2]``: scores and flags (the labels are not read)."""
        scores = self.score(batch.support_x, batch.query_x)
        if self.calibration == "boundary":
            flags = boundary_flags(self.learner, scores, int(batch.support_x.shape[1]))
            return torch.stack([scores, flags.to(torch.float64)], -1)
        p, _ = calibrated_pvalues(
            self.score,
            batch.support_x,
            scores,
            fpr=self.fpr,
            calibration=self.calibration,
            null=learner_null_table(self.learner),
        )
        return torch.stack([scores, (p <= self.fpr).to(torch.float64)], -1)


def auroc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per-row AUROC ``[B]`` of ``scores`` ``[B, q]`` for the boolean ``positive`` ``[B, q]``
    (the Mann–Whitney statistic; ties count half)."""
    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = (ranks * positive).sum(1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / np.maximum(n_pos * n_neg, 1)


def anomaly_scores(truth: torch.Tensor, out: torch.Tensor) -> dict[str, np.ndarray]:
    """The kind's scores ``{name: float64 [B]}`` of a method's output ``[B, q, 2]`` against the
    query labels ``truth`` ``[B, q]`` (1 = anomaly)."""
    from sklearn.metrics import average_precision_score

    if out.dim() != 3 or out.shape[:2] != truth.shape or out.shape[2] != 2:
        raise ConfigError(
            f"an anomaly method returned shape {tuple(out.shape)}, expected "
            f"{(*truth.shape, 2)} (score and flag of each query example)"
        )
    y = truth.numpy() > 0
    scores = out[..., 0].numpy()
    flags = out[..., 1].numpy() > 0.5
    n_pos, n_neg = y.sum(1), (~y).sum(1)
    tpr = (flags & y).sum(1) / np.maximum(n_pos, 1)
    fpr = (flags & ~y).sum(1) / np.maximum(n_neg, 1)
    auprc = np.array([average_precision_score(y[b], scores[b]) for b in range(len(y))])
    return {
        "auroc": auroc_rows(scores, y),
        "auprc": auprc,
        "balanced_acc": 0.5 * (tpr + 1.0 - fpr),
        "fpr": fpr,
    }


def boundary_scores(
    learner: object, truth: torch.Tensor, out: torch.Tensor, k: int
) -> dict[str, np.ndarray]:
    """``boundary_ba`` and ``boundary_fpr`` ``[B]``: balanced accuracy and false alarms of the
    flags at ``learner``'s meta-learned decision boundary (OC-MAML's operating point), from the
    scores of a method's output ``[B, q, 2]`` on tasks of ``k`` support examples; empty for a
    learner without a boundary."""
    if not isinstance(learner, BoundaryScorer):
        return {}
    flags = boundary_flags(learner, out[..., 0], k).to(out.dtype)
    at = anomaly_scores(truth, torch.stack([out[..., 0], flags], -1))
    return {"boundary_ba": at["balanced_acc"], "boundary_fpr": at["fpr"]}


def _score(batch: TaskBatch, out: torch.Tensor) -> dict[str, np.ndarray]:
    return anomaly_scores(batch.query_y.cpu(), out)


def _describe(report: Mapping[str, Any]) -> str:
    q = report.get("n_query", 0)
    return f"one-class, {report['k_shot']} normal support + {q} normal and {q} anomalous queries"


def null_shape(k: int) -> tuple[int, int]:
    """``(queries per side, tasks)`` measuring a null table at support size ``k``: the tasks of
    :data:`NULL_TASKS` and enough queries for :data:`~metaunsup.learners.one_class.NULL_SIZE`
    normal scores."""
    tasks = min(max(NULL_TASKS[0], 1000 // k), NULL_TASKS[1])
    return -(-NULL_SIZE // tasks), tasks


def _null_stream(source: OneClassStream, k: int, seed: int) -> tuple[OneClassStream, int] | None:
    """A stream of tasks with ``k`` support examples over ``source``'s groupings and its task
    count (:func:`null_shape`, or half the queries and twice the tasks, down to one query,
    where classes are too small; ``None``: none can)."""
    q, tasks = null_shape(k)
    while True:
        try:
            return source.with_shape(k, q, seed=seed), tasks
        except ConfigError:  # no class has k + q examples
            if q == 1:
                return None
            q, tasks = -(-q // 2), tasks * 2


def held_out_pixel_source(source: CactusAnomalySource, seed: int) -> CactusAnomalySource:
    """One-class pseudo-tasks over the same unlabeled images as ``source`` whose classes are
    clusters of :data:`PIXEL_PARTITIONS` k-means partitions of the *pixels* (as many clusters
    as ``source``'s): pseudo-classes the learner was never meta-trained on, not cells of its
    embedding, so broader and less regular there than the clusters it trained on, as unseen
    classes are."""
    from metaunsup.tasks.pseudo.cactus import cactus_partitions

    x = source.view.float_x()
    parts = cactus_partitions(
        x.reshape(len(x), -1), PIXEL_PARTITIONS, source.n_clusters, seed=seed, scale=False
    )
    return CactusAnomalySource(source.view, parts, source.k_shot, source.n_query, seed)


def _null_rows(
    score: Any, sources: list[OneClassStream], k: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per source that can make tasks with ``k`` support examples: ``(normal query scores
    [n, q] (NaN at anomalies), leave-one-out scores [n, L])`` of fresh tasks
    (:func:`null_shape`, the full count from each source); empty when none can."""
    streams = [_null_stream(src, k, seed + 1000 * j) for j, src in enumerate(sources)]
    rows = []
    for stream, tasks in (f for f in streams if f is not None):
        normal, loo = [], []
        for batch in stream.batches(tasks, 25):
            s = score(batch.support_x, batch.query_x)
            normal.append(s.masked_fill(batch.query_y > 0, float("nan")))
            loo.append(leave_one_out_scores(score, batch.support_x, SCALE_LOO))
        rows.append((torch.cat(normal), torch.cat(loo)))
    return rows


def worst_family(pools: list[torch.Tensor], size: int) -> torch.Tensor:
    """``[size]`` null scores whose upper tail is, at every level, the heaviest of the
    families' ``pools`` (each ``[n_f]``, normalised normal scores of one pseudo-class family):
    the elementwise largest of their quantiles at levels ``(i + ½) / size``.

    A threshold read from it at any ``fpr`` is the largest of the families' own thresholds, so
    it holds on every family: an unseen class may look like either (compact like the clusters
    the model trained on, or broad and irregular like pixel-space clusters), and no label says
    which. Pooling the families instead holds only on their mixture and over-fires on a class
    that resembles the heavier-tailed one (see :mod:`metaunsup.evaluation.calibration`)."""
    levels = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    quantiles = [torch.quantile(p.to(torch.float64), levels) for p in pools]
    return torch.stack(quantiles).amax(0)


def measure_null_table(
    scorer: AnomalyScorer, source: OneClassStream | list[OneClassStream], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(normalised scores [G, N], spreads [G])`` of pseudo-normal held-out examples for every
    support size of :data:`~metaunsup.learners.one_class.NULL_GRID`: the normal queries of
    fresh tasks (:func:`null_shape`) per size from each source's groupings (the training
    data: labels or pseudo-labels pick the normal queries, never a test example), each divided
    by its task's scale (:meth:`~metaunsup.evaluation.calibration.NullTable.scale`: the largest
    leave-one-out score of its support; ``σ0`` the median of those). One source: ``N`` of its
    scores drawn at random; several (label-free runs: pseudo-class families): the
    :func:`worst_family` of their scores. Sizes whose tasks the data cannot make (classes too
    small) stay NaN."""
    sources = source if isinstance(source, list) else [source]
    g = torch.Generator().manual_seed(seed)
    probe = NullTable(torch.tensor([1]), torch.zeros(1, 1), torch.zeros(1), NULL_PRIOR)

    def score(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scorer.score(support, query).cpu().to(torch.float64)

    rows, spreads = [], []
    for i, k in enumerate(NULL_GRID):
        found = _null_rows(score, sources, k, seed + i)
        if not found:
            rows.append(torch.full((NULL_SIZE,), float("nan"), dtype=torch.float64))
            spreads.append(float("nan"))
            continue
        stats = [probe.statistic(loo) for _, loo in found]
        s0 = float(torch.cat(stats).median())
        pools = []
        for (normal, _), stat in zip(found, stats, strict=True):
            scale = (k * stat + NULL_PRIOR * s0) / (k + NULL_PRIOR)
            pool = (normal / scale.clamp_min(1e-12)[:, None]).reshape(-1)
            pool = pool[~torch.isnan(pool)]
            if pool.numel() < NULL_SIZE:
                raise ConfigError(
                    f"null table: {pool.numel()} normal scores, fewer than {NULL_SIZE}"
                )
            pools.append(pool)
        if len(pools) == 1:
            rows.append(pools[0][torch.randperm(pools[0].numel(), generator=g)[:NULL_SIZE]])
        else:
            rows.append(worst_family(pools, NULL_SIZE))
        spreads.append(s0)
    return torch.stack(rows).to(torch.float32), torch.tensor(spreads, dtype=torch.float32)


def calibration_sources(source: Any, seed: int) -> list[OneClassStream]:
    """The task sources a learner trained on ``source`` is calibrated on: the training source
    itself and, when it holds CACTUs pseudo-classes (label-free runs), the held-out pixel-space
    pseudo-classes of :func:`held_out_pixel_source` (a null from the clusters it trained on
    alone is too light-tailed for unseen classes: see :mod:`metaunsup.evaluation.calibration`)."""
    if isinstance(source, CactusAnomalySource):
        return [source, held_out_pixel_source(source, seed)]
    return [source]


def _calibrate(learner: MetaLearner, source: Any, seed: int) -> None:
    """Measure and store a trained learner's null table from its training task source."""
    if not isinstance(source, OneClassStream) or not isinstance(learner, NullTableMixin):
        return
    assert isinstance(learner, AnomalyScorer)
    scores, spread = measure_null_table(learner, calibration_sources(source, seed), seed)
    learner.set_null_table(scores, spread, NULL_PRIOR, "max")


def one_class_source(source: Any, seed: int) -> OneClassStream | None:
    """One-class tasks over the training data of a run whose tasks are of another kind (a
    learner that scores anomalies but meta-trains on few-shot or clustering tasks, such as
    Meta-GMVAE): ``source`` itself when it is one-class; the clusters of a CACTUs source's
    partitions as normal classes, over its examples (:class:`CactusAnomalySource`, no label
    read); the classes of a labelled sampler's dataset; ``None`` for any other source. The
    shape is a placeholder: the null table draws its own per support size."""
    if isinstance(source, OneClassStream):
        return source
    if isinstance(source, CactusTaskSource):
        return CactusAnomalySource(source.view, source.partitions, 2, 1, seed)
    dataset = getattr(source, "dataset", None)
    if isinstance(dataset, Dataset):
        return AnomalyTaskSampler(dataset, 2, 1, seed, anomalies="other-classes")
    return None


def calibrate_on_training_data(learner: MetaLearner, source: Any, seed: int) -> None:
    """Measure the null table of an anomaly scorer meta-trained on tasks of another kind, on
    one-class tasks of its training data (:func:`one_class_source`), as a one-class run's is
    measured on its own; a source with no classes to draw from leaves the table unmeasured
    (the learner then calibrates conformally) and says so in the log."""
    one_class = one_class_source(source, seed)
    if one_class is None:
        log.warning(
            "%s: the training tasks (%s) give no classes to calibrate thresholds on; only "
            "conformal p-values (from 19 normal examples on at fpr=0.05)",
            learner.name,
            type(source).__name__,
        )
        return
    _calibrate(learner, one_class, seed)


def _pseudo_tasks(
    kind: str,
    anomalies: str | None,
    view: UnlabeledView,
    parts: torch.Tensor,
    shape: TaskShape,
    seed: int,
    groups: torch.Tensor | None = None,
) -> CactusAnomalySource:
    """The one-class pseudo-tasks of the kind ``kind`` (its ``anomalies`` source) over CACTUs
    ``parts`` ``[P, n]`` of ``view``: anomalies from any other cluster, or, for a kind whose
    anomalies are near ones, from the normal cluster's group (``groups`` ``[P, k]``, needed)."""
    near = anomalies not in (None, "other-classes")
    if near and groups is None:
        raise no_groups_error(kind)
    return CactusAnomalySource(view, parts, shape.k_shot, shape.n_query, seed,
                               anomalies="same-group" if near else "other-classes",
                               groups=groups if near else None)  # fmt: skip


def anomaly_kind(
    name: str = "anomaly",
    *,
    anomalies: str | None = None,
    contamination: float = 0.0,
    fpr: float = 0.05,
    calibration: str = "auto",
) -> TaskKind:
    """A one-class task kind.

    ``anomalies``: where anomalies come from (``None``: other groups when the dataset has
    groups, else other classes; see :data:`~metaunsup.tasks.anomaly.ANOMALY_SOURCES`);
    ``contamination``: anomalous share of each support; ``fpr`` and ``calibration``: how
    every method flags (``"boundary"``: learners at their meta-learned boundary, baselines
    still at ``fpr``, as they have no such boundary). The registered kinds are
    ``anomaly_kind()`` and ``anomaly_kind("anomaly-hard", anomalies="same-group")``.
    """
    fpr = check_fpr(fpr)
    check_choice("calibration", calibration, CALIBRATIONS)

    def sampler(dataset: Dataset, shape: TaskShape, seed: int) -> AnomalyTaskSampler:
        source = anomalies or ("other-groups" if dataset.groups is not None else "other-classes")
        return AnomalyTaskSampler(dataset, shape.k_shot, shape.n_query, seed,
                                  anomalies=source, contamination=contamination)  # fmt: skip

    def learner_method(
        label: str, learner: MetaLearner, steps: int | None = None, device: Any = "cpu"
    ) -> ScorerMethod:
        if not isinstance(learner, AnomalyScorer):
            raise ConfigError(
                f"{label!r} holds a {learner.name!r} learner, which does not score anomalies; "
                "use a checkpoint of an anomaly learner (meta_svdd, oc_maml, meta_gmvae)"
            )
        if calibration == "boundary":
            require_boundary(learner)  # a clear error before any task
        return ScorerMethod(label, learner, fpr, calibration, device)

    where = anomalies or "other classes (other groups where classes have groups)"
    return TaskKind(
        name=name,
        summary=f"score a query against K normal examples, anomalies from {where} "
        "(AUROC, AUPRC, balanced accuracy and false alarms at the calibrated threshold)",
        ability=AnomalyScorer,
        scores=("auroc", "auprc", "balanced_acc", "fpr"),
        score_labels={
            "auroc": "AUROC",
            "auprc": "AUPRC",
            "balanced_acc": f"balanced accuracy (fpr={fpr})"
            if calibration != "boundary"
            else f"balanced accuracy (learners: learned boundary; baselines: fpr={fpr})",
            "fpr": "false-alarm rate",
        },
        has_query=True,
        chunk_size=20,
        make_sampler=sampler,
        score=_score,
        learner_method=learner_method,
        baselines={n: functools.partial(anomaly_baseline, n, fpr) for n in ANOMALY_BASELINES},
        default_baselines=("mahalanobis",),
        fixed_n_way=1,
        describe=_describe,
        pseudo_source=functools.partial(_pseudo_tasks, name, anomalies),
        calibrate=_calibrate,
    )


ANOMALY = anomaly_kind()
ANOMALY_HARD = anomaly_kind("anomaly-hard", anomalies="same-group")
