"""OC-MAML: few-shot one-class classification by meta-learning (Frikha, Krompaß, Köpken &
Tresp, "Few-Shot One-Class Classification via Meta-Learning", AAAI 2021, arXiv:2007.04146).

A classifier ``f_θ`` with one output, the anomaly logit. For each task, the inner loop takes
``inner_steps`` gradient steps from ``θ`` on the **support alone**, whose examples are all
normal: the one-class loss ``BCE(f_φ(x_i), 0)`` over the ``K`` support examples. The outer loss
is the binary cross-entropy of the adapted classifier on a class-balanced query (normal and
anomalous examples; pseudo-labels in unsupervised runs), differentiated through the inner loop
to second order — the paper's point: first-order variants fail here, because an inner loop on
one class alone gives gradients that only the second-order term relates to the query's
decision boundary.

**Batch normalisation from the support only** (non-transductive, as in the paper): with a
batch-norm backbone, every layer normalises the support *and the query* with the statistics of
the support (per task and channel); a query's score never depends on the other queries. Other
norms (``"group"``, ``"none"``) are per example anyway. The support-statistics forward is
written here for :class:`~metaunsup.nets.Conv4` (conv → norm → ReLU → pool blocks, then the
head); its blocks normalise before pooling, so a 14×14 input through three blocks normalises a
3×3 map in its last block — statistics over ``9K`` values, never over a single pixel.

The anomaly score of a query is its adapted logit; the meta-learned decision boundary is logit
0 (the classifier's own threshold), and thresholds at a false-alarm rate come from
:mod:`metaunsup.evaluation.calibration`.

Shapes: support ``[B, K, C, H, W]``, query ``[B, q, C, H, W]``, adapted parameters
``[B, *θ.shape]``, logits ``[B, n]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup._validation import check_int
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners.base import AdaptedState, BoundaryScorer, MetaLearner
from metaunsup.learners.inner import InnerLoopSettings, LearningRate, gradient_steps
from metaunsup.learners.one_class import NullTableMixin, check_one_class
from metaunsup.nets import Conv4, FunctionalNet, ParamDict
from metaunsup.nets.functional import from_task_channels, task_conv2d, task_major, to_task_channels
from metaunsup.tasks.batch import TaskBatch

__all__ = ["OCMAML", "support_statistics_forward"]


def _pool_input(net: Conv4, x: Tensor) -> Tensor:
    if net.input_pool == 1:
        return x
    pooled = F.avg_pool2d(x.flatten(0, 1), net.input_pool)
    return pooled.view(*x.shape[:2], *pooled.shape[1:])


def support_statistics_forward(
    net: Conv4, params: ParamDict, support: Tensor, query: Tensor | None = None, eps: float = 1e-5
) -> tuple[Tensor, Tensor | None]:
    """Logits ``([B, K, n_way], [B, q, n_way] or None)`` of a batch-norm Conv4 whose every
    normalisation uses the statistics of the task's support only (per task and channel, over
    the ``K`` examples and the map's positions; biased variance, as in training-mode batch
    norm). Parameters may be shared or task-batched."""
    B = support.shape[0]
    hs = to_task_channels(_pool_input(net, support))  # [K, B*C, H, W]
    hq = None if query is None else to_task_channels(_pool_input(net, query))
    for i, block in enumerate(net.blocks):
        p = f"blocks.{i}."
        weight = params[p + "conv.weight"]
        hs = task_conv2d(hs, weight, None, B)
        var, mean = torch.var_mean(hs, dim=(0, 2, 3), correction=0, keepdim=True)
        scale = task_major(params[p + "norm.weight"], B, 1).view(1, -1, 1, 1)
        shift = task_major(params[p + "norm.bias"], B, 1).view(1, -1, 1, 1)

        def norm(h: Tensor, mean: Tensor = mean, var: Tensor = var, scale: Tensor = scale,
                 shift: Tensor = shift) -> Tensor:  # fmt: skip
            return (h - mean) * torch.rsqrt(var + eps) * scale + shift

        hs = F.relu(norm(hs))
        hs = F.max_pool2d(hs, 2) if block.pool else hs
        if hq is not None:
            hq = F.relu(norm(task_conv2d(hq, weight, None, B)))
            hq = F.max_pool2d(hq, 2) if block.pool else hq
    out_s = net.functional_head(params, from_task_channels(hs, B))
    out_q = None if hq is None else net.functional_head(params, from_task_channels(hq, B))
    return out_s, out_q


class OCMAML(InnerLoopSettings, NullTableMixin, MetaLearner, BoundaryScorer):
    """OC-MAML (see the module docstring).

    Parameters
    ----------
    net:
        The classifier, with a head of one output (``n_way = 1``, set by run configs).
    inner_lr, inner_steps, test_steps, first_order:
        The inner loop (:class:`~metaunsup.learners.inner.InnerLoopSettings`); the paper's
        point is ``first_order = False``.
    """

    name: ClassVar[str] = "oc_maml"
    task_kinds: ClassVar[tuple[str, ...]] = ("anomaly", "anomaly-hard")

    def __init__(
        self,
        net: FunctionalNet,
        inner_lr: float = 0.1,
        inner_steps: int = 3,
        test_steps: int | None = None,
        first_order: bool = False,
    ) -> None:
        super().__init__(net)
        if net.n_way != 1:
            raise ConfigError(f"oc_maml needs a network with one output (n_way = 1), got "
                              f"{net.n_way}")  # fmt: skip
        if getattr(net, "norm", None) == "batch" and not isinstance(net, Conv4):
            raise ConfigError("oc_maml: support-only batch norm is written for conv4 backbones")
        self.set_inner_loop(inner_lr, inner_steps, test_steps, first_order)
        self.example_shape = tuple(net.example_shape)
        self.init_null_table()

    def hparams(self) -> dict[str, Any]:
        return self.inner_loop_hparams()

    # ------------------------------------------------------------------ forward
    def logits(
        self, params: ParamDict, support: Tensor, query: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Anomaly logits ``([B, K], [B, q] or None)`` with normalisation from the support."""
        if isinstance(self.net, Conv4) and self.net.norm == "batch":
            out_s, out_q = support_statistics_forward(self.net, params, support, query)
        else:
            out_s = self.net.functional_forward(params, support)
            out_q = None if query is None else self.net.functional_forward(params, query)
        return out_s[..., 0], None if out_q is None else out_q[..., 0]

    def adapted(self, support: Tensor, steps: int, differentiable: bool) -> ParamDict:
        """Parameters after ``steps`` one-class steps on each task's support ``[B, K, ...]``."""
        params = self.meta_params(differentiable)
        B, K = support.shape[:2]

        def loss_fn(p: ParamDict) -> Tensor:
            logit, _ = self.logits(p, support)
            target = torch.zeros_like(logit)
            return F.binary_cross_entropy_with_logits(logit, target, reduction="sum") / K

        lr: LearningRate = self.inner_lr
        return gradient_steps(loss_fn, params, list(params), B, steps, lr,
                              track=differentiable, create_graph=not self.first_order)  # fmt: skip

    # ------------------------------------------------------------------ the ability
    def score(self, support: Tensor, query: Tensor) -> Tensor:
        """Adapted anomaly logits ``[B, q]`` of ``query`` after ``test_steps`` one-class steps
        on ``support`` (higher = more anomalous); detached."""
        check_one_class(support, query, self.example_shape)
        dtype = next(self.parameters()).dtype
        support, query = support.to(dtype), query.to(dtype)
        params = self.adapted(support, self.test_steps, differentiable=False)
        with torch.no_grad():
            _, out = self.logits(params, support, query)
        assert out is not None
        return out

    def decision_boundary(self, k: int) -> float:
        """0 for any support size ``k``: the adapted classifier calls a query an anomaly when
        its logit is positive."""
        return 0.0

    # ------------------------------------------------------------------ meta-training
    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """Query binary cross-entropy (``batch.query_y``: 1 = anomaly) after the one-class
        inner loop on the support; metrics ``loss``, ``acc`` (logit > 0 agrees) and
        ``support_loss`` (the inner loss after adaptation)."""
        if batch.n_query < 1 or batch.query_y.shape != batch.query_x.shape[:2]:
            raise DataError(f"{self.name} meta-trains on one-class tasks with a query")
        params = self.adapted(batch.support_x, self.inner_steps, differentiable=True)
        out_s, out_q = self.logits(params, batch.support_x, batch.query_x)
        assert out_q is not None
        y = batch.query_y.to(out_q.dtype)
        loss = F.binary_cross_entropy_with_logits(out_q, y)
        with torch.no_grad():
            acc = float(((out_q > 0) == (batch.query_y > 0)).to(torch.float32).mean())
            inner = F.binary_cross_entropy_with_logits(out_s, torch.zeros_like(out_s))
        return loss, {"loss": float(loss.detach()), "acc": acc, "support_loss": float(inner)}

    # ------------------------------------------------------------------ the base protocol
    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor | None = None,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """One-class adaptation on the normal support (labels, if given, are not read);
        ``extras``: ``support`` ``[B, K, ...]`` (its statistics normalise the queries)."""
        steps = self.test_steps if steps is None else check_int("steps", steps, 0)
        params = self.adapted(support_x, steps, differentiable)
        return AdaptedState(params, int(support_x.shape[0]), 2, {"support": support_x})

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Two-class logits ``[B, m, 2]`` (normal, anomaly) = ``[0, f_φ(x)]``."""
        _, out = self.logits(state.params, state.extras["support"], x)
        assert out is not None
        return torch.stack([torch.zeros_like(out), out], -1)
