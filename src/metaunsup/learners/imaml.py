"""iMAML: implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019, arXiv:1909.04630).

Each task ``b`` adapts by (approximately) solving the *proximal* inner problem

    ``φ_b = argmin_φ  L_support,b(φ) + (λ/2) ‖φ − θ‖²``

here by ``K`` steps of gradient descent from ``θ`` (``φ ← φ − α (∇L(φ) + λ (φ − θ))``), with no
graph kept. At the solution ``∇L(φ) + λ(φ − θ) = 0``, so by the implicit function theorem
``dφ/dθ = (I + H/λ)⁻¹`` with ``H = ∇²L_support(φ)``, and the meta-gradient of the query loss is

    ``∇_θ L_query(φ_b) = (I + H/λ)⁻¹ ∇_φ L_query(φ_b)``,

found by ``cg_steps`` iterations of conjugate gradients, each one Hessian-vector product (a
double backward through the support pass). Memory does not depend on ``K``: neither the inner
steps nor the CG iterations keep anything but parameter-sized vectors and one support graph.

All ``B`` tasks run at once: adapted parameters are ``[B, *θ.shape]``, the support loss is the
sum over tasks (so its Hessian is block-diagonal over tasks and one double backward gives every
task's Hessian-vector product), and CG keeps one step size per task.

:meth:`IMAML.meta_loss` returns the query loss as a surrogate whose gradient with respect to
``θ`` is the implicit meta-gradient (its value is the query loss), so the Trainer, its gradient
clipping and the distributed all-reduce handle it like any other loss.

Shapes as in :mod:`metaunsup.learners.maml`: support ``[B, N*K, ...]``, query ``[B, m, ...]``,
logits ``[B, m, N]``. Batch normalisation uses each task's batch statistics (no running
statistics), so nothing is updated by the repeated support passes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup._validation import check_float, check_int, check_positive
from metaunsup.errors import ConfigError
from metaunsup.learners.base import (
    AdaptedState,
    FewShotLearner,
    MetaLearner,
    task_cross_entropy,
)
from metaunsup.learners.inner import gradient_steps
from metaunsup.learners.maml import query_loss_per_task
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch

__all__ = ["IMAML", "conjugate_gradient"]


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Per-task inner product ``[B]`` of two lists of task-batched ``[B, ...]`` tensors."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def conjugate_gradient(
    matvec: Any, rhs: list[Tensor], steps: int, tol: float = 1e-10
) -> list[Tensor]:
    """``steps`` iterations of conjugate gradients for ``A x = rhs``, task by task.

    ``rhs`` is a list of task-batched ``[B, ...]`` tensors (one vector per task, split over
    the parameters); ``matvec(v)`` applies each task's symmetric positive-definite ``A_b`` to
    its part of ``v``. Every task has its own step sizes; a task whose residual norm is below
    ``tol`` times that of its right-hand side stops moving. Starts from ``x = 0``.
    """
    x = [torch.zeros_like(r) for r in rhs]
    r = [t.clone() for t in rhs]
    p = [t.clone() for t in rhs]
    rs = _dot(r, r)
    floor = tol**2 * rs
    for _ in range(steps):
        active = rs > floor
        if not bool(active.any()):
            break
        ap = matvec(p)
        pap = _dot(p, ap)
        alpha = torch.where(active & (pap > 0), rs / torch.where(pap > 0, pap, 1.0), 0.0)
        x = [xi + _per_task(alpha, pi) for xi, pi in zip(x, p, strict=True)]
        r = [ri - _per_task(alpha, api) for ri, api in zip(r, ap, strict=True)]
        rs_new = _dot(r, r)
        beta = torch.where(active, rs_new / torch.where(rs > 0, rs, 1.0), 0.0)
        p = [ri + _per_task(beta, pi) for ri, pi in zip(r, p, strict=True)]
        rs = rs_new
    return x


def _per_task(scale: Tensor, t: Tensor) -> Tensor:
    """``scale`` ``[B]`` times ``t`` ``[B, ...]``, task by task."""
    return scale.view(-1, *([1] * (t.dim() - 1))) * t


class IMAML(MetaLearner, FewShotLearner):
    """Implicit MAML with a gradient-descent inner solver and a conjugate-gradient meta-gradient.

    Parameters
    ----------
    net:
        The backbone (with a head of ``n_way`` outputs).
    inner_lr:
        Step size ``α`` of the inner gradient descent.
    inner_steps:
        Inner steps during meta-training.
    test_steps:
        Inner steps of :meth:`adapt` at evaluation (``None``: ``inner_steps``).
    lam:
        ``λ``, the strength of the proximal term that keeps ``φ`` near ``θ`` (2.0 in the
        paper's Omniglot runs).
    test_lam:
        ``λ`` of the adaptation at evaluation (``None``: ``lam``; the paper's evaluation
        script uses 0, plain gradient descent).
    cg_steps:
        Conjugate-gradient iterations per meta-step (5 in the paper).
    """

    name: ClassVar[str] = "imaml"

    def __init__(
        self,
        net: FunctionalNet,
        inner_lr: float = 0.1,
        inner_steps: int = 10,
        test_steps: int | None = None,
        lam: float = 2.0,
        test_lam: float | None = None,
        cg_steps: int = 5,
    ) -> None:
        super().__init__(net)
        if net.n_way is None:
            raise ConfigError(f"{self.name} needs a network with a head (n_way set)")
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.inner_steps = check_int("inner_steps", inner_steps, 1)
        self.test_steps = check_int(
            "test_steps", inner_steps if test_steps is None else test_steps, 0
        )
        self.lam = check_positive("lam", lam)
        self.test_lam = check_float("test_lam", lam if test_lam is None else test_lam, 0.0)
        self.cg_steps = check_int("cg_steps", cg_steps, 1)

    @property
    def train_steps(self) -> int:
        return self.inner_steps

    def hparams(self) -> dict[str, Any]:
        return {
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "test_steps": self.test_steps,
            "lam": self.lam,
            "test_lam": self.test_lam,
            "cg_steps": self.cg_steps,
        }

    # ------------------------------------------------------------------ adaptation
    def _support_loss(self, support_x: Tensor, support_y: Tensor):
        def loss_fn(p: ParamDict) -> Tensor:
            return task_cross_entropy(self.net.functional_forward(p, support_x), support_y)

        return loss_fn

    def proximal_steps(
        self, support_x: Tensor, support_y: Tensor, steps: int, lam: float
    ) -> ParamDict:
        """Detached ``[B, ...]`` parameters after ``steps`` gradient steps on each task's
        support loss plus ``(lam/2) ‖φ − θ‖²``, from ``θ``."""
        B = int(support_x.shape[0])
        theta = self.meta_params(False)
        support = self._support_loss(support_x, support_y)

        def loss_fn(p: ParamDict) -> Tensor:
            loss = support(p)
            if lam > 0:
                loss = loss + 0.5 * lam * sum(((p[k] - v) ** 2).sum() for k, v in theta.items())
            return loss

        return gradient_steps(
            loss_fn, theta, list(theta), B, steps, self.inner_lr, track=False, create_graph=False
        )

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """``steps`` proximal gradient steps from ``θ`` (``λ = test_lam``); always detached:
        the meta-gradient comes from :meth:`meta_loss`, not through the inner loop."""
        B = self.check_support(support_x, support_y)
        n_way = self.check_way(n_way)
        steps = self.test_steps if steps is None else check_int("steps", steps, 0)
        lam = self.lam if differentiable else self.test_lam
        params = self.proximal_steps(support_x, support_y, steps, lam)
        return AdaptedState(params=params, n_tasks=B, n_way=n_way)

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Logits ``[B, m, n_way]`` of ``x`` ``[B, m, ...]`` with each task's adapted weights."""
        return self.net.functional_forward(state.params, x)

    def fewshot_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query logits ``[B, m, n_way]`` after the proximal adaptation on the support."""
        return self.query_logits(batch, steps)

    # ------------------------------------------------------------------ meta-gradient
    def implicit_gradient(
        self, phi: ParamDict, support_x: Tensor, support_y: Tensor, query_grad: list[Tensor]
    ) -> list[Tensor]:
        """``(I + H_b/λ)⁻¹ g_b`` for every task ``b`` (``g``: ``query_grad``, one ``[B, ...]``
        tensor per parameter), by conjugate gradients on Hessian-vector products of the
        support loss at ``phi``."""
        names = list(self.net.params())
        leaves = [phi[k].detach().requires_grad_() for k in names]
        with torch.enable_grad():
            loss = self._support_loss(support_x, support_y)(dict(zip(names, leaves, strict=True)))
            grads = torch.autograd.grad(loss, leaves, create_graph=True, materialize_grads=True)

        def matvec(v: list[Tensor]) -> list[Tensor]:
            hv = torch.autograd.grad(
                grads, leaves, v, retain_graph=True, allow_unused=True, materialize_grads=True
            )
            return [vi + h.detach() / self.lam for vi, h in zip(v, hv, strict=True)]

        return conjugate_gradient(matvec, query_grad, self.cg_steps)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """The mean query loss after proximal adaptation, as a surrogate whose gradient with
        respect to the meta-parameters is the implicit meta-gradient (mean over tasks)."""
        self.check_batch(batch)
        sx, sy = batch.support_x, batch.support_y
        phi = self.proximal_steps(sx, sy, self.inner_steps, self.lam)
        names = list(self.net.params())
        leaves = [phi[k].requires_grad_() for k in names]
        adapted = dict(zip(names, leaves, strict=True))
        with torch.enable_grad():
            if batch.x.device.type == "cpu":  # one task's query activations at a time
                loss, predictions = query_loss_per_task(
                    self.net, adapted, batch.query_x, batch.query_y
                )
            else:
                logits = self.net.functional_forward(adapted, batch.query_x)
                loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
                predictions = logits.argmax(-1)
            query_grad = list(torch.autograd.grad(loss, leaves, materialize_grads=True))
        meta_grad = self.implicit_gradient(phi, sx, sy, query_grad)
        theta = self.net.params()
        link = torch.stack(
            [(theta[k] * g.sum(0)).sum() for k, g in zip(names, meta_grad, strict=True)]
        ).sum()
        surrogate = loss.detach() + link - link.detach()  # value: the loss; gradient: meta_grad
        acc = float((predictions == batch.query_y).to(torch.float32).mean())
        metrics = {"loss": float(loss.detach()), "acc": acc}
        return surrogate, metrics
