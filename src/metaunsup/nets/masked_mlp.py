"""MaskedMLP: an MLP for tables with missing cells, which it reads as NaN.

An example ``x`` ``[d]`` may hold NaN where a cell is missing. The network splits it into the
values with the missing ones set to 0 and the observed-cell mask ``m`` (1 observed, 0 missing),
and feeds ``[x·m, m]`` (``2d`` numbers) to an :class:`~metaunsup.nets.mlp.MLP`: the first
layer sees which cells are there and can correct for the absent ones, as in the mask-as-input
networks of missing-data deep learning (e.g. Le Morvan et al., "NeuMiss networks", NeurIPS
2020, and the missingness indicators of Josse et al. 2019). A complete example is the MLP of
its values plus a constant. Nothing is imputed.

Shapes: ``forward`` ``[n, d]`` → ``[n, feature_dim]`` (or ``[n, n_way]`` with a head);
``functional_features(params, x)`` ``[B, n, d]`` → ``[B, n, feature_dim]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from metaunsup.nets.base import ParamDict
from metaunsup.nets.mlp import MLP

__all__ = ["MaskedMLP", "split_missing"]


def split_missing(x: Tensor) -> Tensor:
    """``[..., d]`` with NaN for missing → ``[..., 2d]``: the values (0 where missing) and
    the observed mask (1 observed, 0 missing)."""
    observed = ~torch.isnan(x)
    return torch.cat([torch.where(observed, x, torch.zeros_like(x)), observed.to(x.dtype)], -1)


class MaskedMLP(MLP):
    """An :class:`~metaunsup.nets.mlp.MLP` over ``[values, observed mask]`` (module docstring).

    Parameters are the MLP's; ``in_features`` is ``d``, the cells of one example (the first
    layer takes ``2d`` inputs).
    """

    def __init__(
        self,
        in_features: int,
        n_way: int | None = 5,
        hidden: Sequence[int] = (64, 64),
        norm: str = "none",
        groups: int = 8,
    ) -> None:
        super().__init__(2 * int(in_features), n_way, hidden, norm, groups)
        self.cells = int(in_features)
        self.example_shape = (self.cells,)

    def forward(self, x: Tensor) -> Tensor:
        """``[n, d]`` (NaN = missing) → ``[n, n_way]`` or ``[n, feature_dim]``."""
        return super().forward(split_missing(x.flatten(1)))

    def functional_features(self, params: ParamDict, x: Tensor) -> Tensor:
        """``[B, n, d]`` (NaN = missing) → ``[B, n, feature_dim]``."""
        if x.dim() < 3:
            self._check_batched_input(x, 1)
        return super().functional_features(params, split_missing(x.flatten(2)))

    @classmethod
    def shape_config(cls, example_shape: tuple[int, ...]) -> dict[str, Any]:
        """``{"in_features": d}`` with ``d`` the cells of one (flattened) example."""
        return {"in_features": math.prod(example_shape)}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "name": "masked-mlp", "in_features": self.cells}
