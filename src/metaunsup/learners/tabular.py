"""Meta-K-means with a nearest-neighbour anomaly score: the learner of the zero-shot ``tabular``
checkpoint.

It is :class:`~metaunsup.learners.MetaKMeansLearner` (an embedding meta-trained so that the
learned soft k-means recovers the clusters of a task; on tables, tasks of the synthetic prior
:mod:`metaunsup.tasks.synthetic_tables`) that also scores anomalies in the same embedding,
with no further training: a query's score is the mean Euclidean distance to its
``score_neighbors`` nearest support examples (the k-NN outlier score of Ramaswamy, Rastogi &
Shim, SIGMOD 2000, and Angiulli & Pizzuti, PKDD 2002 — PyOD's ``KNN(method="mean")``), in an
embedding where clusters are compact. A support example at distance 0 from the query is taken
to be the query itself and left out, so that a table scored against itself follows PyOD's
in-sample convention (a point is not its own neighbour). Support and query are embedded
together, so that a network whose embedding reads the task's rows
(:class:`~metaunsup.nets.GatedMaskedMLP`) sees one table.

Shapes: ``score(support [B, K, d], query [B, q, d]) -> [B, q]`` (higher = more anomalous).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from metaunsup._validation import check_int
from metaunsup.learners.meta_kmeans import MetaKMeansLearner
from metaunsup.nets import FunctionalNet

__all__ = ["TabularKMeans"]

#: Distances at most this small are a query's own row in the support (left out of its score).
_SELF = 1e-9


class TabularKMeans(MetaKMeansLearner):
    """Meta-K-means plus a k-NN anomaly score in its embedding (module docstring).

    ``score_neighbors``: neighbours averaged by :meth:`score` (fewer when the support is
    smaller). Other parameters are :class:`~metaunsup.learners.MetaKMeansLearner`'s.
    """

    name: ClassVar[str] = "tabular_kmeans"

    def __init__(
        self,
        net: FunctionalNet,
        n_iter: int = 5,
        test_iter: int | None = None,
        temperature: float = 0.1,
        balance: float = 0.0,
        shrink: float = 1.0,
        restarts: int = 1,
        refine: bool = False,
        score_neighbors: int = 10,
    ) -> None:
        super().__init__(net, n_iter, test_iter, temperature, balance, shrink, restarts, refine)
        self.score_neighbors = check_int("score_neighbors", score_neighbors, 1)

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "score_neighbors": self.score_neighbors}

    def score(self, support: Tensor, query: Tensor) -> Tensor:
        """Mean distance ``[B, q]`` of each query to its nearest support examples in the
        embedding, a zero-distance support example (the query itself) left out."""
        with torch.no_grad():
            z = self.embed(torch.cat([support, query.to(support.dtype)], 1))  # embedded together
            zs, zq = z[:, : support.shape[1]], z[:, support.shape[1] :]
            m = max(1, min(self.score_neighbors, zs.shape[1] - 1))
            near = _nearest_distances(zq, zs, m)
            finite = torch.isfinite(near)
            total = torch.where(finite, near, torch.zeros_like(near)).sum(-1)
            return total / finite.sum(-1).clamp_min(1)


def _exact_distances(zq: Tensor, zs: Tensor) -> Tensor:
    """``[B, q, K]`` Euclidean distances computed difference by difference (a query and an
    identical support row are exactly 0 apart, which the matrix-product form does not
    guarantee), zero distances set to infinity (the query itself, left out)."""
    dist = torch.cdist(zq, zs, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.masked_fill(dist <= _SELF, float("inf"))


def _nearest_distances(zq: Tensor, zs: Tensor, m: int) -> Tensor:
    """``[B, q, m]`` the ``m`` smallest non-zero distances of each query ``zq`` ``[B, q, D]``
    to the support ``zs`` ``[B, K, D]`` (infinity where fewer exist), as
    :func:`_exact_distances` gives them.

    The exact difference-by-difference distances of every pair cost most of the scoring of a
    large table, so candidates are found first with the matrix-product form
    (``‖a‖² − 2 a·b + ‖b‖²``, one GEMM; rounding moves its values by far less than the gaps
    between neighbours): the ``2m + 2`` nearest, which hold the query itself and its ``m``
    nearest others unless the support repeats the query more than ``m + 1`` times. Their
    distances are then computed exactly. Queries with fewer than ``m`` non-zero candidates
    (repeated rows) get all their distances exactly."""
    count = zs.shape[1]
    take = 2 * m + 2
    if take >= count:
        return _exact_distances(zq, zs).topk(m, dim=-1, largest=False).values
    sq = (zq * zq).sum(-1, keepdim=True) - 2 * zq @ zs.transpose(1, 2)
    sq = sq + (zs * zs).sum(-1).unsqueeze(1)
    idx = sq.topk(take, dim=-1, largest=False).indices  # [B, q, take]
    batch = torch.arange(zs.shape[0], device=zs.device).view(-1, 1, 1)
    diff = zq.unsqueeze(2) - zs[batch, idx]  # [B, q, take, D]
    dist = diff.pow(2).sum(-1).sqrt()
    dist = dist.masked_fill(dist <= _SELF, float("inf"))
    near = dist.topk(m, dim=-1, largest=False).values
    short = ~torch.isfinite(near).all(-1)  # [B, q]: repeated rows took the candidates' places
    if bool(short.any()):
        for b, i in short.nonzero().tolist():
            full = _exact_distances(zq[b : b + 1, i : i + 1], zs[b : b + 1])
            near[b, i] = full[0, 0].topk(m, largest=False).values
    return near
