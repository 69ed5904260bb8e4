"""Batched clustering on ``[B, n, d]`` task batches: k-means, soft k-means, Gaussian mixtures.

- :func:`kmeans` — k-means++ seeding and Lloyd iterations, ``n_init`` restarts, all tasks and
  restarts at once (scikit-learn's ``KMeans`` semantics).
- :func:`soft_kmeans` — differentiable soft assignments and centre updates;
  :func:`balanced_soft_kmeans` the same in units of the task variance, with a cluster-size
  prior (the soft k-means that Meta-K-means meta-learns).
- :func:`gmm` — diagonal Gaussian mixtures by EM; :func:`gmm_e_step`, :func:`gmm_m_step` and
  :func:`gmm_em_steps` differentiable steps.
- :func:`spectral_clustering` — k-means in the spectral embedding of each task's kNN graph.
- :func:`task_seeds` — the per-task seeds a batched call derives from one int.
"""

from __future__ import annotations

from metaunsup.cluster._common import task_seeds
from metaunsup.cluster.gmm import GMMResult, gmm, gmm_e_step, gmm_em_steps, gmm_m_step
from metaunsup.cluster.kmeans import KMeansResult, kmeans, kmeans_plusplus
from metaunsup.cluster.soft_kmeans import SoftClustering, balanced_soft_kmeans, soft_kmeans
from metaunsup.cluster.spectral import spectral_clustering

__all__ = [
    "GMMResult",
    "KMeansResult",
    "SoftClustering",
    "balanced_soft_kmeans",
    "gmm",
    "gmm_e_step",
    "gmm_em_steps",
    "gmm_m_step",
    "kmeans",
    "kmeans_plusplus",
    "soft_kmeans",
    "spectral_clustering",
    "task_seeds",
]
