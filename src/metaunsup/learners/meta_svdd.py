r"""Meta-SVDD: one-class prototypes in a meta-learned embedding.

Deep SVDD (Ruff et al., "Deep One-Class Classification", ICML 2018) maps the normal data into
a small hypersphere around a centre ``c`` and scores ``‖f(x) − c‖²``; it needs thousands of
normal examples to learn ``f``. Meta-SVDD learns ``f`` *across tasks* instead, the way
Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017) learn a metric for few-shot
classification: a task's centre is the mean embedding of its ``K`` normal support examples
(its one-class prototype), and a query's anomaly score is

* ``score="centre"``: ``s(x) = ‖f(x) − c‖²``, ``c = mean_i f(x_i)``; or
* ``score="nearest"``: ``s(x) = min_i ‖f(x) − f(x_i)‖²`` (the nearest support example).

Embeddings are L2-normalised (``normalize=True``, default), so scores lie in ``[0, 4]`` and
mean the same on every task.

**Meta-training** on one-class tasks (a normal support, a query of normals and anomalies,
:mod:`metaunsup.tasks.anomaly`; in unsupervised runs CACTUs pseudo-classes of unlabeled data,
:mod:`metaunsup.tasks.pseudo.cactus_anomaly`): the query's binary cross-entropy with logits
``(s − r_K) / T``, a meta-learned radius ``r`` and temperature ``T``
(:func:`~metaunsup.learners.one_class.one_class_loss`). There is no inner loop.

**The boundary at any support size.** ``r`` is learned at the support size ``K₀`` of the
meta-training tasks (recorded in the buffer ``radius_support``). With ``score="centre"`` a normal
query's squared distance to the mean of ``K`` normal support embeddings has expectation
``tr Σ · (1 + 1/K)`` (its own spread plus the mean's), so the boundary at support size ``K`` is

.. math:: r_K = r \, \frac{1 + 1/K}{1 + 1/K_0},

which is ``r`` at ``K₀``. Without it, a boundary learned at ``K₀ = 5`` flags too many normal
queries at ``K = 2`` and too few anomalies at ``K = 10``. ``score="nearest"`` keeps ``r`` at every
size, and so do checkpoints saved before ``K₀`` was recorded.

**Non-transductive**: every example is embedded on its own, so the backbone must not use batch
statistics (``norm = "group"`` or ``"none"``); a query's score depends on the support and on
nothing else, whatever else is scored with it.

Shapes: support ``[B, K, *example_shape]``, query ``[B, q, *example_shape]``, embeddings
``[B, n, D]``, centres ``[B, D]``, scores ``[B, q]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup._validation import check_bool, check_choice, check_positive
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners.base import AdaptedState, BoundaryScorer, Embedder, MetaLearner
from metaunsup.learners.one_class import NullTableMixin, check_one_class, one_class_loss
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch

__all__ = ["SCORES", "MetaSVDD", "one_class_scores"]

#: Values of ``score``.
SCORES = ("centre", "nearest")


def one_class_scores(support_z: Tensor, query_z: Tensor, how: str) -> Tensor:
    """Anomaly scores ``[B, q]`` of query embeddings ``[B, q, D]`` against support embeddings
    ``[B, K, D]``: squared distance to the support's mean (``"centre"``) or to its nearest
    example (``"nearest"``), from the differences (exact, never negative)."""
    if how == "centre":
        centre = support_z.mean(1, keepdim=True)  # [B, 1, D]
        return (query_z - centre).pow(2).sum(-1)
    d = (query_z.unsqueeze(2) - support_z.unsqueeze(1)).pow(2).sum(-1)  # [B, q, K]
    return d.min(-1).values


class MetaSVDD(NullTableMixin, MetaLearner, BoundaryScorer, Embedder):
    """Meta-SVDD over an embedding backbone (see the module docstring).

    Parameters
    ----------
    net:
        The embedding (built without head; its norm must be ``"group"`` or ``"none"``).
    score:
        ``"centre"`` or ``"nearest"``.
    normalize:
        L2-normalise the embeddings.
    radius, temperature:
        Initial values of the meta-learned ``r`` and ``T`` of the meta-loss.
    """

    name: ClassVar[str] = "meta_svdd"
    #: Checkpoints saved before ``radius_support`` existed load with it unrecorded (NaN).
    optional_state: tuple[str, ...] = (*NullTableMixin.optional_state, "radius_support")
    radius_support: Tensor
    fixed_way: ClassVar[bool] = False
    headless: ClassVar[bool] = True
    task_kinds: ClassVar[tuple[str, ...]] = ("anomaly", "anomaly-hard")

    def __init__(
        self,
        net: FunctionalNet,
        score: str = "centre",
        normalize: bool = True,
        radius: float = 0.5,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(net)
        if getattr(net, "norm", None) == "batch":
            raise ConfigError(
                "meta_svdd embeds every example on its own: build the backbone with "
                "norm = 'group' or 'none', not batch statistics"
            )
        self.score_kind = check_choice("score", score, SCORES)
        self.normalize = check_bool("normalize", normalize)
        self.radius_init = check_positive("radius", radius)
        self.temperature = check_positive("temperature", temperature)
        self.radius = nn.Parameter(torch.tensor(self.radius_init))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(self.temperature)))
        # the support size the radius was meta-learned at (NaN: not recorded)
        self.register_buffer("radius_support", torch.tensor(float("nan")))
        self.example_shape = tuple(net.example_shape)
        self.init_null_table()

    def hparams(self) -> dict[str, Any]:
        return {
            "score": self.score_kind,
            "normalize": self.normalize,
            "radius": self.radius_init,
            "temperature": self.temperature,
        }

    # ------------------------------------------------------------------ embedding and scores
    def embed(self, x: Tensor, params: ParamDict | None = None) -> Tensor:
        """Embeddings ``[B, n, D]`` of ``x`` ``[B, n, *example_shape]`` (unit length with
        ``normalize``); ``params``: the network's (default: the meta-parameters, detached)."""
        if params is None:
            params = self.meta_params(False)
        dtype = next(iter(params.values())).dtype
        z = self.net.functional_features(params, x.to(dtype))
        return F.normalize(z, dim=-1) if self.normalize else z

    def score(self, support: Tensor, query: Tensor) -> Tensor:
        """Anomaly scores ``[B, q]`` of ``query`` ``[B, q, ...]`` against the normal ``support``
        ``[B, K, ...]`` (higher = more anomalous); no gradients."""
        check_one_class(support, query, self.example_shape)
        with torch.no_grad():
            return self._scores(self.meta_params(False), support, query)

    def decision_boundary(self, k: int) -> float:
        """``r_K`` for a support of ``k`` (see the module docstring): the meta-loss's logit
        ``(s − r_K) / T`` is positive (anomaly) above it."""
        return float(self.boundary(k).detach())

    def restore_missing_state(self, absent: set[str], run: Mapping[str, Any]) -> None:
        """A checkpoint saved before ``radius_support`` existed was meta-learned at its run's
        ``task.k_shot`` (one-class tasks of a fixed size): recorded from there."""
        task = run.get("task") or {}
        known = task.get("kind") in self.task_kinds and task.get("k_shot")
        if "radius_support" in absent and known:
            self.radius_support.fill_(float(task["k_shot"]))

    def boundary(self, k: int) -> Tensor:
        """``r_K`` as a 0-d tensor (differentiable in ``r``)."""
        k0 = float(self.radius_support)
        if self.score_kind != "centre" or math.isnan(k0):
            return self.radius
        return self.radius * ((1.0 + 1.0 / k) / (1.0 + 1.0 / k0))

    def _scores(self, params: ParamDict, support: Tensor, query: Tensor) -> Tensor:
        k = support.shape[1]
        z = self.embed(torch.cat([support, query.to(support.dtype)], 1), params)  # one pass
        return one_class_scores(z[:, :k], z[:, k:], self.score_kind)  # fmt: skip

    # ------------------------------------------------------------------ meta-training
    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """Binary cross-entropy of the query of one-class tasks (``batch.query_y``: 1 =
        anomaly) with logits ``(s − r_K) / T``; metrics ``loss``, ``acc``, ``auroc``, ``radius``
        and ``temperature``."""
        if batch.n_query < 1 or batch.query_y.shape != batch.query_x.shape[:2]:
            raise DataError(f"{self.name} meta-trains on one-class tasks with a query")
        s = self._scores(self.meta_params(True), batch.support_x, batch.query_x)
        k = int(batch.support_x.shape[1])
        if math.isnan(float(self.radius_support)):
            self.radius_support.fill_(k)  # r is meta-learned at this size (see boundary)
        boundary = self.boundary(k)
        loss, metrics = one_class_loss(s, batch.query_y, boundary, self.log_temperature)
        metrics["radius"] = float(self.radius.detach())
        metrics["temperature"] = float(self.log_temperature.detach().exp())
        return loss, metrics

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
        """Embed the normal support ``[B, K, ...]`` (labels, if given, are not read); ``extras``:
        ``support_embeddings`` ``[B, K, D]``."""
        params = self.meta_params(differentiable)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            z = self.embed(support_x, params)
        return AdaptedState(params, int(support_x.shape[0]), 2, {"support_embeddings": z})

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Two-class logits ``[B, m, 2]`` (normal, anomaly) = ``[0, (s − r_K) / T]``: the
        meta-learned boundary's decision."""
        support = state.extras["support_embeddings"]
        s = one_class_scores(support, self.embed(x, state.params), self.score_kind)
        logit = (s - self.boundary(int(support.shape[1]))) * torch.exp(-self.log_temperature)
        return torch.stack([torch.zeros_like(logit), logit], -1)
