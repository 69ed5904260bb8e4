"""Meta-K-means with a nearest-neighbour anomaly score: the learner of the zero-shot ``tabular``
checkpoint.

It is :class:`~metaunsup.learners.MetaKMeansLearner` (an embedding meta-trained so that the
learned soft k-means recovers the clusters of a task; on tables, tasks of the synthetic prior
:mod:`metaunsup.tasks.synthetic_tables`) that also scores anomalies in the same embedding,
with no further training: a query's score is the mean Euclidean distance to its
``score_neighbors`` nearest support examples (the k-NN outlier score of Ramaswamy, Rastogi &
Shim, SIGMOD 2000, and Angiulli & Pizzuti, PKDD 2002 — PyOD's ``KNN(method="mean")``), in an
embedding where clusters are compact. ``score_neighbors`` is a count, or a share of the
support (a float in (0, 1), rounded up): a share reaches past a *clustered* anomaly — a rare
class, dense among its own rows (ADBench's clustered type, Han et al., NeurIPS 2022) — up to
that share of the table, where a fixed count of neighbours finds the anomaly's own kind close
by and scores it as normal. Which setting scores best is measured on held-out tasks of the
synthetic prior with the four ADBench kinds of anomalies (``benchmarks/tabular_prior.py``),
never on a real table. A support example at distance 0 from the query is taken
to be the query itself and left out, so that a table scored against itself follows PyOD's
in-sample convention (a point is not its own neighbour). Support and query are embedded
together, so that a network whose embedding reads the task's rows
(:class:`~metaunsup.nets.GatedMaskedMLP`) sees one table.

Shapes: ``score(support [B, K, d], query [B, q, d]) -> [B, q]`` (higher = more anomalous).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from metaunsup._validation import check_choice, check_float, check_int
from metaunsup.errors import ConfigError
from metaunsup.learners.meta_kmeans import MetaKMeansLearner
from metaunsup.nets import FunctionalNet

__all__ = ["SCORE_SPACES", "TabularKMeans", "check_score_neighbors", "parse_score_neighbors"]

#: Where :meth:`TabularKMeans.score` measures distances: ``"embedding"``, the network's, or
#: ``"columns"``, the standardised columns themselves (a missing cell at its column's mean;
#: absent columns, missing in every row, add nothing).
SCORE_SPACES = ("embedding", "columns")
#: Distances at most this small are a query's own row in the support (left out of its score).
_SELF = 1e-9
#: Pairs whose squared distance in the matrix-product form is at most this share of their
#: squared norms are computed exactly (:func:`_nearest_distances`).
_ROUNDING = 1e-2


def check_score_neighbors(value: int | float) -> int | float:
    """``value`` as a ``score_neighbors``: an ``int`` count of at least 1, or a ``float``
    share of the support in (0, 1); else :class:`~metaunsup.errors.ConfigError`."""
    if isinstance(value, float):
        share = check_float("score_neighbors", value, 0.0, 1.0)
        if not 0.0 < share < 1.0:
            raise ConfigError(
                f"score_neighbors as a share of the support must lie in (0, 1), got {value}; "
                "give a count as an integer"
            )
        return share
    return check_int("score_neighbors", value, 1)


def parse_score_neighbors(text: str) -> int | float:
    """A ``score_neighbors`` written as text: ``"10"`` a count, ``"0.1"`` a share (a decimal
    point or an exponent makes it a share); :class:`~metaunsup.errors.ConfigError` when it is
    no number. The range is :func:`check_score_neighbors`'s, where the value is used."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ConfigError(
            f"score_neighbors takes a count (e.g. 10) or a share (e.g. 0.1), got {text!r}"
        ) from None


class TabularKMeans(MetaKMeansLearner):
    """Meta-K-means plus a k-NN anomaly score in its embedding (module docstring).

    ``score_neighbors``: neighbours averaged by :meth:`score` — an ``int`` count, or a
    ``float`` share of the support in (0, 1), rounded up (at most the support less one
    either way). ``score_space``: where :meth:`score` measures distances
    (:data:`SCORE_SPACES`). Other parameters are
    :class:`~metaunsup.learners.MetaKMeansLearner`'s.
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
        score_neighbors: int | float = 10,
        score_space: str = "embedding",
    ) -> None:
        super().__init__(net, n_iter, test_iter, temperature, balance, shrink, restarts, refine)
        self.score_neighbors = check_score_neighbors(score_neighbors)
        self.score_space = check_choice("score_space", score_space, SCORE_SPACES)

    def hparams(self) -> dict[str, Any]:
        return {
            **super().hparams(),
            "score_neighbors": self.score_neighbors,
            "score_space": self.score_space,
        }

    def neighbors(self, support_size: int) -> int:
        """How many nearest support examples a score averages, for a support this large
        (before the cap at the support less one)."""
        if isinstance(self.score_neighbors, float):
            return max(1, math.ceil(self.score_neighbors * support_size))
        return self.score_neighbors

    def score(self, support: Tensor, query: Tensor) -> Tensor:
        """Mean distance ``[B, q]`` of each query to its nearest support examples in the
        embedding (or the columns, :data:`SCORE_SPACES`), a zero-distance support example (the
        query itself) left out."""
        with torch.no_grad():
            rows = torch.cat([support, query.to(support.dtype)], 1)
            # embedded together; in the columns a missing cell sits at its column's mean, 0
            z = rows.nan_to_num(0.0) if self.score_space == "columns" else self.embed(rows)
            zs, zq = z[:, : support.shape[1]], z[:, support.shape[1] :]
            m = max(1, min(self.neighbors(zs.shape[1]), zs.shape[1] - 1))
            near = _nearest_distances(zq, zs, m)
            finite = torch.isfinite(near)
            total = torch.where(finite, near, torch.zeros_like(near)).sum(-1)
            return total / finite.sum(-1).clamp_min(1)


def _nearest_distances(zq: Tensor, zs: Tensor, m: int) -> Tensor:
    """``[B, q, m]`` the ``m`` smallest non-zero distances of each query ``zq`` ``[B, q, D]``
    to the support ``zs`` ``[B, K, D]`` (infinity where fewer exist): the distances
    computed difference by difference, up to rounding far below the gaps between neighbours.

    The exact difference-by-difference distances of every pair cost most of the scoring of a
    large table, so every distance is first computed in the matrix-product form
    (``‖a‖² − 2 a·b + ‖b‖²``, one GEMM) after both sides are centred on the support's mean
    (distances do not move; the norms, and with them the rounding, shrink). Its rounding is
    relative to ``‖a‖² + ‖b‖²``, so only where a squared distance is small against that — a
    query and its own copy in the support, near duplicates — could it blur 0 with a small
    distance: those pairs (:data:`_ROUNDING`) are computed exactly, difference by difference.
    A pair exactly 0 apart is the query itself and is left out."""
    centre = zs.mean(1, keepdim=True)
    zq, zs = zq - centre, zs - centre
    q_norm = (zq * zq).sum(-1, keepdim=True)  # [B, q, 1]
    s_norm = (zs * zs).sum(-1).unsqueeze(1)  # [B, 1, K]
    sq = q_norm - 2 * zq @ zs.transpose(1, 2) + s_norm  # [B, q, K]
    close = sq <= _ROUNDING * (q_norm + s_norm)
    dist = sq.clamp_min(0).sqrt()
    if bool(close.any()):
        b, i, j = close.nonzero(as_tuple=True)
        dist[b, i, j] = (zq[b, i] - zs[b, j]).pow(2).sum(-1).sqrt()
    dist = dist.masked_fill(dist <= _SELF, float("inf"))
    return dist.topk(min(m, dist.shape[-1]), dim=-1, largest=False).values
