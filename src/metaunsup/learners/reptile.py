"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms",
arXiv:1803.02999).

For each task ``b`` the inner loop runs ``K`` steps of SGD or Adam on the task's support loss
from ``φ_b = θ`` (no graph is kept: Reptile is first order). The meta-update moves ``θ`` toward
the adapted weights, ``θ ← θ + ε (mean_b φ_b − θ)``.

To run under the algorithm-agnostic Trainer (any optimiser on ``meta_loss``), the meta-loss is
the surrogate ``S(θ) = (1/B) Σ_b ½‖θ − stopgrad(φ_b)‖²``, whose gradient is exactly
``∇S = θ − mean_b φ_b``. Plain SGD with learning rate ``ε`` on ``S`` therefore performs the
paper's update ``θ ← θ − ε(θ − mean φ) = θ + ε(mean φ − θ)``; Adam on ``S`` is the Adam-outer
variant. The inner optimiser defaults to the paper's Adam with ``β1 = 0``.

Shapes: support ``[B, N*K, ...]``, adapted parameters ``[B, *θ.shape]``, logits ``[B, m, N]``.
The metrics report the surrogate (``loss``) and, after adaptation, the query loss and accuracy.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup._validation import check_int, check_positive
from metaunsup.errors import ConfigError
from metaunsup.learners.base import (
    AdaptedState,
    FewShotLearner,
    MetaLearner,
    accuracy,
    task_cross_entropy,
)
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch

OPTIMIZERS = ("sgd", "adam")


def reptile_surrogate(theta: ParamDict, adapted: ParamDict, n_tasks: int) -> Tensor:
    """``(1/B) Σ_b ½‖θ − φ_b‖²`` summed over parameters; ``adapted`` entries ``[B, *θ.shape]``
    are treated as constants. Its gradient w.r.t. ``θ`` is ``θ − mean_b φ_b``."""
    terms = [0.5 * (theta[k] - adapted[k].detach()).pow(2).sum() for k in theta]
    return functools.reduce(operator.add, terms) / n_tasks


class Reptile(MetaLearner, FewShotLearner):
    """Reptile with an SGD or Adam inner loop, as a surrogate meta-loss.

    Parameters
    ----------
    net:
        The backbone (with a head of ``n_way`` outputs).
    inner_lr:
        Inner step size (the paper: Adam 1e-3 on Omniglot).
    inner_steps, test_steps:
        Inner steps during meta-training and, by default, at evaluation (paper: 5 and 50).
    inner_optimizer:
        ``"adam"`` (the paper's, with ``betas``) or ``"sgd"``.
    betas, eps:
        Adam's coefficients (the paper sets ``β1 = 0``).
    """

    name: ClassVar[str] = "reptile"

    def __init__(
        self,
        net: FunctionalNet,
        inner_lr: float = 1e-3,
        inner_steps: int = 5,
        test_steps: int | None = 50,
        inner_optimizer: str = "adam",
        betas: Sequence[float] = (0.0, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(net)
        if net.n_way is None:
            raise ConfigError(f"{self.name} needs a network with a head (n_way set)")
        if inner_optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown inner_optimizer {inner_optimizer!r}; choose one of: "
                f"{', '.join(OPTIMIZERS)}"
            )
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.inner_steps = check_int("inner_steps", inner_steps, 0)
        self.test_steps = check_int(
            "test_steps", inner_steps if test_steps is None else test_steps, 0
        )
        self.inner_optimizer = inner_optimizer
        self.betas: tuple[float, float] = (betas[0], betas[1])
        self.eps = check_positive("eps", eps)

    @property
    def train_steps(self) -> int:
        return self.inner_steps

    def hparams(self) -> dict[str, Any]:
        return {
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "test_steps": self.test_steps,
            "inner_optimizer": self.inner_optimizer,
            "betas": list(self.betas),
            "eps": self.eps,
        }

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """``steps`` SGD/Adam steps per task from ``θ``; always detached (Reptile needs no graph
        through the inner loop, so ``differentiable`` changes nothing)."""
        B = self.check_support(support_x, support_y)
        n_way = self.check_way(n_way)
        steps = self.test_steps if steps is None else check_int("steps", steps, 0)
        params = self.meta_params(False)
        if steps == 0:
            return AdaptedState(params=params, n_tasks=B, n_way=n_way)
        fast = {k: v.expand(B, *v.shape).clone().requires_grad_() for k, v in params.items()}
        moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in fast.items()}
        b1, b2 = self.betas
        with torch.enable_grad():
            for t in range(1, steps + 1):
                logits = self.net.functional_forward(fast, support_x)
                grads = torch.autograd.grad(
                    task_cross_entropy(logits, support_y),
                    list(fast.values()),
                    materialize_grads=True,
                )
                with torch.no_grad():
                    for (k, v), g in zip(fast.items(), grads, strict=True):
                        if self.inner_optimizer == "sgd":
                            v.sub_(g, alpha=self.inner_lr)
                            continue
                        m, s = moments[k]
                        m.mul_(b1).add_(g, alpha=1.0 - b1)
                        s.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                        denom = (s / (1.0 - b2**t)).sqrt_().add_(self.eps)
                        v.addcdiv_(m, denom, value=-self.inner_lr / (1.0 - b1**t))
        adapted = {k: v.detach() for k, v in fast.items()}
        return AdaptedState(params=adapted, n_tasks=B, n_way=n_way)

    def fewshot_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query logits ``[B, m, n_way]`` after adapting on the support (``steps``: inner steps;
        ``None``: the test-time steps)."""
        return self.query_logits(batch, steps)

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Logits ``[B, m, n_way]`` of ``x`` ``[B, m, ...]`` with each task's adapted weights."""
        return self.net.functional_forward(state.params, x)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """The surrogate ``(1/B) Σ_b ½‖θ − φ_b‖²`` (gradient ``θ − mean φ``), with metrics
        ``loss`` (the surrogate), ``query_loss`` and ``acc`` after adaptation."""
        self.check_batch(batch)
        state = self.adapt(
            batch.support_x, batch.support_y, steps=self.inner_steps, n_way=batch.n_way
        )
        surrogate = reptile_surrogate(self.net.params(), state.params, state.n_tasks)
        with torch.no_grad():
            logits = self.predict(state, batch.query_x)
            qloss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        metrics = {
            "loss": float(surrogate.detach()),
            "query_loss": float(qloss),
            "acc": accuracy(logits, batch.query_y),
        }
        return surrogate, metrics
