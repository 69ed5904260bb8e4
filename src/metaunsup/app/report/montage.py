"""A montage of clustered images: one row per cluster, drawn with Pillow (no matplotlib).

Each row starts with a label (``cluster 3 (n=180)``) followed by up to ``per_cluster``
examples of that cluster, taken evenly through the cluster's members in their input order.
Small images are enlarged by an integer factor (nearest neighbour, so pixels stay sharp) to at
least ``min_size`` pixels. Images are shown as they are: ``uint8`` intensities directly, float
images rescaled from their overall range to 0..255.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metaunsup.errors import DataError
from metaunsup.fileio import atomic_write_bytes

__all__ = ["image_strips_png", "montage_image", "save_montage"]

_LABEL_WIDTH = 130
_GAP = 4


def _as_uint8(images: np.ndarray) -> np.ndarray:
    """``[n, H, W]`` or ``[n, H, W, 3]`` ``uint8`` from ``[n, C, H, W]`` (C = 1 or 3)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"a montage needs images [n, 1 or 3, H, W], got shape {images.shape}")
    if images.dtype != np.uint8:
        lo, hi = float(images.min()), float(images.max())
        span = hi - lo if hi > lo else 1.0
        images = ((images - lo) / span * 255.0).round().astype(np.uint8)
    if images.shape[1] == 1:
        return images[:, 0]
    return images.transpose(0, 2, 3, 1)


def montage_image(
    images: np.ndarray, labels: np.ndarray, per_cluster: int = 12, min_size: int = 32
):
    """A ``PIL.Image`` with one row per cluster of ``images`` ``[n, C, H, W]``.

    ``labels`` ``int [n]`` are the clusters ``0..k-1``; empty clusters get an empty row.
    """
    from PIL import Image, ImageDraw

    pixels = _as_uint8(np.asarray(images))
    labels = np.asarray(labels)
    if labels.shape != (pixels.shape[0],):
        raise DataError(f"{labels.shape[0]} labels for {pixels.shape[0]} images")
    cell_h, cell_w = _cell(pixels, min_size)
    k = int(labels.max()) + 1 if labels.size else 0
    width = _LABEL_WIDTH + per_cluster * (cell_w + _GAP) + _GAP
    height = max(1, k) * (cell_h + _GAP) + _GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        top = _GAP + c * (cell_h + _GAP)
        draw.text((_GAP, top + cell_h // 2 - 6), f"cluster {c} (n={members.size})", fill="black")
        if members.size == 0:
            continue
        at = np.linspace(0, members.size - 1, min(per_cluster, members.size)).round().astype(int)
        picks = members[at]
        for j, i in enumerate(picks):
            canvas.paste(
                _tile(pixels[i], cell_w, cell_h), (_LABEL_WIDTH + j * (cell_w + _GAP), top)
            )
    return canvas


def _cell(pixels: np.ndarray, min_size: int) -> tuple[int, int]:
    """``(height, width)`` of one shown image: enlarged by an integer factor to ``min_size``."""
    h, w = pixels.shape[1:3]
    zoom = max(1, -(-min_size // max(h, w)))
    return h * zoom, w * zoom


def _tile(image: np.ndarray, width: int, height: int):
    """One ``uint8`` image ``[H, W]`` or ``[H, W, 3]`` as an RGB ``PIL.Image`` of that size."""
    from PIL import Image

    return Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST).convert("RGB")


def image_strips_png(
    images: np.ndarray, groups: Sequence[Sequence[int]], min_size: int = 32
) -> list[bytes]:
    """PNG bytes per group: the images of ``images`` ``[n, C, H, W]`` at the group's positions,
    side by side in one row in the group's order (a report's per-cluster gallery). Float images
    are rescaled from the range of all ``images``, so that every strip shows the same scale."""
    from PIL import Image

    pixels = _as_uint8(np.asarray(images))
    cell_h, cell_w = _cell(pixels, min_size)
    strips = []
    for group in groups:
        width = max(1, len(group)) * (cell_w + _GAP) + _GAP
        canvas = Image.new("RGB", (width, cell_h + 2 * _GAP), "white")
        for j, i in enumerate(group):
            canvas.paste(_tile(pixels[i], cell_w, cell_h), (_GAP + j * (cell_w + _GAP), _GAP))
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG")
        strips.append(buffer.getvalue())
    return strips


def save_montage(
    path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, per_cluster: int = 12
) -> Path:
    """Draw :func:`montage_image` and write it as PNG to ``path``, atomically."""
    buffer = io.BytesIO()
    montage_image(images, labels, per_cluster).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
