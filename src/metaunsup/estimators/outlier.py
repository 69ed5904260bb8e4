"""``MetaOutlierDetector``: meta-learned one-class scoring behind the scikit-learn outlier
detector interface (like ``IsolationForest``), with PyOD's attributes.

``fit(X)`` takes examples of the normal class (or mostly normal, unlabeled data) as the
*reference*; new examples are scored against it by a meta-learned
:class:`~metaunsup.learners.AnomalyScorer` (``checkpoint="mnist-anomaly"``,
``"omniglot-anomaly"`` or a ``.safetensors`` path) — the few-shot one-class task of
:mod:`metaunsup.evaluation.anomaly` with ``X`` as its support. Without a checkpoint nothing is
meta-learned: the score is the squared distance to the reference's mean after standardising
each feature by the reference's spread (a diagonal-Gaussian score that runs on any table).

**Thresholds without a contamination guess** (:mod:`metaunsup.evaluation.calibration`):
``predict`` flags a sample when its p-value under the normal class is at most ``fpr``
(default 0.05). The normal scores that set it come from ``X`` itself — each example against the
others (leave-one-out) for up to ``loo_max`` examples, else a split: a seeded reference of at
most ``max_support`` examples and the rest scored against it (split conformal, exactly
exchangeable) — or, when ``X`` is too small for any conformal p-value to reach ``fpr``
(``(n + 1)·fpr < 1``), from the checkpoint's scores of pseudo-normal held-out examples measured
after meta-training, rescaled by the spread of ``X`` (see
:class:`~metaunsup.evaluation.calibration.NullTable`). ``contamination=`` (PyOD's parameter)
replaces all that by PyOD's rule: the threshold is the ``1 − contamination`` quantile of the
training scores. ``calibration="boundary"`` replaces it by the checkpoint's meta-learned decision
boundary (OC-MAML's classifier's, Meta-SVDD's radius): the operating point its meta-training
chose on tasks of as many anomalies as normals, which targets no false-alarm rate.

Signs follow scikit-learn: ``score_samples`` is the negated anomaly score (lower = more
abnormal), ``decision_function = score_samples − offset_`` is negative for outliers, ``predict``
returns +1 (inlier) / −1 (outlier). PyOD's ``decision_scores_`` (training scores, higher = more
abnormal), ``threshold_`` and ``labels_`` (1 = outlier) are set too.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from metaunsup._validation import check_choice, check_float, check_int
from metaunsup.errors import CheckpointError, ConfigError, DataError
from metaunsup.estimators.kmeans import check_input, fit_shape
from metaunsup.estimators.missing import MissingCells
from metaunsup.estimators.table_input import TableInput, table_width
from metaunsup.evaluation.anomaly import learner_null_table
from metaunsup.evaluation.calibration import (
    CALIBRATIONS,
    check_fpr,
    conformal_reaches,
    leave_one_out_scores,
    threshold_at,
)
from metaunsup.learners.base import AnomalyScorer, BoundaryScorer, MetaLearner
from metaunsup.learners.tabular import TabularKMeans, check_score_neighbors

__all__ = ["MetaOutlierDetector"]


class MetaOutlierDetector(OutlierMixin, BaseEstimator):
    """Few-shot one-class detection with a meta-learned scorer (see the module docstring).

    Parameters
    ----------
    checkpoint : str, path or None, default=None
        A packaged anomaly model (``"mnist-anomaly"``, ``"omniglot-anomaly"``) or a
        ``.safetensors`` checkpoint of an anomaly learner (Meta-SVDD, OC-MAML, Meta-GMVAE);
        ``None``: the standardised distance to the reference's mean (no meta-learning).
    fpr : float, default=0.05
        Target false-alarm rate of ``predict``, strictly between 0 and 1.
    contamination : float or None, default=None
        PyOD's parameter: when set (in ``(0, 0.5]``), the threshold flags that share of the
        training data instead of targeting ``fpr``.
    calibration : {"auto", "conformal", "meta", "boundary"}, default="auto"
        Where the normal scores behind the threshold come from (see the module docstring);
        ``"boundary"``: no such scores, the threshold is the checkpoint's meta-learned decision
        boundary and ``fpr`` is not targeted (needs a Meta-SVDD or OC-MAML checkpoint).
    max_support : int, default=1000
        Largest reference; bigger ``X`` are split into a seeded reference and calibration set.
    loo_max : int, default=50
        Up to this many examples, every example is calibrated against all the others.
    input_scale : float or "auto", default="auto"
        With a checkpoint, ``X`` is divided by this first (``"auto"``: 255 for ``uint8``, else
        the largest value of ``X`` when above 1, else 1).
    batch_size : int, default=1024
        Query examples scored at once.
    random_state : int, RandomState or None, default=None
        Seeds the reference/calibration split.
    device : str, default="cpu"
        Where the network runs.
    impute : {None, "simple", "knn", "iterative"}, default=None
        Missing cells (NaN): ``None`` takes them natively without a checkpoint (the
        standardised distance over the observed features, scaled by ``d / observed``); else
        scikit-learn's imputer fills them first (needed with a checkpoint). See
        :mod:`metaunsup.estimators.missing`.
    score_neighbors : int, float or None, default=None
        For a checkpoint whose score averages the distances to the nearest reference examples
        (``"tabular"``): how many, a count or a share of the reference, in place of the
        checkpoint's own setting (``None``). The packaged ``tabular`` averages its nearest 10%,
        the better setting on its synthetic prior when the table is scored against itself,
        anomalies included; with a clean reference of normal rows 10 neighbours scored better
        there (``docs/results/README.md``, section G).

    Attributes
    ----------
    decision_scores_ : ndarray of shape (n_samples,)
        Anomaly scores of the training data as new data would be scored (higher = more
        abnormal; in-sample for the reference examples, as in PyOD).
    threshold_ : float
        Scores above it are outliers (``inf`` when nothing can be flagged).
    labels_ : ndarray of shape (n_samples,)
        1 for training examples above the threshold, else 0 (PyOD's convention).
    offset_ : float
        ``-threshold_``: ``decision_function = score_samples - offset_``.
    calibration_ : str
        ``"conformal-loo"``, ``"conformal-split"``, ``"meta"``, ``"contamination"``,
        ``"boundary"`` or ``"none"`` (no way to reach ``fpr``: nothing is flagged, with a
        warning).
    calibration_scores_ : ndarray
        The normal scores the threshold was set from (with ``"boundary"``, the conformal
        scores that :meth:`pvalues` reads).
    n_reference_ : int
        Examples in the reference set.
    learner_ : MetaLearner or None
        The scorer (``None`` without a checkpoint).
    n_features_in_ : int
        Values per example seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> detector = MetaOutlierDetector().fit(rng.normal(size=(200, 3)))
    >>> detector.predict([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    array([ 1, -1])
    """

    learner_: MetaLearner | None

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        fpr: float = 0.05,
        contamination: float | None = None,
        calibration: str = "auto",
        max_support: int = 1000,
        loo_max: int = 50,
        input_scale: float | str = "auto",
        batch_size: int = 1024,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        impute: str | None = None,
        score_neighbors: int | float | None = None,
    ) -> None:
        self.impute = impute
        self.score_neighbors = score_neighbors
        self.checkpoint = checkpoint
        self.fpr = fpr
        self.contamination = contamination
        self.calibration = calibration
        self.max_support = max_support
        self.loo_max = loo_max
        self.input_scale = input_scale
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X: Any, y: Any = None) -> MetaOutlierDetector:
        """Take ``X`` as the normal reference and set the threshold; ``y`` is ignored.

        Raises :class:`~metaunsup.errors.DataError` for fewer than 2 examples, identical
        examples or unusable values, :class:`~metaunsup.errors.ConfigError` for bad parameters
        and :class:`~metaunsup.errors.CheckpointError` for a checkpoint that scores nothing.
        """
        self._check_params()
        uint8 = str(getattr(X, "dtype", "")) in ("uint8", "torch.uint8")
        x = self._check_input(X, reset=True)
        self.missing_ = MissingCells(self.impute, 0)
        tables = self.checkpoint is not None and table_width(self.checkpoint) is not None
        x = self.missing_.fit(x, native_ok=self.checkpoint is None or tables)
        if len(x) < 2:
            raise DataError(
                f"got 1 sample (shape {x.shape}); a normal class needs at least 2 examples "
                "to be scored against and to set a threshold"
            )
        flat = x.reshape(len(x), -1)
        if np.all(flat == flat[0]):
            raise DataError(
                f"all {len(x)} examples are identical; give at least two different normal examples"
            )
        self._set_scorer(x, uint8)
        if self.calibration == "boundary":
            self._check_boundary()
        net = self._net_input(x)
        rng = check_random_state(self.random_state)
        order = rng.permutation(len(x))
        self.calibration_, cal = self._calibrate(net, order)
        self.calibration_scores_ = cal.numpy()
        self.decision_scores_ = self._scores(net).numpy()
        if self.contamination is not None:
            self.calibration_ = "contamination"
            q = 100.0 * (1.0 - float(self.contamination))
            self.threshold_ = float(np.percentile(self.decision_scores_, q))
        elif self.calibration == "boundary":
            self.calibration_ = "boundary"
            assert isinstance(self.learner_, BoundaryScorer)
            self.threshold_ = self.learner_.decision_boundary(self.n_reference_)
        else:
            self.threshold_ = threshold_at(cal, float(self.fpr)) if len(cal) else math.inf
        if math.isinf(self.threshold_):
            self.calibration_ = "none"
            warnings.warn(
                f"{len(x)} normal examples cannot set a threshold at fpr={self.fpr} "
                "(conformal p-values need (n + 1) * fpr >= 1) and the model has no "
                "meta-calibration: nothing will be flagged; give more examples, a larger fpr "
                "or an anomaly checkpoint",
                UserWarning,
                stacklevel=2,
            )
        self.offset_ = -self.threshold_
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """The negated anomaly score of each sample ``[n]`` (lower = more abnormal)."""
        x = self._check_input(X, reset=False)
        x = self.missing_.apply(x)
        return -self._scores(self._net_input(x)).numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers ``[n]``."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, −1 for outliers ``[n]``."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def pvalues(self, X: Any) -> np.ndarray:
        """p-values ``[n]`` of the samples under the normal class: ``(1 + #{normal calibration
        scores >= s}) / (m + 1)``; a sample is flagged when it is at most ``fpr``."""
        scores = -self.score_samples(X)
        cal = np.sort(self.calibration_scores_)
        above = len(cal) - np.searchsorted(cal, scores, side="left")
        return (1.0 + above) / (len(cal) + 1.0)

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        check_fpr(self.fpr)
        check_choice("calibration", self.calibration, CALIBRATIONS)
        if self.contamination is not None:
            value = check_float("contamination", self.contamination)
            if not 0.0 < value <= 0.5:
                raise ConfigError(f"contamination must be in (0, 0.5], got {self.contamination}")
            if self.calibration == "boundary":
                raise ConfigError(
                    "contamination and calibration='boundary' each set the threshold; give one"
                )
        check_int("max_support", self.max_support, 2)
        check_int("loo_max", self.loo_max, 2)
        check_int("batch_size", self.batch_size, 1)
        if self.input_scale != "auto":
            check_float("input_scale", self.input_scale, 0.0, strict_low=True)
        if self.score_neighbors is not None:
            check_score_neighbors(self.score_neighbors)

    def _set_scorer(self, x: np.ndarray, uint8: bool) -> None:
        self.table_input_: TableInput | None = None
        if self.checkpoint is None:
            if self.score_neighbors is not None:
                raise ConfigError(
                    "score_neighbors needs a checkpoint that scores by its nearest reference "
                    "examples (checkpoint='tabular'); without one the score is the distance to "
                    "the reference's mean"
                )
            self.learner_ = None
            self.input_shape_: tuple[int, ...] = (int(np.prod(x.shape[1:])),)
            flat = x.reshape(len(x), -1)
            spread = np.nanstd(flat, 0)  # NaN: missing cells (impute=None)
            self.offset_x_: np.ndarray | float = np.nanmean(flat, 0)
            self.scale_x_: np.ndarray | float = np.where(spread > 0, spread, 1.0)
            return
        from metaunsup.learners import load_learner

        learner = load_learner(self.checkpoint, self.device)
        if not isinstance(learner, AnomalyScorer):
            raise CheckpointError(
                f"checkpoint {str(self.checkpoint)!r} holds a {learner.name!r} learner, which "
                "does not score anomalies; use an anomaly checkpoint (mnist-anomaly, "
                "omniglot-anomaly) or one trained with task.kind = 'anomaly'"
            )
        self.learner_ = learner
        if self.score_neighbors is not None:
            if not isinstance(learner, TabularKMeans):
                raise ConfigError(
                    f"score_neighbors is for checkpoints that score by their nearest reference "
                    f"examples (tabular); {str(self.checkpoint)!r} holds a {learner.name!r} "
                    "scorer: leave score_neighbors out"
                )
            learner.score_neighbors = self.score_neighbors
        self.input_shape_ = tuple(learner.net.example_shape)
        width = table_width(self.checkpoint)
        if width is not None:  # a table model: standardised columns, absent ones missing
            self.table_input_ = TableInput.for_checkpoint(
                x,
                width,
                str(self.checkpoint),
                "score it without a checkpoint (the standardised distance)",
                ["input_scale='auto'"] if self.input_scale != "auto" else [],
            )
            return
        fit_shape(x, self.input_shape_, f"checkpoint {str(self.checkpoint)!r}")
        if self.input_scale != "auto":
            scale = float(self.input_scale)
        else:
            scale = 255.0 if uint8 else max(1.0, float(x.max()))
        self.offset_x_, self.scale_x_ = 0.0, scale

    def _check_boundary(self) -> None:
        """A clear error, before any scoring, when ``calibration="boundary"`` meets a scorer
        without a meta-learned decision boundary."""
        if self.learner_ is None or not isinstance(self.learner_, BoundaryScorer):
            what = "no checkpoint" if self.learner_ is None else f"a {self.learner_.name!r} model"
            raise ConfigError(
                f"calibration='boundary' needs a checkpoint that meta-learned a decision "
                f"boundary (meta_svdd, oc_maml), got {what}; use calibration='auto' and fpr"
            )

    def _net_input(self, x: np.ndarray) -> torch.Tensor:
        """Scaled examples ``[n, *input_shape_]`` (``float32``)."""
        if self.table_input_ is not None:
            flat = self.table_input_.apply(x.reshape(len(x), -1))
            return torch.from_numpy(flat.astype(np.float32))
        source = f"checkpoint {str(self.checkpoint)!r}" if self.checkpoint else "the model"
        shaped = fit_shape(x, self.input_shape_, source)
        scaled = (shaped.reshape(len(x), -1) - self.offset_x_) / self.scale_x_
        return torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32)).reshape(
            len(x), *self.input_shape_
        )

    def _score(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, q]`` of ``query`` ``[B, q, ...]`` against ``support`` ``[B, K, ...]``."""
        if self.learner_ is None:
            centre = support.flatten(2).nanmean(1, keepdim=True).nan_to_num()
            sq = (query.flatten(2) - centre).pow(2)
            seen = (~torch.isnan(sq)).sum(-1).clamp_min(1)  # over observed features, rescaled
            return (sq.nansum(-1) * sq.shape[-1] / seen).to(torch.float64)
        assert isinstance(self.learner_, AnomalyScorer)
        device = next(self.learner_.parameters()).device
        with torch.no_grad():
            out = self.learner_.score(support.to(device), query.to(device))
        return out.to("cpu", torch.float64)

    def _calibrate(self, net: torch.Tensor, order: np.ndarray) -> tuple[str, torch.Tensor]:
        """Choose the reference and return ``(how, normal calibration scores [m])``."""
        n = len(net)
        meta = learner_null_table(self.learner_) if self.learner_ is not None else None
        if n <= self.loo_max:
            self.reference_ = net
            use_meta = self.calibration == "meta" or (
                self.calibration == "auto"
                and not conformal_reaches(n, float(self.fpr))
                and meta is not None
                and meta.ready
            )
            loo = leave_one_out_scores(self._score, net.unsqueeze(0))[0]
            if use_meta:
                if meta is None or not meta.ready:
                    raise ConfigError("calibration='meta' needs a checkpoint with a null table")
                some = torch.from_numpy(order[: meta.loo_limit])  # as a task's first examples
                scale = meta.scale(n, loo[some].reshape(1, -1))[0]
                return "meta", meta.row(n).to(torch.float64) * scale
            return "conformal-loo", loo
        if self.calibration == "meta":
            raise ConfigError(
                f"calibration='meta' is for small references (at most loo_max={self.loo_max} "
                f"examples); with {n} examples use 'auto' or 'conformal'"
            )
        size = min(int(self.max_support), n // 2)
        self.reference_ = net[torch.from_numpy(order[:size])]
        held = torch.from_numpy(order[size:])
        cal = self._scores(net[held])
        return "conformal-split", cal

    def _scores(self, net: torch.Tensor) -> torch.Tensor:
        """Anomaly scores ``[n]`` of scaled examples against the reference."""
        ref = self.reference_.unsqueeze(0)
        out = [
            self._score(ref, net[s : s + self.batch_size].unsqueeze(0))[0]
            for s in range(0, len(net), int(self.batch_size))
        ]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)

    @property
    def n_reference_(self) -> int:
        return int(self.reference_.shape[0])

    def _check_input(self, X: Any, reset: bool) -> np.ndarray:
        """``X`` as a finite float array ``[n, ...]`` (``MetaKMeans``'s rules)."""
        if not reset:
            check_is_fitted(self, "threshold_")
        return check_input(self, X, reset, allow_nan=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells: natively or imputed (impute=)
        return tags
