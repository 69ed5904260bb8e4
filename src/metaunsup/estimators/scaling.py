"""How :class:`~metaunsup.MetaKMeans` scales a table before self-training on it.

A table's columns may be measured in different units (wine: proline in the hundreds, hue near
1). Distances, neighbourhood graphs and k-means then see only the largest columns, so such
tables are **standardised**: each column centred and divided by its own standard deviation
(columns that never vary are only centred). Columns on one common scale (the pixels of an
image, all 0..16 or 0..255) keep their relative weights instead: they are centred and divided
by one overall spread (**global**), because dividing a nearly constant border pixel by its tiny
standard deviation would turn its rare ink into the loudest feature.

``"auto"`` tells the two apart by the columns' standard deviations: standardised when the
largest is more than :data:`UNIT_RATIO` times the median (of the columns that vary). On
scikit-learn's tables: wine 388, breast cancer 7829 (standardised); iris 2.2, the 8x8 digits
1.5 (global). ``benchmarks/robustness.py`` measures both choices on every table.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from metaunsup.errors import ConfigError

__all__ = ["SCALINGS", "UNIT_RATIO", "TableScaling", "table_scaling"]

#: Named scalings ``input_scale`` can ask for (a positive number is also accepted).
SCALINGS = ("auto", "standard", "global")
#: Largest over median column spread above which ``"auto"`` standardises each column.
UNIT_RATIO = 10.0


@dataclass(frozen=True)
class TableScaling:
    """``(x - offset) / scale`` per column; ``how`` says which rule made it and ``reason`` why.
    Missing cells (NaN) are left out of the statistics and stay missing.

    ``offset`` and ``scale`` are ``float64 [d]`` (``scale`` the same number in every column for
    ``"global"`` and numeric scalings).
    """

    offset: np.ndarray
    scale: np.ndarray
    how: str
    reason: str

    def apply(self, flat: np.ndarray) -> np.ndarray:
        """The scaled table ``[n, d]`` of ``flat`` ``[n, d]``."""
        return (flat - self.offset) / self.scale


def table_scaling(flat: np.ndarray, input_scale: float | str = "auto") -> TableScaling:
    """The scaling of the table ``flat`` ``[n, d]`` that ``input_scale`` asks for.

    ``"standard"``: each column by its own standard deviation; ``"global"``: all columns by
    their overall root-mean-square spread; a positive number: all columns by that number
    (after centring); ``"auto"``: ``"standard"`` when the columns' spreads are more than
    :data:`UNIT_RATIO` apart (largest over median), else ``"global"``.
    """
    flat = np.asarray(flat, dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns: no mean
        offset = np.nan_to_num(np.nanmean(flat, 0))  # NaN cells (missing) are left out
        spread = np.nan_to_num(np.nanstd(flat, 0))
    if not isinstance(input_scale, str):
        value = float(input_scale)
        return TableScaling(offset, np.full_like(spread, value), "number", f"divided by {value:g}")
    if input_scale not in SCALINGS:
        raise ConfigError(f"input_scale must be one of {SCALINGS} or a number, got {input_scale!r}")
    varying = spread[spread > 0]
    ratio = float(varying.max() / np.median(varying)) if varying.size else 1.0
    how = input_scale
    if how == "auto":
        how = "standard" if ratio > UNIT_RATIO else "global"
        why = (
            f"column spreads {ratio:.0f}x apart (largest/median > {UNIT_RATIO:g}): "
            "each column standardised"
            if how == "standard"
            else f"column spreads {ratio:.1f}x apart (<= {UNIT_RATIO:g}): one common scale, "
            "columns centred and divided by their overall spread"
        )
    else:
        why = f"input_scale={how!r}"
    if how == "standard":
        scale = np.where(spread > 0, spread, 1.0)
    else:
        overall = float(np.sqrt((spread**2).mean()))
        scale = np.full_like(spread, overall if overall > 0 else 1.0)
    return TableScaling(offset, scale, how, why)
