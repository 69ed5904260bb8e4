"""The label-free guard: agreement scores and the estimator's fallback to the features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs, make_moons
from sklearn.metrics import adjusted_rand_score

from metaunsup import MetaKMeans
from metaunsup.cluster import kmeans
from metaunsup.errors import DataError
from metaunsup.estimators.guard import (
    EMBEDDING,
    FEATURES,
    _ari,
    decide,
    kmeans_agreement,
    kmeans_structure,
    partition_agreement,
    separated,
)


def test_kmeans_agreement_is_high_for_separated_blobs_and_low_for_noise() -> None:
    blobs, _ = make_blobs(600, n_features=5, centers=4, cluster_std=0.5, random_state=0)
    noise = np.random.default_rng(0).normal(size=(600, 5))
    assert kmeans_agreement(blobs, 4, seed=0) > 0.95
    assert kmeans_agreement(noise, 4, seed=0) < 0.8
    assert kmeans_agreement(blobs, 4, seed=3) == kmeans_agreement(blobs, 4, seed=3)
    assert kmeans_agreement(noise, 1) == 1.0


def test_agreement_of_equal_and_of_unrelated_partitions() -> None:
    same = torch.tensor([[0, 0, 1, 1, 2, 2]] * 3)
    assert partition_agreement(same) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    unrelated = torch.randint(0, 5, (4, 2000), generator=g)
    assert abs(partition_agreement(unrelated)) < 0.02
    with pytest.raises(DataError):
        partition_agreement(torch.zeros(5, dtype=torch.int64))


def test_ari_is_scikit_learns_to_the_last_bit() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        a = rng.integers(0, int(rng.integers(1, 7)), n) * int(rng.integers(1, 4))
        b = a.copy() if trial % 4 == 0 else rng.integers(0, int(rng.integers(1, 7)), n)
        assert _ari(a, b) == adjusted_rand_score(a, b)


def test_separated_clusters_skip_self_training() -> None:
    # 10 blobs far apart in 50 dimensions: every k-means partition is the same and no row lies
    # near a boundary, so the pseudo-partitions could only repeat k-means' partition
    X, y = make_blobs(1000, n_features=50, centers=10, random_state=0)
    model = MetaKMeans(10, random_state=0).fit(X)
    decision = model.guard_
    assert decision is not None and decision.use == FEATURES and decision.embedding_score is None
    assert decision.features_score == 1.0 and decision.worst_ratio < 0.5
    assert "self-training was skipped" in decision.reason
    assert decision.to_json()["embedding_score"] is None
    assert model.training_["steps"] == 0 and model.representation_ == FEATURES
    assert adjusted_rand_score(y, model.labels_) == 1.0


@pytest.mark.parametrize(
    "data",
    [
        make_moons(600, noise=0.05, random_state=0)[0],  # stable k-means, boundary rows
        make_blobs(600, n_features=5, centers=4, cluster_std=3, random_state=0)[0],  # overlap
    ],
    ids=["moons", "overlapping-blobs"],
)
def test_clusters_that_touch_are_not_called_separated(data) -> None:
    k = 2 if data.shape[1] == 2 else 4
    assert kmeans_structure(data, k, seed=0).worst_ratio > 0.9
    assert separated(data, k, seed=0) is None


def test_kmeans_structure_ratio_of_rows_on_their_centres() -> None:
    points = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 20, axis=0)
    structure = kmeans_structure(points, 3, seed=0)
    assert structure.agreement == 1.0 and structure.worst_ratio < 1e-6  # cdist rounding
    assert separated(points, 3, seed=0) is not None
    assert kmeans_agreement(points, 3, seed=0) == structure.agreement


def test_decide_keeps_the_embedding_unless_the_features_are_more_stable() -> None:
    assert decide(0.9, 0.8, "k-means agreement").use == EMBEDDING
    fallback = decide(0.3, 0.6, "pseudo-partition agreement")
    assert fallback.use == FEATURES
    assert "0.300 < the features' k-means agreement 0.600" in fallback.reason


def test_estimator_falls_back_to_kmeans_on_overlapping_blobs() -> None:
    # 10 overlapping blobs in 50 dimensions: neighbourhood graphs see mostly noise there, and
    # their spectral partitions agree less than k-means partitions do
    X, _ = make_blobs(3000, n_features=50, centers=10, cluster_std=17, random_state=0)
    model = MetaKMeans(10, meta_steps=30, random_state=0).fit(X)
    assert model.guard_ is not None and model.guard_.use == FEATURES
    assert model.representation_ == FEATURES and model.training_["steps"] == 0
    z = model.transform(X)
    assert z.shape == X.shape
    np.testing.assert_allclose(z, model.scaling_.apply(X))
    assert (model.predict(X) == model.labels_).all()
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    plain = kmeans(torch.from_numpy(z), 10, n_init=10, seed=int(seed)).labels.numpy()
    assert (plain == model.labels_).all()


def test_guard_can_be_turned_off() -> None:
    X, _ = make_blobs(300, n_features=20, centers=3, cluster_std=12, random_state=0)
    model = MetaKMeans(3, meta_steps=5, guard=False, random_state=0).fit(X)
    assert model.guard_ is None and model.representation_ == EMBEDDING


def test_guard_with_a_checkpoint_keeps_an_embedding_that_beats_the_pixels() -> None:
    from sklearn.datasets import load_digits

    X, _ = load_digits(return_X_y=True)
    model = MetaKMeans(10, checkpoint="digits", random_state=0).fit(X[:400])
    assert model.guard_ is not None and model.guard_.criterion == "k-means agreement"
    assert model.guard_.use == EMBEDDING and model.representation_ == EMBEDDING
    assert model.guard_.embedding_score > model.guard_.features_score
