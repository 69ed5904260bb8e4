"""Meta-SGD (Li, Zhou, Chen & Li 2017, arXiv:1707.09835): MAML with learned inner step sizes.

Every network parameter ``θ_i`` has a learning-rate tensor ``α_i`` of the same shape, itself a
meta-parameter: the inner step is ``φ ← φ − α ∘ ∇_φ L_support(φ)`` (element-wise), and the
meta-gradient reaches both ``θ`` and ``α`` (second order by default; with ``first_order`` the
inner gradients ``g`` are constants, so ``∂φ/∂θ = I`` and ``α`` receives ``−g ∘ ∇_φ L_query``
from each step). ``α`` starts at ``inner_lr`` everywhere; the paper uses one step.

Shapes as in :mod:`metaunsup.learners.maml`: support ``[B, N*K, ...]``, adapted parameters
``[B, *θ.shape]``, logits ``[B, m, N]``; ``α_i`` is shared by the tasks, ``θ_i.shape``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from metaunsup.learners.inner import LearningRate
from metaunsup.learners.maml import MAML
from metaunsup.nets import FunctionalNet


def lr_key(name: str) -> str:
    """The ``lrs`` key of parameter ``name`` (module names cannot contain dots)."""
    return name.replace(".", "_")


class MetaSGD(MAML):
    """Meta-SGD: MAML whose per-parameter inner learning rates ``lrs`` are meta-learned.

    Parameters are those of :class:`~metaunsup.learners.maml.MAML`; ``inner_lr`` is the initial
    value of every learning rate. ``state_dict`` holds ``net.*`` and ``lrs.*`` entries.
    """

    name: ClassVar[str] = "metasgd"

    def __init__(
        self,
        net: FunctionalNet,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_steps: int | None = None,
        first_order: bool = False,
        inner_checkpoint: bool = False,
        task_by_task: bool = False,
    ) -> None:
        super().__init__(
            net, inner_lr, inner_steps, test_steps, first_order, inner_checkpoint, task_by_task
        )
        self.lrs = nn.ParameterDict(
            {
                lr_key(k): nn.Parameter(torch.full_like(v.detach(), self.inner_lr))
                for k, v in net.named_parameters()
            }
        )

    def inner_lr_for(self, differentiable: bool) -> LearningRate:
        """Per-parameter learning rates (detached at evaluation)."""
        lrs = {k: self.lrs[lr_key(k)] for k, _ in self.net.named_parameters()}
        return lrs if differentiable else {k: v.detach() for k, v in lrs.items()}
