r"""The permutation-invariant pairwise loss of a clustering against a task's partition (MCL).

Cluster ids are arbitrary, so a clustering cannot be scored with a cross-entropy against class
labels. Instead, with soft assignments ``R`` ``[B, n, K]`` (rows on the simplex), the
probability that points ``i`` and ``j`` share a cluster is ``P_ij = r_iᵀ r_j`` (``P = R Rᵀ``,
``[B, n, n]``), and the loss is the binary cross-entropy of ``P`` against the task's same-class
matrix ``S_ij = [y_i = y_j]`` over the pairs ``i ≠ j``. Relabelling the clusters permutes the
columns of ``R`` and leaves ``P`` unchanged. This is the meta classification likelihood (MCL)
of Hsu, Lv, Schlosser, Odom & Kira, "Multi-class classification without multi-class labels",
ICLR 2019, which refines the pairwise KL criterion (KCL) of Hsu, Lv & Kira, "Learning to
cluster in order to transfer across domains and tasks", ICLR 2018. Jiang & Verma,
"Meta-learning to cluster" (2019) likewise meta-learn clustering from labelled training tasks.

It lives with the learners, not in :mod:`metaunsup.cluster`, because it is a meta-training
loss: it reads the labels of training tasks, which no clustering routine does. Meta-K-means and
Clustering-MAML read labels only through it. It is computed in log space
(:func:`pair_log_probabilities`), so confident mistakes keep gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaunsup.cluster.soft_kmeans import log_softmax_clusters
from metaunsup.errors import DataError

__all__ = [
    "log_pair_sums",
    "offdiagonal_mask",
    "pair_log_probabilities",
    "pairwise_loss",
    "pairwise_targets",
]


def offdiagonal_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """``bool [n, n]``: ``True`` off the diagonal (the pairs ``i ≠ j``)."""
    return ~torch.eye(n, dtype=torch.bool, device=device)


def pairwise_targets(y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[B, n, n]`` same-class indicator ``S_ij = [y_i = y_j]`` of labels ``y`` ``[B, n]``."""
    if y.dim() != 2:
        raise DataError(f"labels must be [B, n], got shape {tuple(y.shape)}")
    return (y.unsqueeze(2) == y.unsqueeze(1)).to(dtype)


def pair_log_probabilities(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(log P, log(1 − P))`` ``[B, n, n]`` of ``P = R Rᵀ`` with ``R = softmax(logits)``.

    Computed in log space from ``logits`` ``[B, n, K]`` —
    ``log P_ij = logsumexp_k(log r_ik + log r_jk)`` and
    ``log(1 − P_ij) = logsumexp_k(log r_ik + log(1 − r_jk))`` — so that confident mistakes
    (``P`` within rounding of 0 or 1) keep finite, informative gradients instead of being
    clamped away (:func:`log_pair_sums` evaluates them as matrix products).
    """
    log_r = log_softmax_clusters(logits)  # [B, n, K]
    K = log_r.shape[-1]
    if K == 1:
        zeros = log_r.new_zeros(log_r.shape[0], log_r.shape[1], log_r.shape[1])
        return zeros, torch.full_like(zeros, -torch.inf)
    # log(1 − r_jk) = logsumexp over l ≠ k of log r_jl
    others = log_r.unsqueeze(-2).expand(*log_r.shape, K)  # [B, n, K(k), K(l)]
    diag = torch.eye(K, dtype=torch.bool, device=log_r.device)
    log_not = torch.logsumexp(others.masked_fill(diag, -torch.inf), dim=-1)  # [B, n, K]
    return log_pair_sums(log_r, log_r), log_pair_sums(log_r, log_not)


#: Below this a float64 sum of ``exp`` terms may have lost its leading term to underflow.
_UNDERFLOW = 1e-280


def log_pair_sums(a: Tensor, b: Tensor) -> Tensor:
    """``log Σ_k exp(a_ik + b_jk)`` ``[B, n, m]`` of ``a`` ``[B, n, K]`` and ``b`` ``[B, m, K]``.

    A log-space matrix product: with the row maxima ``α_i``, ``β_j`` taken out (constants for
    the gradient, which the identity holds for any shift), the sum is the ``(i, j)`` entry of
    ``exp(a − α) exp(b − β)ᵀ``, one batched matrix product in float64, whose entries are sums of
    positive terms (accurate to a few ulps: no cancellation). Only where that sum underflows
    (``log`` terms below about −640, i.e. probabilities below 1e-280) are the entries
    recomputed by ``logsumexp`` over ``k``, so values and gradients equal ``logsumexp``'s
    everywhere, while the ``[B, n, m, K]`` tensor it would build is avoided (``K`` times less
    memory traffic; the loss of a clustering task of 200 points was most of a Meta-K-means
    step on the CPU).
    """
    wide = torch.float64
    alpha = a.detach().amax(-1, keepdim=True)
    beta = b.detach().amax(-1, keepdim=True)
    ea = (a.to(wide) - alpha.to(wide)).exp()
    eb = (b.to(wide) - beta.to(wide)).exp()
    sums = torch.bmm(ea, eb.transpose(1, 2))  # [B, n, m], in (0, K]
    small = sums < _UNDERFLOW
    out = (sums.clamp_min(_UNDERFLOW).log() + alpha.to(wide) + beta.to(wide).transpose(1, 2)).to(
        a.dtype
    )
    if bool(small.any()):
        tb, ti, tj = small.nonzero(as_tuple=True)
        exact = torch.logsumexp(a[tb, ti] + b[tb, tj], dim=-1)
        out = out.index_put((tb, ti, tj), exact)
    return out


def pairwise_loss(
    logits: Tensor, y: Tensor, *, balanced: bool = False, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy of ``P = R Rᵀ`` against ``[y_i = y_j]`` over the pairs ``i ≠ j``.

    Parameters
    ----------
    logits:
        ``[B, n, K]`` assignment logits; ``R = softmax(logits)`` are the soft assignments
        (pass ``log R`` to score given assignments ``R``).
    y:
        ``int64 [B, n]`` task-local labels (only their partition matters).
    balanced:
        Weight same-class and different-class pairs equally within each task (with ``K``
        balanced classes only about ``1/K`` of the pairs are same-class).
    reduction:
        ``"mean"``: the mean over tasks of each task's mean pair loss (a scalar); ``"none"``:
        the per-task losses ``[B]``.

    The loss is ``−[S_ij log P_ij + (1 − S_ij) log(1 − P_ij)]`` averaged over ``i ≠ j``,
    computed in log space (:func:`pair_log_probabilities`); it is invariant to permuting the
    ``K`` cluster ids (MCL, Hsu et al. 2019).
    """
    if logits.dim() != 3 or logits.shape[:2] != y.shape:
        raise DataError(
            f"assignments {tuple(logits.shape)} and labels {tuple(y.shape)} do not match"
        )
    if reduction not in ("mean", "none"):
        raise DataError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    n = y.shape[1]
    log_same, log_diff = pair_log_probabilities(logits)
    s = pairwise_targets(y, torch.bool)
    mask = offdiagonal_mask(n, logits.device)
    pos, neg = s & mask, ~s & mask
    zero = logits.new_zeros(())
    bce_pos = -torch.where(pos, log_same, zero).sum((1, 2))
    bce_neg = -torch.where(neg, log_diff, zero).sum((1, 2))
    if balanced:
        n_pos = pos.sum((1, 2)).clamp_min(1).to(logits.dtype)
        n_neg = neg.sum((1, 2)).clamp_min(1).to(logits.dtype)
        per_task = 0.5 * (bce_pos / n_pos + bce_neg / n_neg)
    else:
        per_task = (bce_pos + bce_neg) / max(n * (n - 1), 1)
    return per_task.mean() if reduction == "mean" else per_task
