"""The packaged zero-shot ``tabular`` checkpoint: it loads, clusters and scores tables of any
width up to 100 (missing cells included) with no training, refuses wider ones naming
self-training, works from the command line, and its card's number reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from metaunsup import MetaKMeans, MetaOutlierDetector
from metaunsup.app.cli import main
from metaunsup.checkpoint import packaged_dir
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners import AnomalyScorer, Embedder, load_learner
from metaunsup.metrics import clustering_accuracy
from metaunsup.training.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(width: int, k: int = 3, n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` well separated Gaussian groups (centres 10 apart along a random direction) in
    ``width`` columns of different units."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    direction = rng.normal(size=width)
    centres = 10.0 * np.arange(k)[:, None] * direction / np.linalg.norm(direction)
    x = centres[y] + rng.normal(size=(n, width))
    return x * rng.uniform(0.1, 100.0, width), y


def test_packaged_tabular_is_a_table_embedder_and_scorer_with_a_card():
    learner = load_learner("tabular")
    assert isinstance(learner, Embedder) and isinstance(learner, AnomalyScorer)
    assert learner.net.example_shape == (100,)
    card = json.loads((packaged_dir() / "tabular.json").read_text())
    assert card["input"]["kind"] == "table" and card["input"]["max_features"] == 100
    words = card["command"].split()
    assert words[:3] == ["metaunsup", "train", "configs/tabular-gated.toml"]
    ran = load_config(Path(__file__).resolve().parents[2] / words[2])
    packaged = load_config("tabular")  # the packaged config is that run's, but for its name
    assert (ran.learner, ran.task, ran.train, ran.data) == (
        packaged.learner,
        packaged.task,
        packaged.train,
        packaged.data,
    )
    assert card["data"]["dataset"] == "synthetic-tables"
    assert (packaged_dir() / "tabular.safetensors").stat().st_size < 2_000_000
    # the scoring setting chosen after training is the file's, the card's and the config's
    assert learner.score_neighbors == card["config"]["learner"]["score_neighbors"]
    assert card["scoring"]["after"] == {"score_neighbors": learner.score_neighbors}
    assert (Path(__file__).resolve().parents[2] / card["scoring"]["chosen_by"]["record"]).is_file()


@pytest.mark.parametrize("width", [2, 13, 100])
def test_clusters_tables_of_any_width_up_to_100(width):
    x, y = _blobs(width)
    model = MetaKMeans(3, checkpoint="tabular", random_state=0, guard=False).fit(x)
    assert model.embedding_dim_ == load_learner("tabular").net.feature_dim
    assert adjusted_rand_score(y, model.labels_) > 0.9
    assert (model.predict(x) == model.labels_).all()


def test_missing_cells_go_in_natively_and_the_guard_weighs_the_filled_columns():
    x, y = _blobs(8, seed=1)
    x[np.random.default_rng(1).random(x.shape) < 0.2] = np.nan
    model = MetaKMeans(3, checkpoint="tabular", random_state=0).fit(x)
    assert model.guard_ is not None and model.feature_filler_ is not None
    assert model.feature_filler_.rows.shape == x.shape  # the columns, each gap filled
    assert not np.isnan(model.feature_filler_.rows).any()
    assert adjusted_rand_score(y, model.labels_) > 0.8
    unguarded = MetaKMeans(3, checkpoint="tabular", random_state=0, guard=False).fit(x)
    assert unguarded.guard_ is None and unguarded.feature_filler_ is None
    if model.guard_.use == "embedding":
        np.testing.assert_array_equal(model.labels_, unguarded.labels_)


def test_wider_tables_are_refused_naming_self_training():
    x = np.random.default_rng(0).normal(size=(40, 101))
    with pytest.raises(DataError, match=r"at most 100 features.*without a checkpoint"):
        MetaKMeans(2, checkpoint="tabular").fit(x)
    with pytest.raises(DataError, match="at most 100 features"):
        MetaOutlierDetector(checkpoint="tabular").fit(x)
    with pytest.raises(ConfigError, match="standardised columns"):
        MetaKMeans(2, checkpoint="tabular", input_scale=3.0).fit(x[:, :5])


def test_scores_far_rows_above_the_table():
    x, _ = _blobs(6, n=300, seed=2)
    rng = np.random.default_rng(2)
    far = x[:10] + rng.normal(size=(10, 6)) * x.std(0) * 6.0
    table = np.vstack([x, far])
    detector = MetaOutlierDetector(checkpoint="tabular", random_state=0).fit(table)
    flags = np.r_[np.zeros(len(x)), np.ones(10)]
    assert roc_auc_score(flags, detector.decision_scores_) > 0.9


def test_command_line_cluster_and_detect_with_the_checkpoint(tmp_path, capsys):
    x, _ = _blobs(5)
    path = tmp_path / "t.csv"
    np.savetxt(path, x, delimiter=",", header=",".join(f"c{i}" for i in range(5)), comments="")
    code = main(["cluster", str(path), "--k", "3", "--checkpoint", "tabular", "--out",
                 str(tmp_path / "labels.csv")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    code = main(["detect", str(path), "--checkpoint", "tabular", "--out",
                 str(tmp_path / "scores.csv")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    wide = tmp_path / "wide.csv"
    np.savetxt(wide, np.random.default_rng(0).normal(size=(30, 101)), delimiter=",")
    capsys.readouterr()
    code = main(["cluster", str(wide), "--k", "2", "--checkpoint", "tabular", "--out",
                 str(tmp_path / "w.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("metaunsup: error:") and "without a checkpoint" in err
    assert not (tmp_path / "w.csv").exists()


def test_card_iris_accuracy_reproduces():
    from sklearn.datasets import load_iris

    card = json.loads((packaged_dir() / "tabular.json").read_text())
    stated = next(e["report"] for e in card["evaluations"] if e["report"].get("table") == "iris")
    x, y = load_iris(return_X_y=True)
    model = MetaKMeans(3, checkpoint="tabular", random_state=stated["seed"]).fit(x)
    assert abs(clustering_accuracy(y, model.labels_) - stated["accuracy"]) <= 0.01


def test_score_neighbors_overrides_the_checkpoints_setting_and_only_where_it_means_something():
    x, _ = _blobs(5)
    own = MetaOutlierDetector(checkpoint="tabular", random_state=0).fit(x)
    ten = MetaOutlierDetector(checkpoint="tabular", random_state=0, score_neighbors=10).fit(x)
    assert own.learner_.score_neighbors == 0.1 and ten.learner_.score_neighbors == 10
    assert load_learner("tabular").score_neighbors == 0.1  # the packaged file is untouched
    assert not np.allclose(own.decision_scores_, ten.decision_scores_)
    for bad in (0, 1.0, "ten"):
        with pytest.raises(ConfigError, match="score_neighbors"):
            MetaOutlierDetector(checkpoint="tabular", score_neighbors=bad).fit(x)
    for checkpoint in (None, "mnist-anomaly"):
        with pytest.raises(ConfigError, match="score_neighbors"):
            MetaOutlierDetector(checkpoint=checkpoint, score_neighbors=10).fit(x)
