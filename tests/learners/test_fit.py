"""The one check that a trained model fits the data (:mod:`metaunsup.learners.fit`), and its
use by evaluation: what fits is reshaped and scored, what does not is refused before any work."""

from __future__ import annotations

import re

import pytest

from metaunsup.data import load
from metaunsup.data.base import Dataset
from metaunsup.errors import DataError
from metaunsup.evaluation.clustering import checkpoint_method, evaluate_clustering
from metaunsup.learners import load_learner
from metaunsup.learners.fit import fitted_shape

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 8, 8), (1, 8, 8)),
        ((64,), (1, 8, 8)),  # rows of a table, for a network of images
        ((8, 8), (1, 8, 8)),  # grey images without their channel axis
        ((1, 8, 8), (64,)),  # images, for a network of 64 inputs
        ((30,), (30,)),
    ],
)
def test_what_fits(shape, expected):
    assert fitted_shape(shape, expected, "m") == expected


@pytest.mark.parametrize(
    ("shape", "expected", "fix"),
    [
        ((1, 28, 28), (1, 8, 8), "resize the images to 8x8 (grey images)"),
        ((3, 28, 28), (1, 28, 28), "convert the images to grey (one channel)"),
        ((1, 28, 28), (3, 28, 28), "give 3-channel images"),
        ((30,), (64,), "give 64 features per example"),
        ((30,), (1, 8, 8), "resize the images to 8x8"),
        ((8, 8), (3, 8, 8), "give 3-channel images"),
    ],
)
def test_what_does_not_fit_says_how_to_fix_it(shape, expected, fix):
    pattern = f"m expects .* per example, but the data has .*; {re.escape(fix)}"
    with pytest.raises(DataError, match=pattern):
        fitted_shape(shape, expected, "m")


def test_evaluate_scores_a_model_on_data_that_fit_once_reshaped():
    """The digits model (1 x 8 x 8 images) scores the same on digits given as 64-value rows."""
    images = load("digits", "test")
    rows = Dataset("rows", "test", images.x.reshape(len(images), 64), images.y, images.classes)
    scores = [
        evaluate_clustering(ds, [checkpoint_method("digits")], n_way=5, k_shot=5, n_tasks=4)
        .results[0]
        .scores["acc"]
        .mean
        for ds in (images, rows)
    ]
    assert scores[0] == scores[1]


def test_load_learner_checks_the_data_shape_when_asked():
    assert load_learner("digits", example_shape=(64,)).net.example_shape == (1, 8, 8)
    with pytest.raises(DataError, match="expects 8x8 images"):
        load_learner("digits", example_shape=(1, 28, 28))


def test_evaluate_refuses_before_running_any_method():
    calls = []
    method = checkpoint_method("mnist")
    traced = type(method)(method.name, lambda x, k, s: calls.append(1), method.learner)
    with pytest.raises(DataError, match="model 'mnist' expects 28x28 images"):
        evaluate_clustering(load("digits", "test"), [traced], n_way=5, k_shot=5, n_tasks=2)
    assert calls == []
