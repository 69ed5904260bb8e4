"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, 10 classes, nothing to download.

The data are the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside
scikit-learn (:func:`sklearn.datasets.load_digits`): pixel values 0..16. They are small enough for
fast tests and demos.

Splits: ``all`` (all 1797 images, in scikit-learn's order), and ``train`` / ``test``, a fixed
stratified half of each class each. The split is drawn once with a ``numpy.random.Generator``
seeded by the module constant :data:`SPLIT_SEED`, so it is the same on every machine; within a
split the images keep scikit-learn's order. For a class with an odd count, ``train`` gets the extra
image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaunsup.data.base import Dataset
from metaunsup.data.registry import DatasetSpec
from metaunsup.errors import ConfigError

#: Seed of the fixed stratified train/test split. Changing it changes every published number.
SPLIT_SEED = 20240607

SPLITS = ("train", "test", "all")
CLASSES = tuple(str(d) for d in range(10))


def split_indices(y: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified half/half split of the labels ``y`` ``[n]``: sorted ``(train, test)`` indices.

    Each class's indices are permuted by a generator seeded with ``seed`` (classes in increasing
    order, so the draw does not depend on anything but ``y`` and ``seed``); the first
    ``ceil(n_c / 2)`` go to ``train``, the rest to ``test``.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        half = (idx.size + 1) // 2
        train.append(idx[:half])
        test.append(idx[half:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load(split: str, root: Path | None = None) -> Dataset:
    """The ``split`` of the digits: ``x`` ``float32 [n, 1, 8, 8]`` in ``[0, 1]``, ``y`` ``int64``.

    ``root`` is ignored (the data ship with scikit-learn).
    """
    if split not in SPLITS:
        raise ConfigError(f"dataset 'digits' has no split {split!r}; choose one of: {SPLITS}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    if split != "all":
        train, test = split_indices(y)
        keep = train if split == "train" else test
        images, y = images[keep], y[keep]
    return Dataset(
        name="digits",
        split=split,
        x=torch.from_numpy(np.ascontiguousarray(images[:, None])),
        y=torch.from_numpy(np.ascontiguousarray(y)),
        classes=CLASSES,
        info={"source": "sklearn.datasets.load_digits", "split_seed": str(SPLIT_SEED)},
    )


def verify(root: Path | None = None) -> list[str]:
    """One status line: the digits are bundled with scikit-learn, so there is nothing to check."""
    return ["ok digits (bundled with scikit-learn; nothing to download)"]


SPEC = DatasetSpec(
    name="digits",
    description="8x8 handwritten digits bundled with scikit-learn (1797 images, 10 classes)",
    splits=SPLITS,
    load=load,
    verify=verify,
    download=None,
    needs_files=False,
)
