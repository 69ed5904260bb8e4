"""Classical clustering baselines, run on a batch of tasks.

Every method here maps task features ``x`` ``[B, n, ...]`` (images are flattened) and the number
of clusters ``k`` to labels ``int64 [B, n]``. They are the yardstick every meta-learned method is
reported beside (protocol A of the benchmarks): K-means on raw features (ours, batched),
scikit-learn's ``KMeans`` in a loop (the reference implementation), PCA then K-means, and a
diagonal Gaussian mixture fitted by EM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from metaunsup.cluster import gmm, kmeans
from metaunsup.errors import ConfigError

#: Signature of a clustering method: (features [B, n, d], k, seed) -> labels int64 [B, n].
ClusterFn = Callable[[torch.Tensor, int, int], torch.Tensor]

#: Components kept by the PCA baseline (protocol A: PCA(50) + K-means).
PCA_COMPONENTS = 50
#: Restarts of every K-means baseline (protocol A: k-means++, 10 restarts).
N_INIT = 10


def flatten_tasks(x: torch.Tensor) -> torch.Tensor:
    """``[B, n, *shape]`` → ``float32 [B, n, prod(shape)]``."""
    return x.reshape(x.shape[0], x.shape[1], -1).to(torch.float32)


def kmeans_raw(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Our batched K-means (k-means++, 10 restarts) on raw features."""
    return kmeans(flatten_tasks(x), k, n_init=N_INIT, seed=seed).labels


def sklearn_kmeans_raw(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """scikit-learn's ``KMeans`` (k-means++, 10 restarts), one task at a time."""
    from sklearn.cluster import KMeans

    feats = flatten_tasks(x).numpy()
    labels = np.empty(feats.shape[:2], dtype=np.int64)
    for b in range(feats.shape[0]):
        model = KMeans(n_clusters=k, n_init=N_INIT, init="k-means++", random_state=seed + b)
        labels[b] = model.fit_predict(feats[b])
    return torch.from_numpy(labels)


def pca_project(x: torch.Tensor, n_components: int = PCA_COMPONENTS) -> torch.Tensor:
    """Project each task onto its own top principal components.

    ``x`` ``[B, n, d]`` → ``[B, n, min(n_components, n, d)]``, computed for all tasks with one
    batched SVD of the centred data.
    """
    centred = x - x.mean(dim=1, keepdim=True)
    q = min(n_components, x.shape[1], x.shape[2])
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:, :q].transpose(1, 2)


def pca_kmeans(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """PCA to 50 components per task, then our batched K-means."""
    return kmeans(pca_project(flatten_tasks(x)), k, n_init=N_INIT, seed=seed).labels


def gmm_raw(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Diagonal Gaussian mixture fitted by EM on raw features (k-means++ initialisation)."""
    return gmm(flatten_tasks(x), k, seed=seed).labels


@dataclass(frozen=True)
class Baseline:
    """A named clustering baseline."""

    name: str
    description: str
    fn: ClusterFn


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("kmeans", "K-means on raw features (ours, batched, 10 restarts)", kmeans_raw),
        Baseline(
            "sklearn-kmeans",
            "scikit-learn KMeans on raw features (10 restarts, one task at a time)",
            sklearn_kmeans_raw,
        ),
        Baseline("pca-kmeans", "PCA(50) per task, then K-means", pca_kmeans),
        Baseline("gmm", "diagonal Gaussian mixture by EM on raw features", gmm_raw),
    )
}


def get_baseline(name: str) -> Baseline:
    """The baseline called ``name``; :class:`ConfigError` naming the choices otherwise."""
    if name not in BASELINES:
        raise ConfigError(f"unknown method {name!r}; choose from: {', '.join(BASELINES)}")
    return BASELINES[name]
