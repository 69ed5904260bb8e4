"""Missing cells (NaN) in the estimators' input: taken natively, or imputed on request.

The default (``impute=None``, "native") keeps NaN in the data: the self-trained network is a
:class:`~metaunsup.nets.MaskedMLP`, which reads only the observed cells and the observed-cell
mask. Its pseudo-labels come from neighbourhood graphs of the rows with their missing cells
filled from their nearest rows, found by distances over the features both rows observe
(:func:`metaunsup.estimators.self_train.filled`), so the pseudo-partitions see whole rows.

``impute="simple"`` (column means), ``"knn"`` (mean of the 5 nearest rows, over observed
features) or ``"iterative"`` (each feature regressed on the others, round-robin) instead fill
the cells of every input first, with scikit-learn's ``SimpleImputer``, ``KNNImputer`` or
``IterativeImputer`` fitted on the training data.

The label-free guard (:mod:`metaunsup.estimators.guard`) needs features to weigh the network
against and to fall back on; with missing cells those are the scaled features with each missing
cell filled the same kNN way (:class:`FilledFeatures`), so a table with gaps is guarded as a
complete one is, and where the features win it is clustered as kNN imputation + k-means would.

``benchmarks/tables_vs_tools.py --missing`` measures the native path against imputation.

:func:`check_missing` refuses what neither can use: a row or a column with no observed value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
import torch

from metaunsup._validation import check_choice
from metaunsup.cluster.graph import observed_sqdist
from metaunsup.errors import DataError

__all__ = [
    "ALLOW_NAN",
    "FILL_DONORS",
    "IMPUTERS",
    "FilledFeatures",
    "MissingCells",
    "check_missing",
    "make_imputer",
]

#: Keyword of scikit-learn's ``check_array``/``validate_data`` that lets NaN through (its name
#: changed in scikit-learn 1.6).
ALLOW_NAN: dict[str, Any] = (
    {"ensure_all_finite": "allow-nan"}
    if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 6)
    else {"force_all_finite": "allow-nan"}
)

#: Values of ``impute=``: ``None`` keeps missing cells (native), else the imputer's name.
IMPUTERS = ("simple", "knn", "iterative")
#: Most rows :class:`FilledFeatures` fills from (a seeded sample on larger tables), as many as
#: the self-training's neighbourhood graphs take.
FILL_DONORS = 10_000


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


class MissingCells:
    """An estimator's way with missing cells: ``impute=None`` keeps them (native), else the
    named imputer, fitted on the training data by :meth:`fit` and applied by :meth:`apply`.

    ``native_ok`` says whether the model can take NaN (a self-trained masked network can; a
    checkpoint's network cannot, so with one a user must choose an imputer)."""

    def __init__(self, impute: str | None, seed: int) -> None:
        if impute is not None:
            check_choice("impute", impute, IMPUTERS)
        self.impute, self.seed = impute, seed
        self.imputer: Any = None
        self.fitted_with_missing = False

    def fit(self, x: np.ndarray, native_ok: bool) -> np.ndarray:
        """Check ``x`` ``[n, ...]`` and return what the model should see (imputed or not)."""
        self.fitted_with_missing = check_missing(x)
        if self.impute is not None:
            flat = x.reshape(len(x), -1)
            self.imputer = make_imputer(self.impute, self.seed).fit(flat)
            return self.apply(x)
        if self.fitted_with_missing and not native_ok:
            raise DataError(
                "X has missing values (NaN), which a checkpoint's network cannot take; pass "
                "impute='knn' (or 'simple', 'iterative'; on the command line --impute knn), or "
                "cluster without a checkpoint (self-training takes them natively)"
            )
        return x

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the fitted model takes it (imputed when an imputer was fitted)."""
        if self.imputer is not None:
            if check_missing(x):
                flat = self.imputer.transform(x.reshape(len(x), -1)).astype(x.dtype)
                return flat.reshape(x.shape)
            return x
        if check_missing(x) and not self.fitted_with_missing:
            raise DataError(
                "X has missing values (NaN), but the model was fitted on complete data; fit it "
                "on data with missing cells, or pass impute='knn' (or 'simple', 'iterative')"
            )
        return x


class FilledFeatures:
    """Scaled features with their missing cells filled from the nearest rows.

    Fitted on ``scaled`` ``[n, d]`` (NaN: missing), with at most ``donors`` of its rows
    (:data:`FILL_DONORS` by default; a seeded sample of larger tables) as the donors. Each
    missing cell of a row becomes the mean of its feature over the row's 5 nearest donors that
    observe it, by Euclidean distances over the features both observe scaled up to all of them
    (the rule of scikit-learn's ``KNNImputer(5)``, whose results it gives but for which of
    equally near donors it takes; a row that shares no feature with any donor observing the
    feature takes the donors' mean of it). ``rows`` ``float64 [m, d]`` are the donors filled
    (all of ``scaled`` when it has no more rows than ``donors``): what the guard scores, and
    how the self-training's graphs fill their rows
    (:func:`metaunsup.estimators.self_train.filled`). :meth:`fill` fills any rows of the same
    columns, in chunks on the torch backend (millions of rows: what is clustered when the guard
    falls back to the features)."""

    def __init__(self, scaled: np.ndarray, seed: int, donors: int | None = None) -> None:
        flat = np.asarray(scaled, dtype=np.float64)
        most = FILL_DONORS if donors is None else donors
        if len(flat) > most:
            rng = np.random.default_rng(seed)
            flat = flat[np.sort(rng.choice(len(flat), most, replace=False))]
        self.donors = torch.from_numpy(np.ascontiguousarray(flat))
        observed = ~torch.isnan(self.donors)
        total = torch.nan_to_num(self.donors, nan=0.0).sum(0)
        self.means = total / observed.sum(0).clamp_min(1)  # 0 for a feature no donor has
        self.rows: np.ndarray = self.fill(flat)

    def fill(self, scaled: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """``scaled`` ``[n, d]`` with its missing cells filled (``float64``; a copy)."""
        out = np.array(scaled, dtype=np.float64)
        gaps = np.flatnonzero(np.isnan(out).any(1))
        for start in range(0, len(gaps), chunk):
            rows = gaps[start : start + chunk]
            out[rows] = self._fill_rows(torch.from_numpy(out[rows])).numpy()
        return out

    def _fill_rows(self, x: torch.Tensor, neighbors: int = 5, candidates: int = 32) -> torch.Tensor:
        """``x`` ``float64 [r, d]`` filled (see the class docstring).

        Each row's ``candidates`` nearest donors are found once; a missing cell takes the first
        ``neighbors`` of them that observe its feature. Where fewer do and farther donors could
        (some donor beyond the candidates is at a finite distance), the cell is filled from all
        donors that observe the feature (:meth:`_fill_exact`)."""
        dist = observed_sqdist(x, self.donors)  # [r, m], inf where no feature is shared
        near, idx = dist.topk(min(candidates, dist.shape[1]), largest=False)  # ascending
        seen = ~torch.isnan(self.donors[idx]) & torch.isfinite(near)[:, :, None]  # [r, C, d]
        take = seen & (seen.cumsum(1) <= neighbors)
        values = torch.nan_to_num(self.donors[idx], nan=0.0)
        count = take.sum(1)  # [r, d]
        mean = (values * take).sum(1) / count.clamp_min(1)
        mean = torch.where(count > 0, mean, self.means)
        gaps = torch.isnan(x)
        filled = torch.where(gaps, mean, x)
        beyond = idx.shape[1] < dist.shape[1] and bool(torch.isfinite(near[:, -1]).any())
        if beyond:  # too few candidates observe a feature: that cell from all its donors
            short = gaps & (count < neighbors) & torch.isfinite(near[:, -1:])
            for j in torch.nonzero(short.any(0)).flatten().tolist():
                rows = torch.nonzero(short[:, j]).flatten()
                filled[rows, j] = self._fill_exact(dist[rows], j, neighbors)
        return filled

    def _fill_exact(self, dist: torch.Tensor, j: int, neighbors: int) -> torch.Tensor:
        """Feature ``j`` of rows whose distances to the donors are ``dist`` ``[r, m]``: the
        mean over the nearest ``neighbors`` donors observing it (those at a finite distance),
        else the donors' mean of it."""
        has = torch.nonzero(~torch.isnan(self.donors[:, j])).flatten()
        if len(has) == 0:
            return self.means[j].expand(len(dist))
        near, idx = dist[:, has].topk(min(neighbors, len(has)), largest=False)
        valid = torch.isfinite(near)
        count = valid.sum(1)
        mean = torch.where(valid, self.donors[has[idx], j], 0.0).sum(1) / count.clamp_min(1)
        return torch.where(count > 0, mean, self.means[j])
