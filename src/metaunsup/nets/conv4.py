"""Conv4: the standard four-block convolutional backbone of few-shot learning.

Vinyals et al. 2016 (Matching Networks), used by MAML (Finn et al. 2017) and Prototypical
Networks (Snell et al. 2017): ``depth`` blocks of [3×3 convolution (padding 1, ``hidden``
channels), normalisation, ReLU, 2×2 max-pool], then a linear head with ``n_way`` outputs.

Pooling never collapses a map below 1×1: a block whose input is already 1 pixel high or wide
skips its pool. Feature size (``feature_dim``) = ``hidden × h × w`` after the last block:

=========  ==========================  ======================
input      spatial sizes per block      feature_dim (hidden=64)
=========  ==========================  ======================
8×8        8 → 4 → 2 → 1 → 1 (no pool)  64
28×28      28 → 14 → 7 → 3 → 1          64
84×84      84 → 42 → 21 → 10 → 5        1600
=========  ==========================  ======================

Normalisation: ``"batch"`` (per-task batch statistics, always: transductive as in MAML; the
convolution then has no bias, which the norm's shift would cancel), ``"group"`` (``groups``
groups per layer) or ``"none"``. In the functional forward every norm acts per task; with
batch statistics a task's predictions depend on the other examples it is evaluated with (a
single example cannot be normalised where a map is 1×1).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup.errors import ConfigError
from metaunsup.nets._cpu import conv4_features
from metaunsup.nets.base import FunctionalNet, ParamDict, check_norm
from metaunsup.nets.functional import (
    from_task_channels,
    task_batch_norm,
    task_conv2d,
    task_group_norm,
    to_task_channels,
)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, groups: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=norm != "batch")
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm2d(cout, track_running_stats=False)
        elif norm == "group":
            self.norm = nn.GroupNorm(groups, cout)
        else:
            self.norm = nn.Identity()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class Conv4(FunctionalNet):
    """Conv4 backbone, usable per task (``forward``) or task-batched (``functional_forward``).

    Parameters
    ----------
    in_channels:
        Channels of the input images (1 for Omniglot, MNIST and digits).
    n_way:
        Outputs of the linear head; ``None`` for an embedding network (Prototypical Networks).
    hidden:
        Channels of every convolution (64 in the standard Conv4).
    image_size:
        Input height and width (an ``int`` for square images); fixes ``feature_dim``.
    norm:
        ``"batch"``, ``"group"`` or ``"none"``.
    groups:
        Groups of the group norm (must divide ``hidden``).
    depth:
        Number of blocks (4 in the standard Conv4; smaller in tests).
    input_pool:
        Average-pool the input over ``input_pool × input_pool`` blocks before the first
        convolution (1: off). A speed knob with a price in detail: on 28×28 digits, pooling by
        2 cuts the multiply-adds of a 64-channel Conv4 about 4.5-fold (14×14 maps into the
        first block, 14 → 7 → 3 → 1 → 1).

    Shapes: ``forward`` ``[n, C, H, W]`` → ``[n, n_way]``; ``functional_forward(params, x)``
    ``[B, n, C, H, W]`` → ``[B, n, n_way]`` with each parameter shared or with a leading ``B``.

    Attributes
    ----------
    example_shape:
        ``(in_channels, H, W)``: the shape of one input image (before ``input_pool``).
    large_task:
        ``n*H*W`` per task from which the CPU fast path runs task by task instead of one
        grouped pass (default 10000: a 1-shot 5-way support of 28×28 images is one pass, a
        15-query set runs per task). A speed knob only; results do not depend on it.
    cpu_kernels:
        Whether the functional forward of CPU inputs takes the private fast path
        (``metaunsup.nets._cpu``, default ``True``). ``False`` runs the generic path that other
        devices use: one grouped NCHW pass with aten's convolution, batch norm and pooling,
        which rounds in float32 the way a plain PyTorch Conv4 does (for comparing gradients
        with another library operation for operation; slower on CPU). Values and gradients
        are the same function either way.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_way: int | None = 5,
        hidden: int = 64,
        image_size: int | tuple[int, int] | list[int] = 28,
        norm: str = "batch",
        groups: int = 8,
        depth: int = 4,
        input_pool: int = 1,
    ) -> None:
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if (
            len(size) != 2
            or in_channels < 1
            or hidden < 1
            or depth < 1
            or isinstance(input_pool, bool)
            or not isinstance(input_pool, int)
            or input_pool < 1
            or min(size) < input_pool
        ):
            raise ConfigError(
                f"Conv4: bad sizes (in_channels={in_channels}, hidden={hidden}, "
                f"image_size={image_size}, depth={depth}, input_pool={input_pool})"
            )
        if n_way is not None and n_way < 1:
            raise ConfigError(f"Conv4: n_way must be positive or None, got {n_way}")
        check_norm(norm, hidden, groups)
        self.in_channels, self.hidden, self.norm, self.groups = in_channels, hidden, norm, groups
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.example_shape = (int(in_channels), *self.image_size)
        self.input_pool = input_pool
        self.n_way = n_way
        blocks, cin = [], in_channels
        h, w = self.image_size[0] // input_pool, self.image_size[1] // input_pool
        for _ in range(depth):
            pool = min(h, w) >= 2
            blocks.append(_Block(cin, hidden, norm, groups, pool))
            if pool:
                h, w = h // 2, w // 2
            cin = hidden
        self.blocks = nn.ModuleList(blocks)
        self.out_hw = (h, w)
        self.feature_dim = hidden * h * w
        self.head = nn.Linear(self.feature_dim, n_way) if n_way is not None else None
        self.head_names = ("head.weight", "head.bias") if n_way is not None else ()
        self.large_task = 10000
        self.cpu_kernels = True

    def forward(self, x: Tensor) -> Tensor:
        """Ordinary forward of one task: ``[n, C, H, W]`` → ``[n, n_way]`` (or features)."""
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)
        for block in self.blocks:
            x = block(x)
        x = x.flatten(1)
        return self.head(x) if self.head is not None else x

    def functional_features(self, params: ParamDict, x: Tensor) -> Tensor:
        """``[B, n, C, H, W]`` → ``[B, n, feature_dim]``, all tasks in one grouped pass.

        The examples travel in the task-channel layout ``[n, B*C, H, W]`` through the blocks
        of :meth:`forward`, each layer one operation for all tasks
        (:mod:`metaunsup.nets.functional`); values and gradients of every order equal those of
        a loop over tasks of :meth:`forward` (up to rounding).

        On the CPU with :attr:`cpu_kernels` on, the same function is computed by the private
        fast path ``metaunsup.nets._cpu.conv4_features`` (channels-last activations, a GEMM
        for the first layer, closed-form double backwards, large tasks one by one), which the
        tests compare with this forward.
        """
        self._check_batched_input(x, len(self.example_shape))
        if self.input_pool > 1:
            pooled = F.avg_pool2d(x.flatten(0, 1), self.input_pool)
            x = pooled.view(*x.shape[:2], *pooled.shape[1:])
        if x.device.type == "cpu" and self.cpu_kernels:
            return conv4_features(self, params, x)
        B = x.shape[0]
        h = to_task_channels(x)
        for i, block in enumerate(self.blocks):
            p = f"blocks.{i}."
            h = task_conv2d(h, params[p + "conv.weight"], params.get(p + "conv.bias"), B)
            if self.norm == "batch":
                h = task_batch_norm(h, params[p + "norm.weight"], params[p + "norm.bias"], B)
            elif self.norm == "group":
                h = task_group_norm(
                    h, params[p + "norm.weight"], params[p + "norm.bias"], B, self.groups
                )
            h = F.relu(F.max_pool2d(h, 2)) if block.pool else F.relu(h)  # (they commute)
        return from_task_channels(h, B)

    @classmethod
    def shape_config(cls, example_shape: tuple[int, ...]) -> dict[str, Any]:
        """``{"in_channels": C, "image_size": [H, W]}`` for images ``(C, H, W)``."""
        if len(example_shape) != 3:
            raise ConfigError(f"conv4 needs images [C, H, W], the data has {example_shape}")
        return {"in_channels": example_shape[0], "image_size": list(example_shape[1:])}

    def config(self) -> dict[str, Any]:
        """The constructor's arguments; ``input_pool`` only when it is used, so configs (and
        the checkpoints and caches that compare them) written before it existed still match."""
        config: dict[str, Any] = {
            "name": "conv4",
            "in_channels": self.in_channels,
            "n_way": self.n_way,
            "hidden": self.hidden,
            "image_size": list(self.image_size),
            "norm": self.norm,
            "groups": self.groups,
            "depth": len(self.blocks),
        }
        if self.input_pool > 1:
            config["input_pool"] = self.input_pool
        return config
