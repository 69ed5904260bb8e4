"""Bring grey images to a checkpoint's input convention: value range, ink polarity, framing.

A network trained on MNIST has only seen bright ink on a black background, values in
``[0, 1]``, each digit scaled so that its bounding box fits a 20x20 box and placed so that its
centre of mass is the centre of the 28x28 image (LeCun et al., "Gradient-based learning
applied to document recognition", 1998, the construction of MNIST). Images from elsewhere -
scanned dark ink on white paper, digits that fill the frame, small 8x8 digits - differ in
exactly those ways, and the network's embedding suffers more from it than pixel k-means does.
:class:`InputConvention` records a checkpoint's convention (in its JSON card, key ``"input"``)
and :func:`plan_normalization` decides, from the images alone, which steps bring them to it:

1. **range**: ``uint8`` values divided by 255; other values outside ``[0, 1]`` rescaled from
   their minimum and maximum to ``[0, 1]``;
2. **polarity**: when the convention's ink is bright and the images' border pixels are mostly
   light (median above 0.5), the images are inverted; a grey background level left after that
   is subtracted;
3. **framing** (only for conventions with a box): each image is cropped to its ink's bounding
   box, resized (aspect kept) so that its longer side fills the box, and pasted into an image
   of the convention's size with its centre of mass in the middle. Images already framed so
   (their size, the median ink box within 2 pixels of the box, the centre of mass within 1.5
   pixels of the middle) are left as they are.

:class:`Normalization` holds the decisions (so ``predict`` repeats exactly what ``fit`` did)
and :attr:`Normalization.steps` says what was done, in words.

Shapes: images ``[n, H, W]`` (grey; the caller removes a channel axis); the result is
``float64 [n, H', W']`` with ``(H', W')`` the convention's size when it re-frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metaunsup.errors import DataError

__all__ = ["InputConvention", "Normalization", "plan_normalization"]

#: Fraction of an image's largest value above which a pixel counts as ink for its bounding box.
_INK = 0.2


@dataclass(frozen=True)
class InputConvention:
    """What a checkpoint's network was trained on.

    Attributes
    ----------
    ink:
        ``"bright"`` (light strokes on a dark background, as MNIST and Omniglot are stored
        here) or ``"dark"``.
    value_range:
        ``(low, high)`` of the pixel values.
    size:
        ``(H, W)`` of the images, or ``None`` when unknown.
    box:
        ``(h, w)`` the ink's bounding box was scaled to fit (MNIST: ``(20, 20)``), or ``None``:
        the images were not framed so, and are not re-framed.
    """

    ink: str = "bright"
    value_range: tuple[float, float] = (0.0, 1.0)
    size: tuple[int, int] | None = None
    box: tuple[int, int] | None = None

    @classmethod
    def from_card(
        cls, card: Mapping[str, Any] | None, input_shape: tuple[int, ...] | None = None
    ) -> InputConvention:
        """The convention in ``card["input"]``; cards without one (written before it existed)
        get the defaults - bright ink, ``[0, 1]``, not re-framed - and ``input_shape``'s size."""
        spec = dict((card or {}).get("input") or {})
        size = spec.get("size") or (list(input_shape[-2:]) if input_shape else None)
        box = spec.get("box")
        ink = spec.get("ink", "bright")
        if ink not in ("bright", "dark"):
            raise DataError(f"input convention: ink must be 'bright' or 'dark', got {ink!r}")
        low, high = spec.get("value_range", (0.0, 1.0))
        return cls(
            ink=ink,
            value_range=(float(low), float(high)),
            size=(int(size[0]), int(size[1])) if size else None,
            box=(int(box[0]), int(box[1])) if box else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ink": self.ink,
            "value_range": list(self.value_range),
            "size": list(self.size) if self.size else None,
            "box": list(self.box) if self.box else None,
        }


@dataclass
class Normalization:
    """The decided steps; :meth:`apply` repeats them on any images of the fitted kind."""

    convention: InputConvention
    low: float = 0.0
    high: float = 1.0
    invert: bool = False
    background: float = 0.0
    reframe: bool = False
    steps: list[str] = field(default_factory=list)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """``float64 [n, H', W']`` of ``images`` ``[n, H, W]``."""
        x = (np.asarray(images, dtype=np.float64) - self.low) / (self.high - self.low)
        if self.invert:
            x = 1.0 - x
        if self.background > 0:
            x = np.clip((x - self.background) / (1.0 - self.background), 0.0, 1.0)
        if self.convention.ink == "dark":
            x = 1.0 - x  # the steps above work with bright ink
        if self.reframe:
            assert self.convention.size is not None and self.convention.box is not None
            x = np.stack([_frame(im, self.convention.size, self.convention.box) for im in x])
        low, high = self.convention.value_range
        return x * (high - low) + low


def _ink_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (exclusive ends) of the pixels above 20% of the image's
    largest value, or ``None`` for a blank image."""
    peak = image.max()
    if peak <= 0:
        return None
    rows = np.flatnonzero((image > _INK * peak).any(1))
    cols = np.flatnonzero((image > _INK * peak).any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    if total <= 0:
        return (image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2
    r = (image.sum(1) * np.arange(image.shape[0])).sum() / total
    c = (image.sum(0) * np.arange(image.shape[1])).sum() / total
    return float(r), float(c)


def _frame(image: np.ndarray, size: tuple[int, int], box: tuple[int, int]) -> np.ndarray:
    """``image`` ``[H, W]`` (bright ink) cropped to its ink, resized to fit ``box`` (aspect
    kept), in a ``size`` image with its centre of mass in the middle (as MNIST was made)."""
    bounds = _ink_box(image)
    out = np.zeros(size)
    if bounds is None:
        return out
    top, bottom, left, right = bounds
    crop = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right]))
    scale = min(box[0] / crop.shape[0], box[1] / crop.shape[1])
    shape = (max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale)))
    resized = torch.nn.functional.interpolate(
        crop[None, None], size=shape, mode="bilinear", align_corners=False, antialias=scale < 1
    )[0, 0].clamp(0.0, None)
    piece = resized.numpy()
    r, c = _centre_of_mass(piece)
    top = int(np.clip(round((size[0] - 1) / 2 - r), 0, size[0] - shape[0]))
    left = int(np.clip(round((size[1] - 1) / 2 - c), 0, size[1] - shape[1]))
    out[top : top + shape[0], left : left + shape[1]] = piece
    return out


def _is_framed(images: np.ndarray, size: tuple[int, int], box: tuple[int, int]) -> bool:
    """Whether ``images`` ``[n, H, W]`` already look framed like the convention."""
    if tuple(images.shape[1:]) != size:
        return False
    sample = images[:: max(1, len(images) // 500)]
    sides, offsets = [], []
    middle = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    for im in sample:
        bounds = _ink_box(im)
        if bounds is None:
            continue
        sides.append(max(bounds[1] - bounds[0], bounds[3] - bounds[2]))
        offsets.append(float(np.abs(np.array(_centre_of_mass(im)) - middle).max()))
    if not sides:
        return True
    return abs(float(np.median(sides)) - max(box)) <= 2 and float(np.median(offsets)) <= 1.5


def _border(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], axis=1)


def plan_normalization(
    images: np.ndarray, convention: InputConvention, uint8: bool = False
) -> Normalization:
    """Decide, from ``images`` ``[n, H, W]``, the steps that bring them to ``convention``;
    ``uint8``: the values are 0..255 bytes."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] == 0:
        raise DataError(f"input normalisation needs grey images [n, H, W], got {x.shape}")
    plan = Normalization(convention)
    low, high = float(x.min()), float(x.max())
    if uint8:
        plan.high = 255.0
        plan.steps.append("values divided by 255 (uint8)")
    elif low < 0 or high > 1:
        if high <= low:
            raise DataError("input normalisation: every pixel has the same value")
        plan.low, plan.high = low, high
        plan.steps.append(f"values rescaled from [{low:g}, {high:g}] to [0, 1]")
    unit = (x - plan.low) / (plan.high - plan.low)
    border = float(np.median(_border(unit)))
    if border > 0.5:
        plan.invert = True
        unit = 1.0 - unit
        border = 1.0 - border
        plan.steps.append(f"inverted: light background (border median {1 - border:.2f})")
    if border > 0.02:
        plan.background = border
        unit = np.clip((unit - border) / (1 - border), 0.0, 1.0)
        plan.steps.append(f"background level {border:.2f} subtracted")
    size, box = convention.size, convention.box
    if box is not None and size is not None and not _is_framed(unit, size, box):
        plan.reframe = True
        plan.steps.append(
            f"re-framed: ink cropped to its bounding box, resized into {box[0]}x{box[1]}, "
            f"centred by mass in {size[0]}x{size[1]}"
        )
    if convention.ink == "dark":
        plan.steps.append("inverted to dark ink, as the checkpoint expects")
    if not plan.steps:
        plan.steps.append("already in the checkpoint's convention: unchanged")
    return plan
