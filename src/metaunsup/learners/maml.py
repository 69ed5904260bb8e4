"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017, arXiv:1703.03400).

Meta-parameters ``θ`` (all the network's weights). For each task ``b`` of a meta-batch, the inner
loop takes ``K`` gradient steps on the support loss,
``φ_b ← φ_b − α ∇_φ L_support(φ_b)`` starting from ``φ_b = θ``, and the meta-loss is the mean
query loss at ``φ_b``. Second order differentiates through the inner gradients
(``create_graph=True``); first order (FOMAML) treats them as constants, so the meta-gradient is
the query gradient at ``φ_b``.

Shapes: support ``[B, N*K, C, H, W]`` (or ``[B, N*K, d]`` with an MLP), labels ``[B, N*K]``;
adapted parameters ``[B, *θ.shape]``; logits ``[B, m, N]``. All ``B`` tasks run in one
task-batched pass of the network (grouped convolutions, see :mod:`metaunsup.nets.functional`);
batch normalisation uses each task's batch statistics (transductive, as in the paper).

On the CPU the query loss is differentiated task by task as it is computed
(:func:`query_loss_per_task`): only one task's query activations are alive at a time, which
halves the peak memory of a meta-step at no cost in time (the CPU kernels run query sets one
task at a time anyway); the meta-gradient is the same.

With ``task_by_task`` a CPU meta-step goes further (:func:`meta_loss_task_by_task`): each
task's inner loop and query loss are differentiated right away and only the parameter-sized
gradient is kept, so one task's inner-loop graph is alive at a time instead of ``B`` (the
memory of the peers that loop over tasks, which grows with the inner steps ``B`` times more
slowly), for some time (the support's convolutions no longer run for all tasks at once);
the meta-loss and meta-gradient are the same.

With ``inner_checkpoint`` the second-order inner loop is recomputed in the backward pass
instead of stored (:func:`~metaunsup.learners.inner.checkpointed_steps`): the same
meta-gradient with memory that grows with ``√K`` parameter copies instead of ``K`` graphs.
The networks keep no running statistics (batch norm uses each task's batch statistics), so a
recomputed step updates nothing twice.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup._validation import check_bool, check_int
from metaunsup.errors import ConfigError
from metaunsup.learners.base import (
    AdaptedState,
    FewShotLearner,
    MetaLearner,
    task_cross_entropy,
)
from metaunsup.learners.inner import InnerLoopSettings, LearningRate, gradient_steps
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch


class MAML(InnerLoopSettings, MetaLearner, FewShotLearner):
    """MAML with a first/second-order flag.

    Parameters
    ----------
    net:
        The backbone (with a head of ``n_way`` outputs).
    inner_lr:
        Inner-loop step size ``α`` (0.4 for Omniglot in the paper).
    inner_steps:
        Inner steps during meta-training (``meta_loss``).
    test_steps:
        Default inner steps of :meth:`adapt` at evaluation (``None``: ``inner_steps``).
    first_order:
        ``True`` for first-order MAML (stop-gradient of the inner gradients).
    inner_checkpoint:
        Second order only: recompute the inner loop in the backward pass instead of storing
        it (same meta-gradient; memory nearly flat in ``inner_steps``, for about one more pass
        of the inner loop).
    task_by_task:
        On the CPU, differentiate the meta-batch's tasks one after the other
        (:func:`meta_loss_task_by_task`; same meta-gradient, one task's graph in memory).
    """

    name: ClassVar[str] = "maml"
    #: Whether :meth:`adapt` can recompute its inner loop in the backward pass (a learner whose
    #: inner loss depends on meta-parameters it does not adapt cannot).
    checkpointable: ClassVar[bool] = True

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
        super().__init__(net)
        if net.n_way is None:
            raise ConfigError(f"{self.name} needs a network with a head (n_way set)")
        self.set_inner_loop(inner_lr, inner_steps, test_steps, first_order)
        self.inner_checkpoint = check_bool("inner_checkpoint", inner_checkpoint)
        self.task_by_task = check_bool("task_by_task", task_by_task)
        if self.inner_checkpoint:
            check_recomputable(net)
            if not self.checkpointable:
                raise ConfigError(f"{self.name} does not support inner_checkpoint")

    def hparams(self) -> dict[str, Any]:
        """The inner-loop settings (``inner_checkpoint`` and ``task_by_task`` only when on, so
        configs written before they existed still match)."""
        out: dict[str, Any] = dict(self.inner_loop_hparams())
        if self.inner_checkpoint:
            out["inner_checkpoint"] = True
        if self.task_by_task:
            out["task_by_task"] = True
        return out

    def inner_names(self) -> list[str]:
        """Names of the parameters the inner loop adapts (all of them for MAML)."""
        return list(self.net.params())

    def inner_lr_for(self, differentiable: bool) -> LearningRate:
        """The step size(s) of the inner loop."""
        return self.inner_lr

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """``steps`` task-batched gradient steps from ``θ`` on each task's support loss."""
        B = self.check_support(support_x, support_y)
        n_way = self.check_way(n_way)
        steps = self.test_steps if steps is None else check_int("steps", steps, 0)
        params = self.meta_params(differentiable)

        def loss_fn(p: ParamDict) -> Tensor:
            return task_cross_entropy(self.net.functional_forward(p, support_x), support_y)

        adapted = gradient_steps(
            loss_fn,
            params,
            self.inner_names(),
            B,
            steps,
            self.inner_lr_for(differentiable),
            track=differentiable,
            create_graph=not self.first_order,
            checkpoint=self.inner_checkpoint,
        )
        return AdaptedState(params=adapted, n_tasks=B, n_way=n_way)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """Mean query cross-entropy after a differentiable adaptation (see
        :meth:`MetaLearner.meta_loss`); on the CPU the query loss is differentiated task by
        task (:func:`query_loss_per_task`)."""
        if batch.x.device.type != "cpu":
            return super().meta_loss(batch)
        self.check_batch(batch)
        if self.task_by_task and batch.n_tasks > 1 and torch.is_grad_enabled():
            return meta_loss_task_by_task(self, batch)
        state = self.adapt(
            batch.support_x,
            batch.support_y,
            steps=self.train_steps,
            differentiable=True,
            n_way=batch.n_way,
        )
        loss, predictions = query_loss_per_task(
            self.net, state.params, batch.query_x, batch.query_y
        )
        acc = float((predictions == batch.query_y).to(torch.float32).mean())
        return loss, {"loss": float(loss.detach()), "acc": acc}

    def fewshot_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query logits ``[B, m, n_way]`` after adapting on the support (``steps``: inner steps;
        ``None``: the test-time steps)."""
        return self.query_logits(batch, steps)

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Logits ``[B, m, n_way]`` of ``x`` ``[B, m, ...]`` with each task's adapted weights."""
        return self.net.functional_forward(state.params, x)


def check_recomputable(net: nn.Module) -> None:
    """Refuse a network whose forward changes state (batch norm with running statistics):
    recomputing an inner step in the backward pass would update that state twice."""
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            raise ConfigError(
                f"{name}: batch norm with running statistics would be updated twice by a "
                "recomputed inner loop; use per-task batch statistics or turn inner_checkpoint off"
            )


class _QueryLossPerTask(torch.autograd.Function):
    """Mean query cross-entropy whose gradient is computed task by task in the forward pass.

    Inputs: the network, the parameter names, the query ``x`` ``[B, m, ...]`` and labels
    ``[B, m]``, then one tensor per name (task-batched ``[B, ...]`` or shared). Outputs: the
    loss (mean over all ``B*m`` queries) and the predicted labels ``[B, m]`` (not
    differentiable).
    """

    @staticmethod
    def forward(ctx: Any, net: FunctionalNet, names: tuple[str, ...], x: Tensor, y: Tensor,
                *values: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
        B, m = y.shape
        batched = [v.dim() > p.dim() for v, p in zip(values, net.parameters(), strict=True)]
        grads = [torch.zeros_like(v) for v in values]
        shared = [v.detach().requires_grad_() for v in values]
        total = values[0].new_zeros(())
        predictions = torch.empty_like(y)
        for b in range(B):
            with torch.enable_grad():
                leaves = [
                    v[b : b + 1].detach().requires_grad_() if is_b else s
                    for v, s, is_b in zip(values, shared, batched, strict=True)
                ]
                logits = net.functional_forward(dict(zip(names, leaves, strict=True)), x[b : b + 1])
                loss = F.cross_entropy(logits[0], y[b], reduction="sum") / (B * m)
                task_grads = torch.autograd.grad(
                    loss, leaves, allow_unused=True, materialize_grads=True
                )
            for g, tg, is_b in zip(grads, task_grads, batched, strict=True):
                if is_b:
                    g[b] = tg[0]
                else:
                    g += tg
            total += loss.detach()
            predictions[b] = logits[0].argmax(-1)
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(predictions)
        return total, predictions

    @staticmethod
    def backward(ctx: Any, g_loss: Tensor, _g_pred: Tensor | None) -> tuple[Tensor | None, ...]:
        return (None, None, None, None, *(g_loss * g for g in ctx.saved_tensors))


def meta_loss_task_by_task(
    learner: MetaLearner, batch: TaskBatch
) -> tuple[Tensor, dict[str, float]]:
    """``learner.meta_loss`` of ``batch`` computed one task at a time: each task's meta-loss
    (over a one-task sub-batch) is differentiated at once and its graph freed, the gradients
    ``g`` are summed (weighted by the task's share of the query examples), and the returned
    loss is their sum ``L`` plus ``Σ θ·g − stop_gradient(Σ θ·g)``: its value is ``L`` exactly
    and its gradient w.r.t. the learner's parameters ``θ`` is ``g``. Peak memory is one task's
    graph; it cannot be differentiated twice (nothing differentiates a meta-loss twice)."""
    params = [p for p in learner.parameters() if p.requires_grad]
    total = batch.query_y.numel()
    grads: list[Tensor | None] = [None] * len(params)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = 0.0
    for b in range(batch.n_tasks):
        task = batch[b : b + 1]
        weight = task.query_y.numel() / total
        loss, metrics = learner.meta_loss(task)
        found = torch.autograd.grad(loss * weight, params, allow_unused=True)
        for i, g in enumerate(found):
            before = grads[i]
            if g is not None:
                grads[i] = g if before is None else before + g
        loss_sum = loss_sum + loss.detach() * weight
        correct += metrics["acc"] * task.query_y.numel()
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    loss_sum = loss_sum.to(params[0].dtype if params else loss_sum.dtype)
    if not pairs:
        return loss_sum, {"loss": float(loss_sum), "acc": correct / total}
    surrogate = torch.stack([(p * g).sum() for p, g in pairs]).sum()
    value = loss_sum + (surrogate - surrogate.detach())
    return value, {"loss": float(loss_sum), "acc": correct / total}


def query_loss_per_task(
    net: FunctionalNet, params: ParamDict, x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """``(mean query cross-entropy, predicted labels [B, m])`` under ``params`` (each entry
    task-batched ``[B, ...]`` or shared), differentiable w.r.t. ``params``.

    The loss of each task is differentiated right after its forward pass and only its
    gradient (parameter-sized) is kept for the backward pass, so the query activations of one
    task at a time are alive instead of all ``B`` tasks'. Same value and gradient as
    ``F.cross_entropy`` of ``net.functional_forward(params, x)``; it cannot be differentiated
    twice (nothing differentiates a meta-loss twice).
    """
    names = tuple(k for k, _ in net.named_parameters())
    loss, predictions = _QueryLossPerTask.apply(net, names, x, y, *(params[k] for k in names))
    return loss, predictions
