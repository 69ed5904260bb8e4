"""What the one-class (anomaly-scoring) learners share: their meta-loss and their null table.

* :func:`one_class_loss` — the binary cross-entropy of a one-class task's query: logits
  ``(s − r) / T`` of the anomaly scores ``s`` with a meta-learned radius ``r`` and temperature
  ``T`` (the soft-boundary view of Deep SVDD, Ruff et al., ICML 2018: a query beyond the radius
  is an anomaly), against the query's 0/1 labels (pseudo-labels in unsupervised runs).
* :class:`NullTableMixin` — buffers holding the (spread-normalised) scores of pseudo-normal
  held-out examples for a grid of support sizes (``null_k`` ``[G]``, ``null_scores``
  ``[G, N]``), the typical support spread at each size (``null_spread`` ``[G]``), the
  prior weight of that spread (``null_prior``) and the statistic of a support's leave-one-out
  scores they were normalised by (``null_stat``: 0 mean, 1 max), measured after meta-training
  (``metaunsup.training.calibrate``) and saved with the weights; the evaluation and the
  estimator turn them into p-values (``metaunsup.evaluation.calibration``). A learner that was
  never calibrated holds NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup.errors import DataError

__all__ = [
    "NULL_GRID",
    "NULL_PRIOR",
    "NULL_SIZE",
    "NULL_STAT_CODES",
    "NullTableMixin",
    "check_one_class",
    "one_class_loss",
]

#: Support sizes at which the null table is measured (a task's size uses the nearest in log).
NULL_GRID = (2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 64)
#: Pseudo-normal scores kept per support size.
NULL_SIZE = 2000
#: Weight, in support examples, of the typical spread against a task's own spread (see
#: ``metaunsup.evaluation.calibration``; 0: the task's own scale alone, since the typical spread
#: of pseudo-classes does not transfer to unseen classes).
NULL_PRIOR = 0.0
#: ``null_stat`` codes of the statistics of ``metaunsup.evaluation.calibration.NULL_STATS``; a
#: checkpoint saved before the buffer existed loads as ``"mean"`` (code 0), as it was measured.
NULL_STAT_CODES = ("mean", "max")


class NullTableMixin:
    """Buffers ``null_k`` ``int64 [G]``, ``null_scores`` ``float32 [G, N]``, ``null_spread``
    ``[G]`` (NaN until measured), ``null_prior`` (0-d) and ``null_stat`` (0-d ``int64``, a
    code of :data:`NULL_STAT_CODES`); mix into an ``nn.Module`` and call
    :meth:`init_null_table` in ``__init__``."""

    #: Buffers a checkpoint may lack (saved before they existed); they keep their initial value.
    optional_state: tuple[str, ...] = ("null_stat",)

    null_k: Tensor
    null_scores: Tensor
    null_spread: Tensor
    null_prior: Tensor
    null_stat: Tensor

    def init_null_table(self) -> None:
        module = self
        assert isinstance(module, torch.nn.Module)
        module.register_buffer("null_k", torch.tensor(NULL_GRID, dtype=torch.int64))
        nan = torch.full((len(NULL_GRID), NULL_SIZE), float("nan"))
        module.register_buffer("null_scores", nan)
        module.register_buffer("null_spread", torch.full((len(NULL_GRID),), float("nan")))
        module.register_buffer("null_prior", torch.tensor(NULL_PRIOR))
        module.register_buffer("null_stat", torch.tensor(0, dtype=torch.int64))

    def set_null_table(
        self, scores: Tensor, spread: Tensor, prior: float = NULL_PRIOR, stat: str = "max"
    ) -> None:
        """Store measured normalised scores ``[G, N]`` and typical spreads ``[G]`` (one row per
        size of :data:`NULL_GRID`) with the ``prior`` and ``stat`` they were normalised with."""
        if stat not in NULL_STAT_CODES:
            raise DataError(f"null table statistic must be one of {NULL_STAT_CODES}, got {stat!r}")
        if tuple(scores.shape) != tuple(self.null_scores.shape) or spread.shape != (
            len(NULL_GRID),
        ):
            raise DataError(
                f"null scores must be {tuple(self.null_scores.shape)} and spreads "
                f"[{len(NULL_GRID)}], got {tuple(scores.shape)} and {tuple(spread.shape)}"
            )
        self.null_scores.copy_(scores.to(self.null_scores))
        self.null_spread.copy_(spread.to(self.null_spread))
        self.null_prior.fill_(float(prior))
        self.null_stat.fill_(NULL_STAT_CODES.index(stat))


def check_one_class(support: Tensor, query: Tensor, example_shape: tuple[int, ...]) -> None:
    """Check a support ``[B, K, *example_shape]`` and a query ``[B, q, *example_shape]``."""
    want = len(example_shape) + 2
    if support.dim() != want or query.dim() != want:
        raise DataError(
            f"support {tuple(support.shape)} and query {tuple(query.shape)} must be "
            f"[B, n, *{example_shape}]"
        )
    if support.shape[0] != query.shape[0] or support.shape[1] < 1:
        raise DataError(
            f"support {tuple(support.shape)} and query {tuple(query.shape)} must hold the same "
            "tasks, each with at least one support example"
        )
    if tuple(support.shape[2:]) != example_shape or tuple(query.shape[2:]) != example_shape:
        raise DataError(
            f"examples must be {example_shape}, got support {tuple(support.shape[2:])} and "
            f"query {tuple(query.shape[2:])}"
        )


def one_class_loss(
    scores: Tensor, y: Tensor, radius: Tensor, log_temperature: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """Mean binary cross-entropy of logits ``(scores − radius) / T`` against ``y`` (1 =
    anomaly); ``scores`` and ``y`` ``[B, q]``. Metrics: ``loss``, ``acc`` (logit > 0 agrees
    with ``y``) and ``auroc`` (the fraction of correctly ordered anomaly–normal pairs, ties
    half)."""
    logits = (scores - radius) * torch.exp(-log_temperature)
    target = y.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    with torch.no_grad():
        acc = float(((logits > 0) == (y > 0)).to(torch.float32).mean())
        pos = y > 0
        diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [B, q, q]: s_i - s_j
        pairs = (pos.unsqueeze(2) & ~pos.unsqueeze(1)).to(scores.dtype)
        right = ((diff > 0).to(scores.dtype) + 0.5 * (diff == 0).to(scores.dtype)) * pairs
        auroc = float(right.sum() / pairs.sum().clamp_min(1.0))
    return loss, {"loss": float(loss.detach()), "acc": acc, "auroc": auroc}
