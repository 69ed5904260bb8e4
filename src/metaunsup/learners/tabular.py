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
            dist = torch.cdist(zq, zs, compute_mode="donot_use_mm_for_euclid_dist")
            dist = dist.masked_fill(dist <= 1e-9, float("inf"))
            m = max(1, min(self.score_neighbors, dist.shape[-1] - 1))
            near = dist.topk(m, dim=-1, largest=False).values
            finite = torch.isfinite(near)
            total = torch.where(finite, near, torch.zeros_like(near)).sum(-1)
            return total / finite.sum(-1).clamp_min(1)
