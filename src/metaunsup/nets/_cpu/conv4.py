"""Conv4's task-batched features on CPU: the same function as the generic forward, faster there.

:meth:`metaunsup.nets.Conv4.functional_features` is the readable, generic forward (one grouped
NCHW pass of :mod:`metaunsup.nets.functional`'s layers) and the reference this one is tested
against (values and first and second derivatives). Here the implementation picks what is fast
on CPU, all exact:

* large tasks (query sets, ``n*H*W >= net.large_task``) run task by task with ordinary
  convolutions: one large grouped convolution is slower there than the same work split per
  task;
* activations are channels-last (the NCHW pooling and normalisation kernels are slower), and
  batch norm runs on the ``[n*H*W, C]`` matrix view with a closed-form double
  backward (:mod:`~metaunsup.nets._cpu.layers`, :mod:`~metaunsup.nets._cpu.batchnorm`);
* with batch norm, the first convolution + norm is one GEMM of the input's centred patches,
  pooled chunk by chunk while in cache (:mod:`~metaunsup.nets._cpu.first_layer`);
* ReLU follows the max-pool, as one node: they commute exactly, and it is four times less
  work; pooling, ReLU and convolution skip the materialised zeros of PyTorch's generic double
  backwards (:mod:`~metaunsup.nets._cpu.pointwise`, :mod:`~metaunsup.nets._cpu.conv`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metaunsup.nets._cpu.first_layer import task_conv_batch_norm_of_data
from metaunsup.nets._cpu.layers import channels_last, task_batch_norm, task_conv2d
from metaunsup.nets._cpu.pointwise import max_pool2_relu, relu
from metaunsup.nets.functional import from_task_channels, task_group_norm, to_task_channels

if TYPE_CHECKING:
    from metaunsup.nets.base import ParamDict
    from metaunsup.nets.conv4 import Conv4


def conv4_features(net: Conv4, params: ParamDict, x: Tensor) -> Tensor:
    """Features ``[B, n, feature_dim]`` of ``x`` ``[B, n, C, H, W]`` (a CPU tensor, already
    input-pooled) under ``params``, each entry shared or task-batched (leading ``B``).

    One grouped pass over all tasks, or (``B > 1`` and ``n*H*W >= net.large_task``) one pass
    per task; the results do not depend on the choice.
    """
    B, n, _, H, W = x.shape
    if B > 1 and n * H * W >= net.large_task:
        shared_ndim = {k: v.dim() for k, v in net.named_parameters()}
        per_task = split_tasks(params, shared_ndim, B)
        return torch.cat([_features(net, per_task[t], x[t : t + 1]) for t in range(B)])
    return _features(net, params, x)


def split_tasks(params: ParamDict, shared_ndim: dict[str, int], n_tasks: int) -> list[ParamDict]:
    """Each task's parameters: batched entries (more dimensions than ``shared_ndim`` says) as
    ``[1, ...]`` pieces, shared ones kept.

    The pieces come from one ``unbind`` per entry, whose backward stacks the tasks' gradients
    in one write (slicing would zero-fill a full-size gradient per task and add them up).
    """
    pieces = {
        k: [piece.unsqueeze(0) for piece in v.unbind(0)]
        for k, v in params.items()
        if v.dim() > shared_ndim.get(k, v.dim())
    }
    return [
        {k: pieces[k][t] if k in pieces else v for k, v in params.items()} for t in range(n_tasks)
    ]


def _features(net: Conv4, params: ParamDict, x: Tensor) -> Tensor:
    """One channels-last pass of all blocks: ``[B, n, C, H, W]`` → ``[B, n, feature_dim]``."""
    B = x.shape[0]
    h = to_task_channels(x)
    for i, block in enumerate(net.blocks):
        p = f"blocks.{i}."
        if i == 0 and net.norm == "batch":
            h = task_conv_batch_norm_of_data(
                h,
                params[p + "conv.weight"],
                params[p + "norm.weight"],
                params[p + "norm.bias"],
                B,
                pool_relu=bool(block.pool),
            )
            if block.pool:
                continue  # pooled and ReLU'd already
        else:
            if i == 0:
                h = channels_last(h)
            h = task_conv2d(h, params[p + "conv.weight"], params.get(p + "conv.bias"), B)
            if net.norm == "batch":
                h = task_batch_norm(h, params[p + "norm.weight"], params[p + "norm.bias"], B)
            elif net.norm == "group":
                h = task_group_norm(
                    h, params[p + "norm.weight"], params[p + "norm.bias"], B, net.groups
                )
        h = max_pool2_relu(h) if block.pool else relu(h)
    return from_task_channels(h, B)
