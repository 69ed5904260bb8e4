"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017, arXiv:1703.05175).

An embedding network ``f_θ``; each class prototype is the mean embedding of its support
examples, ``c_k = mean_{i: y_i = k} f_θ(x_i)``, and a query's logits are the negative squared
Euclidean distances ``−‖f_θ(x) − c_k‖²``. The meta-loss is the query cross-entropy; there is no
inner loop.

**Transductive refinement** (optional, ``transductive_steps`` or the ``steps`` of
:meth:`ProtoNet.adapt`; Ren et al., "Meta-Learning for Semi-Supervised Few-Shot
Classification", ICLR 2018, soft k-means refinement): the query's own unlabeled embeddings
refine the prototypes by soft k-means steps started at the support means, each
``c_k ← (Σ_{i: y_i=k} f(x_i) + Σ_j r_jk f(q_j)) / (K_k + Σ_j r_jk)`` with ``r_j =
softmax_k(−‖f(q_j) − c_k‖²)``, i.e. the soft k-means centre update
(:func:`~metaunsup.cluster.soft_kmeans.soft_centers`) with the labelled support as fixed mass;
the assignment uses ProtoNet's own distances (from the differences, as its logits) and
``torch.softmax``. The logits are then those of the refined prototypes. The query is
classified together, as Meta-GMVAE's EM does; with 0 steps (the default) every query is
classified on its own.

Shapes, over task batches: support embeddings ``[B, N*K, D]``, prototypes ``[B, N, D]``, query
embeddings ``[B, m, D]``, logits ``[B, m, N]``. Batch normalisation in the embedding uses the
statistics of the examples embedded together (the support, then the query), per task.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup._validation import check_int
from metaunsup.cluster.soft_kmeans import soft_centers
from metaunsup.errors import ConfigError
from metaunsup.learners.base import AdaptedState, Embedder, FewShotLearner, MetaLearner
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch


def prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means ``[B, N, D]`` of ``embeddings`` ``[B, n, D]`` with labels ``[B, n]`` in
    ``0..N-1`` (a class without examples gets a zero prototype)."""
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # [B, n, N]
    counts = onehot.sum(1).clamp_min(1.0)  # [B, N]
    return torch.bmm(onehot.transpose(1, 2), embeddings) / counts.unsqueeze(-1)


def squared_distances(x: Tensor, centres: Tensor) -> Tensor:
    """``‖x_i − c_k‖²`` ``[B, m, N]`` for ``x`` ``[B, m, D]`` and ``centres`` ``[B, N, D]``.

    Computed from the differences (not the ``‖x‖² − 2x·c + ‖c‖²`` expansion), so it is exact
    near zero and never negative.
    """
    return (x.unsqueeze(2) - centres.unsqueeze(1)).pow(2).sum(-1)


class ProtoNet(MetaLearner, FewShotLearner, Embedder):
    """Prototypical Networks over an embedding backbone (built with ``n_way=None``; a
    backbone with a head is used through its features only)."""

    name: ClassVar[str] = "protonet"
    fixed_way: ClassVar[bool] = False
    headless: ClassVar[bool] = True

    def __init__(self, net: FunctionalNet, transductive_steps: int = 0) -> None:
        super().__init__(net)
        if (
            isinstance(transductive_steps, bool)
            or not isinstance(transductive_steps, int)
            or transductive_steps < 0
        ):
            raise ConfigError(
                f"protonet: transductive_steps must be an integer >= 0, got {transductive_steps!r}"
            )
        self.transductive_steps = transductive_steps

    def hparams(self) -> dict[str, Any]:
        return {"transductive_steps": self.transductive_steps}

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """Prototypes ``[B, N, D]`` of the supports; ``steps``: transductive refinement steps
        :meth:`predict` takes with the query (``None``: ``transductive_steps``)."""
        B = self.check_support(support_x, support_y)
        if n_way is None:
            n_way = int(support_y.max()) + 1
        refine = self.transductive_steps if steps is None else steps
        refine = check_int("steps", refine, 0)
        params = self.meta_params(differentiable)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            emb = self.net.functional_features(params, support_x)
            protos = prototypes(emb, support_y, n_way)
        extras = {"prototypes": protos}
        if refine > 0:
            extras |= {
                "support_embeddings": emb,
                "support_onehot": F.one_hot(support_y, n_way).to(emb.dtype),
                "refine_steps": torch.tensor(refine),
            }
        return AdaptedState(params=params, n_tasks=B, n_way=n_way, extras=extras)

    def fewshot_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query logits ``[B, m, n_way]`` after adapting on the support (``steps``: inner steps;
        ``None``: the test-time steps)."""
        return self.query_logits(batch, steps)

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Logits ``−‖f(x) − c_k‖²`` ``[B, m, N]`` of ``x`` ``[B, m, ...]`` (with refined
        prototypes when the state asks for transductive steps)."""
        emb = self.net.functional_features(state.params, x)
        centres = state.extras["prototypes"]
        steps = int(state.extras.get("refine_steps", 0))
        if steps:
            support = state.extras["support_embeddings"]
            onehot = state.extras["support_onehot"]  # [B, n, N]
            labelled = torch.bmm(onehot.transpose(1, 2), support)  # [B, N, D]
            counts = onehot.sum(1)  # [B, N]
            for _ in range(steps):
                r = (-squared_distances(emb, centres)).softmax(-1)  # [B, m, N]
                centres, _ = soft_centers(emb, r, counts, prior_sum=labelled)
        return -squared_distances(emb, centres)

    def embed(self, x: Tensor, params: ParamDict | None = None) -> Tensor:
        """The metric space ``[B, n, D]`` of ``x`` ``[B, n, ...]`` (cast to the weights'
        dtype), in which classes are compact around their means: what
        :class:`~metaunsup.MetaKMeans` clusters with a ProtoNet checkpoint. ``params``: the
        network's parameters (default: the meta-parameters, detached)."""
        if params is None:
            params = self.meta_params(False)
        dtype = next(iter(params.values())).dtype
        return self.net.functional_features(params, x.to(dtype))
