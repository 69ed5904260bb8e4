"""Disjoint class splits for meta-training, meta-validation and meta-testing.

Meta-learning is judged on *new* classes, so the classes of a dataset are split, not its
examples: :func:`split_classes` draws a seeded random split, and :meth:`ClassSplit.apply` turns it
into three datasets (each relabelled ``0..C_part-1`` by :meth:`Dataset.subset_classes`).
Alternatively keep one dataset and pass ``split.train`` etc. as ``classes=`` to a sampler, which
keeps the dataset's class ids in ``TaskBatch.classes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metaunsup._validation import MAX_SEED, check_int
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError

__all__ = ["ClassSplit", "split_classes"]

_PARTS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class ClassSplit:
    """Class ids of the meta-train, meta-val and meta-test parts.

    Attributes
    ----------
    train, val, test:
        ``int64 [C_part]`` class ids, ascending; disjoint and together ``0..n_classes-1``.
    n_classes:
        Number of classes split.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    n_classes: int

    def parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(train, val, test)``."""
        return self.train, self.val, self.test

    def apply(self, dataset: Dataset) -> tuple[Dataset, Dataset, Dataset]:
        """The dataset's examples of each part, as ``(train, val, test)`` datasets.

        Each is relabelled ``0..C_part-1`` (class names kept) and its ``split`` is
        ``"<split>/meta-train"``, ``"<split>/meta-val"`` or ``"<split>/meta-test"``.
        """
        if dataset.n_classes != self.n_classes:
            raise ConfigError(
                f"class split is for {self.n_classes} classes but dataset "
                f"{dataset.name}/{dataset.split} has {dataset.n_classes}"
            )
        train, val, test = (
            dataset.subset_classes(ids, split=f"{dataset.split}/meta-{part}")
            for part, ids in zip(_PARTS, self.parts(), strict=True)
        )
        return train, val, test


def _counts_from_fractions(n_classes: int, fractions: Sequence[float]) -> list[int]:
    """Class counts per part from fractions summing to 1 (largest-remainder rounding)."""
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ConfigError(f"fractions must be three numbers, got {fractions!r}") from None
    if len(fr) != 3:
        raise ConfigError(f"fractions must be three numbers (train, val, test), got {len(fr)}")
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise ConfigError(f"fractions must be finite and non-negative, got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"fractions must sum to 1, got {fr} (sum {sum(fr):g})")
    raw = [f * n_classes for f in fr]
    counts = [math.floor(r) for r in raw]
    # Hand the classes lost to flooring to the largest remainders; ties go to the earlier part.
    by_remainder = sorted(range(3), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in by_remainder[: n_classes - sum(counts)]:
        counts[i] += 1
    for part, f, c in zip(_PARTS, fr, counts, strict=True):
        if f > 0 and c == 0:
            raise ConfigError(
                f"fractions {fr} leave the meta-{part} part of {n_classes} classes empty; "
                "give counts= or larger fractions"
            )
    return counts


def split_classes(
    n_classes: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    *,
    counts: Sequence[int] | None = None,
    seed: int = 0,
) -> ClassSplit:
    """A seeded random split of class ids ``0..n_classes-1`` into three disjoint parts.

    Parameters
    ----------
    n_classes:
        Number of classes, e.g. ``dataset.n_classes``.
    fractions:
        Shares of (meta-train, meta-val, meta-test), summing to 1; counts are rounded by the
        largest-remainder rule so they add up to ``n_classes``. A positive share that would round
        to no class raises. Ignored when ``counts`` is given.
    counts:
        Exact numbers of classes per part, summing to ``n_classes``.
    seed:
        Seed of the permutation; the same seed gives the same split on every machine.

    Returns
    -------
    ClassSplit
        ``int64`` ascending class ids per part.

    Examples
    --------
    >>> split = split_classes(10, counts=(6, 2, 2), seed=0)
    >>> meta_train, meta_val, meta_test = split.apply(dataset)
    """
    n_classes = check_int("n_classes", n_classes, 1)
    seed = check_int("seed", seed, 0, MAX_SEED)
    if counts is None:
        sizes = _counts_from_fractions(n_classes, fractions)
    else:
        if isinstance(counts, str | bytes) or len(counts) != 3:
            raise ConfigError(f"counts must be three integers (train, val, test), got {counts!r}")
        sizes = [check_int(f"counts[{i}]", c, 0) for i, c in enumerate(counts)]
        if sum(sizes) != n_classes:
            raise ConfigError(f"counts {sizes} sum to {sum(sizes)}, not n_classes={n_classes}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    perm = torch.randperm(n_classes, generator=generator)
    parts = [torch.sort(p).values for p in torch.split(perm, sizes)]
    return ClassSplit(train=parts[0], val=parts[1], test=parts[2], n_classes=n_classes)
