"""The consensus (evidence-accumulation) embedding and the normalised cut of a co-association."""

from __future__ import annotations

import pytest
import torch

from metaunsup.cluster import kmeans
from metaunsup.cluster.consensus import consensus_cut, consensus_embedding
from metaunsup.errors import DataError
from metaunsup.metrics import ari as adjusted_rand


def noisy_partitions(truth: torch.Tensor, n_parts: int, flip: float, seed: int) -> torch.Tensor:
    """``[P, n]`` copies of ``truth`` with a fraction ``flip`` of points moved to a random
    cluster and the cluster ids permuted, as independent partitions of the same data would be."""
    g = torch.Generator().manual_seed(seed)
    k = int(truth.max()) + 1
    out = []
    for _ in range(n_parts):
        labels = truth.clone()
        moved = torch.rand(truth.shape, generator=g) < flip
        labels[moved] = torch.randint(0, k, (int(moved.sum()),), generator=g)
        out.append(torch.randperm(k, generator=g)[labels])
    return torch.stack(out)


def dense_normalized_coassociation(parts: torch.Tensor) -> torch.Tensor:
    c = (parts.unsqueeze(2) == parts.unsqueeze(1)).to(torch.float64).mean(0)  # [n, n]
    d = c.sum(1)
    return c / torch.sqrt(d[:, None] * d[None, :])


def dense_ncut(parts: torch.Tensor, labels: torch.Tensor) -> float:
    c = (parts.unsqueeze(2) == parts.unsqueeze(1)).to(torch.float64).mean(0)
    total = 0.0
    for cluster in labels.unique():
        u = (labels == cluster).to(torch.float64)
        total += float(1 - (u @ c @ u) / (u @ c.sum(1)))
    return total


TRUTH = torch.arange(4).repeat_interleave(15)  # 4 groups of 15 points


def test_the_embedding_spans_the_top_eigenvectors_of_the_dense_coassociation():
    parts = noisy_partitions(TRUTH, 6, 0.1, seed=0)
    emb = consensus_embedding(parts, 4).to(torch.float64)
    assert emb.shape == (60, 4) and torch.allclose(
        emb.norm(dim=1), torch.ones(60, dtype=torch.float64)
    )
    _, vectors = torch.linalg.eigh(dense_normalized_coassociation(parts))
    top = torch.nn.functional.normalize(vectors[:, -4:], dim=1)
    # the same rows up to a rotation of the subspace: equal Gram matrices
    assert torch.allclose(emb @ emb.T, top @ top.T, atol=1e-4)


def test_kmeans_on_the_embedding_recovers_what_noisy_partitions_agree_on():
    parts = noisy_partitions(TRUTH, 8, 0.2, seed=1)
    assert max(adjusted_rand(TRUTH, p) for p in parts) < 0.9  # each one alone is noisy
    emb = consensus_embedding(parts, 4)
    labels = kmeans(emb.unsqueeze(0), 4, seed=0, n_init=5).labels[0]
    assert adjusted_rand(TRUTH, labels) == pytest.approx(1.0)


def test_the_cut_matches_the_dense_formula_and_prefers_the_consensus():
    parts = noisy_partitions(TRUTH, 6, 0.1, seed=2)
    merged = TRUTH.clone()
    merged[merged == 1] = 0  # groups 0 and 1 merged ...
    merged[30:38] = 1  # ... and group 2 split in two
    candidates = torch.stack([TRUTH, merged])
    cuts = consensus_cut(parts, candidates)
    assert cuts.tolist() == pytest.approx([dense_ncut(parts, c) for c in candidates])
    assert cuts[0] < cuts[1]
    assert consensus_cut(parts, TRUTH).shape == (1,)


def test_bad_partitions_are_data_errors():
    with pytest.raises(DataError, match="integer"):
        consensus_embedding(torch.rand(3, 10), 2)
    with pytest.raises(DataError, match="index 5 points"):
        consensus_cut(noisy_partitions(TRUTH, 2, 0.0, 0), torch.zeros(5, dtype=torch.int64))
