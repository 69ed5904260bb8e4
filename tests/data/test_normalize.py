"""Input normalisation to a checkpoint's convention: range, polarity, MNIST-style framing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from metaunsup import MetaKMeans
from metaunsup.checkpoint import checkpoint_card
from metaunsup.data.normalize import InputConvention, plan_normalization
from metaunsup.errors import ConfigError, DataError

MNIST_LIKE = InputConvention(size=(28, 28), box=(20, 20))


def _bar(top: int, left: int, h: int, w: int, size: int = 28) -> np.ndarray:
    im = np.zeros((size, size))
    im[top : top + h, left : left + w] = 1.0
    return im


def test_dark_ink_on_light_paper_is_inverted_and_bytes_rescaled() -> None:
    images = (255 - 255 * np.stack([_bar(4, 10, 20, 6), _bar(6, 6, 16, 14)])).astype(np.uint8)
    plan = plan_normalization(images, InputConvention(), uint8=True)
    assert plan.invert and plan.steps[:2][0] == "values divided by 255 (uint8)"
    assert "inverted: light background" in plan.steps[1]
    out = plan.apply(images)
    np.testing.assert_allclose(out[0], _bar(4, 10, 20, 6))


def test_other_value_ranges_are_rescaled() -> None:
    images = np.stack([_bar(4, 10, 20, 6) * 16.0, _bar(6, 6, 16, 14) * 16.0])
    plan = plan_normalization(images, InputConvention())
    assert plan.steps == ["values rescaled from [0, 16] to [0, 1]"]
    assert plan.apply(images).max() == 1.0


def test_reframing_fits_the_ink_into_the_box_centred_by_mass() -> None:
    full = np.stack([_bar(0, 0, 28, 14), _bar(2, 0, 24, 28)])  # ink filling the frame
    plan = plan_normalization(full, MNIST_LIKE)
    assert plan.reframe and "re-framed" in plan.steps[-1]
    out = plan.apply(full)
    assert out.shape == (2, 28, 28)
    for im in out:
        rows = np.flatnonzero((im > 0.2).any(1))
        cols = np.flatnonzero((im > 0.2).any(0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20
        mass_r = (im.sum(1) * np.arange(28)).sum() / im.sum()
        mass_c = (im.sum(0) * np.arange(28)).sum() / im.sum()
        assert abs(mass_r - 13.5) <= 1 and abs(mass_c - 13.5) <= 1


def test_small_images_are_brought_to_the_conventions_size() -> None:
    digits = load_digits().images[:20]
    plan = plan_normalization(digits, MNIST_LIKE)
    assert plan.reframe and plan.apply(digits).shape == (20, 28, 28)


def test_images_already_in_the_convention_are_left_alone() -> None:
    framed = np.stack([_bar(4, 11, 20, 6), _bar(4, 4, 20, 20)])
    plan = plan_normalization(framed, MNIST_LIKE)
    assert plan.steps == ["already in the checkpoint's convention: unchanged"]
    np.testing.assert_array_equal(plan.apply(framed), framed)


def test_cards_carry_the_convention_and_old_cards_get_defaults() -> None:
    mnist = InputConvention.from_card(checkpoint_card("mnist"))
    assert mnist.box == (20, 20) and mnist.size == (28, 28) and mnist.ink == "bright"
    old = InputConvention.from_card({"name": "x", "input_shape": [28, 28]}, (1, 28, 28))
    assert old == InputConvention(size=(28, 28))
    with pytest.raises(DataError):
        InputConvention.from_card({"input": {"ink": "purple"}})


def test_estimator_clusters_inverted_digits_like_the_originals() -> None:
    X = load_digits().images[:200]
    plain = MetaKMeans(10, checkpoint="digits", random_state=0, guard=False).fit(X)
    inverted = MetaKMeans(
        10, checkpoint="digits", input_normalize="auto", random_state=0, guard=False
    ).fit(16 - X)
    assert inverted.input_normalization_ is not None
    assert any("inverted" in step for step in inverted.input_normalization_.steps)
    np.testing.assert_array_equal(inverted.labels_, plain.labels_)
    np.testing.assert_array_equal(inverted.predict(16 - X), plain.labels_)


def test_estimator_refuses_normalisation_without_a_checkpoint() -> None:
    with pytest.raises(ConfigError, match="checkpoint"):
        MetaKMeans(3, input_normalize="auto").fit(np.random.default_rng(0).normal(size=(30, 4)))
    with pytest.raises(DataError, match="grey images"):
        MetaKMeans(3, checkpoint="digits", input_normalize="auto").fit(np.ones((30, 5)))
