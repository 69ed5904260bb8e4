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

Second order stores the graph of every inner step (activations and their double-backward
state), so its memory grows linearly with the steps. With ``checkpoint=True`` the steps run
without a graph and are recomputed in the backward pass instead (gradient checkpointing,
Griewank & Walther 2000; as in Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"): only ``φ`` at the start of each segment of ``⌈√K⌉`` steps is kept, and the backward of a
segment recomputes its ``φ_t`` and then applies each step's vector-Jacobian product
``v ↦ v − α ∇²L(φ_t) v`` (a Hessian-vector product by double backward) from the last step to the
first. The meta-gradient is the same function; memory holds one step's graph and about
``2√K`` parameter copies instead of ``K`` graphs, for about one more forward and backward of
the inner loop. Batch normalisation here always uses each task's batch statistics (no running
statistics are kept), so recomputing a step changes no state and gives the same values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metaunsup._validation import check_bool, check_int, check_positive
from metaunsup.errors import ConfigError
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
    checkpoint: bool = False,
) -> ParamDict:
    """``steps`` steps of task-batched gradient descent on the entries ``names`` of ``params``.

    ``params`` holds shared tensors (the meta-parameters, or detached copies when
    ``track=False``); ``loss_fn(p)`` maps a parameter dict whose ``names`` entries are
    task-batched ``[B, ...]`` to the scalar *sum over tasks* of each task's loss. Returns
    ``params`` with the ``names`` entries replaced by the adapted ``[B, ...]`` tensors (or
    unchanged when ``steps == 0``). ``lr`` is a float or, per name, a tensor shaped like the
    parameter (broadcast over tasks). ``checkpoint`` (second order only) recomputes the steps
    in the backward pass instead of storing them (see the module docstring); ``loss_fn`` must
    then depend on nothing that needs a gradient but ``params`` (and the data).
    """
    if steps <= 0:
        return dict(params)
    create_graph = create_graph and track
    if checkpoint and create_graph:
        return checkpointed_steps(loss_fn, params, names, n_tasks, steps, lr)
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


@dataclass(frozen=True)
class _Segment:
    """What one checkpointed segment needs besides its tensors."""

    loss_fn: Callable[[ParamDict], Tensor]
    shared: ParamDict  # the entries of ``params`` that are not adapted (no gradient needed)
    names: tuple[str, ...]
    lr_names: tuple[str, ...]  # names with a tensor learning rate (Meta-SGD), else empty
    lr: float
    steps: int

    def step(self, fast: list[Tensor], lrs: list[Tensor], create_graph: bool) -> list[Tensor]:
        """One inner step from ``fast`` (leaves that require grad) with the same arithmetic as
        :func:`gradient_steps`."""
        loss = self.loss_fn({**self.shared, **dict(zip(self.names, fast, strict=True))})
        grads = torch.autograd.grad(loss, fast, create_graph=create_graph, materialize_grads=True)
        rates: list[float | Tensor] = list(lrs) if self.lr_names else [self.lr] * len(fast)
        return [_update(v, g, a) for v, g, a in zip(fast, grads, rates, strict=True)]

    def run(self, fast: list[Tensor], lrs: list[Tensor]) -> list[list[Tensor]]:
        """``[φ_0, ..., φ_s]`` of the segment, computed without keeping any graph."""
        path = [[v.detach() for v in fast]]
        for _ in range(self.steps):
            with torch.enable_grad():
                leaves = [v.requires_grad_() for v in (u.detach() for u in path[-1])]
                new = self.step(leaves, lrs, create_graph=False)
            path.append([v.detach() for v in new])
        return path


class _CheckpointedSegment(torch.autograd.Function):
    """``s`` second-order inner steps whose graph is recomputed in the backward pass.

    Inputs: the segment, then ``φ_0`` (one tensor per adapted name), then the tensor learning
    rates (Meta-SGD; none for a float rate). Output: ``φ_s``.
    """

    @staticmethod
    def forward(ctx: Any, seg: _Segment, *tensors: Tensor) -> tuple[Tensor, ...]:
        n = len(seg.names)
        fast, lrs = list(tensors[:n]), [t.detach() for t in tensors[n:]]
        ctx.seg = seg
        ctx.save_for_backward(*tensors)
        return tuple(seg.run(fast, lrs)[-1])

    @staticmethod
    def backward(ctx: Any, *v_out: Tensor) -> tuple[Tensor | None, ...]:
        seg: _Segment = ctx.seg
        n = len(seg.names)
        saved = ctx.saved_tensors
        lrs = [t.detach() for t in saved[n:]]
        path = seg.run(list(saved[:n]), lrs)[:-1]  # φ_0 .. φ_{s-1}
        v = list(v_out)
        lr_grads: list[Tensor | None] = [None] * len(lrs)
        for point in reversed(path):
            with torch.enable_grad():
                leaves = [p.detach().requires_grad_() for p in point]
                lr_leaves = [a.requires_grad_() for a in (t.detach() for t in lrs)]
                new = seg.step(leaves, lr_leaves, create_graph=True)
                grads = torch.autograd.grad(
                    new, leaves + lr_leaves, v, allow_unused=True, materialize_grads=True
                )
            v = list(grads[:n])
            for i, g in enumerate(grads[n:]):
                previous = lr_grads[i]
                lr_grads[i] = g if previous is None else previous + g
        return (None, *v, *lr_grads)


def checkpointed_steps(
    loss_fn: Callable[[ParamDict], Tensor],
    params: ParamDict,
    names: Sequence[str],
    n_tasks: int,
    steps: int,
    lr: LearningRate,
) -> ParamDict:
    """Second-order :func:`gradient_steps` with the inner loop recomputed in the backward pass.

    The ``K = steps`` steps run in segments of ``⌈√K⌉``, each a :class:`_CheckpointedSegment`:
    its forward keeps only its first ``φ``; its backward recomputes the segment and applies the
    steps' vector-Jacobian products. The value and the meta-gradient (to ``θ`` and to tensor
    learning rates) equal those of the stored second-order loop, to rounding.
    """
    names = tuple(names)
    hidden = [k for k, v in params.items() if k not in names and v.requires_grad]
    if hidden:
        raise ConfigError(
            f"a checkpointed inner loop adapts every parameter that needs a gradient; "
            f"{', '.join(hidden)} would lose theirs (turn inner_checkpoint off)"
        )
    shared = {k: v for k, v in params.items() if k not in names}
    lr_names: tuple[str, ...] = ()
    lr_tensors: list[Tensor] = []
    rate = 0.0
    if isinstance(lr, Mapping):
        lr_names, lr_tensors = names, [lr[k] for k in names]
    else:
        rate = float(lr)
    fast = [params[k].expand(n_tasks, *params[k].shape) for k in names]
    size = math.isqrt(steps - 1) + 1  # ⌈√K⌉
    done = 0
    while done < steps:
        s = min(size, steps - done)
        seg = _Segment(loss_fn, shared, names, lr_names, rate, s)
        fast = list(_CheckpointedSegment.apply(seg, *fast, *lr_tensors))
        done += s
    return {**params, **dict(zip(names, fast, strict=True))}


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
