"""Channels-last versions of the task-batched convolution and batch norm, for CPUs.

Same functions as :func:`metaunsup.nets.functional.task_conv2d` and
:func:`~metaunsup.nets.functional.task_batch_norm` (same arguments, values and gradients of
the first and second order), for activations in the channels-last memory format ``[n, B*C, H,
W]`` with strides ``(H*W*B*C, 1, W*B*C, B*C)``: on CPUs, convolution, normalisation and pooling
kernels are faster in that format than in NCHW (``docs/results/speed.md``). Other inputs fall
back to the generic layers' operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup.nets._cpu.batchnorm import batch_norm_2d
from metaunsup.nets._cpu.conv import conv2d
from metaunsup.nets.functional import task_major


def channels_last(x: Tensor) -> Tensor:
    """``x`` ``[N, C, H, W]`` with channels-last strides ``(H*W*C, 1, W*C, C)``, exactly.

    Unlike ``x.contiguous(memory_format=torch.channels_last)`` this also restrides tensors with
    one channel (which PyTorch considers contiguous in both formats), so that convolutions,
    normalisations and pooling downstream all pick their channels-last kernels (on CPUs
    faster than the NCHW ones).
    Differentiable; returns ``x`` itself when it already has those strides.
    """
    _, C, H, W = x.shape
    want = (H * W * C, 1, W * C, C)
    if x.stride() == want:
        return x
    if C > 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x.new_empty_strided(x.shape, want).copy_(x)


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


def task_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, n_tasks: int, padding: int = 1
) -> Tensor:
    """Per-task 2-d convolution in the task-channel layout, channels-last.

    ``x`` ``[n, B*C, H, W]``; ``weight`` ``[O, C, k, k]`` (shared) or ``[B, O, C, k, k]``;
    ``bias`` ``[O]``, ``[B, O]`` or ``None``. Returns ``[n, B*O, H', W']``. For a channels-last
    ``x`` the weight is converted once here (instead of inside every convolution kernel of the
    forward, backward and double backward that reads it), and without bias the convolution's
    double backward is made of convolution primitives (:mod:`metaunsup.nets._cpu.conv`).
    """
    w = task_major(weight, n_tasks, 4)
    b = task_major(bias, n_tasks, 1)
    if _is_channels_last(x):
        w = channels_last(w)
        if b is None:
            return conv2d(x, w, groups=n_tasks, padding=padding)
    return F.conv2d(x, w, b, padding=padding, groups=n_tasks)


def task_batch_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, n_tasks: int, eps: float = 1e-5
) -> Tensor:
    """Per-task batch normalisation with batch statistics, in the task-channel layout.

    ``x`` ``[n, B*O, H, W]`` (or ``[n, B*O]``); ``weight``/``bias`` ``[O]`` or ``[B, O]``.
    A channels-last ``x`` is normalised as the ``[n*H*W, B*O]`` matrix it is in memory (a
    view) by :func:`~metaunsup.nets._cpu.batchnorm.batch_norm_2d`: on CPU faster, in backward
    and double backward, than ``batch_norm`` on the 4-d channels-last tensor, and
    accurate in float32 (aten's kernels for channels-last inputs accumulate the mean naively).
    """
    w, b = task_major(weight, n_tasks, 1), task_major(bias, n_tasks, 1)
    if _is_channels_last(x):
        n, C, H, W = x.shape
        x2 = x.permute(0, 2, 3, 1).reshape(-1, C)
        if w is not None and b is not None:
            y = batch_norm_2d(x2, w, b, eps)
        else:
            y = F.batch_norm(x2, None, None, w, b, True, 0.0, eps)
        return y.view(n, H, W, C).permute(0, 3, 1, 2)
    return F.batch_norm(x, None, None, w, b, training=True, eps=eps)
