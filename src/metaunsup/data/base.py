"""The in-memory :class:`Dataset` every loader returns, and where dataset files are looked for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metaunsup.errors import DataError

#: Environment variable naming the folder that holds the dataset folders (``mnist/``, ...).
DATA_ENV = "METAUNSUP_DATA"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset held in memory.

    Attributes
    ----------
    name, split:
        Where it came from, e.g. ``("mnist", "test")``.
    x:
        Examples. Images are ``[n, C, H, W]``; tables are ``[n, d]``. ``uint8`` tensors hold
        pixel intensities 0..255 (ink bright, background 0); floating tensors are already scaled
        (images to ``[0, 1]``). Use :func:`to_float` to get ``float32`` features either way.
    y:
        ``int64 [n]`` class index of each example, in ``0..len(classes)-1``.
    classes:
        Name of each class.
    groups:
        Optional group of each class (``len(groups) == len(classes)``), e.g. the Omniglot
        alphabet a character belongs to.
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    groups: tuple[str, ...] | None = None
    info: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"dataset {self.name}/{self.split}: {self.x.shape[0]} examples but "
                f"{self.y.shape[0]} labels"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise DataError(f"dataset {self.name}/{self.split}: labels must be int64 [n]")
        if self.groups is not None and len(self.groups) != len(self.classes):
            raise DataError(f"dataset {self.name}/{self.split}: one group per class expected")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)`` or ``(64,)``."""
        return tuple(self.x.shape[1:])

    def class_counts(self) -> torch.Tensor:
        """``int64 [n_classes]``: how many examples each class has."""
        return torch.bincount(self.y, minlength=self.n_classes)

    def subset_classes(self, class_ids: torch.Tensor | list[int], split: str | None = None):
        """A new dataset with only the given classes, relabelled ``0..len(class_ids)-1``."""
        ids = torch.as_tensor(class_ids, dtype=torch.int64)
        remap = torch.full((self.n_classes,), -1, dtype=torch.int64)
        remap[ids] = torch.arange(len(ids))
        keep = remap[self.y] >= 0
        return Dataset(
            name=self.name,
            split=split or self.split,
            x=self.x[keep],
            y=remap[self.y[keep]],
            classes=tuple(self.classes[i] for i in ids.tolist()),
            groups=None if self.groups is None else tuple(self.groups[i] for i in ids.tolist()),
            info=dict(self.info),
        )


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``float32`` features: ``uint8`` intensities divided by 255, floating tensors cast."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def default_cache_dir() -> Path:
    """The per-user data folder used when neither ``root`` nor ``METAUNSUP_DATA`` is given."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metaunsup" / "data"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding dataset folders: ``root``, else ``$METAUNSUP_DATA``, else the cache."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()
