"""An anomaly gallery: the most anomalous images next to the most typical ones (Pillow only).

Two rows: ``most anomalous`` (highest scores first, flagged ones outlined in red) and
``most typical`` (lowest scores first), ``per_row`` images each, enlarged like the cluster
montage (:mod:`metaunsup.app.report.montage`).
"""

from __future__ import annotations

import numpy as np

from metaunsup.app.report.montage import _as_uint8, _cell, _tile
from metaunsup.errors import DataError

__all__ = ["gallery_image"]

_LABEL_WIDTH = 130
_GAP = 4


def gallery_image(
    images: np.ndarray, scores: np.ndarray, flags: np.ndarray, per_row: int = 12, min_size: int = 32
):
    """A ``PIL.Image`` of ``images`` ``[n, C, H, W]`` ranked by ``scores`` ``[n]`` (higher =
    more anomalous); ``flags`` ``bool [n]`` marks the ones past the threshold."""
    from PIL import Image, ImageDraw

    pixels = _as_uint8(np.asarray(images))
    scores, flags = np.asarray(scores, dtype=np.float64), np.asarray(flags, dtype=bool)
    if scores.shape != (pixels.shape[0],) or flags.shape != scores.shape:
        raise DataError(f"{scores.shape[0]} scores for {pixels.shape[0]} images")
    order = np.argsort(-scores, kind="stable")
    rows = [("most anomalous", order[:per_row]), ("most typical", order[::-1][:per_row])]
    cell_h, cell_w = _cell(pixels, min_size)
    width = _LABEL_WIDTH + per_row * (cell_w + _GAP) + _GAP
    canvas = Image.new("RGB", (width, 2 * (cell_h + 2 * _GAP) + _GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (title, picks) in enumerate(rows):
        top = _GAP + r * (cell_h + 2 * _GAP)
        draw.text((_GAP, top + cell_h // 2 - 6), title, fill="black")
        for j, i in enumerate(picks):
            left = _LABEL_WIDTH + j * (cell_w + _GAP)
            canvas.paste(_tile(pixels[i], cell_w, cell_h), (left, top))
            if flags[i]:
                draw.rectangle((left - 2, top - 2, left + cell_w + 1, top + cell_h + 1),
                               outline="red", width=2)  # fmt: skip
    return canvas
