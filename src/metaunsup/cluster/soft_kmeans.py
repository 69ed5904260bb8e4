r"""Differentiable soft k-means over a batch of tasks.

Each step assigns every point softly to the centres and moves each centre to the weighted mean
of the points (Bezdek-style fuzzy assignment with a softmax, as used for prototype refinement
by Ren et al., "Meta-learning for semi-supervised few-shot classification", ICLR 2018):

.. math::

    r_{ij} = \frac{\exp(-\lVert x_i - c_j \rVert^2 / T)}
                  {\sum_l \exp(-\lVert x_i - c_l \rVert^2 / T)},
    \qquad
    c_j \leftarrow \frac{\sum_i w_i r_{ij} x_i + \varepsilon c_j}{\sum_i w_i r_{ij} + \varepsilon}

with temperature ``T`` and point weights ``w_i >= 0`` (``1`` by default; ``0`` masks a point
out of the centres while it still receives responsibilities). The small ``ε`` keeps a centre
that receives (almost) no mass where it was instead of dividing by zero. Every operation is
differentiable, so gradients flow to the points, the weights and the initial centres; as
``T → 0`` the assignment tends to the hard nearest-centre assignment of Lloyd's k-means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaunsup._validation import check_float, check_int
from metaunsup.cluster._common import SeedLike, check_points
from metaunsup.errors import DataError

__all__ = ["SoftKMeansResult", "soft_assign", "soft_kmeans"]


@dataclass(frozen=True, eq=False)
class SoftKMeansResult:
    """Soft k-means of each task.

    Attributes
    ----------
    responsibilities:
        ``[B, n, k]`` soft assignment of each point (rows sum to 1), computed from ``centers``.
    centers:
        ``[B, k, d]`` centres after the update steps.

    The task dimension ``B`` is absent when the input was one task ``[n, d]``.
    """

    responsibilities: torch.Tensor
    centers: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        """``int64 [B, n]``: the most responsible centre of each point."""
        return self.responsibilities.argmax(-1)


def _sqdist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``[B, n, k]`` squared Euclidean distances between ``x: [B, n, d]`` and ``c: [B, k, d]``."""
    return (
        (x * x).sum(-1, keepdim=True)
        - 2.0 * torch.bmm(x, c.transpose(1, 2))
        + (c * c).sum(-1).unsqueeze(1)
    )


def soft_assign(x: torch.Tensor, centers: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Responsibilities ``softmax_j(-||x_i - c_j||² / T)``, ``[B, n, k]``.

    ``x: [B, n, d]``, ``centers: [B, k, d]``, temperature ``T > 0``.
    """
    return torch.softmax(_sqdist(x, centers) / -temperature, dim=-1)


def soft_kmeans(
    x: torch.Tensor,
    init: torch.Tensor | int,
    temperature: float = 1.0,
    n_iter: int = 10,
    weights: torch.Tensor | None = None,
    seed: SeedLike = 0,
    eps: float = 1e-8,
) -> SoftKMeansResult:
    """Soft k-means refinement of each task, differentiable end to end.

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
        ``T > 0``; smaller is harder (``T → 0`` gives nearest-centre assignments).
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
    SoftKMeansResult
        ``responsibilities [B, n, k]`` from the final ``centers [B, k, d]``.

    Example
    -------
    >>> x = torch.randn(4, 30, 2, requires_grad=True)
    >>> res = soft_kmeans(x, 3, temperature=0.5, n_iter=5)
    >>> res.responsibilities.sum().backward()  # gradients reach x
    """
    xb, batched = check_points(x)
    B, n, d = xb.shape
    temperature = check_float("temperature", temperature, 0.0, strict_low=True)
    n_iter = check_int("n_iter", n_iter, 0)
    eps = check_float("eps", eps, 0.0, strict_low=True)
    if isinstance(init, torch.Tensor):
        c = init.to(xb.dtype)
        if not batched and c.dim() == 2:
            c = c.unsqueeze(0)
        if c.dim() != 3 or c.shape[0] != B or c.shape[2] != d or c.shape[1] < 1:
            raise DataError(
                f"initial centres must have shape [B, k, d] = [{B}, k, {d}] "
                f"(or [k, {d}] for one task), got {tuple(init.shape)}"
            )
        if not bool(torch.isfinite(c).all()):
            raise DataError("initial centres contain NaN or infinite values")
    else:
        from metaunsup.cluster.kmeans import kmeans_plusplus

        c, _ = kmeans_plusplus(xb, init, seed=seed)
    w = _check_weights(weights, B, n, batched, xb)
    wx = xb if w is None else xb * w.unsqueeze(-1)
    for _ in range(n_iter):
        r = soft_assign(xb, c, temperature)  # [B, n, k]
        rw = r if w is None else r * w.unsqueeze(-1)
        mass = rw.sum(1).unsqueeze(-1)  # [B, k, 1]
        c = (torch.bmm(r.transpose(1, 2), wx) + eps * c) / (mass + eps)
    r = soft_assign(xb, c, temperature)
    if not batched:
        return SoftKMeansResult(responsibilities=r[0], centers=c[0])
    return SoftKMeansResult(responsibilities=r, centers=c)


def _check_weights(
    weights: torch.Tensor | None, B: int, n: int, batched: bool, x: torch.Tensor
) -> torch.Tensor | None:
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
