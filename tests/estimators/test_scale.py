"""The scale path of ``MetaKMeans``: embedding, scaling and assignment in chunks give what one
piece at a time would, and k-means on a sample of a large table still labels every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from metaunsup import MetaKMeans
from metaunsup.cluster import kmeans
from metaunsup.estimators import kmeans as estimator


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(600, 12, centers=4, cluster_std=1.0, random_state=0)


def test_chunked_embedding_gives_the_unchunked_labels(blobs):
    X, _ = blobs  # separated blobs: without guard=False the features would be clustered
    whole = MetaKMeans(4, meta_steps=3, batch_size=4096, guard=False, random_state=0).fit(X)
    chunked = MetaKMeans(4, meta_steps=3, batch_size=37, guard=False, random_state=0).fit(X)
    assert whole.representation_ == "embedding"
    assert np.array_equal(whole.labels_, chunked.labels_)
    np.testing.assert_allclose(whole.transform(X), chunked.transform(X), rtol=1e-12, atol=1e-14)


def test_chunked_assignment_gives_kmeans_labels_and_inertia(monkeypatch):
    z = torch.from_numpy(make_blobs(500, 6, centers=5, random_state=1)[0])
    fit = kmeans(z, 5, n_init=3, seed=0)
    monkeypatch.setattr(estimator, "ASSIGN_CHUNK", 64)
    labels, inertia = estimator.nearest_centers(z, fit.centers)
    assert torch.equal(labels, fit.labels)
    assert inertia == pytest.approx(float(fit.inertia), rel=1e-9)


def test_kmeans_on_a_sample_still_labels_every_row(blobs, monkeypatch):
    X, y = blobs
    full = MetaKMeans(4, meta_steps=3, guard=False, random_state=0).fit(X)
    monkeypatch.setattr(estimator, "KMEANS_FIT_ROWS", 150)
    monkeypatch.setattr(estimator, "ASSIGN_CHUNK", 100)
    sampled = MetaKMeans(4, meta_steps=3, guard=False, random_state=0).fit(X)
    assert np.array_equal(sampled.labels_, sampled.predict(X))
    assert adjusted_rand_score(full.labels_, sampled.labels_) == pytest.approx(1.0)
    assert adjusted_rand_score(y, sampled.labels_) == pytest.approx(1.0)
    z = sampled.transform(X)
    distances = ((z - sampled.cluster_centers_[sampled.labels_]) ** 2).sum()
    assert sampled.inertia_ == pytest.approx(distances, rel=1e-9)


def test_graph_partitions_of_a_large_table_share_one_sample(monkeypatch):
    from metaunsup.estimators import self_train

    x, y = make_blobs(900, 8, centers=3, cluster_std=0.5, random_state=2)
    monkeypatch.setattr(self_train, "_SHARED_ROWS", 500)
    parts = self_train.graph_partitions(torch.from_numpy(x).float(), 3, 4, seed=0, graph_rows=300)
    assert parts.shape == (4, 900)
    for p in parts:
        assert adjusted_rand_score(y, p.numpy()) > 0.95


def test_with_missing_cells_the_partitions_share_one_sample_of_a_larger_table(monkeypatch):
    """Filling a sample and finding every row's nearest filled row over observed features cost
    as much as a partition: with missing cells they are done once for all partitions."""
    from metaunsup.estimators import self_train

    x, y = make_blobs(900, 8, centers=3, cluster_std=0.5, random_state=2)
    gaps = x.copy()
    gaps[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    calls = {"filled": 0, "nearest": 0}
    for name in calls:
        original = getattr(self_train, f"_{name}" if name == "nearest" else name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(self_train, f"_{name}" if name == "nearest" else name, counted)
    parts = self_train.graph_partitions(torch.from_numpy(gaps).float(), 3, 4, seed=0,
                                        graph_rows=300)  # fmt: skip
    assert calls == {"filled": 1, "nearest": 1}
    assert all(adjusted_rand_score(y, p.numpy()) > 0.9 for p in parts)
    calls.update(filled=0, nearest=0)
    self_train.graph_partitions(torch.from_numpy(x).float(), 3, 4, seed=0, graph_rows=300)
    assert calls == {"filled": 0, "nearest": 4}  # complete and under 100,000 rows: one each
