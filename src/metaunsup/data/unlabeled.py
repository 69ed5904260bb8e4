"""A dataset view with the labels taken away, for the unsupervised meta-training paths.

CACTUs, UMTRA and the embedding learners must never see a label while they meta-train: a label
read by mistake (a class count used to size clusters, ``y`` used to pick "distinct" images)
would make an "unsupervised" result quietly supervised. :class:`UnlabeledView` makes that
mistake loud. It keeps only the examples (and where they came from), and every label-ish
attribute of :class:`~metaunsup.data.Dataset` — ``y``, ``classes``, ``groups``,
``n_classes``, ``class_counts()``, ``subset_classes()`` — raises
:class:`~metaunsup.errors.LabelAccessError`. It holds no reference to the dataset it was made
from, so the labels cannot be reached through it at all.
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch

from metaunsup.data.base import Dataset, to_float
from metaunsup.errors import DataError, LabelAccessError

__all__ = ["UnlabeledView", "as_unlabeled"]

#: Attributes that would reveal labels; reading any of them raises LabelAccessError.
LABEL_ATTRIBUTES = (
    "y",
    "labels",
    "targets",
    "classes",
    "groups",
    "n_classes",
    "class_counts",
    "subset_classes",
)


class UnlabeledView:
    """The examples of a dataset, without its labels.

    Parameters
    ----------
    source:
        A :class:`~metaunsup.data.Dataset` (only its examples, name, split and info are kept),
        another view, or a tensor of examples ``[n, *example_shape]``.
    name, split:
        Override the provenance (defaults: the dataset's, or ``"array"`` / ``"unlabeled"``).

    Attributes
    ----------
    x:
        ``[n, *example_shape]`` the examples, as stored (``uint8`` or floating; see
        :func:`~metaunsup.data.to_float`). Shared with the dataset, not copied.
    name, split, info:
        Where the examples came from.

    Raises
    ------
    LabelAccessError
        On reading ``y``, ``labels``, ``targets``, ``classes``, ``groups``, ``n_classes``,
        ``class_counts`` or ``subset_classes``.

    Example
    -------
    >>> view = UnlabeledView(load("omniglot", "background"))
    >>> view.x.shape, len(view)  # fine
    >>> view.y  # raises LabelAccessError
    """

    __slots__ = ("info", "name", "split", "x")

    def __init__(
        self,
        source: Dataset | UnlabeledView | torch.Tensor,
        name: str | None = None,
        split: str | None = None,
    ) -> None:
        if isinstance(source, Dataset | UnlabeledView):
            x, info = source.x, dict(source.info)
            name = source.name if name is None else name
            split = source.split if split is None else split
        elif isinstance(source, torch.Tensor):
            x, info = source, {}
        else:
            raise DataError(
                "UnlabeledView needs a Dataset, an UnlabeledView or a tensor of examples, "
                f"got {type(source).__name__}"
            )
        if x.dim() < 1 or x.shape[0] == 0:
            raise DataError(f"UnlabeledView needs at least one example, got shape {tuple(x.shape)}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "name", "array" if name is None else str(name))
        object.__setattr__(self, "split", "unlabeled" if split is None else str(split))
        object.__setattr__(self, "info", info)

    def __setattr__(self, key: str, value: Any) -> NoReturn:
        raise AttributeError(f"UnlabeledView is read-only (cannot set {key!r})")

    def __getattr__(self, key: str) -> Any:
        # Only called for attributes not found the normal way: the label-ish ones land here.
        if key in LABEL_ATTRIBUTES:
            raise LabelAccessError(
                f"{key!r} read on an unlabeled view of {self.name}/{self.split}: this code path "
                "must train without labels"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling and copying rebuild through __init__ (the default would call __setattr__).
        return (_rebuild, (self.x, self.name, self.split, self.info))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)`` or ``(64,)``."""
        return tuple(self.x.shape[1:])

    def float_x(self) -> torch.Tensor:
        """``float32 [n, *example_shape]`` (``uint8`` intensities divided by 255)."""
        return to_float(self.x)

    def subset(self, indices: torch.Tensor) -> UnlabeledView:
        """The view of ``x[indices]`` (``int64 [m]`` or a boolean mask ``[n]``)."""
        return _rebuild(self.x[indices], self.name, self.split, self.info)

    def with_examples(self, x: torch.Tensor) -> UnlabeledView:
        """A view of the same data set (name, split, info) over other examples ``x``, e.g.
        transformed copies of these."""
        return _rebuild(x, self.name, self.split, self.info)

    def __repr__(self) -> str:
        return (
            f"UnlabeledView({self.name}/{self.split}, n={len(self)}, "
            f"example_shape={self.example_shape}, dtype={self.x.dtype})"
        )


def as_unlabeled(source: Dataset | UnlabeledView | torch.Tensor) -> UnlabeledView:
    """``source`` as an :class:`UnlabeledView` (a view is returned as it is).

    The unsupervised task sources and embedding learners call this on their input, so they can
    be given a dataset, a view or plain examples, and in every case see no labels.
    """
    if isinstance(source, UnlabeledView):
        return source
    return UnlabeledView(source)


def _rebuild(x: torch.Tensor, name: str, split: str, info: dict[str, str]) -> UnlabeledView:
    view = UnlabeledView(x, name=name, split=split)
    object.__setattr__(view, "info", dict(info))
    return view
