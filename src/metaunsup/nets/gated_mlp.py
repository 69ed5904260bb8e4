"""GatedMaskedMLP: a :class:`~metaunsup.nets.MaskedMLP` that weighs each column by what the
task's own rows say about it.

A row-wise network cannot tell a column that carries the clusters from a noise column when
columns arrive in any order: both are standardised numbers. The rows of the task together can:
columns driven by shared clusters correlate with each other and are often multi-modal, noise
columns do neither. So, per task, each column ``j`` gets a few label-free descriptors over its
observed cells — present or absent, observed share, excess kurtosis, skewness, mean and largest
absolute correlation with the other columns — and a small shared network maps them to a weight
``w_j = softplus(g(desc_j))`` (0 for absent columns); the masked MLP then reads
``[w · x · m, m]``. This is feature weighting learned across tasks (as feature-weighted k-means,
Huang et al., TPAMI 2005, but meta-learned), the column-wise counterpart of the table-level
context that in-context tabular models (TabPFN, Hollmann et al., ICLR 2023) read with attention.

The embedding is the weighted columns themselves beside the MLP's features,
``[w · x · m, a · MLP(...)]`` with a learned scale ``a`` (starting at ``0.1``): at
initialisation the weights are one, so the embedding starts close to the standardised table
(k-means on it is k-means on the columns) and meta-training moves it from there.

The weights come from the rows embedded together, so an example's embedding depends slightly on
the others it is embedded with (as with per-task batch normalisation).

Shapes: ``functional_features(params, x)`` ``[B, n, d]`` (NaN = missing) → ``[B, n, D]``;
:meth:`GatedMaskedMLP.column_weights` ``[B, n, d]`` → ``[B, d]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup.nets.base import ParamDict
from metaunsup.nets.masked_mlp import MaskedMLP

__all__ = ["GatedMaskedMLP", "column_descriptors"]

#: Descriptors per column (see :func:`column_descriptors`).
N_DESCRIPTORS = 6


def column_descriptors(x: Tensor) -> Tensor:
    """Label-free descriptors ``[B, d, 6]`` of the columns of ``x`` ``[B, n, d]`` (NaN =
    missing): present, observed share, excess kurtosis and skewness (clamped to ``±10``), mean
    and largest absolute correlation with the other present columns (over the cells both
    observe, approximately: missing cells count as the column mean)."""
    observed = ~torch.isnan(x)
    count = observed.sum(1).to(x.dtype)  # [B, d]
    n = x.shape[1]
    values = torch.where(observed, x, torch.zeros_like(x))
    mean = values.sum(1) / count.clamp_min(1)
    centred = torch.where(observed, x - mean.unsqueeze(1), torch.zeros_like(x))
    std = ((centred**2).sum(1) / count.clamp_min(1)).sqrt().clamp_min(1e-6)
    z = centred / std.unsqueeze(1)
    kurt = ((z**4).sum(1) / count.clamp_min(1) - 3.0).clamp(-10, 10)
    skew = ((z**3).sum(1) / count.clamp_min(1)).clamp(-10, 10)
    present = (count > 1).to(x.dtype)
    corr = (z.transpose(1, 2) @ z / n).abs()  # [B, d, d]
    others = present.unsqueeze(1) * (1 - torch.eye(x.shape[2], dtype=x.dtype, device=x.device))
    corr = corr * others
    mean_corr = corr.sum(2) / others.sum(2).clamp_min(1)
    max_corr = corr.amax(2)
    return torch.stack([present, count / n, kurt, skew, mean_corr, max_corr], -1)


class GatedMaskedMLP(MaskedMLP):
    """A masked MLP over columns weighed by their task-level descriptors (module docstring).

    Parameters are :class:`~metaunsup.nets.MaskedMLP`'s plus ``gate_hidden``, the width of the
    shared descriptor-to-weight network. ``feature_dim`` is ``in_features + hidden[-1]``.
    """

    def __init__(
        self,
        in_features: int,
        n_way: int | None = 5,
        hidden: Sequence[int] = (64, 64),
        norm: str = "none",
        groups: int = 8,
        gate_hidden: int = 16,
    ) -> None:
        super().__init__(in_features, n_way, hidden, norm, groups)
        self.gate_hidden = int(gate_hidden)
        first = nn.Linear(N_DESCRIPTORS, self.gate_hidden)  # created first: the seeded draws
        out = nn.Linear(self.gate_hidden, 1)
        nn.init.zeros_(out.weight)  # start at one weight for every present column
        nn.init.constant_(out.bias, 0.5413)  # softplus(0.5413) = 1
        self.gate = nn.Sequential(first, nn.ReLU(), out)
        self.mix = nn.Parameter(torch.tensor(0.1))
        self.feature_dim = self.cells + self.feature_dim
        if n_way is not None:  # the head reads the whole embedding
            self.head = nn.Linear(self.feature_dim, n_way)

    def column_weights(self, params: ParamDict, x: Tensor) -> Tensor:
        """Weights ``[B, d]`` of the columns of ``x`` ``[B, n, d]`` (0 for absent ones)."""
        desc = column_descriptors(x)
        h = F.relu(desc @ params["gate.0.weight"].T + params["gate.0.bias"])
        w = F.softplus(h @ params["gate.2.weight"].T + params["gate.2.bias"]).squeeze(-1)
        return w * desc[..., 0]

    def functional_features(self, params: ParamDict, x: Tensor) -> Tensor:
        """``[B, n, d]`` (NaN = missing) → ``[B, n, feature_dim]``."""
        if x.dim() < 3:
            self._check_batched_input(x, 1)
        x = x.flatten(2)
        observed = ~torch.isnan(x)
        values = torch.where(observed, x, torch.zeros_like(x))  # NaN-free, so gradients are
        weighted = values * self.column_weights(params, x).unsqueeze(1)
        inputs = torch.cat([weighted, observed.to(x.dtype)], -1)  # as split_missing lays out
        h = super(MaskedMLP, self).functional_features(params, inputs)
        return torch.cat([weighted, params["mix"] * h], -1)

    def forward(self, x: Tensor) -> Tensor:
        """``[n, d]`` (NaN = missing) → ``[n, n_way]`` or ``[n, feature_dim]``."""
        params: ParamDict = dict(self.named_parameters())
        z = self.functional_features(params, x.flatten(1).unsqueeze(0))[0]
        return self.head(z) if self.head is not None else z

    def config(self) -> dict[str, Any]:
        return {**super().config(), "name": "gated-masked-mlp", "gate_hidden": self.gate_hidden}
