"""Missing cells in the estimator (:mod:`metaunsup.estimators.missing`), the masked network and
the distances over observed features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.pairwise import nan_euclidean_distances

from metaunsup.cluster.graph import knn_indices, observed_sqdist
from metaunsup.errors import ConfigError, DataError
from metaunsup.estimators import missing
from metaunsup.estimators.guard import FEATURES, kmeans_agreement
from metaunsup.estimators.kmeans import MetaKMeans
from metaunsup.nets import MaskedMLP, build_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(missing: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 180)
    centers = rng.normal(0, 4, (3, 8))
    x = centers[y] + rng.normal(size=(180, 8))
    x[rng.random(x.shape) < missing] = np.nan
    x[np.isnan(x).all(1), 0] = 0.0
    return x, y


def test_observed_sqdist_is_scikit_learns_nan_euclidean():
    x, _ = _blobs(0.3)
    a = torch.from_numpy(x[:20])
    b = torch.from_numpy(x[20:50])
    expected = np.nan_to_num(nan_euclidean_distances(x[:20], x[20:50]) ** 2, nan=np.inf)
    np.testing.assert_allclose(observed_sqdist(a, b).numpy(), expected, rtol=1e-6, atol=1e-8)


def test_knn_over_observed_features_matches_brute_force():
    x, _ = _blobs(0.2)
    dist = nan_euclidean_distances(x)
    np.fill_diagonal(dist, np.inf)
    got = knn_indices(torch.from_numpy(x).float(), 5, metric="euclidean")
    np.testing.assert_array_equal(got[:, 0].numpy(), dist.argmin(1))


def test_masked_mlp_reads_the_mask_and_never_outputs_nan():
    net = MaskedMLP(8, n_way=None, hidden=(16,))
    x, _ = _blobs(0.3)
    t = torch.from_numpy(x).float()
    out = net(t)
    assert out.shape == (180, 16) and not torch.isnan(out).any()
    params = dict(net.named_parameters())
    batched = net.functional_features({k: v.unsqueeze(0) for k, v in params.items()}, t[None])
    torch.testing.assert_close(batched[0], out)
    assert type(build_net(net.config())) is MaskedMLP
    # the mask is an input: a missing cell and an observed 0 embed differently
    zero, gone = t[:1].clone(), t[:1].clone()
    zero[0, 0], gone[0, 0] = 0.0, float("nan")
    assert not torch.allclose(net(zero), net(gone))


@pytest.mark.parametrize("impute", [None, "simple", "knn", "iterative"])
def test_estimator_clusters_with_missing_cells(impute: str | None):
    x, y = _blobs(0.2)
    model = MetaKMeans(3, meta_steps=30, random_state=0, impute=impute).fit(x)
    assert adjusted_rand_score(y, model.labels_) > 0.8
    assert type(model.learner_.net).__name__ == ("MaskedMLP" if impute is None else "MLP")
    np.testing.assert_array_equal(model.predict(x), model.labels_)
    assert not np.isnan(model.transform(x)).any()


def test_complete_data_keeps_the_plain_network():
    x, _ = _blobs(0.0)
    model = MetaKMeans(3, meta_steps=2, random_state=0).fit(x)
    assert type(model.learner_.net).__name__ == "MLP"
    x[0, 0] = np.nan
    with pytest.raises(DataError, match="fitted on complete data"):
        model.predict(x)


def test_the_guard_weighs_a_table_with_missing_cells_on_its_filled_features():
    """With missing cells the guard scores the scaled features with each missing cell filled
    from the row's 5 nearest rows (KNNImputer) and, where they agree more than the
    pseudo-partitions, clusters them: kNN imputation + k-means, new rows filled alike."""
    from sklearn.datasets import make_blobs
    from sklearn.impute import KNNImputer

    rng = np.random.default_rng(0)
    x, _ = make_blobs(600, n_features=20, centers=3, cluster_std=9, random_state=0)
    x[rng.random(x.shape) < 0.2] = np.nan
    model = MetaKMeans(3, meta_steps=10, random_state=0).fit(x)
    assert model.guard_ is not None and model.guard_.use == FEATURES
    assert model.representation_ == FEATURES and model.training_["steps"] == 0
    scaled = model.scaling_.apply(x)
    whole = KNNImputer(n_neighbors=5).fit_transform(scaled)
    np.testing.assert_allclose(model.feature_filler_.rows, whole)
    np.testing.assert_allclose(model.transform(x), whole)
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    expected = kmeans_agreement(torch.from_numpy(whole), 3, seed=seed)
    assert model.guard_.features_score == pytest.approx(expected)
    np.testing.assert_array_equal(model.predict(x), model.labels_)
    new = x[:7].copy()
    new[::2, 0] = np.nan  # filled from the training rows
    imputer = KNNImputer(n_neighbors=5).fit(scaled)
    np.testing.assert_allclose(model.transform(new), imputer.transform(model.scaling_.apply(new)))


def test_filled_features_of_a_large_table_come_from_a_seeded_sample(monkeypatch):
    from sklearn.impute import KNNImputer

    monkeypatch.setattr(missing, "FILL_DONORS", 50)
    x, _ = _blobs(0.2)
    a, b = missing.FilledFeatures(x, 3), missing.FilledFeatures(x, 3)
    assert a.rows.shape == (50, 8) and not np.isnan(a.rows).any()
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.array_equal(a.rows, missing.FilledFeatures(x, 4).rows)
    out = a.fill(x, chunk=7)  # in chunks, as one
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, KNNImputer(n_neighbors=5).fit(a.donors.numpy()).transform(x))
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(out[observed], x[observed])


def test_filled_features_follow_knn_imputer_where_donors_are_few_or_share_nothing():
    """scikit-learn's rule at its edges: a feature fewer than 5 donors observe is the mean of
    those that do; a row that shares no observed feature with them takes the donors' mean."""
    from sklearn.impute import KNNImputer

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4))
    x[rng.random(x.shape) < 0.25] = np.nan
    x[3:, 2] = np.nan  # feature 2: three donors only ...
    x[:3, 0] = np.nan  # ... none of which observes feature 0
    x[:3, 3] = 1.0
    filler = missing.FilledFeatures(x, 0)
    expected = KNNImputer(n_neighbors=5).fit_transform(x)
    np.testing.assert_allclose(filler.rows, expected)
    new = np.array([[np.nan, np.nan, 0.2, np.nan], [0.1, np.nan, np.nan, 0.3]])
    filled = filler.fill(new)  # the first row shares nothing with feature 0's donors: their mean
    assert filled[0, 0] == pytest.approx(np.nanmean(x[:, 0]))
    np.testing.assert_allclose(filled, KNNImputer(n_neighbors=5).fit(x).transform(new))


def test_refusals():
    x, _ = _blobs(0.2)
    x[4] = np.nan
    with pytest.raises(DataError, match=r"row 4 .* has no observed value"):
        MetaKMeans(3, meta_steps=2).fit(x)
    x, _ = _blobs(0.2)
    x[:, 2] = np.nan
    with pytest.raises(DataError, match=r"feature 2 .* has no observed value"):
        MetaKMeans(3, meta_steps=2).fit(x)
    with pytest.raises(ConfigError, match="impute"):
        MetaKMeans(3, meta_steps=2, impute="median").fit(_blobs(0.2)[0])


def test_outlier_detector_scores_rows_with_missing_cells():
    from metaunsup import MetaOutlierDetector

    rng = np.random.default_rng(0)
    normal = rng.normal(size=(300, 6))
    normal[rng.random(normal.shape) < 0.2] = np.nan
    normal[np.isnan(normal).all(1), 0] = 0.0
    test = rng.normal(size=(40, 6))
    test[rng.random(test.shape) < 0.2] = np.nan
    test[:5, 1] = np.abs(rng.normal(size=5)) + 8.0  # anomalies: one cell, observed, far off
    test[np.isnan(test).all(1), 0] = 0.0
    detector = MetaOutlierDetector(random_state=0).fit(normal)
    scores = -detector.score_samples(test)
    assert np.isfinite(scores).all()
    assert set(np.argsort(-scores)[:5]) == set(range(5))
    assert (detector.predict(test)[:5] == -1).all()
    with pytest.raises(DataError, match="checkpoint's network cannot take"):
        MetaOutlierDetector(checkpoint="mnist-anomaly").fit(np.where(np.eye(4, 784), np.nan, 0.5))


def test_native_pseudo_labels_come_from_the_rows_filled_by_their_neighbours():
    """The graphs of the native path see whole rows: each missing cell filled with its feature's
    mean over the row's 5 nearest rows (scikit-learn's KNNImputer)."""
    from sklearn.impute import KNNImputer

    from metaunsup.estimators.self_train import filled, graph_partitions

    x, _ = _blobs(0.3)  # enough missing cells that observed distances give other graphs
    t = torch.from_numpy(x).float()
    expected = KNNImputer(n_neighbors=5).fit_transform(x)
    np.testing.assert_allclose(filled(t).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.isnan(filled(t)).any()
    whole = torch.from_numpy(expected).float()
    torch.testing.assert_close(
        graph_partitions(t, 3, 4, seed=1), graph_partitions(whole, 3, 4, seed=1)
    )


def test_self_training_reads_given_inputs_and_keeps_the_partitions_of_the_table():
    from metaunsup.estimators.guard import EMBEDDING, GuardDecision
    from metaunsup.estimators.self_train import SelfTrainSettings, self_train
    from metaunsup.nets import MLP

    x, _ = _blobs(0.2)
    table = torch.from_numpy(x.astype(np.float32))
    values = torch.from_numpy(missing.FilledFeatures(x, 0).fill(x)).float()
    inputs = torch.cat([values, torch.isnan(table).float()], 1)  # [180, 16]
    seen: list[torch.Tensor] = []

    def guard(partitions: torch.Tensor) -> GuardDecision:
        seen.append(partitions)
        return GuardDecision(EMBEDDING, 1.0, 0.0, "test")

    settings = SelfTrainSettings(steps=5, meta_batch=2)
    plain = self_train(table, 3, settings, seed=0, guard=guard)
    given = self_train(table, 3, settings, seed=0, guard=guard, inputs=inputs)
    assert torch.equal(seen[0], seen[1])  # pseudo-labels from the table, not from the inputs
    assert isinstance(plain.learner.net, MaskedMLP)
    assert type(given.learner.net) is MLP and given.learner.net.in_features == 16
    z = given.learner.embed(inputs.unsqueeze(0))[0]
    assert z.shape[0] == 180 and torch.isfinite(z).all()
    with pytest.raises(DataError, match="inputs must be"):
        self_train(table, 3, settings, seed=0, inputs=inputs[:, :11])


def test_corruption_moves_each_cell_of_every_block_together():
    from metaunsup.estimators.self_train import CorruptedTasks
    from metaunsup.tasks.pseudo.cactus import CactusTaskSource

    g = torch.Generator().manual_seed(0)
    values = torch.randn(60, 5, generator=g)
    rows = torch.cat([values, 10 * values], 1)  # two blocks: the second tied to the first
    parts = torch.randint(0, 3, (2, 60), generator=g)
    source = CactusTaskSource(rows, parts, 3, 4, 0, seed=0, shuffle=True)
    batch = CorruptedTasks(source, rows, 0.5, seed=1, cells=5).sample(4)
    untouched = CactusTaskSource(rows, parts, 3, 4, 0, seed=0, shuffle=True).sample(4)
    assert not torch.equal(batch.x, untouched.x)  # some cells were corrupted
    torch.testing.assert_close(batch.x[..., 5:], 10 * batch.x[..., :5])
    with pytest.raises(ConfigError, match="not blocks of 4 cells"):
        CorruptedTasks(source, rows, 0.5, seed=1, cells=4)
