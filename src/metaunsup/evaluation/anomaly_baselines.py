"""Classical one-class baselines, fitted on each task's normal support alone.

* PyOD's detectors (Zhao, Nasrullah & Li, JMLR 2019): ``iforest`` (Isolation Forest), ``knn``,
  ``lof``, ``ocsvm``, ``ecod``, ``copod``, ``hbos``, ``pca`` and ``deepsvdd`` (Ruff et al.
  2018), each on the raw features (images flattened) and, as ``pca95-<name>``, on the support's
  own principal components keeping 95% of its variance (as Frikha et al. 2021 preprocess their
  classical baselines). Their flags are PyOD's own: ``predict`` with ``contamination = fpr``
  (the threshold is the ``1 − fpr`` quantile of the support's in-sample scores), which is what
  a PyOD user gets. PyOD is the optional extra ``metaunsup[anomaly]``.
* ``mahalanobis`` / ``pca95-mahalanobis``: the squared Mahalanobis distance to the support's
  mean under its Ledoit–Wolf shrunk covariance (a Gaussian density score; scikit-learn's
  ``LedoitWolf``, which stays well-posed for ``K`` far below the dimension), flagged by
  conformal p-values from the support (:mod:`metaunsup.evaluation.calibration`).
* ``centroid``: the squared distance to the support's mean in pixel space (the score of
  Meta-SVDD without a learned embedding), flagged the same way.

Settings changed from PyOD's defaults only where tiny supports break them: ``knn`` and ``lof``
use at most ``K − 1`` neighbours, PyOD's ``pca`` does not standardise (most pixels are constant
on a handful of images). Fits run one task at a time with the task's seed.

Every method returns ``float64 [B, q, 2]``: the anomaly score (higher = more anomalous) and
the flag (1 = anomaly) of each query example.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metaunsup.errors import ConfigError
from metaunsup.evaluation.calibration import (
    Scorer,
    calibrated_pvalues,
    check_fpr,
    conformal_reaches,
)
from metaunsup.tasks.batch import TaskBatch

__all__ = [
    "ANOMALY_BASELINES",
    "PYOD_DETECTORS",
    "PyODMethod",
    "SupportScorerMethod",
    "anomaly_baseline",
    "require_pyod",
]

#: Detector name → ``(module, class)`` in PyOD.
PYOD_DETECTORS: dict[str, tuple[str, str]] = {
    "iforest": ("pyod.models.iforest", "IForest"),
    "knn": ("pyod.models.knn", "KNN"),
    "lof": ("pyod.models.lof", "LOF"),
    "ocsvm": ("pyod.models.ocsvm", "OCSVM"),
    "ecod": ("pyod.models.ecod", "ECOD"),
    "copod": ("pyod.models.copod", "COPOD"),
    "hbos": ("pyod.models.hbos", "HBOS"),
    "pca": ("pyod.models.pca", "PCA"),
    "deepsvdd": ("pyod.models.deep_svdd", "DeepSVDD"),
}

#: Variance kept by the ``pca95-`` feature maps.
PCA_VARIANCE = 0.95


def require_pyod() -> None:
    """Raise a one-line :class:`ConfigError` when PyOD cannot be imported."""
    try:
        import pyod  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the PyOD baselines need PyOD, which is not installed; install it with "
            "pip install 'metaunsup[anomaly]'"
        ) from None


def _features(batch: TaskBatch) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ``float64`` support ``[B, K, d]`` and query ``[B, q, d]``."""
    s = batch.support_x.reshape(batch.n_tasks, batch.support_x.shape[1], -1)
    q = batch.query_x.reshape(batch.n_tasks, batch.query_x.shape[1], -1)
    return s.to(torch.float64).numpy(), q.to(torch.float64).numpy()


def pca95(support: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets on the principal components of ``support`` ``[K, d]`` keeping 95% of its
    variance (fitted on the support only)."""
    from sklearn.decomposition import PCA

    pca = PCA(PCA_VARIANCE, svd_solver="full").fit(support)
    return pca.transform(support), pca.transform(query)


def _detector(name: str, k: int, d: int, seed: int, fpr: float) -> Any:
    import importlib

    module, cls = PYOD_DETECTORS[name]
    kwargs: dict[str, Any] = {"contamination": fpr}
    if name in ("knn", "lof"):
        kwargs["n_neighbors"] = min(5 if name == "knn" else 20, k - 1)
    elif name == "iforest":
        kwargs["random_state"] = seed
    elif name == "pca":
        kwargs["standardization"] = False
    elif name == "deepsvdd":
        kwargs.update(n_features=d, verbose=0, random_state=seed)
    return getattr(importlib.import_module(module), cls)(**kwargs)


@dataclass(frozen=True)
class PyODMethod:
    """A PyOD detector fitted on each task's support; flags by PyOD's ``predict``."""

    name: str
    detector: str
    pca: bool = False
    fpr: float = 0.05

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        """``float64 [B, q, 2]``: PyOD's ``decision_function`` and ``predict`` per query."""
        support, query = _features(batch)
        out = np.empty((*query.shape[:2], 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in range(batch.n_tasks):
                s, q = pca95(support[b], query[b]) if self.pca else (support[b], query[b])
                det = _detector(self.detector, s.shape[0], s.shape[1], seed + b, self.fpr)
                det.fit(s)
                out[b, :, 0] = det.decision_function(q)
                out[b, :, 1] = det.predict(q)
        return torch.from_numpy(np.nan_to_num(out, nan=0.0, posinf=1e300, neginf=-1e300))


def mahalanobis_scores(support: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances ``[q]`` of ``query`` ``[q, d]`` to the mean of
    ``support`` ``[K, d]`` under its Ledoit–Wolf shrunk covariance."""
    from sklearn.covariance import LedoitWolf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LedoitWolf(assume_centered=False).fit(support)
    return model.mahalanobis(query)


def _numpy_scorer(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], pca: bool) -> Scorer:
    """A batched scorer ``(support [B, K, ...], query [B, q, ...]) -> [B, q]`` from a per-task
    ``fn(support [K, d], query [q, d]) -> [q]`` (on the support's PCA(0.95) with ``pca``)."""

    def score(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        s = support.reshape(*support.shape[:2], -1).to(torch.float64).numpy()
        q = query.reshape(*query.shape[:2], -1).to(torch.float64).numpy()
        out = np.empty(q.shape[:2])
        for b in range(s.shape[0]):
            sb, qb = pca95(s[b], q[b]) if pca and s.shape[1] > 1 else (s[b], q[b])
            out[b] = fn(sb, qb)
        return torch.from_numpy(out)

    return score


def centroid_scores(support: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Squared distances ``[q]`` to the mean of ``support`` ``[K, d]``."""
    return ((query - support.mean(0)) ** 2).sum(1)


@dataclass(frozen=True)
class SupportScorerMethod:
    """A score computed from the support alone, flagged by calibrated p-values."""

    name: str
    scorer: Scorer
    fpr: float = 0.05
    calibration: str = "conformal"

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        """``float64 [B, q, 2]``: scores and flags at ``fpr``."""
        scores = self.scorer(batch.support_x, batch.query_x).to(torch.float64)
        k = int(batch.support_x.shape[1])
        if self.calibration == "conformal" and not conformal_reaches(k, self.fpr):
            # every conformal p-value is at least 1/(K+1) > fpr: nothing is flagged (exactly
            # what the leave-one-out scores would give, without computing them)
            return torch.stack([scores, torch.zeros_like(scores)], -1)
        p, _ = calibrated_pvalues(
            self.scorer, batch.support_x, scores, fpr=self.fpr, calibration=self.calibration
        )
        return torch.stack([scores, (p <= self.fpr).to(torch.float64)], -1)


def _own(name: str, fpr: float) -> SupportScorerMethod:
    pca = name.startswith("pca95-")
    base = name.removeprefix("pca95-")
    fn = mahalanobis_scores if base == "mahalanobis" else centroid_scores
    return SupportScorerMethod(name, _numpy_scorer(fn, pca), fpr)


#: Every anomaly baseline's name and what it is.
ANOMALY_BASELINES: dict[str, str] = {
    "centroid": "squared distance to the support's mean, pixels",
    "mahalanobis": "Mahalanobis distance, Ledoit-Wolf covariance of the support",
    "pca95-mahalanobis": "Mahalanobis distance on the support's PCA(0.95)",
    **{name: f"PyOD {cls}, raw features" for name, (_, cls) in PYOD_DETECTORS.items()},
    **{f"pca95-{name}": f"PyOD {cls} on PCA(0.95)" for name, (_, cls) in PYOD_DETECTORS.items()},
}


def anomaly_baseline(name: str, fpr: float = 0.05) -> PyODMethod | SupportScorerMethod:
    """The baseline called ``name`` (see :data:`ANOMALY_BASELINES`), flagging at ``fpr``."""
    fpr = check_fpr(fpr)
    if name not in ANOMALY_BASELINES:
        raise ConfigError(
            f"unknown method {name!r} for anomaly tasks; choose from: "
            f"{', '.join(ANOMALY_BASELINES)}"
        )
    base = name.removeprefix("pca95-")
    if base in PYOD_DETECTORS:
        require_pyod()
        if fpr > 0.5:
            raise ConfigError(f"PyOD's contamination must be <= 0.5, got fpr={fpr}")
        return PyODMethod(name, base, pca=name.startswith("pca95-"), fpr=fpr)
    return _own(name, fpr)
