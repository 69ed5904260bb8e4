"""The meta-learner protocol every algorithm implements, its declared abilities, and what they
share.

A :class:`MetaLearner` is an ``nn.Module`` whose parameters are the meta-parameters. The
algorithm-agnostic Trainer only ever calls :meth:`MetaLearner.meta_loss` and steps an optimiser
on ``learner.parameters()``; checkpoints store ``state_dict()`` next to
:meth:`~MetaLearner.config`, from which :func:`~metaunsup.learners.registry.build_learner`
rebuilds the module.

What a learner can do beyond meta-training is *declared*: each class names the abilities it
implements among its bases, and callers check them with ``isinstance`` (the protocols are
runtime-checkable), never by looking for attributes:

* :class:`FewShotLearner` — ``fewshot_logits(batch, steps=None)``: adapt on a few-shot task's
  labelled support, return its query logits;
* :class:`ClusteringLearner` — ``cluster(x, k, *, seed=0, steps=None)``: partition unlabeled
  tasks;
* :class:`Embedder` — ``embed(x, params=None)``: the learned representation of examples;
  :class:`AdaptiveEmbedder` adds ``adapted_params``: an embedding that adapts to the task
  before it is used (Clustering-MAML);
* :class:`AnomalyScorer` — ``score(support, query)``: how anomalous each query example is
  against a support of normal examples; :class:`BoundaryScorer` adds ``decision_boundary(k)``:
  the score above which its meta-training learned to call a query an anomaly (support of ``k``).

Shapes: few-shot batches (:class:`~metaunsup.tasks.batch.TaskBatch`) hold ``B`` tasks; the
support is ``x`` ``[B, n_way*k_shot, *example_shape]`` with labels ``[B, n_way*k_shot]``, the
query ``[B, n_way*n_query, *example_shape]``; logits are ``[B, m, n_way]``. Every learner works on
all ``B`` tasks at once (task-batched parameters, see :mod:`metaunsup.nets.functional`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup.errors import ConfigError, DataError
from metaunsup.nets import FunctionalNet, ParamDict, build_kwargs, build_net
from metaunsup.tasks.batch import TaskBatch

#: A seed for every task (an int, expanded per task) or one per task.
SeedLike = int | list[int]


@runtime_checkable
class FewShotLearner(Protocol):
    """Few-shot classification: adapt on each task's labelled support, classify its query."""

    def fewshot_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Detached query logits ``[B, m, n_way]`` of a few-shot ``batch`` after adapting on
        its support with ``steps`` (``None``: the learner's test-time steps)."""
        ...


@runtime_checkable
class ClusteringLearner(Protocol):
    """Clustering of unlabeled tasks: the learner sees the points and ``k``, never labels."""

    def cluster(self, x: Tensor, k: int, *, seed: int = 0, steps: int | None = None) -> Tensor:
        """Labels ``int64 [B, n]`` of the points ``x`` ``[B, n, *example_shape]`` of ``B``
        tasks into ``k`` clusters each; ``seed`` seeds any initialisation (task ``b`` uses its
        own seed derived from it, so results do not depend on chunking); ``steps`` overrides
        the test-time adaptation steps. Works under ``torch.no_grad()``."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """A learned representation of examples."""

    def embed(self, x: Tensor, params: ParamDict | None = None) -> Tensor:
        """Embeddings ``[B, n, D]`` of ``x`` ``[B, n, *example_shape]`` (cast to the weights'
        dtype), with the meta-parameters or with ``params`` (e.g. adapted ones)."""
        ...


@runtime_checkable
class AdaptiveEmbedder(Embedder, Protocol):
    """An embedding that adapts its parameters to a task before embedding it."""

    def adapted_params(
        self, x: Tensor, k: int, steps: int | None, differentiable: bool, seed: SeedLike
    ) -> ParamDict:
        """The network parameters for the tasks ``x`` ``[B, n, ...]`` with ``k`` clusters,
        after ``steps`` adaptation steps (``None``: the learner's own)."""
        ...


@runtime_checkable
class AnomalyScorer(Protocol):
    """One-class scoring: a support of normal examples, a query to score."""

    def score(self, support: Tensor, query: Tensor) -> Tensor:
        """Anomaly scores ``[B, q]`` (higher = more anomalous) of ``query``
        ``[B, q, *example_shape]`` against ``support`` ``[B, K, *example_shape]``."""
        ...


@runtime_checkable
class BoundaryScorer(AnomalyScorer, Protocol):
    """An anomaly scorer that meta-learned *where* to flag, not only how to rank: a query whose
    score is above ``decision_boundary(k)`` is an anomaly (``k``: the task's support size).
    This is the decision of OC-MAML's classifier (logit > 0; Frikha et al., AAAI 2021), where
    its published balanced accuracy is measured, and of Meta-SVDD's meta-learned radius.
    Meta-trained on queries of as many anomalies as normals, the boundary trades misses against
    false alarms as those tasks did; it targets no false-alarm rate (see
    :mod:`metaunsup.evaluation.calibration`)."""

    def decision_boundary(self, k: int) -> float:
        """The score above which a query of a task with ``k`` normal support examples is
        flagged."""
        ...


@dataclass(frozen=True, eq=False)
class AdaptedState:
    """What :meth:`MetaLearner.adapt` returns for ``n_tasks`` tasks.

    Attributes
    ----------
    params:
        Network parameters after adaptation: task-batched ``[B, ...]`` entries for what was
        adapted, shared entries for the rest.
    n_tasks, n_way:
        ``B`` and the number of classes of the tasks.
    extras:
        Learner-specific tensors, e.g. ``"prototypes"`` ``[B, n_way, D]`` for ProtoNet.
    """

    params: ParamDict
    n_tasks: int
    n_way: int
    extras: dict[str, Tensor] = field(default_factory=dict)


def task_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Sum over tasks of each task's mean cross-entropy: ``logits`` ``[B, n, K]``, ``y`` ``[B, n]``.

    The gradient of this sum with respect to task-batched parameters is, task by task, the
    gradient of that task's own mean loss — what an inner loop needs.
    """
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1]


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of ``argmax(logits, -1) == y`` over all tasks and examples."""
    with torch.no_grad():
        return float((logits.argmax(-1) == y).to(torch.float32).mean())


class MetaLearner(nn.Module, ABC):
    """Base class of the meta-learners (the protocol the Trainer and the evaluator rely on).

    Subclasses implement :meth:`adapt`, :meth:`predict` and :meth:`hparams`; :meth:`meta_loss`
    defaults to the query cross-entropy after a differentiable adaptation on the support.
    """

    #: Registry name, e.g. ``"maml"``; ``config()["name"]``.
    name: ClassVar[str]
    #: Whether the learner's head has a fixed number of outputs that tasks must match.
    fixed_way: ClassVar[bool] = True
    #: Whether the backbone is built without a classification head (metric, clustering and
    #: generative learners embed; run configs then leave ``n_way`` out of the network).
    headless: ClassVar[bool] = False
    #: The ``task.kind`` values the learner meta-trains on.
    task_kinds: ClassVar[tuple[str, ...]] = ("fewshot",)

    def __init__(self, net: FunctionalNet) -> None:
        super().__init__()
        if not isinstance(net, FunctionalNet):
            raise ConfigError(f"{type(self).__name__} needs a FunctionalNet, got {type(net)}")
        self.net = net

    # ------------------------------------------------------------------ protocol
    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """Scalar meta-loss of a few-shot batch, differentiable w.r.t. the meta-parameters.

        Default: mean query cross-entropy (over tasks and query examples) after adapting on
        the support with the training number of steps. Metrics: ``loss`` and ``acc`` (query
        accuracy after adaptation).
        """
        self.check_batch(batch)
        state = self.adapt(
            batch.support_x,
            batch.support_y,
            steps=self.train_steps,
            differentiable=True,
            n_way=batch.n_way,
        )
        logits = self.predict(state, batch.query_x)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        return loss, {"loss": float(loss.detach()), "acc": accuracy(logits, batch.query_y)}

    @abstractmethod
    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """Adapt to ``B`` tasks at once from their supports.

        ``support_x`` ``[B, n, *example_shape]``, ``support_y`` ``int64 [B, n]`` (task-local
        labels). ``steps`` defaults to the learner's test-time steps. With
        ``differentiable=False`` (evaluation) the result is detached and the call works inside
        ``torch.no_grad()``; with ``True`` it keeps the graph to the meta-parameters as the
        algorithm prescribes (second order, first order). ``n_way`` defaults to the head's
        outputs (or ``max(label) + 1`` for learners without a head).
        """

    @abstractmethod
    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Logits ``[B, m, n_way]`` of ``x`` ``[B, m, *example_shape]`` under ``state``."""

    @abstractmethod
    def hparams(self) -> dict[str, Any]:
        """The learner's own hyperparameters (JSON-serialisable), without the network."""

    @property
    def train_steps(self) -> int:
        """Inner steps used by :meth:`meta_loss` (0 for learners without an inner loop)."""
        return 0

    def assign(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Predicted task-local labels ``int64 [B, m]`` of ``x`` ``[B, m, ...]``."""
        with torch.no_grad():
            return self.predict(state, x).argmax(-1)

    def query_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Adapt on the batch's support, return detached query logits ``[B, m, N]`` (what a
        :class:`FewShotLearner` answers; a learner that declares the ability calls this)."""
        self.check_batch(batch)
        state = self.adapt(batch.support_x, batch.support_y, steps=steps, n_way=batch.n_way)
        with torch.no_grad():
            return self.predict(state, batch.query_x)

    def config(self) -> dict[str, Any]:
        """``{"name": ..., "net": net.config(), **hparams}``; ``build_learner`` rebuilds it."""
        return {"name": self.name, "net": self.net.config(), **self.hparams()}

    def restore_missing_state(self, absent: set[str], run: Mapping[str, Any]) -> None:
        """Fill the optional buffers a checkpoint lacks (``absent``: their names; it was saved
        before they existed) from the run configuration it was saved with (``run``, possibly
        empty). By default none can be recovered and they keep their initial value."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MetaLearner:
        """A fresh learner of this class from its :meth:`config` dict."""
        kwargs = build_kwargs(cls, config, "learner")
        if "net" not in kwargs:
            raise ConfigError(f"learner {cls.name!r}: the config needs a 'net' entry")
        kwargs["net"] = build_net(kwargs["net"])
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"learner {cls.name!r}: {err}") from err

    # ------------------------------------------------------------------ helpers
    def check_batch(self, batch: TaskBatch) -> None:
        """Reject batches this learner cannot score (no query, wrong number of classes)."""
        if batch.n_query < 1:
            raise ConfigError(
                f"{self.name}: a few-shot batch with query examples is needed (n_query="
                f"{batch.n_query}); clustering batches have no query"
            )
        self.check_way(batch.n_way)

    def check_way(self, n_way: int | None) -> int:
        """The number of classes to use, checked against the head's outputs."""
        head = self.net.n_way
        if n_way is None:
            if head is None:
                raise ConfigError(f"{self.name}: n_way is needed for a network without head")
            return head
        if self.fixed_way and head is not None and n_way != head:
            raise ConfigError(
                f"{self.name}: tasks have {n_way} classes but the network head has {head} "
                f"outputs; build the network with n_way={n_way}"
            )
        return n_way

    @staticmethod
    def check_support(support_x: Tensor, support_y: Tensor) -> int:
        """``B`` after checking that ``support_x`` ``[B, n, ...]`` and ``support_y`` ``[B, n]``
        agree."""
        if support_y.dim() != 2 or support_x.shape[:2] != support_y.shape:
            raise DataError(
                f"support_x {tuple(support_x.shape)} and support_y {tuple(support_y.shape)} "
                "must be [B, n, ...] and [B, n]"
            )
        return int(support_x.shape[0])

    def meta_params(self, differentiable: bool) -> ParamDict:
        """The network's parameters: themselves, or detached copies for evaluation."""
        params = self.net.params()
        if differentiable:
            return params
        return {k: v.detach() for k, v in params.items()}
