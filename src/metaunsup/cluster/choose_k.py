"""Choosing the number of clusters: by the silhouette of k-means partitions, or by the
eigengap of a neighbourhood graph.

**Silhouette** (:func:`choose_k`).
For each ``k`` in ``k_min..k_max`` the points are clustered by k-means (k-means++, a few
restarts, :func:`~metaunsup.cluster.kmeans`) and the partition is scored by its mean silhouette
coefficient (Rousseeuw, "Silhouettes: a graphical aid to the interpretation and validation of
cluster analysis", J. Comput. Appl. Math. 20, 1987): for each point, ``(b - a) / max(a, b)``
with ``a`` its mean distance to the other points of its cluster and ``b`` the mean distance to
the points of the nearest other cluster. The silhouette prefers compact, well-separated
clusters and, unlike the inertia, does not improve just because ``k`` grows. The ``k`` with the
highest mean wins (the smaller ``k`` on a tie).

Above ``sample_size`` points the silhouette is computed on a seeded random sample of them
(its cost grows with the square of the points). The silhouette is undefined for ``k = 1``, so
this rule never answers "one cluster"; it needs at least 3 points.

The silhouette is often flat near its peak, and it finds the scale of the structure rather
than the number of classes: ``docs/cluster.md`` and ``docs/python.md`` show it on the digits.

**Eigengap** (:func:`choose_k_eigengap`; von Luxburg, "A tutorial on spectral clustering",
Statist. Comput. 17, 2007, section 8.3): the normalised adjacency of a kNN graph of ``c``
well-separated groups has ``c`` eigenvalues near 1, then a drop; the ``k`` after which the drop
``λ_k - λ_(k+1)`` is largest wins. It suits many small clusters that are chains of near
neighbours more than round blobs (what spectral clustering then finds). On the 20 Omniglot
evaluation alphabets (20-47 characters each) in a Prototypical Network's embedding it misses
the number of characters by less than the silhouette does
(``docs/results/omniglot_alphabets_protonet_spectral.md`` and
``omniglot_alphabets_protonet_spectral_silhouette.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metaunsup._validation import check_int
from metaunsup.cluster.kmeans import kmeans
from metaunsup.errors import ConfigError

__all__ = ["KChoice", "choose_k", "choose_k_eigengap"]


@dataclass(frozen=True)
class KChoice:
    """The chosen number of clusters and the evidence for it.

    Attributes
    ----------
    k:
        The chosen number of clusters.
    scores:
        For each ``k`` tried (higher is better): the mean silhouette of its k-means partition
        (``method="silhouette"``), or the eigengap ``λ_k - λ_(k+1)`` (``"eigengap"``).
    method:
        ``"silhouette"`` or ``"eigengap"``.
    """

    k: int
    scores: dict[int, float]
    method: str = "silhouette"

    @property
    def reason(self) -> str:
        """One line saying why ``k`` was chosen, e.g. for a command-line summary."""
        ks = sorted(self.scores)
        what = "mean silhouette" if self.method == "silhouette" else "graph eigengap"
        text = (
            f"k={self.k} has the highest {what} ({self.scores[self.k]:.3f}) of k={ks[0]}..{ks[-1]}"
        )
        others = sorted((k for k in ks if k != self.k), key=lambda k: -self.scores[k])
        if others:
            text += f"; next best k={others[0]} ({self.scores[others[0]]:.3f})"
        return text


def _silhouette(x: np.ndarray, labels: np.ndarray, sample_size: int, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return -1.0  # all points in one cluster (duplicates): the worst possible score
    size = sample_size if x.shape[0] > sample_size else None
    return float(silhouette_score(x, labels, sample_size=size, random_state=seed))


def _check_range(z: torch.Tensor, k_min: object, k_max: object, smallest: int) -> int:
    """``n`` after checking ``z`` ``[n, d]`` and the range of ``k`` (``k_min >= smallest``)."""
    if z.dim() != 2:
        raise ConfigError(f"choosing k needs points [n, d], got shape {tuple(z.shape)}")
    k_min = check_int("k_min", k_min, smallest)
    k_max = check_int("k_max", k_max, k_min)
    if z.shape[0] < 3:
        raise ConfigError(
            f"choosing k needs at least 3 examples, got {z.shape[0]}; give k yourself"
        )
    return z.shape[0]


def choose_k(
    x: torch.Tensor | np.ndarray,
    k_min: int = 2,
    k_max: int = 15,
    *,
    n_init: int = 4,
    seed: int = 0,
    sample_size: int = 2000,
) -> KChoice:
    """The ``k`` in ``k_min..k_max`` whose k-means partition of ``x`` has the best silhouette.

    Parameters
    ----------
    x:
        ``[n, d]`` points (e.g. an embedding), ``n >= 3``.
    k_min, k_max:
        The range tried; ``k_max`` is lowered to ``n - 1`` (the silhouette needs a cluster with
        two points), ``k_min`` must be at least 2.
    n_init:
        k-means restarts per ``k``.
    seed:
        Seeds k-means and the silhouette's sample.
    sample_size:
        Most points the silhouette is computed on.

    Returns
    -------
    KChoice
        ``k``, the score of every ``k`` tried, and :attr:`KChoice.reason`.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> blobs = torch.randn(90, 2, generator=g) + 8 * torch.arange(3.0).repeat(30)[:, None]
    >>> choose_k(blobs, 2, 6).k
    3
    """
    z = torch.as_tensor(x).detach().to(torch.float64).cpu()
    n = _check_range(z, k_min, k_max, 2)  # the silhouette needs 2 clusters
    k_max = min(k_max, n - 1)
    k_min = min(k_min, k_max)
    points = z.numpy()
    scores: dict[int, float] = {}
    for k in range(k_min, k_max + 1):
        labels = kmeans(z, k, n_init=n_init, seed=seed).labels.numpy()
        scores[k] = _silhouette(points, labels, sample_size, seed)
    best = max(scores, key=lambda k: (scores[k], -k))
    return KChoice(k=best, scores=scores)


def choose_k_eigengap(
    x: torch.Tensor | np.ndarray,
    k_min: int = 2,
    k_max: int = 15,
    *,
    n_neighbors: int = 10,
    metric: str = "cosine",
) -> KChoice:
    """The ``k`` in ``k_min..k_max`` after which the eigenvalues of the kNN graph of ``x``
    drop the most (the graph of :func:`metaunsup.cluster.graph.spectral_embedding`).

    ``x`` is ``[n, d]``, ``n >= 3``; ``k_max`` is lowered to ``n - 2`` (the gap after ``k``
    needs eigenvalue ``k + 1``). Deterministic (the eigensolver starts from a seeded vector).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> blobs = torch.randn(120, 2, generator=g) + 8 * torch.arange(4.0).repeat(30)[:, None]
    >>> choose_k_eigengap(blobs, 2, 8, metric="euclidean").k
    4
    """
    from metaunsup.cluster.graph import graph_eigenvalues

    z = torch.as_tensor(x).detach().to(torch.float32).cpu()
    n = _check_range(z, k_min, k_max, 1)
    k_max = min(k_max, n - 2)
    k_min = min(k_min, k_max)
    values = graph_eigenvalues(z, k_max + 1, n_neighbors=min(n_neighbors, n - 1), metric=metric)
    scores = {k: float(values[k - 1] - values[k]) for k in range(k_min, k_max + 1)}
    best = max(scores, key=lambda k: (scores[k], -k))
    return KChoice(k=best, scores=scores, method="eigengap")
