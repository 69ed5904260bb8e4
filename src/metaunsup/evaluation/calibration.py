r"""Thresholds without a contamination guess: anomaly scores → p-values → flags at a false-alarm
rate.

A score says *how* anomalous a query is; a detector must also say *whether* it is. PyOD fixes a
``contamination`` and flags that share of the training data (a guess about data nobody has
labelled). Here a query is flagged when its **p-value** under the normal class is at most the
target false-alarm rate ``fpr``. Two ways to get p-values:

**Conformal, from the support alone** (:func:`conformal_pvalues`, Vovk, Gammerman & Shafer 2005;
leave-one-out / jackknife calibration as in Barber et al., "Predictive inference with the
jackknife+", 2021). Each support example is scored against the other ``K − 1``
(:func:`leave_one_out_scores`), and a query with score ``s`` gets

.. math:: p(s) = \frac{1 + \#\{i : s_i \ge s\}}{K + 1}.

When the support and a normal query are exchangeable (and scoring against ``K − 1`` instead of
``K`` examples changes little), ``P(p \le α) \le α`` for every ``α``: false alarms are under
control *without any assumption on the score*. What it cannot do: ``p`` takes only the values
``1/(K+1), 2/(K+1), …, 1``, so no query can be flagged at ``α < 1/(K+1)``. With ``K = 2`` the
smallest p-value is ``1/3``; at the default ``fpr = 0.05`` conformal calibration flags
something only from ``K = 19`` on. Below that it is exact and useless: it flags nothing.

**Meta-calibrated, from pseudo-normal held-out examples** (:class:`NullTable`). After
meta-training, the learner scores the *normal* query examples of fresh pseudo-tasks of its own
training data for a grid of support sizes and keeps those scores: pseudo-classes of two label-free
families, the CACTUs clusters it was meta-trained on and clusters of the same images in pixel
space, which it never trained on (classes in supervised runs). Classes differ in spread *and in
shape*: a real class is broader and more heterogeneous than a k-means cluster of embeddings (a
Voronoi cell, compact by construction, and made more compact by meta-training on it), so
normalised by a typical spread, or by the support's *mean* leave-one-out score, a normal query of
an unseen class lands in the pseudo-classes' tail far more often than ``fpr``. A score is
therefore divided by the task's own scale, the **largest** leave-one-out score of (at most
:data:`SCALE_LOO` examples of) its support, which grows with the class's heterogeneity as well as
its spread:

.. math:: \hat\sigma = \frac{K \ell_{\max} + m\,\sigma_0}{K + m},

``\sigma_0`` the median of ``\ell_{\max}`` over the pseudo-tasks of that size and ``m`` the
prior's weight in examples (:data:`~metaunsup.learners.one_class.NULL_PRIOR`, 0: a typical spread
measured on pseudo-classes does not transfer to unseen classes). A query's p-value is the rank of
``s / \hat\sigma`` among the stored normalised normal scores ``n_j`` of the nearest support
size,

.. math:: p(s) = \frac{1 + \#\{j : n_j \ge s/\hat\sigma\}}{N + 1},

which reaches any ``α ≥ 1/(N+1)``. The guarantee is gone: it holds only as far as the test
classes' normalised scores look like the pseudo-classes' (the measured false-alarm rate says how
far; with ``K = 2`` the support's one distance cannot tell a heterogeneous class from a compact
one). So the table holds on *each* family, not only on their mixture: at every level its tail is
the heavier of the two families' (:func:`metaunsup.evaluation.anomaly.worst_family`), and a
threshold read from it is the larger of their thresholds. Tables measured before that pooled the
two families' scores, and are read as they were measured.

Tables measured before this statistic (``stat="mean"``: the mean leave-one-out score of the
first 8 support examples, prior 1) are still read as they were measured.

``calibration="auto"`` uses the conformal p-value when it can reach ``fpr`` (``(K+1)·fpr ≥ 1``)
and the learner's null table otherwise.

**The meta-learned boundary** (``calibration="boundary"``, for a
:class:`~metaunsup.learners.BoundaryScorer`) sets no p-value: a query is flagged when its score
is above the boundary the learner's meta-training set (OC-MAML's decision, logit > 0, at which
its published balanced accuracy is measured; Meta-SVDD's radius). Meta-trained on queries of as
many anomalies as normals, it balances misses against false alarms; it targets no rate, so
``fpr`` plays no part and the false alarms on new classes are what they turn out to be.
:func:`boundary_flags` applies it; :func:`calibrated_pvalues` refuses it.

Shapes: supports ``[B, K, *example_shape]``, scores ``[B, q]``, p-values ``[B, q]`` in
``(0, 1]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metaunsup._validation import check_choice, check_float
from metaunsup.errors import ConfigError, DataError, DataWarning

if TYPE_CHECKING:
    from metaunsup.learners.base import BoundaryScorer

__all__ = [
    "CALIBRATIONS",
    "NULL_STATS",
    "SCALE_LOO",
    "NullTable",
    "Scorer",
    "boundary_flags",
    "calibrated_pvalues",
    "check_fpr",
    "conformal_pvalues",
    "conformal_reaches",
    "leave_one_out_scores",
    "require_boundary",
    "threshold_at",
]

#: ``score(support [B, K, ...], query [B, q, ...]) -> [B, q]``, higher = more anomalous.
Scorer = Callable[[Tensor, Tensor], Tensor]

#: Support examples whose leave-one-out scores give a task's scale (the largest of them; the
#: meta-calibration): ``O(K)`` scoring instead of ``O(K²)`` for large supports.
SCALE_LOO = 16

#: Statistics of a support's leave-one-out scores that a null table is normalised by, with the
#: number of support examples each reads: ``"max"`` (this version) and ``"mean"`` (tables
#: measured before it).
NULL_STATS = {"mean": 8, "max": SCALE_LOO}

#: Values of ``calibration``: see the module docstring.
CALIBRATIONS = ("auto", "conformal", "meta", "boundary")


def require_boundary(learner: object) -> BoundaryScorer:
    """``learner`` if it meta-learned a decision boundary, else a :class:`ConfigError` that
    names it and the fix."""
    from metaunsup.learners.base import BoundaryScorer

    if not isinstance(learner, BoundaryScorer):
        name = getattr(learner, "name", type(learner).__name__)
        raise ConfigError(
            f"calibration='boundary' needs a scorer that meta-learned a decision boundary "
            f"(meta_svdd, oc_maml); {name!r} has none: use calibration='auto' and a target fpr"
        )
    return learner


def boundary_flags(learner: object, scores: Tensor, k: int) -> Tensor:
    """Flags ``bool [B, q]``: ``scores`` ``[B, q]`` of tasks with ``k`` support examples above
    ``learner``'s meta-learned decision boundary at that size (``calibration="boundary"``); a
    :class:`ConfigError` for a learner without one."""
    return scores > require_boundary(learner).decision_boundary(k)


def check_fpr(fpr: object) -> float:
    """``fpr`` as a float strictly between 0 and 1, else a :class:`ConfigError`."""
    value = check_float("fpr", fpr)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"fpr must be a false-alarm rate strictly between 0 and 1, got {fpr!r}")
    return value


def conformal_reaches(k: int, fpr: float) -> bool:
    """Whether a leave-one-out conformal p-value from ``k`` examples can be ``<= fpr``."""
    return (k + 1) * fpr >= 1.0 - 1e-12


def _rank_pvalues(reference: Tensor, scores: Tensor) -> Tensor:
    """``(1 + #{reference >= s}) / (n + 1)`` for every score; ``reference`` ``[B, n]`` (or
    ``[n]``, shared), ``scores`` ``[B, q]``."""
    ref = reference.to(torch.float64)
    s = scores.to(torch.float64)
    if ref.dim() == 1:
        ref = ref.expand(s.shape[0], -1)
    ordered, _ = torch.sort(ref, dim=1)
    # entries < s: searchsorted with right=False gives the count of values strictly below s
    below = torch.searchsorted(ordered.contiguous(), s.contiguous(), right=False)
    return (1.0 + (ref.shape[1] - below).to(torch.float64)) / (ref.shape[1] + 1.0)


def conformal_pvalues(calibration: Tensor, scores: Tensor) -> Tensor:
    """Conformal p-values ``[B, q]`` of ``scores`` ``[B, q]`` against per-task calibration
    scores ``[B, K]`` of normal examples (higher = more anomalous)."""
    if calibration.dim() != 2 or scores.dim() != 2 or calibration.shape[0] != scores.shape[0]:
        raise DataError(
            f"calibration scores {tuple(calibration.shape)} and scores {tuple(scores.shape)} "
            "must be [B, K] and [B, q]"
        )
    return _rank_pvalues(calibration, scores)


def leave_one_out_scores(score: Scorer, support: Tensor, limit: int | None = None) -> Tensor:
    """``[B, L]``: each of the first ``L = min(K, limit)`` support examples scored against the
    other ``K − 1`` of its task (all ``K`` without ``limit``).

    All ``B·L`` leave-one-out problems go through ``score`` as one batch of tasks with supports
    ``[B·L, K−1, ...]`` and single queries ``[B·L, 1, ...]``.
    """
    B, K = support.shape[:2]
    if K < 2:
        raise DataError(
            f"a support of {K} example cannot calibrate itself; give at least 2 normal examples"
        )
    n = K if limit is None else min(K, limit)
    keep = ~torch.eye(K, dtype=torch.bool, device=support.device)[:n]  # row i: all but i
    others = support.unsqueeze(1).expand(B, n, *support.shape[1:])[:, keep]
    others = others.reshape(B * n, K - 1, *support.shape[2:])
    held_out = support[:, :n].reshape(B * n, 1, *support.shape[2:])
    return score(others, held_out).reshape(B, n)


def threshold_at(calibration: Tensor, fpr: float) -> float:
    """The score threshold equivalent to flagging at ``p <= fpr`` with p-values against the
    normal ``calibration`` scores ``[m]``: a score is flagged when it is *strictly above* it.

    A score ``s`` has ``p <= fpr`` when at most ``r = floor(fpr (m + 1)) − 1`` calibration
    scores are ``>= s``, i.e. when ``s`` exceeds the ``(r + 1)``-th largest of them; ``inf``
    when ``r < 0`` (nothing can be flagged).
    """
    values = calibration.reshape(-1).to(torch.float64)
    r = math.floor(fpr * (values.numel() + 1) + 1e-9) - 1
    if r < 0:
        return math.inf
    return float(torch.sort(values, descending=True).values[min(r, values.numel() - 1)])


@dataclass(frozen=True, eq=False)
class NullTable:
    """Normalised scores of pseudo-normal held-out examples, per support size.

    Attributes
    ----------
    k:
        ``int64 [G]`` support sizes of the grid, ascending.
    scores:
        ``[G, N]`` the normal query scores measured at each support size, each divided by its
        task's scale :meth:`scale`.
    spread:
        ``[G]`` the typical mean leave-one-out score ``σ0`` of a support of each size.
    prior:
        ``m``, the weight of ``σ0`` in :meth:`scale`, in support examples.
    stat:
        The statistic of a support's leave-one-out scores that is its scale (a key of
        :data:`NULL_STATS`).
    """

    k: Tensor
    scores: Tensor
    spread: Tensor
    prior: float
    stat: str = "max"

    def __post_init__(self) -> None:
        g = self.k.numel()
        if self.k.dim() != 1 or self.scores.shape[:1] != (g,) or self.spread.shape != (g,):
            raise DataError("a null table needs k [G], scores [G, N] and spread [G]")
        check_choice("stat", self.stat, tuple(NULL_STATS))

    @property
    def loo_limit(self) -> int:
        """How many support examples' leave-one-out scores :meth:`scale` reads."""
        return NULL_STATS[self.stat]

    @property
    def measured(self) -> Tensor:
        """``bool [G]``: the sizes whose row was measured (a fresh learner's table is NaN; a
        size the training data could not make stays NaN)."""
        return torch.isfinite(self.scores).all(1) & torch.isfinite(self.spread)

    @property
    def ready(self) -> bool:
        """Whether any size was measured."""
        return bool(self.measured.any())

    def index(self, k: int) -> int:
        """The row of the measured support size nearest ``k`` (in log scale)."""
        gap = (self.k.to(torch.float64).log() - math.log(k)).abs()
        return int(torch.argmin(gap.masked_fill(~self.measured, math.inf)))

    def row(self, k: int) -> Tensor:
        """The normalised null scores ``[N]`` for supports of ``k`` examples."""
        return self.scores[self.index(k)]

    def statistic(self, loo: Tensor) -> Tensor:
        """``ℓ`` ``[B]``: the :attr:`stat` of the leave-one-out scores ``[B, L]`` of the first
        ``L = min(K, loo_limit)`` support examples of each task."""
        values = loo[:, : self.loo_limit].to(torch.float64)
        return values.amax(1) if self.stat == "max" else values.mean(1)

    def scale(self, k: int, loo: Tensor) -> Tensor:
        """``(K·ℓ + m·σ0) / (K + m)`` ``[B]``, ``ℓ`` the :meth:`statistic` of ``loo`` ``[B, L]``."""
        s0 = float(self.spread[self.index(k)])
        if self.prior == 0.0:
            return self.statistic(loo)
        return (k * self.statistic(loo) + self.prior * s0) / (k + self.prior)

    def pvalues(self, k: int, scores: Tensor, loo: Tensor) -> Tensor:
        """p-values ``[B, q]`` of ``scores`` from tasks with ``k`` support examples whose
        leave-one-out scores are ``loo`` ``[B, L]``."""
        if not self.ready:
            raise ConfigError(
                "this model has no meta-calibration (its null table was never measured); "
                "use calibration='conformal' or re-train it with metaunsup train"
            )
        normalised = scores.to(torch.float64) / self.scale(k, loo).clamp_min(1e-12)[:, None]
        return _rank_pvalues(self.row(k).to(scores.device), normalised)


def _warn_unmeasured(k: int, fpr: float) -> None:
    """Warn that a model whose threshold needs its null table has none measured at a support
    size where conformal p-values cannot reach ``fpr``: nothing would be flagged."""
    if conformal_reaches(k, fpr):
        return
    warnings.warn(
        f"the model's null table was never measured (a run stopped before its calibration "
        f"step), and conformal p-values from {k} support examples cannot reach fpr={fpr:g}, "
        "so it flags nothing; resume its run (metaunsup train CONFIG --out RUN --resume) to "
        "measure the table",
        DataWarning,
        stacklevel=3,
    )


def calibrated_pvalues(
    score: Scorer,
    support: Tensor,
    scores: Tensor,
    *,
    fpr: float,
    calibration: str = "auto",
    null: NullTable | None = None,
) -> tuple[Tensor, str]:
    """``(p-values [B, q], how)`` of the query ``scores`` of tasks with ``support``; ``how``
    is ``"conformal"`` or ``"meta"`` (see the module docstring for ``"auto"``)."""
    check_choice("calibration", calibration, CALIBRATIONS)
    if calibration == "boundary":
        raise ConfigError(
            "calibration='boundary' flags at the learner's boundary and sets no p-values "
            "(boundary_flags); use 'auto', 'conformal' or 'meta' for p-values"
        )
    k = int(support.shape[1])
    if k < 2:
        raise DataError(
            f"a support of {k} example cannot calibrate a threshold; give at least 2 normal "
            "examples"
        )
    use_null = null is not None and null.ready and not conformal_reaches(k, fpr)
    if calibration == "auto" and null is not None and not null.ready:
        _warn_unmeasured(k, fpr)
    if calibration == "meta" or (calibration == "auto" and use_null):
        if null is None:
            raise ConfigError("calibration='meta' needs a model with a null table")
        loo = leave_one_out_scores(score, support, null.loo_limit)
        return null.pvalues(k, scores, loo), "meta"
    return conformal_pvalues(leave_one_out_scores(score, support), scores), "conformal"
