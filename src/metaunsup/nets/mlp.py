"""MLP: a fully connected backbone for vectors (tables, flattened small images, embeddings).

``len(hidden)`` layers of [linear, normalisation, ReLU], then a linear head with ``n_way``
outputs (or none: an embedding network whose features are the last hidden layer). The
normalisation is ``"batch"`` (per-task batch statistics, always), ``"group"`` (per example,
``groups`` groups) or ``"none"``. Inputs of any example shape are flattened to ``in_features``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup.errors import ConfigError
from metaunsup.nets.base import FunctionalNet, ParamDict, check_norm
from metaunsup.nets.functional import task_batch_norm_1d, task_group_norm_1d, task_linear


class _Layer(nn.Module):
    def __init__(self, fin: int, fout: int, norm: str, groups: int) -> None:
        super().__init__()
        self.linear = nn.Linear(fin, fout, bias=norm != "batch")
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(fout, track_running_stats=False)
        elif norm == "group":
            self.norm = nn.GroupNorm(groups, fout)
        else:
            self.norm = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.linear(x)))


class MLP(FunctionalNet):
    """Multi-layer perceptron, usable per task (``forward``) or task-batched.

    Parameters
    ----------
    in_features:
        Size of one flattened example.
    n_way:
        Outputs of the linear head; ``None`` for an embedding network.
    hidden:
        Widths of the hidden layers.
    norm, groups:
        ``"batch"``, ``"group"`` (``groups`` must divide every width) or ``"none"``.

    Shapes: ``forward`` ``[n, *shape]`` → ``[n, n_way]``; ``functional_forward(params, x)``
    ``[B, n, *shape]`` → ``[B, n, n_way]``, for any ``shape`` of ``in_features`` elements.

    Attributes
    ----------
    example_shape:
        ``(in_features,)``: one flattened example.
    """

    def __init__(
        self,
        in_features: int,
        n_way: int | None = 5,
        hidden: Sequence[int] = (64, 64),
        norm: str = "none",
        groups: int = 8,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if in_features < 1 or any(h < 1 for h in hidden):
            raise ConfigError(f"MLP: bad sizes (in_features={in_features}, hidden={hidden})")
        if n_way is not None and n_way < 1:
            raise ConfigError(f"MLP: n_way must be positive or None, got {n_way}")
        if n_way is None and not hidden:
            raise ConfigError("MLP: an embedding network (n_way=None) needs a hidden layer")
        for h in hidden:
            check_norm(norm, h, groups)
        self.in_features, self.hidden, self.norm, self.groups = in_features, hidden, norm, groups
        self.n_way = n_way
        self.example_shape = (int(in_features),)
        widths = [in_features, *hidden]
        self.layers = nn.ModuleList(
            _Layer(a, b, norm, groups) for a, b in itertools.pairwise(widths)
        )
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, n_way) if n_way is not None else None
        self.head_names = ("head.weight", "head.bias") if n_way is not None else ()

    def forward(self, x: Tensor) -> Tensor:
        """Ordinary forward of one task: ``[n, *example_shape]`` → ``[n, n_way]``."""
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return self.head(x) if self.head is not None else x

    def functional_features(self, params: ParamDict, x: Tensor) -> Tensor:
        """``[B, n, *example_shape]`` → ``[B, n, feature_dim]``, all tasks in one pass."""
        if x.dim() < 3:
            self._check_batched_input(x, 1)
        h = x.flatten(2)
        for i in range(len(self.layers)):
            p = f"layers.{i}."
            h = task_linear(h, params[p + "linear.weight"], params.get(p + "linear.bias"))
            if self.norm == "batch":
                h = task_batch_norm_1d(h, params[p + "norm.weight"], params[p + "norm.bias"])
            elif self.norm == "group":
                h = task_group_norm_1d(
                    h, params[p + "norm.weight"], params[p + "norm.bias"], self.groups
                )
            h = F.relu(h)
        return h

    @classmethod
    def shape_config(cls, example_shape: tuple[int, ...]) -> dict[str, Any]:
        """``{"in_features": d}`` with ``d`` the values of one (flattened) example."""
        return {"in_features": math.prod(example_shape)}

    def config(self) -> dict[str, Any]:
        return {
            "name": "mlp",
            "in_features": self.in_features,
            "n_way": self.n_way,
            "hidden": list(self.hidden),
            "norm": self.norm,
            "groups": self.groups,
        }
