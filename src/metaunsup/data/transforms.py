"""Dataset-level transforms that make new classes out of old ones."""

from __future__ import annotations

import torch

from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.errors import DataError


def with_rotations(dataset: Dataset, quarter_turns: tuple[int, ...] = (0, 1, 2, 3)) -> Dataset:
    """Every class rotated by each multiple of 90° in ``quarter_turns`` becomes its own class.

    The usual Omniglot augmentation (Santoro et al. 2016; used by MAML and Prototypical
    Networks): a rotated character is treated as a new character. ``x`` must be images
    ``[n, C, H, W]``; the result has ``len(quarter_turns)`` times the classes and examples, class
    ``r * n_classes + c`` being class ``c`` turned ``quarter_turns[r]`` times counter-clockwise.
    """
    if dataset.x.dim() != 4:
        raise DataError(f"rotations need images [n, C, H, W], got shape {tuple(dataset.x.shape)}")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    names: list[str] = []
    groups: list[str] = []
    for r, turns in enumerate(quarter_turns):
        xs.append(torch.rot90(dataset.x, k=turns, dims=(2, 3)))
        ys.append(dataset.y + r * dataset.n_classes)
        names.extend(f"{name}@rot{90 * turns}" for name in dataset.classes)
        if dataset.groups is not None:
            groups.extend(dataset.groups)
    return Dataset(
        name=dataset.name,
        split=dataset.split,
        x=torch.cat(xs),
        y=torch.cat(ys),
        classes=tuple(names),
        groups=tuple(groups) if dataset.groups is not None else None,
        info=dict(dataset.info),
    )


def with_rotated_images(
    view: UnlabeledView, quarter_turns: tuple[int, ...] = (0, 1, 2, 3)
) -> UnlabeledView:
    """The unlabeled images of ``view`` followed by their copies turned each multiple of 90° in
    ``quarter_turns`` (counter-clockwise), ``[len(quarter_turns) * n, C, H, W]``: the label-free
    counterpart of :func:`with_rotations` (a run without labels reads only the images; CACTUs
    then clusters the rotated copies like the others). ``view.x`` must be images."""
    if view.x.dim() != 4:
        raise DataError(f"rotations need images [n, C, H, W], got shape {tuple(view.x.shape)}")
    turned = torch.cat([torch.rot90(view.x, k=turns, dims=(2, 3)) for turns in quarter_turns])
    return view.with_examples(turned)
