"""Task-batched inner loops: gradient descent on per-task copies of chosen parameters.

All ``B`` tasks adapt at once: the adapted entries get a leading task dimension (the shared
meta-parameter ``θ`` is *expanded*, not copied, at step 0, so gradients flow back to ``θ``
summed over tasks), the loss is the sum over tasks of each task's mean loss, and one
``autograd.grad`` call returns every task's own gradient. No module is cloned or patched.

Three modes, chosen by the caller:

* second order (``track=True, create_graph=True``): ``φ_{t+1} = φ_t − α ∇L(φ_t)`` with the
  gradient itself differentiable, so the meta-gradient includes the Hessian terms (MAML);
* first order (``track=True, create_graph=False``): the inner gradients are constants
  (stop-gradient), so ``∂φ_K/∂θ = I`` and the meta-gradient is the query gradient at ``φ_K``;
* evaluation (``track=False``): the result is detached from ``θ``; works under ``no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from metaunsup._validation import check_bool, check_int, check_positive
from metaunsup.nets import ParamDict

#: A learning rate: one number, or a tensor per parameter name (Meta-SGD), shaped like it.
LearningRate = float | Mapping[str, Tensor]


def _update(v: Tensor, g: Tensor, lr: float | Tensor) -> Tensor:
    if isinstance(lr, Tensor):
        return torch.addcmul(v, lr, g, value=-1.0)
    return torch.add(v, g, alpha=-lr)


def gradient_steps(
    loss_fn: Callable[[ParamDict], Tensor],
    params: ParamDict,
    names: Sequence[str],
    n_tasks: int,
    steps: int,
    lr: LearningRate,
    *,
    track: bool,
    create_graph: bool,
) -> ParamDict:
    """``steps`` steps of task-batched gradient descent on the entries ``names`` of ``params``.

    ``params`` holds shared tensors (the meta-parameters, or detached copies when
    ``track=False``); ``loss_fn(p)`` maps a parameter dict whose ``names`` entries are
    task-batched ``[B, ...]`` to the scalar *sum over tasks* of each task's loss. Returns
    ``params`` with the ``names`` entries replaced by the adapted ``[B, ...]`` tensors (or
    unchanged when ``steps == 0``). ``lr`` is a float or, per name, a tensor shaped like the
    parameter (broadcast over tasks).
    """
    if steps <= 0:
        return dict(params)
    create_graph = create_graph and track
    with torch.enable_grad():
        fast: dict[str, Tensor] = {}
        for k in names:
            v = params[k]
            if track:
                fast[k] = v.expand(n_tasks, *v.shape)
            else:
                fast[k] = v.detach().expand(n_tasks, *v.shape).requires_grad_()
        for _ in range(steps):
            loss = loss_fn({**params, **fast})
            grads = torch.autograd.grad(
                loss, list(fast.values()), create_graph=create_graph, materialize_grads=True
            )
            lrs = [lr[k] if isinstance(lr, Mapping) else lr for k in fast]
            if track:
                fast = {
                    k: _update(v, g, a)
                    for (k, v), g, a in zip(fast.items(), grads, lrs, strict=True)
                }
            else:
                with torch.no_grad():
                    fast = {
                        k: _update(v, g, a).requires_grad_()
                        for (k, v), g, a in zip(fast.items(), grads, lrs, strict=True)
                    }
    if not track:
        fast = {k: v.detach() for k, v in fast.items()}
    return {**params, **fast}


class InnerLoopSettings:
    """Mixin holding the inner-loop hyperparameters shared by the MAML family.

    ``inner_lr`` (step size), ``inner_steps`` (during meta-training), ``test_steps`` (default:
    ``inner_steps``) and ``first_order``; validated once here and reported by
    :meth:`inner_loop_hparams`. Put it before the learner base class so that its
    ``train_steps`` wins.
    """

    def set_inner_loop(
        self, inner_lr: float, inner_steps: int, test_steps: int | None, first_order: bool
    ) -> None:
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.inner_steps = check_int("inner_steps", inner_steps, 0)
        self.test_steps = check_int(
            "test_steps", inner_steps if test_steps is None else test_steps, 0
        )
        self.first_order = check_bool("first_order", first_order)

    @property
    def train_steps(self) -> int:
        """Inner steps used by ``meta_loss``."""
        return self.inner_steps

    def inner_loop_hparams(self) -> dict[str, float | int | bool]:
        return {
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "test_steps": self.test_steps,
            "first_order": self.first_order,
        }
