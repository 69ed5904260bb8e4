"""Spectral embedding of a k-nearest-neighbour graph: clusters that k-means alone misses.

k-means on learned features assumes round, equally spread clusters. Contrastive features are
not like that (classes are long, curved regions of the unit sphere), but their *neighbourhoods*
are very pure: most of an image's nearest neighbours (cosine) share its class. Spectral
clustering (Ng, Jordan & Weiss 2001; von Luxburg 2007) turns that local purity into global
clusters:

1. the symmetrised k-nearest-neighbour graph ``A`` of the rows of ``z`` (cosine similarity,
   found in chunks of a dense matrix product, so ``O(n² d)`` time and ``O(chunk · n)``
   memory);
2. the top eigenvectors of ``D^{-1/2} A D^{-1/2}`` (``A`` lightly regularised, see
   :func:`spectral_embedding`) (scipy's Lanczos ``eigsh``, from a seeded
   random start vector, so the result is deterministic);
3. each row scaled to unit length; k-means on these rows gives the partitions.

Labels are never read. How well such partitions match the hidden classes of MNIST train is
measured by ``benchmarks/cactus_quality.py`` (``docs/results/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from metaunsup._validation import check_int
from metaunsup.errors import DataError

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

__all__ = ["METRICS", "graph_eigenvalues", "knn_indices", "observed_sqdist", "spectral_embedding"]

#: ``(start, stop) -> [stop - start, n]`` similarities of a block of rows to all rows.
_Block = Callable[[int, int], torch.Tensor]

#: Neighbourhoods :func:`knn_indices` can use.
METRICS = ("cosine", "euclidean")

#: Elements of the largest temporary similarity block.
_BLOCK_ELEMENTS = 1 << 26


def knn_indices(z: torch.Tensor, n_neighbors: int, metric: str = "cosine") -> torch.Tensor:
    """``int64 [n, n_neighbors]`` the nearest other rows of ``z`` ``[n, d]`` (most similar
    first), by cosine similarity (``metric="cosine"``) or Euclidean distance
    (``metric="euclidean"``: for tables whose rows' lengths matter, e.g. centred data in few
    dimensions, where the angle alone says little).

    ``z`` may hold NaN for missing cells: then both are computed over the features the two
    rows share (the Euclidean distance scaled by ``d / shared``, scikit-learn's
    ``nan_euclidean_distances``), and rows that share none are never neighbours."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise DataError(f"need embeddings [n >= 2, d], got shape {tuple(z.shape)}")
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; choose one of {METRICS}")
    n = z.shape[0]
    n_neighbors = check_int("n_neighbors", n_neighbors, 1, n - 1)
    u = z.to(torch.float32)
    missing = bool(torch.isnan(u).any())
    if missing:
        similarity = _observed_similarity(u, metric)
        step = max(1, _BLOCK_ELEMENTS // (4 * n))
    else:
        similarity = _similarity(u, metric)
        step = max(1, _BLOCK_ELEMENTS // n)
    out = torch.empty(n, n_neighbors, dtype=torch.int64)
    for s in range(0, n, step):
        sim = similarity(s, s + step)
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + s] = -torch.inf  # not its own neighbour
        out[s : s + step] = sim.topk(n_neighbors, dim=1).indices
    return out


def _similarity(u: torch.Tensor, metric: str) -> _Block:
    """``(start, stop) -> [rows, n]`` similarities of complete rows (higher = nearer)."""
    if metric == "cosine":
        u = torch.nn.functional.normalize(u, dim=1)
    half_sq = 0.5 * (u * u).sum(1)  # ranking by u_i·u_j - |u_j|²/2 is ranking by -|u_i - u_j|²

    def block(start: int, stop: int) -> torch.Tensor:
        sim = u[start:stop] @ u.T
        return sim - half_sq if metric == "euclidean" else sim

    return block


def observed_sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[m, n]`` squared Euclidean distances between the rows of ``a`` ``[m, d]`` and ``b``
    ``[n, d]``, which may hold NaN for missing cells: summed over the features both rows
    observe and scaled by ``d / shared`` (scikit-learn's ``nan_euclidean_distances``, squared);
    ``inf`` where two rows share no feature."""
    sa, sb = (~torch.isnan(a)).to(a.dtype), (~torch.isnan(b)).to(b.dtype)
    fa, fb = torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0)
    shared = sa @ sb.T
    sq = ((fa * fa) @ sb.T + sa @ (fb * fb).T - 2 * (fa @ fb.T)).clamp_min(0)
    return (sq * a.shape[1] / shared.clamp_min(1)).masked_fill(shared == 0, torch.inf)


def _observed_similarity(u: torch.Tensor, metric: str) -> _Block:
    """``(start, stop) -> [rows, n]`` similarities over the features both rows observe."""
    seen = (~torch.isnan(u)).to(u.dtype)
    filled = torch.nan_to_num(u, nan=0.0)
    squares = filled * filled

    def block(start: int, stop: int) -> torch.Tensor:
        if metric == "euclidean":
            return -observed_sqdist(u[start:stop], u)
        a, ma = filled[start:stop], seen[start:stop]
        cross = a @ filled.T  # sum over shared features of a_j b_j
        a2, b2 = squares[start:stop] @ seen.T, ma @ squares.T  # ... of a_j², b_j²
        sim = cross / (a2 * b2).sqrt().clamp_min(1e-12)
        return sim.masked_fill(ma @ seen.T == 0, -torch.inf)

    return block


def _normalized_adjacency(
    z: torch.Tensor, n_neighbors: int, regularization: float, metric: str
) -> LinearOperator:
    """The regularised normalised adjacency ``D^-1/2 (A + τ/n 11ᵀ) D^-1/2`` of the symmetrised
    ``n_neighbors``-nearest-neighbour graph of ``z`` ``[n, d]``, as a symmetric linear
    operator (``τ = regularization · mean degree``; ``D`` the degrees of ``A + τ/n 11ᵀ``)."""
    from scipy import sparse
    from scipy.sparse.linalg import LinearOperator

    idx = knn_indices(z, n_neighbors, metric)
    n = idx.shape[0]
    if not regularization >= 0:
        raise DataError(f"regularization must be >= 0, got {regularization}")
    rows = np.repeat(np.arange(n), idx.shape[1])
    adj = sparse.csr_matrix((np.ones(rows.size), (rows, idx.reshape(-1).numpy())), shape=(n, n))
    adj = ((adj + adj.T) > 0).astype(np.float64)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    tau = regularization * degree.mean()
    inv_sqrt = 1.0 / np.sqrt(degree + tau)

    def matvec(v: np.ndarray) -> np.ndarray:
        w = inv_sqrt[:, None] * v.reshape(n, -1)
        out = adj @ w + (tau / n) * w.sum(axis=0, keepdims=True)
        return (inv_sqrt[:, None] * out).reshape(v.shape)

    return LinearOperator((n, n), matvec=matvec, matmat=matvec, dtype=np.float64)


def _top_eigen(operator: LinearOperator, count: int, tol: float, vectors: bool):
    from scipy.sparse.linalg import eigsh

    n = operator.shape[0]
    # A seeded random start: deterministic, and not (nearly) inside one eigenspace as a
    # constant vector would be.
    start = np.random.default_rng(0).uniform(0.5, 1.5, size=n)
    return eigsh(operator, k=count, which="LA", tol=tol, v0=start, return_eigenvectors=vectors)


def spectral_embedding(
    z: torch.Tensor,
    n_components: int,
    n_neighbors: int = 10,
    regularization: float = 0.01,
    tol: float = 1e-6,
    metric: str = "cosine",
) -> torch.Tensor:
    """``float32 [n, n_components]`` unit-length rows: the normalised spectral embedding of
    the symmetrised ``n_neighbors``-nearest-neighbour graph of ``z`` ``[n, d]`` (neighbours by
    ``metric``, see :func:`knn_indices`).

    ``regularization`` ``ρ`` adds a weak edge of weight ``ρ · mean degree / n`` between every
    pair of points (regularised spectral clustering, Amini et al., Ann. Statist. 2013), applied
    implicitly (the matrix stays sparse). Without it a graph with several connected components
    has a repeated top eigenvalue, whose eigenvectors Lanczos finds only in part; with it the
    top eigenvalue is simple and small components stop capturing eigenvectors of their own.
    """
    operator = _normalized_adjacency(z, n_neighbors, regularization, metric)
    n_components = check_int("n_components", n_components, 1, operator.shape[0] - 1)
    _, vectors = _top_eigen(operator, n_components, tol, vectors=True)
    emb = torch.from_numpy(np.ascontiguousarray(vectors[:, ::-1])).to(torch.float32)
    return torch.nn.functional.normalize(emb, dim=1)


def graph_eigenvalues(
    z: torch.Tensor,
    count: int,
    n_neighbors: int = 10,
    regularization: float = 0.01,
    tol: float = 1e-8,
    metric: str = "cosine",
) -> torch.Tensor:
    """``float64 [count]`` the largest eigenvalues, in decreasing order, of the graph operator
    :func:`spectral_embedding` embeds with (the same graph and regularisation). A graph of
    ``c`` well-separated groups has ``c`` eigenvalues near 1 and then a drop: the eigengap
    that :func:`metaunsup.cluster.choose_k.choose_k_eigengap` reads."""
    operator = _normalized_adjacency(z, n_neighbors, regularization, metric)
    count = check_int("count", count, 1, operator.shape[0] - 1)
    values = _top_eigen(operator, count, tol, vectors=False)
    return torch.from_numpy(np.sort(values)[::-1].copy())
