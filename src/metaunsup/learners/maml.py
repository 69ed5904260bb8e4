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

With ``inner_checkpoint`` the second-order inner loop is recomputed in the backward pass
instead of stored (:func:`~metaunsup.learners.inner.checkpointed_steps`): the same
meta-gradient with memory that grows with ``√K`` parameter copies instead of ``K`` graphs.
The networks keep no running statistics (batch norm uses each task's batch statistics), so a
recomputed step updates nothing twice.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from metaunsup._validation import check_bool, check_int
from metaunsup.errors import ConfigError
from metaunsup.learners.base import AdaptedState, FewShotLearner, MetaLearner, task_cross_entropy
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
    ) -> None:
        super().__init__(net)
        if net.n_way is None:
            raise ConfigError(f"{self.name} needs a network with a head (n_way set)")
        self.set_inner_loop(inner_lr, inner_steps, test_steps, first_order)
        self.inner_checkpoint = check_bool("inner_checkpoint", inner_checkpoint)
        if self.inner_checkpoint:
            check_recomputable(net)
            if not self.checkpointable:
                raise ConfigError(f"{self.name} does not support inner_checkpoint")

    def hparams(self) -> dict[str, Any]:
        """The inner-loop settings (``inner_checkpoint`` only when on, so configs written
        before it existed still match)."""
        out: dict[str, Any] = dict(self.inner_loop_hparams())
        if self.inner_checkpoint:
            out["inner_checkpoint"] = True
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
