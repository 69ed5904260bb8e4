"""``metaunsup.MetaKMeans``: the scikit-learn contract, checkpoints and their input shapes,
self-training on the user's data, the automatic choice of k."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from metaunsup import MetaKMeans
from metaunsup.cluster.choose_k import choose_k
from metaunsup.errors import CheckpointError, ConfigError, DataError
from metaunsup.estimators.self_train import (
    SelfTrainSettings,
    graph_partitions,
    self_train,
    subset_partitions,
)
from metaunsup.metrics import clustering_accuracy
from tests.helpers.estimators import (
    cluster_maml_checkpoint,
    conv_checkpoint,
    digits_xy,
    maml_checkpoint,
    train_mlp_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "mlp": train_mlp_checkpoint(folder / "mlp.safetensors"),
        "conv": conv_checkpoint(folder / "conv.safetensors"),
        "cmaml": cluster_maml_checkpoint(folder / "cmaml.safetensors"),
        "maml": maml_checkpoint(folder / "maml.safetensors"),
    }


# Every scikit-learn check passes; a few meta-steps keep them fast. None is listed as an expected
# failure. check_array_api_input is skipped by scikit-learn itself unless SCIPY_ARRAY_API=1 is
# set: MetaKMeans converts its input to NumPy and does not claim array-API support.
@parametrize_with_checks([MetaKMeans(meta_steps=3)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_fit_attributes_and_predict_agree(checkpoints):
    X, _ = digits_xy(300)
    model = MetaKMeans(10, checkpoint=str(checkpoints["mlp"]), random_state=0).fit(X)
    assert model.labels_.shape == (300,) and model.labels_.dtype == np.int64
    assert set(model.labels_) == set(range(10))
    assert model.cluster_centers_.shape == (10, 32) and model.embedding_dim_ == 32
    assert model.n_iter_ >= 1 and np.isfinite(model.inertia_) and model.inertia_ > 0
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    z = model.transform(X)
    assert z.shape == (300, 32) and z.dtype == np.float64
    inertia = ((z - model.cluster_centers_[model.labels_]) ** 2).sum()
    assert inertia == pytest.approx(model.inertia_, rel=1e-6)
    assert model.transform(X.astype(np.float32)).dtype == np.float32


def test_trained_checkpoint_clusters_digits_better_than_chance(checkpoints):
    X, y = digits_xy(500)
    model = MetaKMeans(10, checkpoint=str(checkpoints["mlp"]), random_state=0).fit(X)
    # chance is about 0.2; K-means on the pixels about 0.8
    assert clustering_accuracy(y, model.labels_) > 0.6


def test_images_flat_or_2d_give_the_same_labels(checkpoints):
    X, _ = digits_xy(200)
    flat = MetaKMeans(8, checkpoint=str(checkpoints["mlp"]), random_state=0).fit(X)
    images = MetaKMeans(8, checkpoint=str(checkpoints["mlp"]), random_state=0)
    images.fit(X.reshape(-1, 8, 8))
    np.testing.assert_array_equal(flat.labels_, images.labels_)
    assert images.n_features_in_ == 64
    np.testing.assert_array_equal(images.predict(X), images.labels_)


def test_conv_checkpoint_takes_every_layout_of_8x8_images(checkpoints):
    X, _ = digits_xy(120)
    results = []
    for layout in (X, X.reshape(-1, 8, 8), X.reshape(-1, 1, 8, 8)):
        model = MetaKMeans(5, checkpoint=str(checkpoints["conv"]), random_state=0)
        results.append(model.fit(layout).labels_)
    for labels in results[1:]:
        np.testing.assert_array_equal(labels, results[0])


def test_conv_checkpoint_refuses_other_image_sizes(checkpoints):
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 255
    model = MetaKMeans(3, checkpoint=str(checkpoints["conv"]))
    with pytest.raises(DataError, match=r"expects 8x8 images \(64 features\).*28x28.*resize"):
        model.fit(images)
    with pytest.raises(DataError, match="8x8 images"):
        model.fit(np.zeros((20, 4, 16)))  # 64 values, another geometry
    with pytest.raises(DataError, match=r"has 3-channel 8x8 images \(192 features\)"):
        model.fit(np.zeros((20, 3, 8, 8)))


def test_mlp_checkpoint_refuses_other_feature_counts(checkpoints):
    model = MetaKMeans(3, checkpoint=str(checkpoints["mlp"]))
    with pytest.raises(DataError, match=r"expects 64 features per example.*30 features"):
        model.fit(np.random.default_rng(0).normal(size=(40, 30)))


def test_predict_checks_the_number_of_features(checkpoints):
    X, _ = digits_xy(100)
    model = MetaKMeans(4, checkpoint=str(checkpoints["mlp"]), random_state=0).fit(X)
    with pytest.raises(DataError, match="X has 10 features, but MetaKMeans is expecting 64"):
        model.predict(X[:, :10])
    with pytest.raises(DataError, match="X has 49 features"):
        model.predict(X[:, :49].reshape(-1, 7, 7))


def test_non_clustering_checkpoint_is_refused(checkpoints):
    with pytest.raises(CheckpointError, match="'maml' learner, which does not cluster"):
        MetaKMeans(3, checkpoint=str(checkpoints["maml"])).fit(digits_xy(50)[0])


def test_input_scale_auto(checkpoints):
    X, _ = digits_xy(100)
    path = str(checkpoints["mlp"])
    assert MetaKMeans(3, checkpoint=path).fit(X).scale_ == 16.0  # digits: 0..16
    assert MetaKMeans(3, checkpoint=path).fit(X / 16.0).scale_ == 1.0
    pixels = (X * 15).astype(np.uint8)  # max 240, but uint8 means 0..255
    assert MetaKMeans(3, checkpoint=path).fit(pixels).scale_ == 255.0
    assert MetaKMeans(3, checkpoint=path, input_scale=4.0).fit(X).scale_ == 4.0


def test_cluster_maml_adapts_its_embedding(checkpoints):
    X, _ = digits_xy(150)
    path = str(checkpoints["cmaml"])
    still = MetaKMeans(5, checkpoint=path, adapt_steps=0, random_state=0).fit(X)
    moved = MetaKMeans(5, checkpoint=path, adapt_steps=2, random_state=0).fit(X)
    assert not np.allclose(still.transform(X), moved.transform(X))
    np.testing.assert_array_equal(moved.predict(X), moved.labels_)


def test_same_seed_same_result_and_pickle_round_trip():
    X, _ = digits_xy(200)
    a = MetaKMeans(6, meta_steps=5, random_state=3).fit(X)
    b = MetaKMeans(6, meta_steps=5, random_state=3).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.predict(X), a.labels_)


def test_bad_parameters_say_which():
    X, _ = digits_xy(30)
    for params, message in [
        ({"n_clusters": 0}, "n_clusters must be an integer >= 1 or 'auto'"),
        ({"n_clusters": "many"}, "n_clusters must be"),
        ({"n_clusters": 31}, "n_clusters=31 but only 30 examples"),
        ({"meta_steps": -1}, "meta_steps must be"),
        ({"input_scale": 0}, "input_scale must be a positive number"),
        ({"device": "tpu9"}, "unknown device"),
    ]:
        with pytest.raises(ConfigError, match=message):
            MetaKMeans(**params).fit(X)


def test_self_training_learns_the_pseudo_tasks():
    X, _ = digits_xy(400)
    x = torch.tensor((X - X.mean(0)) / X.std(), dtype=torch.float32)
    result = self_train(x, 10, SelfTrainSettings(steps=60, meta_batch=2), seed=0)
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.8 * first
    assert result.summary()["task"] == "10 clusters x 20"
    assert not any(p.requires_grad for p in result.learner.parameters())


def test_more_eigenvectors_than_clusters_give_purer_graph_partitions():
    # k eigenvectors let two weakly linked digits share one and merge in every partition
    X, y = digits_xy(1797)
    x = torch.tensor((X - X.mean(0)) / X.std(), dtype=torch.float32)

    def purity(eigenvectors: float) -> float:
        parts = graph_partitions(x, 10, 6, seed=0, eigenvectors_per_cluster=eigenvectors)
        return float(np.mean([clustering_accuracy(y, p.numpy()) for p in parts]))

    assert purity(1.5) > purity(1.0) + 0.03
    with pytest.raises(ConfigError, match="eigenvectors_per_cluster must be >= 1"):
        SelfTrainSettings(eigenvectors_per_cluster=0.5)


def test_subset_partitions_cover_every_example_with_k_clusters():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
    parts = subset_partitions(x, 5, n_partitions=7, feature_fraction=0.5, seed=0)
    assert parts.shape == (7, 300)
    assert all(set(row.tolist()) == set(range(5)) for row in parts)
    assert not torch.equal(parts[0], parts[1])  # other features, other partition


def test_self_trained_model_on_digits_beats_chance_clearly():
    X, y = digits_xy(600)
    model = MetaKMeans(10, meta_steps=40, random_state=0).fit(X)
    assert clustering_accuracy(y, model.labels_) > 0.65
    assert model.training_["steps"] == 40


def test_auto_k_finds_three_blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    X = np.concatenate([c + rng.normal(size=(40, 2)) for c in centers])
    model = MetaKMeans(
        "auto", meta_steps=10, max_clusters=6, k_selection="silhouette", random_state=0
    ).fit(X)
    assert model.n_clusters_ == 3
    assert model.k_choice_.k == 3 and set(model.k_choice_.scores) == {2, 3, 4, 5, 6}
    assert model.k_choice_.reason.startswith("k=3 has the highest mean silhouette")
    default = MetaKMeans("auto", meta_steps=10, max_clusters=6, random_state=0).fit(X)
    assert default.k_choice_.method == "silhouette" and default.n_clusters_ == 3


def test_auto_k_uses_the_eigengap_in_a_checkpoints_embedding():
    from sklearn.datasets import load_digits

    X, _ = load_digits(return_X_y=True)
    model = MetaKMeans("auto", checkpoint="digits", random_state=0).fit(X[:300])
    assert model.k_choice_.method == "eigengap"  # digits' card has no calibrated threshold
    assert model.k_choice_.reason.startswith(f"k={model.n_clusters_} has the highest graph")
    assert model.k_choice_.reason.endswith("card has no calibrated eigenvalue threshold")
    with pytest.raises(ConfigError, match="calibrated"):
        MetaKMeans("auto", checkpoint="digits", k_selection="eigencount").fit(X[:100])


def test_auto_k_counts_eigenvalues_with_a_calibrated_card(tmp_path):
    from sklearn.datasets import load_digits

    from tests.helpers.estimators import conv_checkpoint

    path = conv_checkpoint(tmp_path / "conv.safetensors")
    card = {"k_selection": {"rule": "eigencount", "threshold": 0.5, "calibrated_on": "a test"}}
    path.with_suffix(".json").write_text(json.dumps(card))
    X, _ = load_digits(return_X_y=True)
    model = MetaKMeans("auto", checkpoint=str(path), random_state=0).fit(X[:200])
    choice = model.k_choice_
    assert choice.method == "eigencount" and choice.threshold == 0.5
    assert choice.reason.endswith("threshold calibrated on a test")
    assert choice.k == min(max(sum(v > 0.5 for v in choice.scores.values()) + 1, 2), 15)


def test_auto_k_by_eigengap_finds_three_blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    X = np.concatenate([c + rng.normal(size=(40, 2)) for c in centers])
    model = MetaKMeans(
        "auto", meta_steps=10, max_clusters=6, k_selection="eigengap", random_state=0
    ).fit(X)
    assert model.n_clusters_ == 3 and model.k_choice_.method == "eigengap"
    assert model.k_choice_.reason.startswith("k=3 has the highest graph eigengap")
    with pytest.raises(ConfigError, match="k_selection"):
        MetaKMeans("auto", k_selection="gap").fit(X)


def test_choose_k_limits():
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    assert set(choose_k(x, 2, 10).scores) == {2, 3}  # k <= n - 1
    with pytest.raises(ConfigError, match="at least 3 examples"):
        choose_k(x[:2])
    with pytest.raises(ConfigError, match="k_min must be >= 2, got 1"):
        choose_k(x, 1, 3)
    dupes = torch.zeros(10, 2)
    assert choose_k(dupes, 2, 4).k == 2  # every score is the worst: the smallest k wins


def test_light_background_images_with_a_checkpoint_warn():
    """The packaged checkpoints are trained on bright strokes on a dark background; inverted
    digits cluster far worse with them, so the estimator says so (and stays silent otherwise)."""
    import warnings

    from metaunsup.errors import DataWarning

    x, _ = digits_xy(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ink-bright digits: no warning at all
        MetaKMeans(10, checkpoint="digits", random_state=0).fit(x)
    with pytest.warns(DataWarning, match="look light-background .* invert them"):
        MetaKMeans(10, checkpoint="digits", random_state=0).fit(16.0 - x)


def test_fewer_distinct_rows_than_clusters_warn_as_scikit_learn_does():
    from sklearn.exceptions import ConvergenceWarning

    x = np.repeat(np.array([[0.0, 1.0], [5.0, 5.0]]), 10, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"only 2 distinct example\(s\) for n_clusters=3"):
        model = MetaKMeans(3, meta_steps=2, random_state=0).fit(x)
    assert model.labels_.shape == (20,)


def test_values_beyond_float32_are_refused_not_overflowed():
    x = np.random.default_rng(0).normal(size=(20, 3))
    x[4, 1] = 1e300
    with pytest.raises(DataError, match=r"too large for float32 .* the first at index \(4, 1\)"):
        MetaKMeans(2, meta_steps=2, random_state=0).fit(x)


def test_spectral_assignment_is_spectral_clustering_of_the_embedding(checkpoints, monkeypatch):
    from metaunsup.cluster import spectral_clustering
    from metaunsup.estimators import kmeans as kmeans_module

    X, y = digits_xy(300)
    model = MetaKMeans(10, checkpoint=str(checkpoints["mlp"]), assign="spectral", random_state=0)
    model.fit(X)
    z = torch.from_numpy(model.transform(X))
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    expected = spectral_clustering(z, 10, n_neighbors=10, metric="cosine", seed=seed)
    assert np.array_equal(model.labels_, expected.numpy())
    for c in range(10):  # the centres are the clusters' means in the embedding
        assert np.allclose(model.cluster_centers_[c], z[model.labels_ == c].mean(0), atol=1e-5)
    assert model.get_params()["assign"] == "spectral"
    assert clustering_accuracy(y, model.labels_) > 0.5
    with pytest.raises(ConfigError, match="assign must be one of"):
        MetaKMeans(3, checkpoint=str(checkpoints["mlp"]), assign="dbscan").fit(X)
    monkeypatch.setattr(kmeans_module, "SPECTRAL_ROWS", 100)
    with pytest.raises(ConfigError, match=r"graph of all 300 examples.*--assign kmeans"):
        MetaKMeans(3, checkpoint=str(checkpoints["mlp"]), assign="spectral").fit(X)
