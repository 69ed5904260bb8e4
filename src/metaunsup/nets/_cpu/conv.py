"""2-d convolution with a double backward made of the optimised convolution primitives.

Second-order MAML differentiates every convolution of the inner loop twice. PyTorch's generic
double backward computes one of its terms (the weight gradient seen from the input's gradient)
as a convolution of the transposed input with the transposed output gradient, looping over the
groups: on CPU that is an unusually slow, large-kernel convolution. Written out, the double
backward of ``y = conv(x, w)`` (``gx = convᵀ(gy; w)``, ``gw = corr(x, gy)``) with incoming
gradients ``(A_x, A_w)`` needs only the primitives themselves::

    ∂/∂gy = conv(A_x, w) + conv(x, A_w)
    ∂/∂x  = convᵀ(gy; A_w)          (the input gradient of a convolution with weight A_w)
    ∂/∂w  = corr(A_x, gy)            (the weight gradient of a convolution of A_x)

Stride 1, no dilation, no bias (the batch-normalised convolutions of Conv4). Third-order
derivatives are not supported (the double backward is ``once_differentiable``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable


def _grads(
    gy: Tensor, x: Tensor, w: Tensor, groups: int, padding: int, need_x: bool, need_w: bool
) -> tuple[Tensor | None, Tensor | None]:
    gx, gw, _ = torch.ops.aten.convolution_backward(
        gy, x, w, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], groups,
        [need_x, need_w, False],
    )  # fmt: skip
    return gx, gw


class _Conv2d(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, groups: int, padding: int) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.groups, ctx.padding = groups, padding
        return F.conv2d(x, w, None, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gw = _Conv2dBackward.apply(gy, x, w, ctx.groups, ctx.padding, need_x, need_w)
        return gx, gw, None, None


class _Conv2dBackward(Function):
    @staticmethod
    def forward(
        ctx: Any, gy: Tensor, x: Tensor, w: Tensor, groups: int, padding: int, nx: bool, nw: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(gy, x, w)
        ctx.groups, ctx.padding = groups, padding
        return _grads(gy, x, w, groups, padding, nx, nw)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, a_x: Tensor | None, a_w: Tensor | None) -> tuple[Tensor | None, ...]:
        gy, x, w = ctx.saved_tensors
        groups, padding = ctx.groups, ctx.padding
        need_gy, need_x, need_w = ctx.needs_input_grad[:3]
        g_gy = g_x = g_w = None
        if need_gy:
            if a_x is not None:
                g_gy = F.conv2d(a_x, w, None, padding=padding, groups=groups)
            if a_w is not None:
                term = F.conv2d(x, a_w, None, padding=padding, groups=groups)
                g_gy = term if g_gy is None else g_gy.add_(term)
        if need_x and a_w is not None:
            g_x = _grads(gy, x, a_w, groups, padding, True, False)[0]
        if need_w and a_x is not None:
            g_w = _grads(gy, a_x, w, groups, padding, False, True)[1]
        return g_gy, g_x, g_w, None, None, None, None


def conv2d(x: Tensor, weight: Tensor, groups: int = 1, padding: int = 1) -> Tensor:
    """``F.conv2d(x, weight, padding=padding, groups=groups)`` (stride 1, no bias) whose second
    derivatives use the convolution primitives directly (see the module docstring)."""
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        return F.conv2d(x, weight, None, padding=padding, groups=groups)
    return _Conv2d.apply(x, weight, groups, padding)
