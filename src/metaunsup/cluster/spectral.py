"""Spectral clustering of task batches: k-means in the spectral embedding of a kNN graph.

K-means draws convex, similar-sized cells around centres; the classes of a learned embedding
are often elongated or curved, and k-means cuts them. Spectral clustering (Ng, Jordan & Weiss,
NIPS 2001) follows the data's neighbourhoods instead: build the ``n_neighbors``-nearest-
neighbour graph of each task's points, take the top ``k`` eigenvectors of its (regularised,
Amini et al. 2013) normalised adjacency, scale every row to unit length and run k-means there
(:func:`metaunsup.cluster.graph.spectral_embedding`, :func:`metaunsup.cluster.kmeans`).

Measured uses (``docs/results/``): whole Omniglot alphabets clustered in a meta-learned
embedding, and MNIST tasks in an embedding meta-trained on Omniglot.
"""

from __future__ import annotations

import torch

from metaunsup._validation import check_int
from metaunsup.cluster.kmeans import kmeans
from metaunsup.errors import ConfigError, DataError

__all__ = ["spectral_clustering"]


def spectral_clustering(
    z: torch.Tensor,
    k: int,
    *,
    n_neighbors: int = 10,
    metric: str = "cosine",
    n_init: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """``int64 [B, n]`` cluster labels of each task of ``z`` ``[B, n, d]`` (or ``[n, d]``,
    giving ``[n]``) into ``k`` clusters.

    The graphs connect each point to its ``n_neighbors`` nearest others by ``metric``
    (``"cosine"`` or ``"euclidean"``), capped at ``n - 1``; the final k-means has ``n_init``
    k-means++ restarts, seeded by ``seed`` (the same seed gives the same labels).
    """
    single = z.dim() == 2
    if single:
        z = z.unsqueeze(0)
    if z.dim() != 3:
        raise DataError(f"need embeddings [B, n, d] or [n, d], got shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise DataError("embeddings contain NaN or inf")
    n = z.shape[1]
    try:
        k = check_int("k", k, 2, n - 1)
    except ConfigError as err:
        raise DataError(f"{err} for {n} points") from None
    from metaunsup.cluster.graph import spectral_embedding

    neighbors = min(n_neighbors, n - 1)
    emb = torch.stack(
        [spectral_embedding(task, k, n_neighbors=neighbors, metric=metric) for task in z]
    )
    labels = kmeans(emb.double(), k, n_init=n_init, seed=seed).labels
    return labels[0] if single else labels
