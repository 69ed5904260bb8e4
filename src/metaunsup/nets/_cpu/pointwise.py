"""2×2 max-pooling + ReLU, and ReLU alone, whose double backward skips zero gradients.

The backward of both is linear in the incoming gradient and piecewise constant in the input, so
their second derivative with respect to the input is zero. PyTorch's generic double backward
nevertheless materialises that zero as a full-size tensor and adds it into the input's
gradient (for the first layer's pooling, the largest tensor of a Conv4); here it is simply
absent. Values and first and second derivatives are those of ``F.max_pool2d(x, 2)`` and
``F.relu``; third derivatives are not supported (``once_differentiable``).

The pooling keeps its argmax indices and output for backward, not its input: aten's backward
reads only the input's shape and strides, so an uninitialised tensor of that layout stands in
(never written or read, so it takes no memory). In a Conv4 the pooling input is the largest
activation of each block, and with second-order MAML's four query sets held for backward this
is a large part of the peak (``benchmarks/bench_inner_memory.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

_POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # kernel, stride, padding, dilation, ceil


def _pick(ggx: Tensor, idx: Tensor) -> Tensor:
    """``ggx`` ``[n, c, H, W]`` at the pooling's argmax positions ``idx`` ``[n, c, h, w]``."""
    n, c, h, w = idx.shape
    cl = torch.channels_last
    if c > 1 and ggx.is_contiguous(memory_format=cl) and idx.is_contiguous(memory_format=cl):
        # gather along the spatial axis of the [n, H*W, c] views: no layout copies
        src = ggx.permute(0, 2, 3, 1).reshape(n, -1, c)
        picked = src.gather(1, idx.permute(0, 2, 3, 1).reshape(n, -1, c))
        return picked.view(n, h, w, c).permute(0, 3, 1, 2)
    return ggx.reshape(n, c, -1).gather(2, idx.reshape(n, c, -1)).view(idx.shape)


class _MaxPool2Relu(Function):
    """``relu(max_pool2d(x, 2))`` as one autograd node (half the nodes of the pair)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        pooled, idx = torch.ops.aten.max_pool2d_with_indices(x, *_POOL)
        y = torch.relu(pooled)
        ctx.save_for_backward(idx, y)
        ctx.input_layout = (x.shape, x.stride())
        ctx.mark_non_differentiable(idx)
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> Tensor:
        idx, y = ctx.saved_tensors
        shape, stride = ctx.input_layout
        like = torch.empty_strided(shape, stride, dtype=y.dtype, device=y.device)
        return _MaxPool2ReluBackward.apply(gy, like, idx, y)


class _MaxPool2ReluBackward(Function):
    """The pooling's backward (``x``: a tensor of the input's layout, read for nothing else)."""

    @staticmethod
    def forward(ctx: Any, gy: Tensor, x: Tensor, idx: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(idx, y)
        g_pooled = torch.ops.aten.threshold_backward(gy, y, 0)
        return torch.ops.aten.max_pool2d_with_indices_backward(g_pooled, x, *_POOL, idx)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: Tensor) -> tuple[Tensor | None, ...]:
        idx, y = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(_pick(ggx, idx), y, 0), None, None, None


class _Relu(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return _ReluBackward.apply(gy, y)


class _ReluBackward(Function):
    @staticmethod
    def forward(ctx: Any, gy: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(y)
        return torch.ops.aten.threshold_backward(gy, y, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: Tensor) -> tuple[Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(ggx, y, 0), None


def _tracked(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def max_pool2_relu(x: Tensor) -> Tensor:
    """``F.relu(F.max_pool2d(x, 2))`` as one node, without zero-filled second derivatives."""
    return _MaxPool2Relu.apply(x) if _tracked(x) else F.relu(F.max_pool2d(x, 2))


def relu(x: Tensor) -> Tensor:
    """``F.relu(x)`` without the zero-filled second derivative."""
    return _Relu.apply(x) if _tracked(x) else F.relu(x)
