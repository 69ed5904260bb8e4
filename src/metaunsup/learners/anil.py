"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020, arXiv:1909.09157).

MAML restricted to the head: the body's features are computed once per task and only the
linear head adapts in the inner loop, ``W_b ← W_b − α ∇_W L_support(W_b)``. The body is
meta-learned through the query loss (and, second order, through the inner gradients, which
depend on the support features). First order treats the inner gradients as constants; the
inner loop then runs on detached support features, so it costs head-sized work only.

Shapes: support ``[B, N*K, ...]`` → features ``[B, N*K, D]`` (once); head ``[B, N, D]`` and
``[B, N]`` per task after adaptation; query logits ``[B, m, N]``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from metaunsup._validation import check_int
from metaunsup.learners.base import AdaptedState, task_cross_entropy
from metaunsup.learners.inner import gradient_steps
from metaunsup.learners.maml import MAML
from metaunsup.nets import ParamDict


class ANIL(MAML):
    """ANIL: MAML that adapts only the head (same parameters as :class:`MAML`)."""

    name: ClassVar[str] = "anil"
    # the inner loss reads body features that carry the body's gradient: not recomputable
    checkpointable: ClassVar[bool] = False

    def inner_names(self) -> list[str]:
        return list(self.net.head_names)

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """Body features of the support once, then ``steps`` head-only gradient steps."""
        B = self.check_support(support_x, support_y)
        n_way = self.check_way(n_way)
        steps = self.test_steps if steps is None else check_int("steps", steps, 0)
        params = self.meta_params(differentiable)
        if steps == 0:
            return AdaptedState(params=params, n_tasks=B, n_way=n_way)
        second_order = differentiable and not self.first_order
        features = self.net.functional_features(params, support_x)
        if not second_order:
            features = features.detach()

        def loss_fn(p: ParamDict) -> Tensor:
            return task_cross_entropy(self.net.functional_head(p, features), support_y)

        adapted = gradient_steps(
            loss_fn,
            params,
            self.inner_names(),
            B,
            steps,
            self.inner_lr,
            track=differentiable,
            create_graph=second_order,
        )
        return AdaptedState(params=adapted, n_tasks=B, n_way=n_way)
