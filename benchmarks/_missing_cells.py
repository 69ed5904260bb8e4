"""Cells removed from a table the same way in every benchmark that measures missing cells.

``mcar10`` / ``mcar30``: each cell removed at random with probability 0.10 / 0.30 (missing
completely at random); ``mnar``: a cell in the top 40% of its column removed with probability
1/2 (about 20% of the cells, mostly high ones: missingness that depends on the value). No row
loses all its cells (one is put back at random). One mask per seed.

Imported by the scripts in this folder as ``from _missing_cells import remove_cells``.
"""

from __future__ import annotations

import numpy as np

#: The kinds of removal, in the order the pages list them.
KINDS = ("mcar10", "mcar30", "mnar")


def remove_cells(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """``x`` ``[n, d]`` as ``float64`` with cells removed (NaN) as ``kind`` says (see the
    module docstring), seeded by ``seed``."""
    rng = np.random.default_rng(1000 + seed)
    if kind.startswith("mcar"):
        drop = rng.random(x.shape) < int(kind[4:]) / 100
    else:
        high = x >= np.quantile(x, 0.6, axis=0, keepdims=True)
        drop = high & (rng.random(x.shape) < 0.5)
    out = x.astype(np.float64, copy=True)
    out[drop] = np.nan
    for i in np.flatnonzero(np.isnan(out).all(1)):
        j = rng.integers(x.shape[1])
        out[i, j] = x[i, j]
    return out
