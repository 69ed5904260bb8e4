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
``omniglot_alphabets_protonet_spectral_silhouette.md``). It underestimates where some groups
are not well separated: their eigenvalues sit well below 1, and the largest drop comes early.

**Eigenvalue count** (:func:`choose_k_eigencount`): ``k`` is the number of eigenvalues of the
same graph above a threshold ``τ``. A group of the graph that is joined to the rest by only a
few edges still has an eigenvalue clearly above the bulk of the spectrum, even when the
largest drop comes before it. ``τ`` has no universal value: it is calibrated per embedding by
:func:`calibrate_eigencount` on labelled groups the model was trained on (for
``omniglot-protonet``: the 30 Omniglot *background* alphabets) and stored on the checkpoint's
card (``scripts/calibrate_k.py``); ``MetaKMeans(k_selection="auto")`` uses it where the card
has it and falls back to the eigengap where not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metaunsup._validation import check_float, check_int
from metaunsup.cluster.kmeans import kmeans
from metaunsup.errors import ConfigError

__all__ = [
    "KChoice",
    "calibrate_eigencount",
    "choose_k",
    "choose_k_eigencount",
    "choose_k_eigengap",
]


@dataclass(frozen=True)
class KChoice:
    """The chosen number of clusters and the evidence for it.

    Attributes
    ----------
    k:
        The chosen number of clusters.
    scores:
        For each ``k`` tried: the mean silhouette of its k-means partition
        (``method="silhouette"``, higher is better), the eigengap ``λ_k - λ_(k+1)``
        (``"eigengap"``, higher is better), or the eigenvalue ``λ_k`` (``"eigencount"``: ``k``
        is the last one above ``threshold``).
    method:
        ``"silhouette"``, ``"eigengap"`` or ``"eigencount"``.
    threshold:
        The eigenvalue threshold of ``"eigencount"``.
    note:
        Appended to :attr:`reason` (e.g. where the threshold came from).
    """

    k: int
    scores: dict[int, float]
    method: str = "silhouette"
    threshold: float | None = None
    note: str = ""

    @property
    def reason(self) -> str:
        """One line saying why ``k`` was chosen, e.g. for a command-line summary."""
        text = self._count_reason() if self.method == "eigencount" else self._best_reason()
        return f"{text}; {self.note}" if self.note else text

    def _count_reason(self) -> str:
        k, t = self.k, float(self.threshold or 0.0)
        value = f"λ_{k} = {self.scores[k]:.3f}"
        if self.scores[k] <= t:  # fewer than k_min above: clipped up
            return f"k={k}, the smallest tried: fewer eigenvalues exceed {t:.3f} ({value})"
        if k + 1 not in self.scores:  # k_max and still above: clipped down
            return f"k={k}, the largest tried: at least {k} eigenvalues exceed {t:.3f} ({value})"
        return (
            f"k={k}: {k} graph eigenvalues exceed the threshold {t:.3f} "
            f"({value}, λ_{k + 1} = {self.scores[k + 1]:.3f})"
        )

    def _best_reason(self) -> str:
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
    z = torch.as_tensor(x).detach().to(torch.float32).cpu()
    n = _check_range(z, k_min, k_max, 1)
    k_max = min(k_max, n - 2)
    k_min = min(k_min, k_max)
    values = _eigenvalues(z, k_max, n_neighbors, metric)
    scores = {k: float(values[k - 1] - values[k]) for k in range(k_min, k_max + 1)}
    best = max(scores, key=lambda k: (scores[k], -k))
    return KChoice(k=best, scores=scores, method="eigengap")


def _eigenvalues(z: torch.Tensor, k_max: int, n_neighbors: int, metric: str) -> torch.Tensor:
    from metaunsup.cluster.graph import graph_eigenvalues

    n = z.shape[0]
    return graph_eigenvalues(z, k_max + 1, n_neighbors=min(n_neighbors, n - 1), metric=metric)


def choose_k_eigencount(
    x: torch.Tensor | np.ndarray,
    k_min: int = 2,
    k_max: int = 15,
    *,
    threshold: float,
    n_neighbors: int = 10,
    metric: str = "cosine",
    note: str = "",
) -> KChoice:
    """The number of eigenvalues of the kNN graph of ``x`` (the graph of
    :func:`choose_k_eigengap`) above ``threshold``, clipped to ``k_min..k_max``.

    ``x`` is ``[n, d]``, ``n >= 3``; ``k_max`` is lowered to ``n - 2``. ``threshold`` in
    ``(0, 1)`` comes from :func:`calibrate_eigencount` on labelled groups of the same kind
    (the eigenvalues of the normalised adjacency are at most 1). ``note`` is appended to the
    reason. Deterministic.

    Example
    -------
    Four blobs of 30 points in 16 dimensions (``λ_1..λ_4`` are near 1, ``λ_5`` below 0.5):

    >>> g = torch.Generator().manual_seed(0)
    >>> blobs = torch.randn(120, 16, generator=g) + 6 * torch.eye(16)[:4].repeat(30, 1)
    >>> choose_k_eigencount(blobs, 2, 8, threshold=0.5).k
    4
    """
    threshold = check_float("threshold", threshold, 0.0, 1.0)
    z = torch.as_tensor(x).detach().to(torch.float32).cpu()
    n = _check_range(z, k_min, k_max, 1)
    k_max = min(k_max, n - 2)
    k_min = min(k_min, k_max)
    values = _eigenvalues(z, k_max, n_neighbors, metric)
    count = int((values[:k_max] > threshold).sum())
    scores = {k: float(values[k - 1]) for k in range(k_min, k_max + 1)}
    best = min(max(count, k_min), k_max)
    return KChoice(k=best, scores=scores, method="eigencount", threshold=threshold, note=note)


def calibrate_eigencount(
    groups: list[tuple[torch.Tensor | np.ndarray, int]],
    k_max: int = 100,
    *,
    n_neighbors: int = 10,
    metric: str = "cosine",
    grid: np.ndarray | None = None,
) -> tuple[float, dict[float, float]]:
    """The threshold of :func:`choose_k_eigencount` that misses the known number of classes
    of labelled sets by the least on average.

    ``groups``: ``(x [n, d], classes)`` pairs, e.g. the embeddings of whole alphabets the
    model was trained on and their numbers of characters. ``grid``: the thresholds tried
    (default ``0.30, 0.31, ..., 0.95``). Returns the best threshold (the smallest on a tie)
    and the mean absolute error of ``k`` at each threshold of the grid.
    """
    if not groups:
        raise ConfigError("calibrating the eigenvalue threshold needs at least one labelled set")
    grid = np.round(np.arange(0.30, 0.955, 0.01), 2) if grid is None else np.asarray(grid)
    counts, truth = [], []
    for x, classes in groups:
        z = torch.as_tensor(x).detach().to(torch.float32).cpu()
        top = min(k_max, _check_range(z, 1, k_max, 1) - 2)
        values = _eigenvalues(z, top, n_neighbors, metric)[:top].numpy()
        counts.append([min(max(int((values > t).sum()), 1), top) for t in grid])
        truth.append(classes)
    errors = np.abs(np.asarray(counts) - np.asarray(truth)[:, None]).mean(axis=0)
    table = {float(t): float(e) for t, e in zip(grid, errors, strict=True)}
    return float(grid[int(errors.argmin())]), table
