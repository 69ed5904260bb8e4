"""A label-free guard: cluster the learned embedding only when it beats the plain features.

A meta-learned embedding helps on data like those it was trained on, and can hurt elsewhere:
self-training on 5 000 rows of overlapping Gaussian blobs learns from pseudo-partitions that are
mostly noise, and a checkpoint meets images unlike its training images. Without labels the
estimator cannot measure accuracy, but it can measure how *reproducible* each representation's
partition is - the classical label-free stand-in for it (Ben-Hur, Elisseeff & Guyon, "A
stability based method for discovering structure in clustered data", PSB 2002; Lange, Roth,
Braun & Buhmann, "Stability-based validation of clustering solutions", Neural Computation 16,
2004): a partition that follows real structure comes back when it is made again from other
rows and another start, one that cuts noise does not. Both sides are scored the same way, by
the mean adjusted Rand index between partitions made again and again:

* **Features** (the table as the estimator scaled it, or standardised pixels):
  :func:`kmeans_agreement` - 12 k-means partitions, each fitted on other random rows from
  another k-means++ start.
* **Self-trained embedding**: :func:`partition_agreement` of the pseudo-partitions it would
  learn from (spectral partitions of neighbourhood graphs of different sizes and metrics, each
  on other random rows). The embedding learns what those partitions agree on; when they agree
  less than k-means partitions of the features do, the graphs saw less structure than k-means
  does, and meta-training on them cannot beat it. The guard decides before meta-training,
  which is then skipped.
* **Checkpoint embedding**: :func:`kmeans_agreement` in the embedding.

Before any of that, self-training asks :func:`separated`: when a few k-means partitions of the
features are the same partition and every row lies clearly nearer its own centre than any
other (:class:`KMeansStructure`), the clusters are separated by empty margins, which the
neighbourhood graphs see too - their partitions would be that same partition, and an embedding
meta-trained on them would give it back. Self-training then costs its time for nothing and is
skipped. The check is cheap (a few k-means fits) next to self-training, and when it fails
nothing of it is reused: the guard's scores above are computed as they always are.

:func:`decide` turns the two scores into a :class:`GuardDecision`: the embedding is kept when
its score is at least the features' less ``margin``; otherwise the estimator falls back to
k-means on the features, and says so. ``benchmarks/robustness.py`` measures the guard on every
row of ``docs/results/robustness.md``.

Shapes: points ``[n, d]``; partitions ``int64 [P, n]``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from metaunsup._validation import check_int
from metaunsup.cluster.kmeans import kmeans
from metaunsup.errors import DataError

__all__ = [
    "EMBEDDING",
    "FEATURES",
    "SEPARATED_AGREEMENT",
    "SEPARATED_PARTITIONS",
    "SEPARATED_RATIO",
    "GuardDecision",
    "KMeansStructure",
    "decide",
    "kmeans_agreement",
    "kmeans_structure",
    "partition_agreement",
    "separated",
]

#: What :class:`GuardDecision.use` can say.
EMBEDDING = "embedding"
FEATURES = "features"
#: Most rows each k-means partition is fitted on (as for the self-training's partitions).
_FIT_POINTS = 4000
#: :func:`separated`: k-means partitions made ...
SEPARATED_PARTITIONS = 4
#: ... agree at least this much (the same partition every time) ...
SEPARATED_AGREEMENT = 0.99
#: ... and no row's distance to its centre more than this fraction of its distance to the
#: next centre (an empty margin around every cluster).
SEPARATED_RATIO = 0.5


@dataclass(frozen=True)
class GuardDecision:
    """Which representation is clustered, and why.

    Attributes
    ----------
    use:
        ``"embedding"`` (the learned one) or ``"features"`` (the fallback).
    embedding_score, features_score:
        The two agreement scores (adjusted Rand index, 1 = always the same partition).
    criterion:
        How the embedding was scored: ``"pseudo-partition agreement"`` or ``"k-means
        agreement"``.
    margin:
        How far below the features' score the embedding's may be and still be used.
    """

    use: str
    embedding_score: float | None
    features_score: float
    criterion: str
    margin: float = 0.0
    #: Set by :func:`separated`: the largest distance ratio of a row (no embedding scored).
    worst_ratio: float | None = None

    @property
    def reason(self) -> str:
        """One line for a summary, e.g. for ``metaunsup cluster``."""
        if self.embedding_score is None:
            return (
                f"clustered the features (k-means): {self.criterion} (their k-means partitions "
                f"agree {self.features_score:.3f} and no row is more than "
                f"{self.worst_ratio:.2f} of the way to another centre), so self-training was "
                "skipped"
            )
        what = "the learned embedding" if self.use == EMBEDDING else "the features (k-means)"
        cmp = ">=" if self.use == EMBEDDING else "<"
        return (
            f"clustered {what}: the embedding's {self.criterion} {self.embedding_score:.3f} "
            f"{cmp} the features' k-means agreement {self.features_score:.3f}"
            + (f" - {self.margin:.2f}" if self.margin else "")
        )

    def to_json(self) -> dict[str, object]:
        score = self.embedding_score
        record: dict[str, object] = {
            "use": self.use,
            "embedding_score": None if score is None else round(score, 4),
            "features_score": round(self.features_score, 4),
            "criterion": self.criterion,
            "reason": self.reason,
        }
        if self.worst_ratio is not None:
            record["worst_ratio"] = round(self.worst_ratio, 4)
        return record


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings ``[n]``: scikit-learn's ``adjusted_rand_score``
    (the same pair counts, in exact integers, and the same formula, so the same float)
    without its input checks, which cost more than the index on the guard's many pairs."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    n = int(a.shape[0])
    width = int(b.max()) + 1 if n else 1
    table = np.bincount(a * width + b, minlength=(int(a.max()) + 1 if n else 1) * width)
    table = table.reshape(-1, width).astype(np.int64)
    sum_squares = int((table**2).sum())
    tp = sum_squares - n
    fp = int((table @ table.sum(0)).sum()) - sum_squares
    fn = int((table.T @ table.sum(1)).sum()) - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def partition_agreement(partitions: torch.Tensor) -> float:
    """Mean adjusted Rand index over all pairs of rows of ``partitions`` ``[P, n]``
    (``P >= 2``); 1.0 for a single partition."""
    if partitions.dim() != 2 or partitions.shape[1] == 0:
        raise DataError(f"partitions must be [P, n], got shape {tuple(partitions.shape)}")
    parts = partitions.cpu().numpy()
    if parts.shape[0] < 2:
        return 1.0
    pairs = itertools.combinations(range(parts.shape[0]), 2)
    return float(np.mean([_ari(parts[i], parts[j]) for i, j in pairs]))


@dataclass(frozen=True)
class KMeansStructure:
    """What repeated k-means partitions of a table show (:func:`kmeans_structure`).

    Attributes
    ----------
    agreement:
        Mean adjusted Rand index between the partitions (1 = always the same partition).
    worst_ratio:
        The largest, over rows and partitions, of a row's distance to its nearest centre
        divided by its distance to the next nearest (0 = every row on its centre, 1 = a row
        on a boundary).
    """

    agreement: float
    worst_ratio: float


def kmeans_structure(
    x: torch.Tensor | np.ndarray, k: int, *, partitions: int = 12, seed: int = 0
) -> KMeansStructure:
    """Make ``partitions`` k-means partitions of ``x`` ``[n, d]`` and say how they agree and how
    clearly every row belongs to its cluster.

    Each partition is k-means (k-means++ seeding, one restart, at most 100 iterations) fitted
    on at most 4 000 random rows and extended to every row by its nearest centre - made the
    way the self-training's pseudo-partitions are, so that their agreements compare. Seeded
    by ``seed``: the same data and seed give the same result. Agreement 1.0 and ratio 0.0 for
    ``k < 2``.
    """
    z = torch.as_tensor(x).detach().cpu()
    z = z.to(torch.float64) if not z.is_floating_point() else z
    if z.dim() != 2:
        raise DataError(f"points must be [n, d], got shape {tuple(z.shape)}")
    n = z.shape[0]
    k = check_int("k", k, 1)
    partitions = check_int("partitions", partitions, 2)
    if k < 2 or n < k:
        return KMeansStructure(1.0, 0.0)
    g = torch.Generator().manual_seed(seed)
    n_fit = min(n, _FIT_POINTS)
    rows = torch.stack([torch.randperm(n, generator=g)[:n_fit] for _ in range(partitions)])
    seeds = torch.randint(0, 2**62, (partitions,), generator=g).tolist()
    fit = kmeans(z[rows], k, n_init=1, max_iter=100, seed=seeds)
    centers = fit.centers.to(z.dtype)
    step = max(1, (1 << 22) // (k * partitions))  # [P, step, k] distances at once
    labels, worst = [], 0.0
    for s in range(0, n, step):
        dist = torch.cdist(z[s : s + step].unsqueeze(0), centers)
        labels.append(dist.argmin(2))
        two = dist.topk(2, dim=2, largest=False).values
        ratio = torch.where(two[..., 1] > 0, two[..., 0] / two[..., 1], 1.0)
        worst = max(worst, float(ratio.max()))
    return KMeansStructure(partition_agreement(torch.cat(labels, dim=1)), worst)


def kmeans_agreement(
    x: torch.Tensor | np.ndarray, k: int, *, partitions: int = 12, seed: int = 0
) -> float:
    """Mean adjusted Rand index between ``partitions`` k-means partitions of ``x`` ``[n, d]``
    (:func:`kmeans_structure`'s ``agreement``)."""
    return kmeans_structure(x, k, partitions=partitions, seed=seed).agreement


def separated(x: torch.Tensor | np.ndarray, k: int, *, seed: int = 0) -> GuardDecision | None:
    """The decision to cluster the features ``x`` ``[n, d]`` without self-training when their
    k-means clusters are separated: :data:`SEPARATED_PARTITIONS` partitions
    (:func:`kmeans_structure`) agree at least :data:`SEPARATED_AGREEMENT` and no row is beyond
    :data:`SEPARATED_RATIO` of the way to another centre; ``None`` otherwise."""
    structure = kmeans_structure(x, k, partitions=SEPARATED_PARTITIONS, seed=seed)
    if structure.agreement < SEPARATED_AGREEMENT or structure.worst_ratio > SEPARATED_RATIO:
        return None
    return GuardDecision(
        FEATURES,
        None,
        structure.agreement,
        "the k-means clusters are separated",
        worst_ratio=structure.worst_ratio,
    )


def decide(
    embedding_score: float, features_score: float, criterion: str, margin: float = 0.0
) -> GuardDecision:
    """Keep the embedding when ``embedding_score >= features_score - margin``."""
    use = EMBEDDING if embedding_score >= features_score - margin else FEATURES
    return GuardDecision(use, float(embedding_score), float(features_score), criterion, margin)
