"""Choosing, without labels, between the zero-shot ``tabular`` model and self-training.

A table can be clustered two ways: in the embedding of the packaged ``tabular`` checkpoint,
meta-trained only on synthetic tables (seconds, nothing learnt from the table), or by
self-training a network on pseudo-tasks of the table itself. Neither wins everywhere: the
zero-shot model reads a survey's one-hot answers better, self-training finds the digits of an
8 x 8 image table. Each path already scores, without labels, what it clusters (its guard,
:mod:`metaunsup.estimators.guard`): how reproducible the partitions of the clustered
representation are when made again from other rows and another start (the stability criterion
of Ben-Hur et al., PSB 2002; Lange et al., Neural Computation 2004). :func:`fit_table_model`
fits both and keeps the one whose clustered representation is the more reproducible, on a tie
self-training (the default path).

It chooses only where both paths have that score: a table of at most the checkpoint's width
(100 columns), with both guards on (with missing cells each guard scores the features with
those cells filled from the nearest rows, :class:`metaunsup.estimators.missing.FilledFeatures`);
otherwise it is self-training, and the choice says why.
With ``n_clusters="auto"`` each path chooses its own ``k`` first, and the scores compare
partitions into those numbers of clusters.
``benchmarks/tables_vs_tools.py`` measures the choice (column ``metaunsup (auto)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from metaunsup.errors import DataError
from metaunsup.estimators.guard import EMBEDDING
from metaunsup.estimators.kmeans import MetaKMeans
from metaunsup.estimators.table_input import table_width

__all__ = ["SELF_TRAINING", "TABLE_CHECKPOINT", "TableChoice", "clustered_agreement",
           "fit_table_model"]  # fmt: skip

#: The zero-shot checkpoint the choice weighs against self-training.
TABLE_CHECKPOINT = "tabular"
#: The name of the self-training path in a :class:`TableChoice`.
SELF_TRAINING = "self-training"


@dataclass(frozen=True)
class TableChoice:
    """Which path clustered the table, and why.

    ``chosen``: ``"tabular"`` or ``"self-training"``; ``scores``: each fitted path's agreement
    of what it clustered (adjusted Rand index between partitions made again; empty when only
    one path ran); ``reason``: one line for a person."""

    chosen: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"chosen": self.chosen, "scores": dict(self.scores), "reason": self.reason}


def clustered_agreement(model: MetaKMeans) -> float | None:
    """The agreement score of the representation a fitted ``model`` clustered (its guard's
    score of the embedding when it kept it, of the features when it fell back to them);
    ``None`` when its guard did not run."""
    guard = model.guard_
    if guard is None:
        return None
    return guard.embedding_score if guard.use == EMBEDDING else guard.features_score


def fit_table_model(
    x: np.ndarray, make: Callable[[str | None], MetaKMeans]
) -> tuple[MetaKMeans, TableChoice]:
    """``(fitted model, choice)`` for the table ``x`` ``[n, d]``: ``make(checkpoint)`` builds
    the estimator of each path (``"tabular"`` or ``None``: self-training) with the user's other
    settings; both are fitted where both can be scored, and the one whose clustered
    representation agrees more is returned (see the module docstring)."""
    if x.ndim != 2:
        raise DataError(
            f"the choice between the tabular model and self-training is for tables [n, d], "
            f"got shape {x.shape}; give a checkpoint for images, or none (self-training)"
        )
    width = table_width(TABLE_CHECKPOINT)
    if width is not None and x.shape[1] > width:
        reason = f"{x.shape[1]} columns, more than the {width} the tabular model takes"
        return make(None).fit(x), TableChoice(SELF_TRAINING, reason)
    zero_shot, own = make(TABLE_CHECKPOINT), make(None)
    if not (zero_shot.guard and own.guard):  # guard=False: no path scores its clusters
        reason = "a path has no agreement score (its guard is off)"
        return own.fit(x), TableChoice(SELF_TRAINING, reason)
    zero_shot.fit(x)
    own.fit(x)
    a, b = clustered_agreement(zero_shot), clustered_agreement(own)
    if a is None or b is None:  # not expected with both guards on; self-training then
        reason = "a path has no agreement score"
        return own, TableChoice(SELF_TRAINING, reason)
    kept = {TABLE_CHECKPOINT: float(a), SELF_TRAINING: float(b)}
    if kept[TABLE_CHECKPOINT] > kept[SELF_TRAINING]:
        chosen, model = TABLE_CHECKPOINT, zero_shot
    else:
        chosen, model = SELF_TRAINING, own
    other = SELF_TRAINING if chosen == TABLE_CHECKPOINT else TABLE_CHECKPOINT
    if kept[chosen] == kept[other]:
        reason = f"both paths' partitions agree alike when made again ({kept[chosen]:.3f})"
    else:
        reason = (
            f"its partitions agree more when made again ({kept[chosen]:.3f}) than the "
            f"{other} path's ({kept[other]:.3f})"
        )
    return model, TableChoice(chosen, reason, kept)
