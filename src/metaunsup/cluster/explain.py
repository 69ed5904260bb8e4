"""What sets each cluster apart: its size, its most typical rows and its distinctive features.

For cluster ``c`` of a partition ``labels`` ``[n]`` of the rows of ``x`` ``[n, d]`` (the
encoded table the model saw; NaN = missing):

- **exemplars** are the rows nearest the cluster's centre in the embedding ``z`` ``[n, D]``
  (the space the clusters were found in), so they are the cluster's most typical members;
- each feature's **effect size** is Cohen's d of the cluster against the rest (the difference
  of the means over the pooled standard deviation, each over the cells observed in the
  feature; Cohen, *Statistical Power Analysis for the Behavioral Sciences*, 1988), and the
  features with the largest ``|d|`` are the ones that set the cluster apart. ``d`` is a
  standardised difference, so features on different scales (a standardised number, a one-hot
  indicator) compare; a feature that is constant both inside and outside the cluster but
  differs between them has an infinite ``d`` (it separates perfectly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from metaunsup.errors import DataError

__all__ = [
    "ClusterExplanation",
    "FeatureEffect",
    "effect_sizes",
    "explain_clusters",
    "unusual_features",
]


@dataclass(frozen=True)
class FeatureEffect:
    """One feature of one cluster: its mean inside and outside, and Cohen's ``d``."""

    feature: str
    mean_in: float
    mean_out: float
    effect: float


@dataclass
class ClusterExplanation:
    """Cluster ``label``: its ``size``, the positions of its ``exemplars`` (most typical
    first) and its ``features`` (largest ``|d|`` first)."""

    label: int
    size: int
    exemplars: list[int] = field(default_factory=list)
    features: list[FeatureEffect] = field(default_factory=list)


def effect_sizes(x: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(d, mean_in, mean_out)``, each ``[d]``: Cohen's d of the rows ``inside`` (bool ``[n]``)
    against the others, per column of ``x`` ``[n, d]``, over observed (non-NaN) cells. A
    column without two observed cells on a side has ``d = 0``."""
    x = np.asarray(x, dtype=np.float64)
    stats = []
    for rows in (x[inside], x[~inside]):
        seen = ~np.isnan(rows)
        count = seen.sum(0)
        total = np.where(seen, rows, 0.0).sum(0)
        mean = np.divide(total, count, out=np.zeros(x.shape[1]), where=count > 0)
        sq = np.where(seen, (rows - mean) ** 2, 0.0).sum(0)
        stats.append((count, mean, sq))
    (n1, m1, s1), (n0, m0, s0) = stats
    dof = n1 + n0 - 2
    pooled = np.sqrt(np.divide(s1 + s0, dof, out=np.zeros(x.shape[1]), where=dof > 0))
    diff = m1 - m0
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(pooled > 1e-12, diff / pooled, np.sign(diff) * np.inf)
    d = np.where((n1 >= 2) & (n0 >= 2) & (np.abs(diff) > 1e-12), d, 0.0)
    return d, m1, m0


def explain_clusters(
    x: np.ndarray,
    labels: np.ndarray,
    z: np.ndarray,
    centers: np.ndarray,
    feature_names: Sequence[str],
    *,
    n_exemplars: int = 3,
    n_features: int = 5,
) -> list[ClusterExplanation]:
    """One :class:`ClusterExplanation` per cluster ``0..k-1`` (``k = len(centers)``) of the
    rows of ``x`` ``[n, d]`` labelled ``labels`` ``[n]``, with exemplars nearest ``centers``
    ``[k, D]`` in ``z`` ``[n, D]`` (see the module docstring)."""
    x, z = np.asarray(x), np.asarray(z)
    labels = np.asarray(labels)
    if x.ndim != 2 or len(feature_names) != x.shape[1]:
        raise DataError(
            f"need x [n, d] and d feature names, got x {x.shape} and {len(feature_names)} names"
        )
    if not len(x) == len(labels) == len(z):
        raise DataError(f"x, labels and z have {len(x)}, {len(labels)} and {len(z)} rows")
    out = []
    for c in range(len(centers)):
        inside = labels == c
        members = np.flatnonzero(inside)
        dist = ((z[members] - centers[c]) ** 2).sum(1)
        exemplars = members[np.argsort(dist, kind="stable")[:n_exemplars]].tolist()
        d, m1, m0 = effect_sizes(x, inside)
        order = np.argsort(-np.abs(d), kind="stable")[:n_features]
        effects = [
            FeatureEffect(str(feature_names[j]), float(m1[j]), float(m0[j]), float(d[j]))
            for j in order
            if d[j] != 0
        ]
        out.append(ClusterExplanation(c, int(inside.sum()), exemplars, effects))
    return out


def unusual_features(
    x: np.ndarray, reference: np.ndarray, feature_names: Sequence[str], *, top: int = 3
) -> list[list[tuple[str, float]]]:
    """Per row of ``x`` ``[n, d]``, the ``top`` features that make it unusual against the
    normal ``reference`` ``[m, d]``: ``(name, z)`` with ``z`` the cell's distance from the
    reference's mean in its standard deviations (both over observed cells; a missing cell has
    none), largest ``|z|`` first. A feature constant in the reference has ``z = ±inf`` where the
    row differs from it."""
    x, reference = np.asarray(x, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if x.ndim != 2 or reference.shape[1:] != x.shape[1:] or len(feature_names) != x.shape[1]:
        raise DataError(
            f"need x [n, d], reference [m, d] and d names, got {x.shape}, {reference.shape} and "
            f"{len(feature_names)} names"
        )
    mean = np.nanmean(reference, 0)
    spread = np.nanstd(reference, 0)
    diff = x - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(spread > 1e-12, diff / spread, np.sign(diff) * np.inf)
    z = np.where(np.abs(diff) > 1e-12, z, 0.0)
    z = np.nan_to_num(z, nan=0.0, posinf=np.inf, neginf=-np.inf)
    order = np.argsort(-np.abs(z), axis=1, kind="stable")[:, :top]
    return [
        [(str(feature_names[j]), float(z[i, j])) for j in row if z[i, j] != 0]
        for i, row in enumerate(order)
    ]
