r"""Clustering losses and a differentiable soft k-means for meta-learned clustering.

Two parts, both written over task batches (every function takes ``B`` tasks at once):

**Permutation-invariant pairwise loss.** Cluster ids are arbitrary, so a clustering cannot be
scored with a cross-entropy against class labels. Instead, with soft assignments ``R``
``[B, n, K]`` (rows on the simplex), the probability that points ``i`` and ``j`` share a cluster
is ``P_ij = r_iᵀ r_j`` (``P = R Rᵀ``, ``[B, n, n]``), and the loss is the binary cross-entropy of
``P`` against the task's same-class matrix ``S_ij = [y_i = y_j]`` over the pairs ``i ≠ j``.
Relabelling the clusters permutes the columns of ``R`` and leaves ``P`` unchanged. This is the
meta classification likelihood (MCL) of Hsu, Lv, Schlosser, Odom & Kira, "Multi-class
classification without multi-class labels", ICLR 2019, which refines the pairwise KL criterion
(KCL) of Hsu, Lv & Kira, "Learning to cluster in order to transfer across domains and tasks",
ICLR 2018. Jiang & Verma, "Meta-learning to cluster" (2019) likewise meta-learn clustering
from labelled training tasks; here the labels are read only by this outer loss. The loss is
computed in log space (:func:`pair_log_probabilities`), so confident mistakes keep gradients.

**Balanced soft k-means** (:func:`balanced_soft_kmeans`), unrolled for a fixed number of
iterations so that gradients reach the embedding and the clustering's own parameters. On
embeddings ``z`` ``[B, n, D]`` it minimises, over soft assignments ``R`` and centres ``C``,

.. math::

    J(R, C) = \sum_{ij} r_{ij} \tilde d_{ij} + T \sum_{ij} r_{ij} \log r_{ij}
              - \lambda\, T\, n\, H(\bar r),
    \qquad \tilde d_{ij} = \lVert z_i - c_j \rVert^2 / V,\quad \bar r_j = \tfrac1n \sum_i r_{ij}

with temperature ``T``, the task's total variance ``V = mean_i ‖z_i − z̄‖²`` as the unit of
distance (so ``T`` does not depend on the scale of the embedding, and ``J/n`` — within-cluster
over total variance — cannot be lowered by shrinking the embedding), and a balance weight
``λ ∈ (−1, 1)``. Alternating minimisation gives the updates

* ``r_ij ∝ r̄_j^{−λ} exp(−d̃_ij / T)`` (``r̄`` from the previous iteration),
* ``c_j = Σ_i r_ij z_i / Σ_i r_ij``.

``λ = 0`` is plain soft k-means (the free-energy view of fuzzy/deterministic-annealing
clustering, Rose 1998; the differentiable prototype refinement of Ren et al., ICLR 2018);
``λ → −1`` weights clusters by their mass as EM of an equal-variance Gaussian mixture does;
``λ > 0`` favours clusters of equal size, which the tasks of the clustering protocol have.

The initial centres are k-means++ seeds (Arthur & Vassilvitskii 2007, greedy variant as in
scikit-learn, chosen on the detached embeddings with a seed) shrunk towards the task mean,
``c_j = z̄ + s (z_{i_j} − z̄)`` (:func:`plusplus_init`). The *choice* of the seed points is
piecewise constant in the embedding, but their *values* carry gradients, and the shrinkage
``s`` is learnable: k-means++ favours far-out points, and pulling them in is what a meta-learner
can tune. (A soft farthest-point traversal, softmax-weighted over all points, was tried first:
its near-argmax weights made meta-gradients three orders of magnitude larger and useless.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaunsup.cluster import kmeans_plusplus
from metaunsup.cluster._common import SeedLike
from metaunsup.errors import DataError

__all__ = [
    "SoftClustering",
    "balanced_soft_kmeans",
    "clustering_objective",
    "log_softmax_clusters",
    "offdiagonal_mask",
    "pair_log_probabilities",
    "pairwise_loss",
    "pairwise_targets",
    "plusplus_init",
    "relative_sqdist",
    "same_cluster_probability",
    "softmax_clusters",
    "task_variance",
]

#: Floor of the task variance and of the cluster masses (guards degenerate tasks).
TINY = 1e-12


def log_softmax_clusters(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last (cluster) dimension, ``logits − logsumexp``.

    Same values and gradients as :func:`torch.log_softmax`; on CPU the aten kernel is about
    six times slower over a last dimension as short as ``K = 10`` (it vectorises along it),
    and the soft k-means iterations call it on every ``[B, n, K]`` assignment.
    """
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def softmax_clusters(logits: Tensor) -> Tensor:
    """``softmax`` over the last (cluster) dimension (see :func:`log_softmax_clusters`)."""
    return log_softmax_clusters(logits).exp()


# ---------------------------------------------------------------------------- pairwise loss


def offdiagonal_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """``bool [n, n]``: ``True`` off the diagonal (the pairs ``i ≠ j``)."""
    return ~torch.eye(n, dtype=torch.bool, device=device)


def pairwise_targets(y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[B, n, n]`` same-class indicator ``S_ij = [y_i = y_j]`` of labels ``y`` ``[B, n]``."""
    if y.dim() != 2:
        raise DataError(f"labels must be [B, n], got shape {tuple(y.shape)}")
    return (y.unsqueeze(2) == y.unsqueeze(1)).to(dtype)


def same_cluster_probability(r: Tensor) -> Tensor:
    """``P = R Rᵀ`` ``[B, n, n]``: probability that two points share a cluster, from soft
    assignments ``r`` ``[B, n, K]`` (independent draws from each point's row)."""
    return torch.bmm(r, r.transpose(1, 2))


def pair_log_probabilities(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(log P, log(1 − P))`` ``[B, n, n]`` of ``P = R Rᵀ`` with ``R = softmax(logits)``.

    Computed in log space from ``logits`` ``[B, n, K]`` —
    ``log P_ij = logsumexp_k(log r_ik + log r_jk)`` and
    ``log(1 − P_ij) = logsumexp_k(log r_ik + log(1 − r_jk))`` — so that confident mistakes
    (``P`` within rounding of 0 or 1) keep finite, informative gradients instead of being
    clamped away.
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
    log_same = torch.logsumexp(log_r.unsqueeze(2) + log_r.unsqueeze(1), dim=-1)
    log_diff = torch.logsumexp(log_r.unsqueeze(2) + log_not.unsqueeze(1), dim=-1)
    return log_same, log_diff


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


# ---------------------------------------------------------------------------- soft k-means


def task_variance(z: Tensor) -> Tensor:
    """``[B]`` total variance ``mean_i ‖z_i − z̄‖²`` of each task's points ``z`` ``[B, n, D]``."""
    centred = z - z.mean(1, keepdim=True)
    return centred.pow(2).sum(-1).mean(1).clamp_min(TINY)


def relative_sqdist(z: Tensor, c: Tensor, scale: Tensor) -> Tensor:
    """``‖z_i − c_j‖² / scale`` ``[B, n, K]`` for ``z`` ``[B, n, D]``, ``c`` ``[B, K, D]``,
    ``scale`` ``[B]``.

    Computed as ``‖z‖² − 2 z·c + ‖c‖²`` of the points and centres taken relative to the task
    mean: one batched GEMM and no ``[B, n, K, D]`` temporary (five times faster on 200 × 10 ×
    64 tasks, where the differences were most of the test-time clustering), while centring
    keeps the cancellation at the scale of the task's own spread. Clamped at 0.
    """
    mean = z.mean(1, keepdim=True)
    zc, cc = z - mean, c - mean
    d = torch.baddbmm((cc * cc).sum(-1).unsqueeze(1), zc, cc.transpose(1, 2), alpha=-2.0)
    d = d + (zc * zc).sum(-1, keepdim=True)
    return d.clamp_min(0.0) / scale.view(-1, 1, 1)


def plusplus_init(z: Tensor, k: int, shrink: Tensor | float = 1.0, seed: SeedLike = 0) -> Tensor:
    """Initial centres ``[B, k, D]`` of ``z`` ``[B, n, D]``: k-means++ seeds shrunk to the mean.

    ``c_j = z̄ + s (z_{i_j} − z̄)`` with ``i_j`` the greedy k-means++ seeding of the detached
    embeddings (:func:`~metaunsup.cluster.kmeans_plusplus`, ``seed`` an int or one per task).
    Gradients reach ``z`` (through the chosen points and the mean) and ``shrink``; the choice
    of points is piecewise constant.
    """
    if z.dim() != 3 or not 1 <= k <= z.shape[1]:
        raise DataError(f"cannot seed {k} centres in points of shape {tuple(z.shape)}")
    _, idx = kmeans_plusplus(z.detach(), k, seed=seed)  # [B, k]
    chosen = torch.gather(z, 1, idx.unsqueeze(-1).expand(-1, -1, z.shape[2]))
    mean = z.mean(1, keepdim=True)
    return mean + shrink * (chosen - mean)


@dataclass(frozen=True, eq=False)
class SoftClustering:
    """The result of :func:`balanced_soft_kmeans` for ``B`` tasks.

    Attributes
    ----------
    logits:
        ``[B, n, K]`` assignment logits ``−d̃/T + log_prior`` (a softmax gives ``R``).
    centers:
        ``[B, K, D]`` final centres.
    scale:
        ``[B]`` the task variance ``V`` used as the unit of distance.
    log_prior:
        ``[B, K]`` the balance term ``−λ log r̄`` of the final assignment.
    temperature:
        ``T`` (a 0-d tensor or float).
    """

    logits: Tensor
    centers: Tensor
    scale: Tensor
    log_prior: Tensor
    temperature: Tensor | float

    @property
    def responsibilities(self) -> Tensor:
        """``[B, n, K]`` soft assignments (rows sum to 1)."""
        return softmax_clusters(self.logits)

    @property
    def labels(self) -> Tensor:
        """``int64 [B, n]`` most responsible cluster of each point."""
        return self.logits.argmax(-1)

    def assign_logits(self, z: Tensor) -> Tensor:
        """Logits ``[B, m, K]`` of new embeddings ``z`` ``[B, m, D]`` under these clusters."""
        d = relative_sqdist(z, self.centers, self.scale)
        return -d / self.temperature + self.log_prior.unsqueeze(1)


def balanced_soft_kmeans(
    z: Tensor,
    k: int,
    *,
    temperature: Tensor | float,
    balance: Tensor | float = 0.0,
    shrink: Tensor | float = 1.0,
    n_iter: int = 5,
    seed: SeedLike = 0,
    eps: float = 1e-8,
) -> SoftClustering:
    """Unrolled balanced soft k-means of ``z`` ``[B, n, D]`` into ``k`` clusters.

    Starts from :func:`plusplus_init` (``shrink``, ``seed``), then ``n_iter`` alternating
    updates of the assignments ``r_ij ∝ r̄_j^{−λ} exp(−d̃_ij/T)`` and centres (see the module
    docstring); ``eps`` of mass pins a centre that receives (almost) none. Every argument that
    is a tensor receives gradients. ``n_iter = 0`` assigns to the initial centres.
    """
    B, n, _ = z.shape
    scale = task_variance(z)
    c = plusplus_init(z, k, shrink, seed)
    log_prior = z.new_zeros(B, k)
    for _ in range(n_iter):
        logits = -relative_sqdist(z, c, scale) / temperature + log_prior.unsqueeze(1)
        r = softmax_clusters(logits)
        mass = r.sum(1)  # [B, K]
        c = (torch.bmm(r.transpose(1, 2), z) + eps * c) / (mass + eps).unsqueeze(-1)
        log_prior = -balance * torch.log(mass / n + TINY)
    logits = -relative_sqdist(z, c, scale) / temperature + log_prior.unsqueeze(1)
    return SoftClustering(logits, c, scale, log_prior, temperature)


def clustering_objective(z: Tensor, clustering: SoftClustering, balance: Tensor | float) -> Tensor:
    """``J/n`` of each task ``[B]``: the objective balanced soft k-means descends, evaluated at
    its result, as a function of the embeddings ``z`` ``[B, n, D]`` (see the module docstring):
    ``mean_i Σ_j r_ij d̃_ij − T mean_i H(r_i) − λ T H(r̄)``.

    Unsupervised: it reads no labels. Clustering-MAML takes gradient steps on it.
    """
    log_r = log_softmax_clusters(clustering.logits)
    r = log_r.exp()
    d = relative_sqdist(z, clustering.centers, clustering.scale)
    energy = (r * d).sum(-1).mean(1)
    neg_entropy = (r * log_r).sum(-1).mean(1)
    rbar = r.mean(1)
    marginal_entropy = -(rbar * torch.log(rbar + TINY)).sum(-1)
    T = clustering.temperature
    return energy + T * neg_entropy - balance * T * marginal_entropy
