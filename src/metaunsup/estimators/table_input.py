"""How a user's table reaches a checkpoint trained on tables (the zero-shot ``tabular`` one).

A checkpoint whose network is a :class:`~metaunsup.nets.MaskedMLP` (or its gated variant,
:class:`~metaunsup.nets.GatedMaskedMLP`) takes **tables**, not images: its ``in_features`` is
the widest table it takes, and its input convention (the one it was meta-trained with,
:mod:`metaunsup.tasks.synthetic_tables`) is

* each column **standardised** (centred, divided by its standard deviation over its observed
  cells: :func:`~metaunsup.estimators.scaling.table_scaling` ``"standard"``), with the
  statistics of the data the estimator is fitted on;
* any width ``d <= in_features``: the columns fill the first ``d`` inputs and the others are
  marked **absent** (missing);
* **missing cells** (NaN) allowed: the network reads the observed-cell mask.

A wider table is refused with a :class:`~metaunsup.errors.DataError` that names self-training
(no checkpoint) as the fix.

Shapes: :meth:`TableInput.apply` ``[n, d]`` → ``float64 [n, in_features]`` (NaN: missing or
absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaunsup.checkpoint import read_checkpoint_meta, resolve_checkpoint
from metaunsup.errors import ConfigError, DataError
from metaunsup.estimators.scaling import TableScaling, table_scaling

__all__ = ["TableInput", "table_width"]

#: The backbone names of networks that take tables.
TABLE_NETS = ("masked-mlp", "gated-masked-mlp")


def table_width(checkpoint: str | Path) -> int | None:
    """The widest table a checkpoint takes (its masked MLP's ``in_features``), or ``None``
    when its network is not a table network. Reads the file's header only."""
    meta = read_checkpoint_meta(resolve_checkpoint(checkpoint))
    learner = meta.get("learner")
    net = learner.get("net") if isinstance(learner, dict) else None
    if not isinstance(net, dict) or net.get("name") not in TABLE_NETS:
        return None
    return int(net["in_features"])


@dataclass(frozen=True)
class TableInput:
    """A table model's view of the user's table: standardised with ``scaling`` (fitted on the
    training data), padded with absent columns to ``width``."""

    width: int
    scaling: TableScaling

    @classmethod
    def for_checkpoint(
        cls, x: np.ndarray, width: int, checkpoint: str, fallback: str, leave: Sequence[str] = ()
    ) -> TableInput:
        """:meth:`fit` on the examples ``x`` ``[n, ...]`` (flattened) for an estimator given
        a table ``checkpoint``; ``leave``: the estimator's settings that would rescale the
        input the checkpoint standardises itself, worded as what to leave them at
        (``"input_scale='auto'"``): any refuses the fit with a :class:`ConfigError`."""
        if leave:
            raise ConfigError(
                f"checkpoint {checkpoint!r} takes tables with standardised columns, which it "
                f"does itself; leave {' and '.join(leave)}"
            )
        return cls.fit(x.reshape(len(x), -1), width, checkpoint, fallback)

    @classmethod
    def fit(cls, flat: np.ndarray, width: int, checkpoint: str, fallback: str) -> TableInput:
        """Check ``flat`` ``[n, d]`` fits (``d <= width``) and fit the standardisation;
        ``fallback`` says how to cluster or score a wider table (in the error)."""
        d = flat.shape[1]
        if d > width:
            raise DataError(
                f"X has {d} features, but checkpoint {checkpoint!r} takes tables of at most "
                f"{width} features; {fallback}, or reduce the table to {width} features "
                "(e.g. with PCA)"
            )
        return cls(width, table_scaling(flat, "standard"))

    def apply(self, flat: np.ndarray) -> np.ndarray:
        """The network's input ``float64 [n, width]`` of ``flat`` ``[n, d]``."""
        out = np.full((len(flat), self.width), np.nan)
        out[:, : flat.shape[1]] = self.scaling.apply(flat)
        return out
