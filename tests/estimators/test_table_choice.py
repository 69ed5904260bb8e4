"""``fit_table_model`` (``metaunsup cluster --checkpoint auto``): the zero-shot ``tabular``
model or self-training, whichever path's clustered representation is the more reproducible;
self-training where the two cannot both be scored."""

from __future__ import annotations

import numpy as np
import pytest

import metaunsup.estimators.table_choice as table_choice
from metaunsup.errors import DataError
from metaunsup.estimators.kmeans import MetaKMeans
from metaunsup.estimators.table_choice import (
    SELF_TRAINING,
    TABLE_CHECKPOINT,
    clustered_agreement,
    fit_table_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n: int = 150, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, d)) * 2.0
    return centres[y] + rng.normal(size=(n, d)), y


def make(path: str | None) -> MetaKMeans:
    return MetaKMeans(3, checkpoint=path, meta_steps=20, random_state=0)


def test_both_paths_are_fitted_and_the_more_reproducible_is_kept():
    x, _ = blobs()
    model, choice = fit_table_model(x, make)
    assert set(choice.scores) == {TABLE_CHECKPOINT, SELF_TRAINING}
    # each score is what that path alone reports for what it clustered
    alone = {TABLE_CHECKPOINT: make(TABLE_CHECKPOINT).fit(x), SELF_TRAINING: make(None).fit(x)}
    for name, fitted in alone.items():
        assert choice.scores[name] == pytest.approx(clustered_agreement(fitted))
    best = max(choice.scores, key=lambda n: (choice.scores[n], n == SELF_TRAINING))
    assert choice.chosen == best
    assert model.checkpoint == (TABLE_CHECKPOINT if best == TABLE_CHECKPOINT else None)
    assert np.array_equal(model.labels_, alone[best].labels_)
    assert choice.to_json()["chosen"] == best and str(choice.scores[best])[:4] in choice.reason


def test_missing_cells_are_scored_by_both_paths_too():
    x, _ = blobs()
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    model, choice = fit_table_model(x, make)
    assert set(choice.scores) == {TABLE_CHECKPOINT, SELF_TRAINING}
    alone = {TABLE_CHECKPOINT: make(TABLE_CHECKPOINT).fit(x), SELF_TRAINING: make(None).fit(x)}
    for name, fitted in alone.items():
        assert fitted.feature_filler_ is not None  # each guard filled the cells to score
        assert choice.scores[name] == pytest.approx(clustered_agreement(fitted))
    assert np.array_equal(model.labels_, alone[choice.chosen].labels_)


@pytest.mark.parametrize(("zero_shot", "own", "chosen"), [(0.9, 0.5, TABLE_CHECKPOINT),
                         (0.5, 0.9, SELF_TRAINING), (0.7, 0.7, SELF_TRAINING)])  # fmt: skip
def test_the_higher_agreement_wins_and_a_tie_keeps_self_training(
    monkeypatch, zero_shot, own, chosen
):
    scores = {TABLE_CHECKPOINT: zero_shot, None: own}
    monkeypatch.setattr(table_choice, "clustered_agreement", lambda m: scores[m.checkpoint])
    model, choice = fit_table_model(blobs()[0], make)
    assert choice.chosen == chosen
    assert model.checkpoint == (TABLE_CHECKPOINT if chosen == TABLE_CHECKPOINT else None)
    assert ("alike" in choice.reason) == (zero_shot == own)


def test_self_training_where_the_paths_cannot_both_be_scored():
    x, _ = blobs(d=101)  # wider than the tabular model takes
    model, choice = fit_table_model(x, make)
    assert choice.chosen == SELF_TRAINING and model.checkpoint is None
    assert "101 columns, more than the 100" in choice.reason and choice.scores == {}
    model, choice = fit_table_model(blobs()[0], lambda p: make(p).set_params(guard=False))
    assert choice.chosen == SELF_TRAINING and "guard is off" in choice.reason


def test_images_are_refused():
    with pytest.raises(DataError, match=r"for tables \[n, d\]"):
        fit_table_model(np.zeros((10, 8, 8)), make)
