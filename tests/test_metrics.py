"""Clustering and few-shot metrics against scikit-learn and hand computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from metaunsup.errors import DataError
from metaunsup.metrics import (
    ari,
    clustering_accuracy,
    contingency_tables,
    fewshot_accuracy,
    mean_ci,
    nmi,
    score_clustering,
)


def random_labelings(seed: int, B: int = 200, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, rng.integers(1, 7, size=(B, 1)), size=(B, n))
    p = rng.integers(0, rng.integers(1, 9, size=(B, 1)), size=(B, n))
    # some predictions close to the truth, some tasks degenerate
    close = rng.random((B, n)) < 0.8
    p[: B // 2] = np.where(close[: B // 2], t[: B // 2], p[: B // 2])
    p[0] = 0
    t[1] = 3
    t[2], p[2] = 5, 7
    p[3] = np.arange(n)
    return t, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nmi_and_ari_equal_sklearn(seed: int) -> None:
    t, p = random_labelings(seed)
    nmi_b = nmi(t, p)
    ari_b = ari(t, p)
    assert nmi_b.shape == ari_b.shape == (len(t),)
    for i in range(len(t)):
        assert abs(nmi_b[i] - normalized_mutual_info_score(t[i], p[i])) < 1e-10
        assert abs(ari_b[i] - adjusted_rand_score(t[i], p[i])) < 1e-10
    # one labelling gives a float; arbitrary label values are fine
    assert isinstance(nmi(t[5], p[5]), float)
    shifted = (t[5] * 1000 - 7, p[5] + 10**9)
    assert abs(nmi(*shifted) - normalized_mutual_info_score(*shifted)) < 1e-10
    assert abs(ari(*shifted) - adjusted_rand_score(*shifted)) < 1e-10


def test_degenerate_cases_follow_sklearn() -> None:
    cases = [
        ([0, 0, 0], [1, 1, 1]),  # one cluster each: perfect
        ([0, 0, 0, 0], [0, 1, 2, 3]),
        ([0, 1, 2, 3], [0, 0, 0, 0]),
        ([0, 1], [1, 0]),
        ([3], [3]),
    ]
    for t, p in cases:
        assert nmi(t, p) == pytest.approx(normalized_mutual_info_score(t, p), abs=1e-12)
        assert ari(t, p) == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)


def test_contingency_tables_are_batched_bincounts() -> None:
    t, p = random_labelings(3, B=30)
    tables = contingency_tables(t, p)
    assert tables.shape[0] == 30 and tables.dtype == np.int64
    for i in range(30):
        dense = tables[i][tables[i].sum(1) > 0][:, tables[i].sum(0) > 0]
        np.testing.assert_array_equal(dense, contingency_matrix(t[i], p[i]))


def test_clustering_accuracy_hungarian() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=(20, 50))
    perm = np.array([3, 0, 4, 1, 2])
    np.testing.assert_array_equal(clustering_accuracy(y, perm[y]), np.ones(20))
    assert clustering_accuracy(torch.as_tensor(y[0]), torch.as_tensor(perm[y[0]])) == 1.0
    # brute force over all matchings of 4 clusters to 4 classes
    for _ in range(20):
        t = rng.integers(0, 4, size=30)
        p = rng.integers(0, 4, size=30)
        best = max(np.mean(np.array(m)[p] == t) for m in itertools.permutations(range(4)))
        assert clustering_accuracy(t, p) == pytest.approx(best)
    # more clusters than classes: unmatched clusters count as errors
    assert clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.5)
    # fewer clusters than classes
    assert clustering_accuracy([0, 0, 1, 1, 2, 2], [5, 5, 5, 5, 9, 9]) == pytest.approx(4 / 6)


def test_score_clustering_and_fewshot_accuracy() -> None:
    t, p = random_labelings(4, B=10)
    scores = score_clustering(torch.as_tensor(t), torch.as_tensor(p))
    assert set(scores) == {"acc", "nmi", "ari"}
    np.testing.assert_allclose(scores["nmi"], nmi(t, p))
    np.testing.assert_allclose(scores["acc"], clustering_accuracy(t, p))
    single = score_clustering(t[0], p[0])
    assert single["acc"].shape == (1,)

    y = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 1]])
    np.testing.assert_allclose(fewshot_accuracy(pred, y), [0.75, 1.0])
    logits = torch.nn.functional.one_hot(pred, 3).float()
    np.testing.assert_allclose(fewshot_accuracy(logits, y), [0.75, 1.0])
    assert fewshot_accuracy(pred[0], y[0]) == 0.75
    with pytest.raises(DataError):
        fewshot_accuracy(pred[:, :3], y)


def test_mean_ci_by_hand() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    mean, ci = mean_ci(values)
    std = math.sqrt(sum((v - 2.5) ** 2 for v in values) / 3)
    assert mean == 2.5 and ci == pytest.approx(1.96 * std / 2)
    assert mean_ci(np.array([0.7])) == (0.7, 0.0)
    assert mean_ci(torch.tensor([0.5, 0.5])) == (0.5, 0.0)
    with pytest.raises(DataError):
        mean_ci([])
    with pytest.raises(DataError):
        mean_ci([1.0, float("nan")])


def test_metrics_reject_bad_labels() -> None:
    with pytest.raises(DataError):
        nmi([0, 1, 2], [0, 1])
    with pytest.raises(DataError):
        ari(np.zeros((2, 2, 2), dtype=int), np.zeros((2, 2, 2), dtype=int))
    with pytest.raises(DataError):
        clustering_accuracy([0.5, 1.0], [0, 1])
    assert clustering_accuracy([0.0, 1.0], [1, 0]) == 1.0  # integral floats are labels
