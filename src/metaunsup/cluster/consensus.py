"""Consensus of many partitions: the evidence-accumulation embedding and its normalised cut.

One k-means partition of one embedding inherits that embedding's accidents: when two classes
touch in the graph, k-means on its spectral embedding merges them, and more restarts only find
the same merge again. Many partitions made from *different* views (graphs of other
neighbourhood sizes, other spectral dimensions, random scalings) disagree where such an
accident lies and agree where the structure is real. Evidence accumulation (Fred & Jain,
"Combining multiple clusterings using evidence accumulation", IEEE TPAMI 2005) keeps what they
agree on: the co-association ``C[i, j]``, the fraction of partitions that put ``i`` and ``j``
together, is a graph whose clusters are the consensus.

``C = H Hᵀ / P`` with ``H`` ``[n, K]`` the one-hot cluster memberships of all ``P`` partitions
side by side (``K`` = their clusters in all), so ``C`` is never formed: the top eigenvectors of
its normalised form ``D^-1/2 C D^-1/2`` are the left singular vectors of ``B = D^-1/2 H / √P``,
found from the small ``[K, K]`` matrix ``Bᵀ B`` (the bipartite graph of points and clusters of
Fern & Brodley, ICML 2004). The cost is ``O(n K²)``, linear in ``n``.

:func:`consensus_cut` scores a candidate partition by its normalised cut of that graph (Shi &
Malik, IEEE TPAMI 2000), without labels: a partition that merges two groups the others keep
apart, and splits one they keep together, cuts more of it.
"""

from __future__ import annotations

import torch

from metaunsup._validation import check_int
from metaunsup.errors import DataError

__all__ = ["consensus_cut", "consensus_embedding"]


def _check(partitions: torch.Tensor) -> torch.Tensor:
    if not isinstance(partitions, torch.Tensor) or partitions.dim() != 2:
        raise DataError("partitions must be an integer tensor [P, n]")
    if partitions.dtype.is_floating_point or partitions.dtype == torch.bool:
        raise DataError(f"partitions must hold integer cluster ids, got {partitions.dtype}")
    if partitions.numel() == 0 or int(partitions.min()) < 0:
        raise DataError("partitions must be non-empty with cluster ids >= 0")
    return partitions.to(torch.int64).cpu()


def _memberships(parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(column, size)``: ``column [P, n]`` each point's column of ``H`` in every partition
    (partition ``p``'s clusters take the columns after those of partitions ``< p``) and
    ``size [K]`` the clusters' sizes."""
    widths = parts.max(dim=1).values + 1
    offsets = torch.cumsum(widths, 0) - widths
    column = parts + offsets.unsqueeze(1)
    size = torch.bincount(column.reshape(-1), minlength=int(widths.sum()))
    return column, size


def consensus_embedding(partitions: torch.Tensor, n_components: int) -> torch.Tensor:
    """``float32 [n, n_components]`` unit-length rows: the top eigenvectors of the normalised
    co-association of ``partitions`` (``[P, n]`` integer cluster ids, e.g. from
    :func:`metaunsup.tasks.cactus_partitions`), as
    :func:`metaunsup.cluster.graph.spectral_embedding` gives for a kNN graph; k-means on the
    rows gives the consensus partition.

    Deterministic: a dense symmetric eigendecomposition of ``[K, K]``, ``K`` the clusters of all
    partitions together.
    """
    parts = _check(partitions)
    n_parts, n = parts.shape
    column, size = _memberships(parts)
    n_components = check_int("n_components", n_components, 1, min(n, size.numel()))
    # degree of point i in C = H Hᵀ / P: the mean size of the clusters it is in
    degree = size[column].sum(0).to(torch.float64) / n_parts
    rows = torch.arange(n).repeat(n_parts)
    weight = (degree.rsqrt() / n_parts**0.5)[rows]
    b = torch.zeros(n, size.numel(), dtype=torch.float64)
    b.index_put_((rows, column.reshape(-1)), weight, accumulate=True)  # B = D^-1/2 H / √P
    values, vectors = torch.linalg.eigh(b.T @ b)  # ascending
    top = vectors[:, -n_components:].flip(1)
    sigma = values[-n_components:].flip(0).clamp_min(1e-12).sqrt()
    u = (b @ top) / sigma  # left singular vectors of B: eigenvectors of D^-1/2 C D^-1/2
    return torch.nn.functional.normalize(u, dim=1).to(torch.float32)


def consensus_cut(partitions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``float64 [Q]`` the normalised cut of the co-association graph of ``partitions``
    ``[P, n]`` by each candidate partition in ``labels`` ``[Q, n]`` (or one, ``[n]``):
    ``Σ_c cut(c) / vol(c)`` over its clusters, lower = the candidate agrees more with the
    partitions. Reads only cluster ids (no labels of the data)."""
    parts = _check(partitions)
    cands = _check(labels.unsqueeze(0) if labels.dim() == 1 else labels)
    if cands.shape[1] != parts.shape[1]:
        raise DataError(
            f"candidates index {cands.shape[1]} points but the partitions {parts.shape[1]}"
        )
    column, size = _memberships(parts)
    n_cols = size.numel()
    out = torch.empty(cands.shape[0], dtype=torch.float64)
    for q, cand in enumerate(cands):
        k = int(cand.max()) + 1
        # table[j, c]: points of cluster c of the candidate in column j of H, all partitions
        table = (
            torch.bincount((column * k + cand).reshape(-1), minlength=n_cols * k)
            .reshape(n_cols, k)
            .to(torch.float64)
        )
        inside = (table * table).sum(0)  # uᵀ H Hᵀ u for each cluster's indicator u
        volume = (table * size.unsqueeze(1).to(torch.float64)).sum(0)  # uᵀ H Hᵀ 1
        used = volume > 0
        out[q] = (1.0 - inside[used] / volume[used]).sum()
    return out
