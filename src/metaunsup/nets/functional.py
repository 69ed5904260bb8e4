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

On CPU the backbones add exact rewrites that matter more than the operator count there
(measured on a 2-core Xeon, see ``benchmarks/bench_meta_step.py``): channels-last activations
(:func:`channels_last`); batch norm of the ``[n*H*W, C]`` matrix view with a closed-form double
backward (:func:`task_batch_norm`, :mod:`metaunsup.nets.batchnorm`); the first convolution +
batch norm as one GEMM of centred input patches (:func:`task_conv_batch_norm_of_data`); and
convolution, max-pooling and ReLU whose double backward is made of the optimised primitives
and skips materialised zeros (:mod:`metaunsup.nets.conv`, :mod:`metaunsup.nets.pointwise`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup.nets.batchnorm import batch_norm_2d
from metaunsup.nets.conv import conv2d
from metaunsup.nets.pointwise import max_pool2_relu


def channels_last(x: Tensor) -> Tensor:
    """``x`` ``[N, C, H, W]`` with channels-last strides ``(H*W*C, 1, W*C, C)``, exactly.

    Unlike ``x.contiguous(memory_format=torch.channels_last)`` this also restrides tensors with
    one channel (which PyTorch considers contiguous in both formats), so that convolutions,
    normalisations and pooling downstream all pick their channels-last kernels. On CPUs these
    are several times faster than the NCHW ones (max-pooling by an order of magnitude).
    Differentiable; returns ``x`` itself when it already has those strides.
    """
    _, C, H, W = x.shape
    want = (H * W * C, 1, W * C, C)
    if x.stride() == want:
        return x
    if C > 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x.new_empty_strided(x.shape, want).copy_(x)


def to_task_channels(x: Tensor) -> Tensor:
    """``[B, n, C, H, W]`` → ``[n, B*C, H, W]`` (the task-channel layout, contiguous)."""
    B, n, C, H, W = x.shape
    return x.transpose(0, 1).reshape(n, B * C, H, W)


def from_task_channels(x: Tensor, n_tasks: int) -> Tensor:
    """``[n, B*C, H, W]`` → ``[B, n, C*H*W]``: per-task flattened features (C, H, W order)."""
    n = x.shape[0]
    return x.reshape(n, n_tasks, -1).transpose(0, 1)


def _flat(p: Tensor | None, n_tasks: int, shared_dim: int) -> Tensor | None:
    """A per-channel parameter for ``n_tasks`` tasks, task-major: ``[B*O, ...]``.

    ``p`` is shared (``shared_dim`` dimensions: repeated for every task) or task-batched
    (``shared_dim + 1`` dimensions: the task axis is merged into the channel axis).
    """
    if p is None:
        return None
    if p.dim() == shared_dim:
        return p.repeat(n_tasks, *([1] * (shared_dim - 1))) if n_tasks > 1 else p
    return p.reshape(-1, *p.shape[2:])


def task_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, n_tasks: int, padding: int = 1
) -> Tensor:
    """Per-task 2-d convolution in the task-channel layout.

    ``x`` ``[n, B*C, H, W]``; ``weight`` ``[O, C, k, k]`` (shared) or ``[B, O, C, k, k]``;
    ``bias`` ``[O]``, ``[B, O]`` or ``None``. Returns ``[n, B*O, H', W']``.
    """
    w = _flat(weight, n_tasks, 4)
    b = _flat(bias, n_tasks, 1)
    if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        # one layout conversion here, instead of one inside every convolution kernel of the
        # forward, backward and double backward that reads this weight
        w = channels_last(w)
        if b is None:  # the CPU path: a double backward made of convolution primitives
            return conv2d(x, w, groups=n_tasks, padding=padding)
    return F.conv2d(x, w, b, padding=padding, groups=n_tasks)


def task_batch_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, n_tasks: int, eps: float = 1e-5
) -> Tensor:
    """Per-task batch normalisation with batch statistics, in the task-channel layout.

    ``x`` ``[n, B*O, H, W]`` (or ``[n, B*O]``); ``weight``/``bias`` ``[O]`` or ``[B, O]``.
    Statistics are taken per task and channel over the task's examples and spatial positions.
    A channels-last ``x`` is normalised as the ``[n*H*W, B*O]`` matrix it is in memory (a
    view) by :func:`~metaunsup.nets.batchnorm.batch_norm_2d`: on CPU several times faster,
    in backward and double backward, than ``batch_norm`` on the 4-d channels-last tensor, and
    accurate in float32 (aten's kernels for channels-last inputs accumulate the mean naively).
    """
    w, b = _flat(weight, n_tasks, 1), _flat(bias, n_tasks, 1)
    if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        n, C, H, W = x.shape
        x2 = x.permute(0, 2, 3, 1).reshape(-1, C)
        if w is not None and b is not None:
            y = batch_norm_2d(x2, w, b, eps)
        else:
            y = F.batch_norm(x2, None, None, w, b, True, 0.0, eps)
        return y.view(n, H, W, C).permute(0, 3, 1, 2)
    return F.batch_norm(x, None, None, w, b, training=True, eps=eps)


def data_patches(x: Tensor, n_tasks: int) -> Tensor:
    """The 3×3 patches (padding 1) of ``x`` ``[n, B*C, H, W]``: ``[n*H*W, B, C*9]``.

    Rows are the output positions in ``(n, h, w)`` order, the last axis is ``(c, kh, kw)``: the
    order of a conv weight ``[O, C, 3, 3]`` flattened. Built as nine shifted slices of the
    zero-padded, channels-last image stacked along the last axis, which writes the result once
    in its final layout (about three times faster on CPU than ``unfold`` and a transposing copy).
    """
    n, BC, H, W = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # [n, H+2, W+2, B*C]
    shifted = [padded[:, i : i + H, j : j + W] for i in range(3) for j in range(3)]
    return torch.stack(shifted, -1).view(n * H * W, n_tasks, BC // n_tasks * 9)


#: Output elements per GEMM chunk of the first layer when its pooling is fused in: the chunk
#: stays in cache between the GEMM that writes it and the pooling (and, in backward, between
#: the pooling's gradient and the GEMM that reads it). Chunks hold at least
#: ``POOL_CHUNK_MIN_IMAGES`` images: smaller ones add more per-operation overhead than the
#: cache saves (a 5-image support in MAML's inner loop stays one chunk). Speed knobs only.
POOL_CHUNK_ELEMENTS = 1_250_000
POOL_CHUNK_MIN_IMAGES = 8


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
    are GEMMs too, instead of the many full-size passes of convolution + batch norm (first
    layers, with few input channels, dominate the cost of a Conv4 on CPU).

    Because the statistics come from ``Σ``, the GEMM can run over a few images at a time. With
    ``pool_relu`` it does when the output is large (query sets, test-time embeddings), and pools
    each chunk while it is still in cache instead of writing the full-size map out and reading
    it back (likewise for the pooling's zero-filled gradient in backward). In
    ``benchmarks/bench_test_time.py`` the 28×28 embedding of 200 images per task went from 84.6
    to 72.4 ms (one thread).
    """
    n, BC, H, W = x.shape
    C = BC // n_tasks
    K = C * 9
    m = n * H * W
    patches = data_patches(x, n_tasks)  # [m, B, K]
    # centred patches and a column of ones (for the shift, see below), written in one pass
    if torch.is_grad_enabled() and x.requires_grad:  # (out= does not differentiate)
        centred = patches - patches.mean(0)
        design = torch.cat([centred.view(m, -1), patches.new_ones(m, 1)], 1)
    else:
        design = patches.new_empty(m, n_tasks * K + 1)
        centred = design[:, :-1].view(m, n_tasks, K)
        torch.sub(patches, patches.mean(0), out=centred)
        design[:, -1] = 1.0
    # The covariance sums m products and the variance is a quadratic form that cancels when
    # Σ is ill-conditioned (natural images): both in float64 (tiny: [B, K, K] and [B, O]), so
    # that the result is as accurate as convolution + batch norm in the input's precision.
    wide = (
        torch.float64 if patches.dtype in (torch.float32, torch.float16, torch.bfloat16) else None
    )
    p64 = centred.to(wide) if wide else centred
    cov = torch.bmm(p64.permute(1, 2, 0), p64.transpose(0, 1)).div_(m)  # [B, K, K]
    if weight.dim() == 4:
        w = weight.reshape(1, -1, K).expand(n_tasks, -1, -1)
    else:
        w = weight.reshape(n_tasks, -1, K)  # [B, O, K]
    n_out = w.shape[1]
    w64 = w.to(cov.dtype)
    var = (torch.bmm(w64, cov) * w64).sum(-1).to(w.dtype)  # w_o Σ w_oᵀ, [B, O]
    gamma = norm_weight if norm_weight.dim() == 2 else norm_weight.expand(n_tasks, -1)
    beta = norm_bias if norm_bias.dim() == 2 else norm_bias.expand(n_tasks, -1)
    effective = w * (gamma * torch.rsqrt(var + eps)).unsqueeze(-1)  # [B, O, K]
    # One GEMM for all tasks (block-diagonal weights), written straight into the task-channel
    # layout [n*H*W, B*O]; the shift rides along as the column of ones (addmm would first copy
    # the broadcast bias into the full-size output).
    mat = effective[0].t() if n_tasks == 1 else torch.block_diag(*effective.unbind(0)).t()
    mat = torch.cat([mat, beta.reshape(1, -1)])
    BO = n_tasks * n_out

    def conv_bn(first: int, last: int) -> Tensor:  # images first..last-1, [c, B*O, H, W]
        out = design[first * H * W : last * H * W] @ mat
        return out.view(last - first, H, W, BO).permute(0, 3, 1, 2)

    if not pool_relu:
        return conv_bn(0, n)
    per_chunk = max(POOL_CHUNK_MIN_IMAGES, POOL_CHUNK_ELEMENTS // (H * W * BO))
    pooled = [max_pool2_relu(conv_bn(i, min(i + per_chunk, n))) for i in range(0, n, per_chunk)]
    return pooled[0] if len(pooled) == 1 else torch.cat(pooled)


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
        x, n_tasks * groups, _flat(weight, n_tasks, 1), _flat(bias, n_tasks, 1), eps=eps
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
