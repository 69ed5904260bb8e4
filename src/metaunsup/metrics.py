"""Scores of clusterings and few-shot predictions, batched over tasks.

Every function takes one labelling ``[n]`` or a batch ``[B, n]`` (torch tensors or numpy arrays
of integer labels) and returns a ``float`` for one labelling or a ``numpy`` array ``[B]`` for a
batch. The ``B`` contingency tables are built at once with one ``bincount``; accuracy, NMI and
ARI are derived from them and equal scikit-learn's ``normalized_mutual_info_score`` (arithmetic
mean) and ``adjusted_rand_score`` up to rounding, with the same conventions for degenerate
labellings.

- clustering accuracy: the best one-to-one matching of predicted clusters to classes
  (Hungarian algorithm, Kuhn 1955, via :func:`scipy.optimize.linear_sum_assignment`), the
  fraction of points whose cluster is matched to their class; with more clusters than classes
  the unmatched clusters count as errors.
- NMI: ``I(T; P) / mean(H(T), H(P))`` (Strehl & Ghosh 2002; Vinh, Epps & Bailey 2010).
- ARI: the Rand index adjusted for chance (Hubert & Arabie 1985).
- :func:`mean_ci`: mean and the half-width of a normal 95% interval, ``1.96 * std / sqrt(n)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from metaunsup.errors import DataError

__all__ = [
    "ari",
    "clustering_accuracy",
    "contingency_tables",
    "fewshot_accuracy",
    "mean_ci",
    "nmi",
    "score_clustering",
]

ArrayLike = torch.Tensor | np.ndarray


def _as_numpy(a: object, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _labels_pair(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray, bool]:
    """Integer label arrays ``[B, n]`` and whether the input was batched."""
    t = _as_numpy(y_true, "y_true")
    p = _as_numpy(y_pred, "y_pred")
    if t.shape != p.shape:
        raise DataError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    if t.ndim not in (1, 2):
        raise DataError(f"labels must have shape [n] or [B, n], got {t.shape}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.dtype.kind not in "iub":
            if (
                a.dtype.kind == "f"
                and a.size
                and np.all(np.isfinite(a))
                and np.all(a == np.round(a))
            ):
                continue
            raise DataError(f"{name} must hold integer labels, got dtype {a.dtype}")
    batched = t.ndim == 2
    if not batched:
        t, p = t[None], p[None]
    return t.astype(np.int64, copy=False), p.astype(np.int64, copy=False), batched


def _codes(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels recoded to ``0..m-1`` (the same code for the same value in every task)."""
    uniq, inv = np.unique(a, return_inverse=True)
    return inv.reshape(a.shape), len(uniq)


def contingency_tables(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """``int64 [B, C, K]`` counts of points with true class ``c`` and predicted cluster ``k``.

    Classes and clusters are the distinct values over the whole batch (sorted); a task that
    lacks one has a zero row or column. ``[C, K]`` for one labelling ``[n]``.
    """
    t, p, batched = _labels_pair(y_true, y_pred)
    table = _tables(t, p)
    return table if batched else table[0]


def _tables(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    B = t.shape[0]
    tc, C = _codes(t)
    pc, K = _codes(p)
    task = np.arange(B, dtype=np.int64)[:, None]
    flat = (task * C + tc) * K + pc
    return np.bincount(flat.ravel(), minlength=B * C * K).reshape(B, C, K)


def _ret(values: np.ndarray, batched: bool) -> float | np.ndarray:
    return values if batched else float(values[0])


def clustering_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float | np.ndarray:
    """Accuracy of the best one-to-one matching of clusters to classes (Hungarian algorithm).

    ``y_true``, ``y_pred``: ``[n]`` or ``[B, n]`` integer labels; the cluster ids are arbitrary
    and their number may differ from the number of classes (clusters or classes left unmatched
    score nothing). Returns a ``float`` or ``float64 [B]``.
    """
    t, p, batched = _labels_pair(y_true, y_pred)
    n = t.shape[1]
    if n == 0:
        raise DataError("cannot score an empty labelling")
    tables = _tables(t, p)
    acc = np.empty(len(tables))
    for b, table in enumerate(tables):
        rows, cols = linear_sum_assignment(table, maximize=True)
        acc[b] = table[rows, cols].sum() / n
    return _ret(acc, batched)


def _entropy(counts: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of ``counts [B, m]`` with row totals ``n [B]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.where(counts > 0, np.log(np.maximum(counts, 1)), 0.0)
        return np.log(n) - (counts * logc).sum(-1) / n


def nmi(y_true: ArrayLike, y_pred: ArrayLike) -> float | np.ndarray:
    """Normalised mutual information, arithmetic normalisation (scikit-learn's default).

    ``NMI = I(T; P) / ((H(T) + H(P)) / 2)``. As in scikit-learn, it is ``1.0`` when both
    labellings have a single cluster and ``0.0`` when the mutual information is zero.
    Returns a ``float`` or ``float64 [B]``.
    """
    t, p, batched = _labels_pair(y_true, y_pred)
    if t.shape[1] == 0:
        return _ret(np.ones(t.shape[0]), batched)
    tables = _tables(t, p).astype(np.float64)
    n = tables.sum((1, 2))  # [B]
    a = tables.sum(2)  # [B, C]
    b = tables.sum(1)  # [B, K]
    with np.errstate(divide="ignore", invalid="ignore"):
        nz = tables > 0
        ratio = np.where(nz, tables * n[:, None, None], 1.0) / np.maximum(
            a[:, :, None] * b[:, None, :], 1.0
        )
        terms = np.where(nz, tables / n[:, None, None] * np.log(ratio), 0.0)
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    mi = np.clip(terms.sum((1, 2)), 0.0, None)
    n_classes = (a > 0).sum(1)
    n_clusters = (b > 0).sum(1)
    mi = np.where((n_classes == 1) | (n_clusters == 1), 0.0, mi)
    h_t = _entropy(a, n)
    h_p = _entropy(b, n)
    normaliser = (h_t + h_p) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mi == 0, 0.0, mi / np.where(normaliser > 0, normaliser, 1.0))
    out = np.where((n_classes == 1) & (n_clusters == 1), 1.0, out)
    return _ret(out, batched)


def ari(y_true: ArrayLike, y_pred: ArrayLike) -> float | np.ndarray:
    """Adjusted Rand index (Hubert & Arabie 1985), as scikit-learn's ``adjusted_rand_score``.

    Computed from the pair-confusion counts in exact integer arithmetic; ``1.0`` when the two
    labellings agree on every pair. Returns a ``float`` or ``float64 [B]``.
    """
    t, p, batched = _labels_pair(y_true, y_pred)
    tables = _tables(t, p)
    n = tables.sum((1, 2))
    sum_sq = (tables * tables).sum((1, 2))
    a = tables.sum(2)
    b = tables.sum(1)
    tp = sum_sq - n
    fp = (tables * b[:, None, :]).sum((1, 2)) - sum_sq  # pairs split by the truth, joined by pred
    fn = (tables * a[:, :, None]).sum((1, 2)) - sum_sq
    tn = n * n - fp - fn - sum_sq
    out = np.empty(len(tables))
    for i in range(len(tables)):
        tp_i, tn_i, fp_i, fn_i = int(tp[i]), int(tn[i]), int(fp[i]), int(fn[i])
        if fn_i == 0 and fp_i == 0:
            out[i] = 1.0
        else:
            out[i] = (
                2.0
                * (tp_i * tn_i - fn_i * fp_i)
                / ((tp_i + fn_i) * (fn_i + tn_i) + (tp_i + fp_i) * (fp_i + tn_i))
            )
    return _ret(out, batched)


def score_clustering(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, np.ndarray]:
    """Accuracy, NMI and ARI of each task: ``{"acc", "nmi", "ari"}`` -> ``float64 [B]``.

    One labelling ``[n]`` counts as a batch of one task (arrays of shape ``[1]``).
    """
    t, p, _ = _labels_pair(y_true, y_pred)
    return {
        "acc": np.asarray(clustering_accuracy(t, p)),
        "nmi": np.asarray(nmi(t, p)),
        "ari": np.asarray(ari(t, p)),
    }


def fewshot_accuracy(pred: ArrayLike, y: ArrayLike) -> float | np.ndarray:
    """Fraction of correct predictions per task.

    ``pred``: labels ``[n]``/``[B, n]``, or scores ``[n, C]``/``[B, n, C]`` (then the argmax is
    the prediction); ``y``: labels ``[n]``/``[B, n]``. Returns a ``float`` or ``float64 [B]``.
    """
    p = _as_numpy(pred, "pred")
    t = _as_numpy(y, "y")
    if p.ndim == t.ndim + 1:
        p = p.argmax(-1)
    if p.shape != t.shape or t.ndim not in (1, 2):
        raise DataError(
            f"pred {p.shape} does not match labels {t.shape}: expected labels [n] or [B, n], "
            "or scores with one more (class) dimension"
        )
    if t.shape[-1] == 0:
        raise DataError("cannot score an empty set of predictions")
    acc = (p == t).mean(-1).astype(np.float64)
    return acc if t.ndim == 2 else float(acc)


def mean_ci(values: ArrayLike | list[float]) -> tuple[float, float]:
    """``(mean, ci95)`` with ``ci95 = 1.96 * std / sqrt(n)`` (sample std, ``ddof=1``).

    The half-width of the normal-approximation 95% confidence interval of the mean over tasks;
    ``0.0`` for a single value. Raises :class:`DataError` for no values or non-finite ones.
    """
    v = _as_numpy(values, "values").astype(np.float64).ravel()
    if v.size == 0:
        raise DataError("mean_ci needs at least one value")
    if not np.all(np.isfinite(v)):
        raise DataError("mean_ci got NaN or infinite values")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))
