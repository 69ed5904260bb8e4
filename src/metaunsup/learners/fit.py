"""Does a trained model fit the data? The one check every user of a checkpoint runs.

A network declares the shape of one example it reads (``net.example_shape``: ``(C, H, W)`` for
a Conv4, ``(D,)`` for an MLP). Data of example shape ``s`` fit a network of example shape
``e`` when

* ``s == e``;
* they hold the same number of values and one of them is flat (``[n, 64]`` rows for a network
  of ``1 x 8 x 8`` images, or ``8 x 8`` images for an MLP of 64 inputs): the rows are reshaped;
* or ``e`` is one-channel images and ``s`` the same images without their channel axis
  (``[n, 8, 8]`` for ``(1, 8, 8)``).

Anything else is a :class:`~metaunsup.errors.DataError` that says what the model expects, what
the data hold and how to fix it (resize, convert to grey, give ``D`` features), raised before
any work: ``metaunsup cluster``, ``metaunsup evaluate`` (both task kinds), the experiments,
:class:`~metaunsup.MetaKMeans`, :func:`~metaunsup.evaluation.protocol.evaluate` and
:func:`~metaunsup.learners.load_learner` (with ``example_shape=``) all call
:func:`fitted_shape`, so a model is never scored on data it was not made for.
"""

from __future__ import annotations

import math

from metaunsup.errors import DataError
from metaunsup.learners.base import MetaLearner

__all__ = ["check_fits", "describe_shape", "fitted_shape", "learner_example_shape"]


def describe_shape(shape: tuple[int, ...]) -> str:
    """``(1, 8, 8)`` → ``"8x8 images (64 features)"``, ``(30,)`` → ``"30 features"``."""
    features = math.prod(shape)
    if len(shape) == 1:
        return f"{features} features"
    channels = f"{shape[0]}-channel " if len(shape) == 3 and shape[0] != 1 else ""
    return f"{channels}{shape[-2]}x{shape[-1]} images ({features} features)"


def _fix(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """How to turn examples of ``shape`` into examples of ``expected``."""
    if len(expected) != 3:
        return f"give {expected[0]} features per example"
    channels, size = expected[0], f"{expected[-2]}x{expected[-1]}"
    same_size = len(shape) >= 2 and shape[-2:] == expected[-2:]
    if same_size and channels == 1:
        return "convert the images to grey (one channel)"
    if same_size:
        return f"give {channels}-channel images"
    grey = "grey " if channels == 1 else f"{channels}-channel "
    return f"resize the images to {size} ({grey}images)"


def fitted_shape(
    shape: tuple[int, ...],
    expected: tuple[int, ...],
    source: str,
    alternative: str | None = None,
) -> tuple[int, ...]:
    """``expected`` when examples of ``shape`` fit a network reading ``expected`` (see the
    module docstring); else a :class:`DataError` naming ``source`` (e.g. ``"checkpoint
    'digits'"``), both shapes and the fix, then ``alternative`` (another way out) if given."""
    shape, expected = tuple(int(s) for s in shape), tuple(int(s) for s in expected)
    same_count = math.prod(shape) == math.prod(expected)
    flat = len(shape) == 1 or len(expected) == 1
    no_channel = len(expected) == 3 and expected[0] == 1 and shape == expected[1:]
    if shape == expected or (same_count and flat) or no_channel:
        return expected
    fix = _fix(shape, expected) + (f", {alternative}" if alternative else "")
    raise DataError(
        f"{source} expects {describe_shape(expected)} per example, but the data has "
        f"{describe_shape(shape)}; {fix}"
    )


def learner_example_shape(learner: MetaLearner) -> tuple[int, ...]:
    """The shape of one example the learner's network reads."""
    return tuple(int(s) for s in learner.net.example_shape)


def check_fits(
    learner: MetaLearner,
    shape: tuple[int, ...],
    source: str,
    alternative: str | None = None,
) -> tuple[int, ...]:
    """:func:`fitted_shape` of ``learner``'s network: the shape to reshape examples of
    ``shape`` to before they go into it."""
    return fitted_shape(shape, learner_example_shape(learner), source, alternative)
