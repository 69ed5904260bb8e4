r"""Soft k-means over a batch of tasks, differentiable end to end: the one implementation.

Soft k-means alternates soft assignments of the points to the centres with weighted-mean centre
updates (fuzzy c-means, Bezdek, "Pattern recognition with fuzzy objective function
algorithms", 1981, here with softmax memberships: the free-energy view of deterministic
annealing, Rose, Proc. IEEE 86(11), 1998). Unrolled for a fixed number of iterations it is a
differentiable layer: gradients reach the points, their weights, the initial centres and the
clustering's own parameters (the prototype refinement of Ren et al., "Meta-learning for
semi-supervised few-shot classification", ICLR 2018). On points ``z`` ``[B, n, D]`` with point
weights ``w_i ≥ 0`` it descends, over soft assignments ``R`` ``[B, n, K]`` and centres ``C``
``[B, K, D]``,

.. math::

    J(R, C) = \sum_{ij} w_i r_{ij} \tilde d_{ij} + T \sum_{ij} w_i r_{ij} \log r_{ij}
              - \lambda\, T\, W H(\bar r),
    \qquad \tilde d_{ij} = \lVert z_i - c_j \rVert^2 / V,\quad
    \bar r_j = \tfrac1W \sum_i w_i r_{ij},\quad W = \sum_i w_i

with temperature ``T``, unit of distance ``V`` and balance weight ``λ ∈ (−1, 1)``.
Alternating minimisation gives the two steps of every iteration:

* assign: ``r_ij ∝ r̄_j^{−λ} exp(−d̃_ij / T)`` (``r̄`` from the previous iteration);
* update (:func:`soft_centers`): ``c_j = (Σ_i w_i r_ij z_i + ε c_j) / (Σ_i w_i r_ij + ε)``,
  where the small mass ``ε`` keeps a centre that receives (almost) none where it was.

``λ = 0`` is plain soft k-means; ``λ → −1`` weights clusters by their mass as EM of an
equal-variance Gaussian mixture does; ``λ > 0`` favours clusters of equal size. As ``T → 0``
the assignment tends to Lloyd's hard nearest-centre assignment. A weight ``w_i = 0`` masks a
point (e.g. padding) out of the centres while it still receives responsibilities.

Entry points, all running the one loop :func:`soft_kmeans_steps`:

* :func:`balanced_soft_kmeans` — for meta-learned clustering: ``V`` is the task's total
  variance ``mean_i ‖z_i − z̄‖²`` (:func:`task_variance`), so ``T`` does not depend on the scale
  of the embedding (and ``J/n``, within-cluster over total variance, cannot be lowered by
  shrinking it); the initial centres are k-means++ seeds shrunk towards the task mean
  (:func:`plusplus_init`); :func:`clustering_objective` scores the result without labels.
* :func:`soft_kmeans` — the checked general form: a fixed temperature in the units of the
  points (``V = 1``), given initial centres or k-means++ seeds, point weights, one task
  ``[n, d]`` or a batch.
* :func:`soft_centers` — the update alone, with any prior mass; ProtoNet's transductive
  refinement (:mod:`metaunsup.learners.protonet`) uses it with the labelled support as fixed
  mass.

The kernels are written for CPU speed on many small tasks (see ``docs/results/speed.md``):
squared distances by one batched GEMM of the points and centres taken relative to the task
mean (:func:`relative_sqdist`), and the softmax over clusters as ``logits − logsumexp``
(:func:`softmax_clusters`). Shapes: points ``[B, n, D]``, centres ``[B, K, D]``, logits and
responsibilities ``[B, n, K]``, per-task quantities ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaunsup._validation import check_float, check_int
from metaunsup.cluster._common import SeedLike, check_points
from metaunsup.cluster.kmeans import kmeans_plusplus
from metaunsup.errors import DataError

__all__ = [
    "TINY",
    "SoftClustering",
    "balanced_soft_kmeans",
    "clustering_objective",
    "log_softmax_clusters",
    "plusplus_init",
    "relative_sqdist",
    "soft_centers",
    "soft_kmeans",
    "soft_kmeans_steps",
    "softmax_clusters",
    "task_variance",
]

#: Floor of the task variance and of the cluster masses (guards degenerate tasks).
TINY = 1e-12


# ---------------------------------------------------------------------------- kernels


def log_softmax_clusters(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last (cluster) dimension, ``logits − logsumexp``.

    Same values and gradients as :func:`torch.log_softmax`, written out because on CPU the aten
    kernel is slow over a last dimension as short as a number of clusters (it vectorises along
    it), and the soft k-means iterations call it on every ``[B, n, K]`` assignment.
    """
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def softmax_clusters(logits: Tensor) -> Tensor:
    """``softmax`` over the last (cluster) dimension (see :func:`log_softmax_clusters`)."""
    return log_softmax_clusters(logits).exp()


def task_variance(z: Tensor) -> Tensor:
    """``[B]`` total variance ``mean_i ‖z_i − z̄‖²`` of each task's points ``z`` ``[B, n, D]``."""
    centred = z - z.mean(1, keepdim=True)
    return centred.pow(2).sum(-1).mean(1).clamp_min(TINY)


def relative_sqdist(z: Tensor, c: Tensor, scale: Tensor) -> Tensor:
    """``‖z_i − c_j‖² / scale`` ``[B, n, K]`` for ``z`` ``[B, n, D]``, ``c`` ``[B, K, D]``,
    ``scale`` ``[B]``.

    Computed as ``‖z‖² − 2 z·c + ‖c‖²`` of the points and centres taken relative to the task
    mean: one batched GEMM and no ``[B, n, K, D]`` temporary of differences, while centring
    keeps the cancellation at the scale of the task's own spread. Clamped at 0.
    """
    mean = z.mean(1, keepdim=True)
    zc, cc = z - mean, c - mean
    d = torch.baddbmm((cc * cc).sum(-1).unsqueeze(1), zc, cc.transpose(1, 2), alpha=-2.0)
    d = d + (zc * zc).sum(-1, keepdim=True)
    return d.clamp_min(0.0) / scale.view(-1, 1, 1)


def plusplus_init(z: Tensor, k: int, shrink: Tensor | float = 1.0, seed: SeedLike = 0) -> Tensor:
    """Initial centres ``[B, k, D]`` of ``z`` ``[B, n, D]``: k-means++ seeds shrunk to the mean.

    ``c_j = z̄ + s (z_{i_j} − z̄)`` with ``i_j`` the greedy k-means++ seeding (Arthur &
    Vassilvitskii 2007) of the detached points (:func:`~metaunsup.cluster.kmeans_plusplus`,
    ``seed`` an int or one per task). The *choice* of the seed points is piecewise constant,
    but their *values* carry gradients to ``z`` (through the chosen points and the mean), and so
    does the shrinkage ``s``: k-means++ favours far-out points, and pulling them in is what a
    meta-learner can tune. (A soft farthest-point traversal, softmax-weighted over all points,
    gave near-argmax weights and meta-gradients too large to use.)
    """
    if z.dim() != 3 or not 1 <= k <= z.shape[1]:
        raise DataError(f"cannot seed {k} centres in points of shape {tuple(z.shape)}")
    _, idx = kmeans_plusplus(z.detach(), k, seed=seed)  # [B, k]
    chosen = torch.gather(z, 1, idx.unsqueeze(-1).expand(-1, -1, z.shape[2]))
    mean = z.mean(1, keepdim=True)
    return mean + shrink * (chosen - mean)


def soft_centers(
    z: Tensor,
    resp: Tensor,
    prior_mass: Tensor | float,
    *,
    centers: Tensor | None = None,
    prior_sum: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The centre update of soft k-means: ``(new centres [B, K, D], mass [B, K])``.

    ``c_j = (Σ_i r_ij z_i + a_j) / (Σ_i r_ij + m_j)`` for points ``z`` ``[B, n, D]`` and
    (weighted) responsibilities ``resp`` ``[B, n, K]``, with ``mass_j = Σ_i r_ij``. The prior
    is a mass ``m`` (``prior_mass``, ``[B, K]`` or a float) of fixed responsibility whose sum of
    points ``a`` is ``prior_sum`` (``[B, K, D]``), or else ``m c`` with ``c`` the current
    ``centers``:

    * ``m = ε`` at the current centres pins a centre that receives no mass where it was;
    * ``a_j`` the sum and ``m_j`` the count of the labelled points of class ``j`` is the
      semi-supervised refinement of Ren et al. (ICLR 2018): labelled points keep their classes
      while the unlabelled ones are assigned softly.
    """
    mass = resp.sum(1)
    sums = torch.bmm(resp.transpose(1, 2), z)
    if prior_sum is None:
        if centers is None:
            raise DataError("soft_centers needs the current centers or a prior_sum")
        prior_sum = prior_mass * centers
    return (sums + prior_sum) / (mass + prior_mass).unsqueeze(-1), mass


# ---------------------------------------------------------------------------- the iterations


@dataclass(frozen=True, eq=False)
class SoftClustering:
    """Soft k-means of ``B`` tasks (the result of :func:`soft_kmeans_steps` and its callers).

    Attributes
    ----------
    logits:
        ``[B, n, K]`` assignment logits ``−d̃/T + log_prior`` (a softmax gives ``R``), computed
        from ``centers``.
    centers:
        ``[B, K, D]`` final centres.
    scale:
        ``[B]`` the unit of distance ``V`` (the task variance, or ones).
    log_prior:
        ``[B, K]`` the balance term ``−λ log r̄`` of the final assignment.
    temperature:
        ``T`` (a 0-d tensor or float).

    :func:`soft_kmeans` given one task ``[n, d]`` returns fields without the task dimension
    ``B``; :meth:`assign_logits` needs it.
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
        """Logits ``[B, m, K]`` of new points ``z`` ``[B, m, D]`` under these clusters."""
        d = relative_sqdist(z, self.centers, self.scale)
        return -d / self.temperature + self.log_prior.unsqueeze(1)


def soft_kmeans_steps(
    z: Tensor,
    centers: Tensor,
    scale: Tensor,
    temperature: Tensor | float,
    n_iter: int,
    *,
    balance: Tensor | float = 0.0,
    weights: Tensor | None = None,
    eps: float = 1e-8,
) -> SoftClustering:
    """``n_iter`` soft k-means iterations of ``z`` ``[B, n, D]`` from ``centers`` ``[B, K, D]``.

    Each iteration assigns ``r_ij ∝ r̄_j^{−λ} exp(−‖z_i − c_j‖² / (V T))`` (``V`` = ``scale``
    ``[B]``, ``λ`` = ``balance``) and moves the centres by :func:`soft_centers` with ``eps`` of
    pinning mass; optional ``weights`` ``[B, n]`` (``≥ 0``) weight the points in the centres
    and in ``r̄``. The returned logits are those of the final centres (``n_iter = 0`` assigns
    to the given ones). Unchecked inputs (callers check); every tensor argument receives
    gradients.
    """
    B, n, _ = z.shape
    c = centers
    log_prior = z.new_zeros(B, c.shape[1])
    total = n if weights is None else weights.sum(1, keepdim=True).clamp_min(TINY)
    for _ in range(n_iter):
        logits = -relative_sqdist(z, c, scale) / temperature + log_prior.unsqueeze(1)
        r = softmax_clusters(logits)
        if weights is not None:
            r = r * weights.unsqueeze(-1)
        c, mass = soft_centers(z, r, eps, centers=c)
        log_prior = -balance * torch.log(mass / total + TINY)
    logits = -relative_sqdist(z, c, scale) / temperature + log_prior.unsqueeze(1)
    return SoftClustering(logits, c, scale, log_prior, temperature)


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
    """Unrolled balanced soft k-means of ``z`` ``[B, n, D]`` into ``k`` clusters, in units of
    each task's variance.

    Starts from :func:`plusplus_init` (``shrink``, ``seed``), then ``n_iter`` iterations of
    :func:`soft_kmeans_steps` with ``V`` the task variance (:func:`task_variance`), temperature
    ``T`` and balance ``λ`` (see the module docstring). Every argument that is a tensor
    receives gradients. ``n_iter = 0`` assigns to the initial centres.
    """
    scale = task_variance(z)
    c = plusplus_init(z, k, shrink, seed)
    return soft_kmeans_steps(z, c, scale, temperature, n_iter, balance=balance, eps=eps)


def clustering_objective(z: Tensor, clustering: SoftClustering, balance: Tensor | float) -> Tensor:
    """``J/n`` of each task ``[B]``: the objective balanced soft k-means descends, evaluated at
    its result, as a function of the points ``z`` ``[B, n, D]`` (see the module docstring):
    ``mean_i Σ_j r_ij d̃_ij − T mean_i H(r_i) − λ T H(r̄)``.

    Unsupervised: it reads no labels. Meta-K-means keeps the restart that scores lowest;
    Clustering-MAML takes gradient steps on it.
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


# ---------------------------------------------------------------------------- checked API


def soft_kmeans(
    x: Tensor,
    init: Tensor | int,
    temperature: float = 1.0,
    n_iter: int = 10,
    weights: Tensor | None = None,
    seed: SeedLike = 0,
    eps: float = 1e-8,
) -> SoftClustering:
    """Soft k-means of each task at a fixed temperature, differentiable end to end.

    Parameters
    ----------
    x:
        ``[B, n, d]`` points (or ``[n, d]`` for one task), floating point.
    init:
        Initial centres ``[B, k, d]`` (``[k, d]`` with an unbatched ``x``), or a number of
        clusters ``k``: then the centres start at k-means++ seeds
        (:func:`~metaunsup.cluster.kmeans_plusplus` with ``seed``), gathered from ``x`` so that
        gradients still reach the points.
    temperature:
        ``T > 0`` in the units of squared distances of ``x`` (``r_ij ∝ exp(−‖x_i − c_j‖²/T)``);
        smaller is harder (``T → 0`` gives nearest-centre assignments).
    n_iter:
        Centre updates (``0`` only assigns to the initial centres).
    weights:
        Optional ``[B, n]`` (or ``[n]``) non-negative weight of each point in the centre
        updates; ``0`` masks a point (e.g. padding) out of the centres.
    seed:
        Seed of the k-means++ initialisation when ``init`` is an int.
    eps:
        Mass that pins a centre to its previous position (guards empty clusters).

    Returns
    -------
    SoftClustering
        ``responsibilities [B, n, k]`` (and ``logits``, ``labels``) of the final
        ``centers [B, k, d]``; no task dimension for an unbatched ``x``.

    Example
    -------
    >>> x = torch.randn(4, 30, 2, requires_grad=True)
    >>> res = soft_kmeans(x, 3, temperature=0.5, n_iter=5)
    >>> res.responsibilities.sum().backward()  # gradients reach x
    """
    xb, batched = check_points(x)
    B, n, _ = xb.shape
    temperature = check_float("temperature", temperature, 0.0, strict_low=True)
    n_iter = check_int("n_iter", n_iter, 0)
    eps = check_float("eps", eps, 0.0, strict_low=True)
    if isinstance(init, torch.Tensor):
        c = _check_centers(init, xb, batched)
    else:
        c, _ = kmeans_plusplus(xb, init, seed=seed)
    w = _check_weights(weights, B, n, batched, xb)
    res = soft_kmeans_steps(xb, c, xb.new_ones(B), temperature, n_iter, weights=w, eps=eps)
    if batched:
        return res
    return SoftClustering(
        res.logits[0], res.centers[0], res.scale[0], res.log_prior[0], temperature
    )


def _check_centers(init: Tensor, x: Tensor, batched: bool) -> Tensor:
    """Given initial centres as ``[B, k, d]`` in the dtype of ``x`` ``[B, n, d]``."""
    B, _, d = x.shape
    c = init.to(x.dtype)
    if not batched and c.dim() == 2:
        c = c.unsqueeze(0)
    if c.dim() != 3 or c.shape[0] != B or c.shape[2] != d or c.shape[1] < 1:
        raise DataError(
            f"initial centres must have shape [B, k, d] = [{B}, k, {d}] "
            f"(or [k, {d}] for one task), got {tuple(init.shape)}"
        )
    if not bool(torch.isfinite(c).all()):
        raise DataError("initial centres contain NaN or infinite values")
    return c


def _check_weights(
    weights: Tensor | None, B: int, n: int, batched: bool, x: Tensor
) -> Tensor | None:
    """Point weights as ``[B, n]`` in the dtype of ``x``, or ``None``."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, device=x.device).to(x.dtype)
    if not batched and w.dim() == 1:
        w = w.unsqueeze(0)
    if w.shape != (B, n):
        raise DataError(f"weights must have shape [B, n] = [{B}, {n}], got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise DataError("weights must be finite and non-negative")
    return w
