"""Batch normalisation of a ``[M, C]`` matrix with a hand-derived double backward.

Second-order MAML differentiates the inner-loop gradient, so every batch normalisation is
differentiated twice. PyTorch's generic double backward of ``batch_norm`` is a composite of
some thirty full-size tensor operations; here it is written out in closed form, with three
column reductions and five fused multiply-adds over the full matrix, which on CPU makes the
second-order step of the first (largest) layer cheaper (``benchmarks/bench_meta_step.py``).
Statistics are two-pass column sums (accurate in float32, unlike the fused kernel on ``[M, C]``
inputs).
Third-order derivatives are not supported (the double backward is ``once_differentiable``).

Notation, per column: ``m`` rows, ``r = 1/sqrt(var + eps)``, ``x̂ = (x - mean) r``,
``y = w x̂ + b``. Backward of ``y`` with incoming gradient ``g``: ``Sg = Σg``, ``Sgx = Σ g x̂``,
``gx = w r (g - Sg/m - x̂ Sgx/m)``, ``gw = Sgx``, ``gb = Sg``. Its backward, with incoming
``(A, a_w, a_b)`` for ``(gx, gw, gb)`` and ``SA = ΣA``, ``SAx = Σ A x̂``,
``T = Σ A g - SA Sg/m - SAx Sgx/m``::

    ∂/∂g = w r A + x̂ (a_w - w r SAx/m) + (a_b - w r SA/m)
    ∂/∂x = A (-w r² Sgx/m) + g r (a_w - w r SAx/m)
           + x̂ (-w r² T/m + 2 w r² SAx Sgx/m² - a_w r Sgx/m)
           + (w r² SA Sgx/m² + w r² SAx Sg/m² - a_w r Sg/m)
    ∂/∂w = r T
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable


class _BatchNorm(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        # Two passes with plain column sums: accurate in float32 (aten's fused kernel on
        # [M, C] inputs accumulates the mean far less accurately) and, on CPU, faster than
        # torch.var_mean's Welford reduction over dim 0.
        m = x.shape[0]
        centred = x - x.sum(0) / m
        invstd = torch.rsqrt((centred * centred).sum(0) / m + eps)
        xh = centred * invstd
        ctx.save_for_backward(x, weight, xh, invstd)
        return torch.addcmul(bias, xh, weight)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, xh, invstd = ctx.saved_tensors
        gx, gw, gb = _BatchNormBackward.apply(gy, x, weight, xh, invstd)
        return gx, gw, gb, None


class _BatchNormBackward(Function):
    @staticmethod
    def forward(
        ctx: Any, gy: Tensor, x: Tensor, w: Tensor, xh: Tensor, r: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        m = x.shape[0]
        Sg = gy.sum(0)
        Sgx = (gy * xh).sum(0)
        wr = w * r
        gx = torch.addcmul(-wr * Sg / m, gy, wr).addcmul_(xh, -wr * Sgx / m)
        ctx.save_for_backward(gy, w, xh, r, Sgx, Sg)
        ctx.m = m
        return gx, Sgx, Sg

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, A: Tensor, a_w: Tensor, a_b: Tensor) -> tuple[Tensor | None, ...]:
        gy, w, xh, r, Sgx, Sg = ctx.saved_tensors
        m = ctx.m
        SA = A.sum(0)
        SAx = (A * xh).sum(0)
        SAg = (A * gy).sum(0)
        wr = w * r
        T = SAg - SA * Sg / m - SAx * Sgx / m
        k = a_w - wr * SAx / m
        grad_gy = torch.addcmul(a_b - wr * SA / m, A, wr).addcmul_(xh, k)
        wr2 = wr * r
        c_x = -wr2 * T / m + 2 * wr2 * SAx * Sgx / (m * m) - a_w * r * Sgx / m
        c_0 = wr2 * (SA * Sgx + SAx * Sg) / (m * m) - a_w * r * Sg / m
        grad_x = torch.addcmul(c_0, A, -wr2 * Sgx / m).addcmul_(gy, r * k).addcmul_(xh, c_x)
        return grad_gy, grad_x, r * T, None, None


def batch_norm_2d(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Batch normalisation (batch statistics) of the columns of ``x`` ``[M, C]``;
    ``weight``/``bias`` ``[C]``. Values and gradients equal ``F.batch_norm``'s.

    The backward uses ``x̂`` and ``1/σ``, never ``x`` itself; ``x`` is kept only as the edge
    along which the double backward returns its gradient. So it is saved as its shape alone
    (a saved-tensor hook; autograd restores the edge on unpacking, and an uninitialised tensor
    stands in for the values), which frees the convolution output it would otherwise keep
    alive until backward — one full-size activation per block.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _BatchNorm.apply(x, weight, bias, eps)
    with torch.autograd.graph.saved_tensors_hooks(_pack_layout_of(x), _unpack_layout):
        return _BatchNorm.apply(x, weight, bias, eps)


def _pack_layout_of(x: Tensor) -> Any:
    """A pack hook that keeps ``x`` as its layout only (every other tensor as itself)."""

    def pack(t: Tensor) -> Any:
        if t is x or (t.data_ptr() == x.data_ptr() and t.shape == x.shape):
            return ("layout", t.shape, t.stride(), t.dtype, t.device)
        return t

    return pack


def _unpack_layout(packed: Any) -> Tensor:
    if isinstance(packed, tuple) and packed and packed[0] == "layout":
        _, shape, stride, dtype, device = packed
        return torch.empty_strided(shape, stride, dtype=dtype, device=device)
    return packed
