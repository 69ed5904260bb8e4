"""Task-batched functional layers: all ``B`` tasks of a meta-batch in one pass.

Every layer takes parameters that are either *shared* (the ordinary shape, e.g. a conv weight
``[O, C, k, k]``) or *task-batched* (a leading task dimension, ``[B, O, C, k, k]``: one adapted
copy per task, as produced by an inner loop). Images travel in the *task-channel layout*
``[n, B*C, H, W]``: the ``n`` examples of every task are stacked along the batch axis and the
tasks along the channel axis, task-major (channels ``b*C .. b*C+C-1`` belong to task ``b``).
In that layout

* a convolution with per-task weights is one grouped convolution (``groups=B``) with the weights
  reshaped to ``[B*O, C, k, k]``;
* per-task batch normalisation (statistics over the task's ``n`` examples and the spatial
  positions, per channel) is one ``batch_norm`` call over ``B*O`` channels: always batch
  statistics, never running ones (transductive, as in MAML);
* per-task group normalisation is one ``group_norm`` call with ``B*G`` groups (channel groups
  never straddle two tasks because the layout is task-major);
* ReLU and max-pooling act per channel and need nothing special.

Vectors (tables, features) travel as ``[B, n, D]`` and a linear layer with per-task weights is a
batched matrix product.

These functions are what make the inner loops of MAML-style learners fast: one operator call per
layer for the whole meta-batch instead of one per task, and the result (values and gradients of
any order) equals a Python loop over tasks.

They are the generic, device-independent layers, built from PyTorch's own operations only, and
the reference that the CPU fast path of :class:`~metaunsup.nets.Conv4` (the private
``metaunsup.nets._cpu``) is tested against.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.nn.functional as F
from torch import Tensor


def to_task_channels(x: Tensor) -> Tensor:
    """``[B, n, C, H, W]`` → ``[n, B*C, H, W]`` (the task-channel layout, contiguous)."""
    B, n, C, H, W = x.shape
    return x.transpose(0, 1).reshape(n, B * C, H, W)


def from_task_channels(x: Tensor, n_tasks: int) -> Tensor:
    """``[n, B*C, H, W]`` → ``[B, n, C*H*W]``: per-task flattened features (C, H, W order)."""
    n = x.shape[0]
    return x.reshape(n, n_tasks, -1).transpose(0, 1)


@overload
def task_major(p: Tensor, n_tasks: int, shared_dim: int) -> Tensor: ...


@overload
def task_major(p: None, n_tasks: int, shared_dim: int) -> None: ...


def task_major(p: Tensor | None, n_tasks: int, shared_dim: int) -> Tensor | None:
    """A per-channel parameter for ``n_tasks`` tasks, task-major: ``[B*O, ...]``.

    ``p`` is shared (``shared_dim`` dimensions, e.g. ``[O]`` or ``[O, C, k, k]``: repeated for
    every task) or task-batched (``shared_dim + 1`` dimensions, ``[B, O, ...]``: the task axis
    is merged into the channel axis). ``None`` (no parameter) stays ``None``.
    """
    if p is None:
        return None
    if p.dim() == shared_dim:
        return p.repeat(n_tasks, *([1] * (shared_dim - 1))) if n_tasks > 1 else p
    return p.reshape(-1, *p.shape[2:])


def task_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, n_tasks: int, padding: int = 1
) -> Tensor:
    """Per-task 2-d convolution (stride 1) in the task-channel layout, one grouped convolution.

    ``x`` ``[n, B*C, H, W]``; ``weight`` ``[O, C, k, k]`` (shared) or ``[B, O, C, k, k]``;
    ``bias`` ``[O]``, ``[B, O]`` or ``None``. Returns ``[n, B*O, H', W']``.
    """
    w = task_major(weight, n_tasks, 4)
    b = task_major(bias, n_tasks, 1)
    return F.conv2d(x, w, b, padding=padding, groups=n_tasks)


def task_batch_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, n_tasks: int, eps: float = 1e-5
) -> Tensor:
    """Per-task batch normalisation with batch statistics, in the task-channel layout.

    ``x`` ``[n, B*O, H, W]`` (or ``[n, B*O]``); ``weight``/``bias`` ``[O]`` or ``[B, O]``.
    Statistics are taken per task and channel over the task's examples and spatial positions.
    """
    w, b = task_major(weight, n_tasks, 1), task_major(bias, n_tasks, 1)
    return F.batch_norm(x, None, None, w, b, training=True, eps=eps)


def task_group_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    n_tasks: int,
    groups: int,
    eps: float = 1e-5,
) -> Tensor:
    """Per-task group normalisation in the task-channel layout (``groups`` groups per task).

    ``x`` ``[n, B*O, H, W]``; ``weight``/``bias`` ``[O]`` or ``[B, O]``.
    """
    return F.group_norm(
        x, n_tasks * groups, task_major(weight, n_tasks, 1), task_major(bias, n_tasks, 1), eps=eps
    )


def task_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Per-task linear layer: ``x`` ``[B, n, I]``, ``weight`` ``[O, I]`` or ``[B, O, I]``,
    ``bias`` ``[O]``, ``[B, O]`` or ``None``. Returns ``[B, n, O]``."""
    if weight.dim() == 2:
        if bias is not None and bias.dim() == 2:
            return torch.baddbmm(bias.unsqueeze(1), x, weight.t().expand(x.shape[0], -1, -1))
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    b = bias.unsqueeze(1) if bias.dim() == 2 else bias.expand(x.shape[0], 1, -1)
    return torch.baddbmm(b, x, weight.transpose(1, 2))


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``x * weight + bias`` for ``x`` ``[B, n, O]`` and parameters ``[O]`` or ``[B, O]``."""
    if weight is not None:
        x = x * (weight.unsqueeze(1) if weight.dim() == 2 else weight)
    if bias is not None:
        x = x + (bias.unsqueeze(1) if bias.dim() == 2 else bias)
    return x


def task_batch_norm_1d(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5
) -> Tensor:
    """Per-task batch normalisation of vectors: ``x`` ``[B, n, O]``, statistics over ``n``."""
    var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)
    return _affine((x - mean) * torch.rsqrt(var + eps), weight, bias)


def task_group_norm_1d(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, groups: int, eps: float = 1e-5
) -> Tensor:
    """Group normalisation of vectors ``x`` ``[B, n, O]`` (per example, ``groups`` groups)."""
    B, n, width = x.shape
    g = x.reshape(B, n, groups, width // groups)
    var, mean = torch.var_mean(g, dim=-1, correction=0, keepdim=True)
    return _affine(((g - mean) * torch.rsqrt(var + eps)).reshape(B, n, width), weight, bias)
