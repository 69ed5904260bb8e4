"""Missing cells (NaN) in the estimators' input: taken natively, or imputed on request.

The default (``impute=None``, "native") keeps NaN in the data: the self-trained network is a
:class:`~metaunsup.nets.MaskedMLP`, which reads the observed-cell mask as an input, and the
pseudo-labels of self-training use distances over the features two rows both observe
(:func:`metaunsup.cluster.graph.observed_sqdist`). ``impute="simple"`` (column means),
``"knn"`` (mean of the 5 nearest rows, over observed features) or ``"iterative"`` (each feature
regressed on the others, round-robin) fill the cells first with scikit-learn's
``SimpleImputer``, ``KNNImputer`` or ``IterativeImputer``, fitted on the training data.

:func:`check_missing` refuses what neither can use: a row or a column with no observed value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metaunsup._validation import check_choice
from metaunsup.errors import DataError

__all__ = ["IMPUTERS", "check_missing", "make_imputer"]

#: Values of ``impute=``: ``None`` keeps missing cells (native), else the imputer's name.
IMPUTERS = ("simple", "knn", "iterative")


def check_missing(x: np.ndarray, source: str = "X") -> bool:
    """Whether ``x`` ``[n, ...]`` holds NaN; raise :class:`DataError` for an example or a
    feature with no observed value (0-based positions, as in the array)."""
    if not np.issubdtype(x.dtype, np.floating):
        return False
    flat = x.reshape(len(x), -1)
    missing = np.isnan(flat)
    if not missing.any():
        return False
    empty_rows = missing.all(1)
    if empty_rows.any():
        i = int(np.argmax(empty_rows))
        raise DataError(
            f"{source}: row {i} (0-based) has no observed value ({int(empty_rows.sum())} such "
            "row(s)); remove it"
        )
    empty_cols = missing.all(0)
    if empty_cols.any():
        j = int(np.argmax(empty_cols))
        raise DataError(
            f"{source}: feature {j} (0-based) has no observed value ({int(empty_cols.sum())} "
            "such feature(s)); remove it"
        )
    return True


def make_imputer(name: str, seed: int) -> Any:
    """A fresh scikit-learn imputer for ``impute=name`` (see the module docstring)."""
    check_choice("impute", name, IMPUTERS)
    if name == "simple":
        from sklearn.impute import SimpleImputer

        return SimpleImputer(strategy="mean", keep_empty_features=True)
    if name == "knn":
        from sklearn.impute import KNNImputer

        return KNNImputer(n_neighbors=5, keep_empty_features=True)
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    return IterativeImputer(random_state=seed, max_iter=10, keep_empty_features=True)
