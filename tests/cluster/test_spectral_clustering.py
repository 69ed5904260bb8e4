"""Spectral clustering of task batches: it separates what k-means cannot (two rings), it is
seeded, and it refuses bad input; the eigengap choice of k."""

from __future__ import annotations

import math

import pytest
import torch

from metaunsup.cluster import kmeans, spectral_clustering
from metaunsup.cluster.choose_k import choose_k_eigengap
from metaunsup.errors import ConfigError, DataError
from metaunsup.metrics import clustering_accuracy


def rings(n_per_ring: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy concentric circles (radius 1 and 3) in 2-D, and which ring each point is on."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(2 * n_per_ring, generator=g) * 2 * math.pi
    radius = torch.cat([torch.ones(n_per_ring), 3 * torch.ones(n_per_ring)])
    radius = radius + 0.1 * torch.randn(2 * n_per_ring, generator=g)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return x, torch.cat([torch.zeros(n_per_ring), torch.ones(n_per_ring)]).long()


def test_separates_rings_that_kmeans_cuts():
    tasks = [rings(100, seed) for seed in range(3)]
    z = torch.stack([x for x, _ in tasks])  # [3, 200, 2]
    y = torch.stack([t for _, t in tasks])
    spectral = spectral_clustering(z, 2, n_neighbors=10, metric="euclidean")
    assert spectral.shape == (3, 200) and spectral.dtype == torch.int64
    assert (clustering_accuracy(y, spectral) == 1.0).all()
    cut = kmeans(z.double(), 2, n_init=10, seed=0).labels
    assert (clustering_accuracy(y, cut) < 0.75).all()  # convex cells cannot hold a ring


def test_one_task_and_seeding():
    x, y = rings(100, seed=5)
    a = spectral_clustering(x, 2, metric="euclidean", seed=3)
    assert a.shape == (200,)
    assert torch.equal(a, spectral_clustering(x, 2, metric="euclidean", seed=3))
    assert clustering_accuracy(y[None], a[None])[0] == 1.0


@pytest.mark.parametrize(
    ("z", "k", "match"),
    [
        (torch.zeros(5), 2, "shape"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0], [2.0, 2.0]]), 2, "NaN"),
        (torch.randn(10, 3), 10, "k must be"),
        (torch.randn(10, 3), 1, "k must be"),
        (torch.randn(10, 3), "2", "k must be"),
    ],
)
def test_bad_input_is_refused(z, k, match):
    with pytest.raises(DataError, match=match):
        spectral_clustering(z, k)


def test_eigengap_counts_blobs():
    g = torch.Generator().manual_seed(0)
    blobs = torch.randn(120, 2, generator=g) + 8 * torch.arange(4.0).repeat(30)[:, None]
    choice = choose_k_eigengap(blobs, 2, 8, metric="euclidean")
    assert choice.k == 4 and choice.method == "eigengap"
    assert set(choice.scores) == set(range(2, 9))
    assert choice.reason.startswith("k=4 has the highest graph eigengap")


def test_eigengap_range_and_bad_input():
    x = torch.randn(6, 2)
    assert max(choose_k_eigengap(x, 1, 10).scores) == 4  # k_max lowered to n - 2
    with pytest.raises(ConfigError, match="k_min"):
        choose_k_eigengap(x, 0, 3)
    with pytest.raises(ConfigError, match="at least 3"):
        choose_k_eigengap(x[:2], 1, 3)
    with pytest.raises(ConfigError, match="points"):
        choose_k_eigengap(torch.randn(10), 2, 3)
