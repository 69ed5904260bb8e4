"""The first convolution + batch norm of a Conv4 block on data, as one GEMM of centred patches.

With batch statistics the output of ``batch_norm(conv(x))`` is exactly an affine map of the
input's centred 3×3 patches, whose covariance depends on the data only (see
:func:`task_conv_batch_norm_of_data`). First layers, with few input channels, dominate the
cost of a Conv4 on CPU; as one GEMM their full-size output is written once, and its first and
second derivatives are GEMMs too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup.nets._cpu.pointwise import max_pool2_relu

#: Output elements per GEMM chunk of the first layer when its pooling is fused in: the chunk
#: stays in cache between the GEMM that writes it and the pooling (and, in backward, between
#: the pooling's gradient and the GEMM that reads it). Chunks hold at least
#: ``POOL_CHUNK_MIN_IMAGES`` images: smaller ones add more per-operation overhead than the
#: cache saves (a 5-image support in MAML's inner loop stays one chunk). Speed knobs only.
POOL_CHUNK_ELEMENTS = 1_250_000
POOL_CHUNK_MIN_IMAGES = 8


def data_patches(x: Tensor, n_tasks: int) -> Tensor:
    """The 3×3 patches (padding 1) of ``x`` ``[n, B*C, H, W]``: ``[n*H*W, B, C*9]``.

    Rows are the output positions in ``(n, h, w)`` order, the last axis is ``(c, kh, kw)``: the
    order of a conv weight ``[O, C, 3, 3]`` flattened. Built as nine shifted slices of the
    zero-padded, channels-last image stacked along the last axis, which writes the result once
    in its final layout (faster on CPU than ``unfold`` and a transposing copy).
    """
    n, BC, H, W = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # [n, H+2, W+2, B*C]
    shifted = [padded[:, i : i + H, j : j + W] for i in range(3) for j in range(3)]
    return torch.stack(shifted, -1).view(n * H * W, n_tasks, BC // n_tasks * 9)


def _design(patches: Tensor, differentiable: bool) -> tuple[Tensor, Tensor]:
    """``(design [m, B*K + 1], centred [m, B, K])`` of ``patches`` ``[m, B, K]``.

    ``centred`` are the patches minus their per-task mean; ``design`` is them flattened with a
    column of ones appended (for the shift), written in one pass when no gradient is needed
    (``out=`` does not differentiate).
    """
    m, n_tasks, K = patches.shape
    if differentiable:
        centred = patches - patches.mean(0)
        return torch.cat([centred.view(m, -1), patches.new_ones(m, 1)], 1), centred
    design = patches.new_empty(m, n_tasks * K + 1)
    centred = design[:, :-1].view(m, n_tasks, K)
    torch.sub(patches, patches.mean(0), out=centred)
    design[:, -1] = 1.0
    return design, centred


def _affine_map(
    centred: Tensor, weight: Tensor, norm_weight: Tensor, norm_bias: Tensor, eps: float
) -> Tensor:
    """The GEMM's right factor ``[B*K + 1, B*O]``: block-diagonal per-task effective weights
    ``γ_o w_o / sqrt(w_o Σ w_oᵀ + eps)`` over a last row holding the shifts ``β``.

    ``centred`` ``[m, B, K]``; ``weight`` ``[O, C, 3, 3]`` or ``[B, O, C, 3, 3]``;
    ``norm_weight``/``norm_bias`` ``[O]`` or ``[B, O]``.
    """
    m, n_tasks, K = centred.shape
    # The covariance sums m products and the variance is a quadratic form that cancels when
    # Σ is ill-conditioned (natural images): both in float64 (tiny: [B, K, K] and [B, O]), so
    # that the result is as accurate as convolution + batch norm in the input's precision.
    wide = (
        torch.float64 if centred.dtype in (torch.float32, torch.float16, torch.bfloat16) else None
    )
    p64 = centred.to(wide) if wide else centred
    cov = torch.bmm(p64.permute(1, 2, 0), p64.transpose(0, 1)).div_(m)  # [B, K, K]
    if weight.dim() == 4:
        w = weight.reshape(1, -1, K).expand(n_tasks, -1, -1)
    else:
        w = weight.reshape(n_tasks, -1, K)  # [B, O, K]
    w64 = w.to(cov.dtype)
    var = (torch.bmm(w64, cov) * w64).sum(-1).to(w.dtype)  # w_o Σ w_oᵀ, [B, O]
    gamma = norm_weight if norm_weight.dim() == 2 else norm_weight.expand(n_tasks, -1)
    beta = norm_bias if norm_bias.dim() == 2 else norm_bias.expand(n_tasks, -1)
    effective = w * (gamma * torch.rsqrt(var + eps)).unsqueeze(-1)  # [B, O, K]
    mat = effective[0].t() if n_tasks == 1 else torch.block_diag(*effective.unbind(0)).t()
    return torch.cat([mat, beta.reshape(1, -1)])


def task_conv_batch_norm_of_data(
    x: Tensor,
    weight: Tensor,
    norm_weight: Tensor,
    norm_bias: Tensor,
    n_tasks: int,
    eps: float = 1e-5,
    pool_relu: bool = False,
) -> Tensor:
    """``task_batch_norm(task_conv2d(x, weight))`` for an input ``x`` that is data, as one GEMM.

    ``x`` ``[n, B*C, H, W]`` (no gradient needed), ``weight`` ``[O, C, 3, 3]`` or
    ``[B, O, C, 3, 3]`` (padding 1, no bias), ``norm_weight``/``norm_bias`` ``[O]`` or
    ``[B, O]``; returns ``[n, B*O, H, W]`` channels-last, or with ``pool_relu`` the ReLU of its
    2×2 max-pool, ``[n, B*O, H//2, W//2]`` (the rest of a Conv4 block).

    With batch statistics the result is exactly an affine map of the input's centred 3×3
    patches ``P̃`` (``[n*H*W, C*9]`` per task): channel ``o`` has mean ``w_o · mean(P)`` and
    variance ``w_o Σ w_oᵀ`` with ``Σ = P̃ᵀP̃/m`` the patch covariance, so
    ``y_o = P̃ (γ_o w_o / sqrt(w_o Σ w_oᵀ + eps)) + β_o``. ``P̃`` and ``Σ`` depend on the data
    only; the full-size tensor is written once by a GEMM, and its first and second derivatives
    are GEMMs too, instead of the many full-size passes of convolution + batch norm.

    One GEMM serves all tasks (block-diagonal weights), written straight into the task-channel
    layout ``[n*H*W, B*O]``; the shift rides along as a column of ones in the left factor
    (``addmm`` would first copy the broadcast bias into the full-size output). Because the
    statistics come from ``Σ``, the GEMM can run over a few images at a time. With
    ``pool_relu`` it does when the output is large (query sets, test-time embeddings), and pools
    each chunk while it is still in cache instead of writing the full-size map out and reading
    it back (likewise for the pooling's zero-filled gradient in backward; the effect is
    measured by ``benchmarks/bench_test_time.py``).
    """
    n, _, H, W = x.shape
    patches = data_patches(x, n_tasks)  # [m, B, K]
    design, centred = _design(patches, torch.is_grad_enabled() and x.requires_grad)
    mat = _affine_map(centred, weight, norm_weight, norm_bias, eps)
    BO = mat.shape[1]

    def conv_bn(first: int, last: int) -> Tensor:  # images first..last-1, [c, B*O, H, W]
        out = design[first * H * W : last * H * W] @ mat
        return out.view(last - first, H, W, BO).permute(0, 3, 1, 2)

    if not pool_relu:
        return conv_bn(0, n)
    per_chunk = max(POOL_CHUNK_MIN_IMAGES, POOL_CHUNK_ELEMENTS // (H * W * BO))
    pooled = [max_pool2_relu(conv_bn(i, min(i + per_chunk, n))) for i in range(0, n, per_chunk)]
    return pooled[0] if len(pooled) == 1 else torch.cat(pooled)
