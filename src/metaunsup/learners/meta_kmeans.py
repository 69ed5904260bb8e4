"""Meta-K-means: a learned embedding followed by a differentiable, meta-learned soft k-means.

Given an unlabeled task ``x`` ``[B, n, ...]`` and the number of clusters ``K``, the learner
embeds the points with a network ``f_θ`` (a backbone without head), ``z = f_θ(x)``
``[B, n, D]``, and clusters them with :func:`~metaunsup.cluster.balanced_soft_kmeans`
unrolled for ``n_iter`` iterations: k-means++ seeds shrunk towards the mean, then alternating
balanced soft assignments and centre updates. Meta-learned, end to end through the unrolled
iterations:

* the embedding ``θ``;
* the log-temperature ``log T`` of the soft assignments (distances are in units of the task's
  variance, so ``T`` is scale-free);
* the balance weight ``λ = tanh(ρ) ∈ (−1, 1)`` of the cluster-size prior in the clustering
  objective (``0``: soft k-means; ``> 0``: equal-size clusters favoured; ``→ −1``: mixture-EM
  weighting);
* the shrinkage ``s`` of the initial centres towards the task mean (``1``: k-means++ seeds).

The meta-loss is the permutation-invariant pairwise loss (MCL, Hsu et al., ICLR 2019; KCL, Hsu,
Lv & Kira, ICLR 2018; :mod:`metaunsup.learners.pairwise`) of the final soft assignment against
the task's partition — the labels are read only there. This is meta-learning to cluster in the
sense of Jiang & Verma (2019): tasks are whole clustering problems and the learner is rewarded
for partitioning new ones. It is the clustering counterpart of Prototypical Networks (Snell et
al. 2017), whose class means become soft k-means centres (as in Ren et al., ICLR 2018).

Test time (:meth:`MetaKMeansLearner.cluster`): embed, run the learned soft k-means for
``test_iter`` iterations from ``restarts`` seeded initialisations, keep per task the run with
the lowest clustering objective (unsupervised), and take the most responsible cluster;
optionally finish with hard Lloyd iterations from the soft centres (``refine``). Shapes:
embeddings ``[B, n, D]``, centres ``[B, K, D]``, logits ``[B, n, K]``.

The initial temperature matters: in variance units, soft k-means collapses all centres onto the
mean above the first phase transition of deterministic annealing (``T = 2 λ_max / V``, with
``λ_max`` the largest eigenvalue of the embeddings' covariance), and meta-training from there
may not recover; start below it (the default is ``T = 0.1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from metaunsup._validation import check_bool, check_float, check_int, check_positive
from metaunsup.cluster import kmeans, task_seeds
from metaunsup.cluster._common import SeedLike, check_k
from metaunsup.cluster.soft_kmeans import (
    SoftClustering,
    balanced_soft_kmeans,
    clustering_objective,
)
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners.base import AdaptedState, AdaptiveEmbedder, ClusteringLearner, MetaLearner
from metaunsup.learners.pairwise import pairwise_loss
from metaunsup.metrics import clustering_accuracy
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch

#: Adaptation steps at which convergence curves are usually read (protocol A).
CURVE_STEPS = (0, 1, 2, 5, 10, 20, 50)


class MetaKMeansLearner(MetaLearner, ClusteringLearner, AdaptiveEmbedder):
    """Meta-K-means over an embedding backbone (see the module docstring).

    Parameters
    ----------
    net:
        The embedding (built with ``n_way=None``; a backbone with a head is used through its
        features only).
    n_iter:
        Soft k-means iterations unrolled during meta-training.
    test_iter:
        Soft k-means iterations at test time (``None``: ``n_iter``).
    temperature, balance, shrink:
        Initial values of the meta-learned ``T > 0``, ``λ ∈ (−1, 1)`` and ``s``.
    restarts:
        Seeded initialisations at test time; per task the lowest clustering objective wins.
    refine:
        At test time, finish with hard Lloyd iterations (k-means) started at the soft centres.

    ``steps`` of :meth:`adapt`, :meth:`cluster` and :meth:`cluster_path` counts soft k-means
    iterations. Labels are never read outside :meth:`meta_loss`; the training clustering is
    seeded with ``seed = 0`` (tasks arrive in a random order, so this is a random seeding).
    """

    name: ClassVar[str] = "meta_kmeans"
    fixed_way: ClassVar[bool] = False
    #: The backbone is an embedding: run configs build it without a classification head.
    headless: ClassVar[bool] = True
    #: Run configs train it on clustering tasks (``task.kind``), validated by :meth:`cluster`.
    task_kinds: ClassVar[tuple[str, ...]] = ("clustering",)
    #: Tasks clustered together by :meth:`cluster` (bounds memory; results do not depend on it).
    eval_chunk: int = 32

    def __init__(
        self,
        net: FunctionalNet,
        n_iter: int = 5,
        test_iter: int | None = None,
        temperature: float = 0.1,
        balance: float = 0.0,
        shrink: float = 1.0,
        restarts: int = 1,
        refine: bool = False,
    ) -> None:
        super().__init__(net)
        self.n_iter = check_int("n_iter", n_iter, 0)
        self.test_iter = check_int("test_iter", n_iter if test_iter is None else test_iter, 0)
        self.temperature = check_positive("temperature", temperature)
        self.balance = check_float("balance", balance)
        if not -1.0 < self.balance < 1.0:
            raise ConfigError(f"balance must be in (-1, 1), got {balance!r}")
        self.shrink = check_positive("shrink", shrink)
        self.restarts = check_int("restarts", restarts, 1)
        self.refine = check_bool("refine", refine)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(self.temperature)))
        self.balance_logit = nn.Parameter(torch.tensor(math.atanh(self.balance)))
        self.init_shrink = nn.Parameter(torch.tensor(self.shrink))

    # ------------------------------------------------------------------ configuration
    @property
    def train_steps(self) -> int:
        return self.n_iter

    def hparams(self) -> dict[str, Any]:
        return {
            "n_iter": self.n_iter,
            "test_iter": self.test_iter,
            "temperature": self.temperature,
            "balance": self.balance,
            "shrink": self.shrink,
            "restarts": self.restarts,
            "refine": self.refine,
        }

    def clustering_params(self, differentiable: bool) -> tuple[Tensor, Tensor, Tensor]:
        """``(T, λ, s)`` as 0-d tensors (detached for evaluation)."""
        values = (self.log_temperature.exp(), torch.tanh(self.balance_logit), self.init_shrink)
        if differentiable:
            return values
        return values[0].detach(), values[1].detach(), values[2].detach()

    # ------------------------------------------------------------------ the pipeline
    def embed(self, x: Tensor, params: ParamDict | None = None) -> Tensor:
        """Embeddings ``[B, n, D]`` of ``x`` ``[B, n, ...]`` (cast to the weights' dtype), by
        the network with ``params`` (default: the meta-parameters, detached)."""
        if params is None:
            params = self.meta_params(False)
        dtype = next(iter(params.values())).dtype
        return self.net.functional_features(params, x.to(dtype))

    def soft_clustering(
        self, z: Tensor, k: int, n_iter: int, differentiable: bool, seed: SeedLike = 0
    ) -> SoftClustering:
        """The learned balanced soft k-means of embeddings ``z`` ``[B, n, D]``."""
        T, lam, s = self.clustering_params(differentiable)
        return balanced_soft_kmeans(
            z, k, temperature=T, balance=lam, shrink=s, n_iter=n_iter, seed=seed
        )

    def adapted_params(
        self, x: Tensor, k: int, steps: int | None, differentiable: bool, seed: SeedLike
    ) -> ParamDict:
        """Network parameters to embed the task with: the meta-parameters (no inner loop)."""
        return self.meta_params(differentiable)

    def kmeans_iters(self, steps: int | None, differentiable: bool) -> int:
        """Soft k-means iterations for a call with ``steps``."""
        if steps is not None:
            return check_int("steps", steps, 0)
        return self.n_iter if differentiable else self.test_iter

    # ------------------------------------------------------------------ protocol
    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor | None = None,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
        seed: SeedLike = 0,
    ) -> AdaptedState:
        """Cluster each task's ``support_x`` ``[B, n, ...]`` into ``n_way`` clusters.

        Unsupervised: ``support_y`` is ignored (accepted for the protocol's signature; only its
        shape is checked). ``seed`` (an int or one per task) seeds the k-means++ initialisation.
        ``extras``: ``centers`` ``[B, K, D]``, ``scale`` ``[B]``, ``log_prior`` ``[B, K]``,
        ``temperature`` (0-d), ``embeddings`` ``[B, n, D]`` and the support's assignment
        ``logits`` ``[B, n, K]``.
        """
        B, k = self._check_task(support_x, support_y, n_way)
        params = self.adapted_params(support_x, k, steps, differentiable, seed)
        iters = self.kmeans_iters(steps, differentiable)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            z = self.embed(support_x, params)
            sc = self.soft_clustering(z, k, iters, differentiable, seed)
        extras = {
            "centers": sc.centers,
            "scale": sc.scale,
            "log_prior": sc.log_prior,
            "temperature": torch.as_tensor(sc.temperature),
            "embeddings": z,
            "logits": sc.logits,
        }
        return AdaptedState(params=params, n_tasks=B, n_way=k, extras=extras)

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Soft-assignment logits ``[B, m, K]`` of ``x`` ``[B, m, ...]`` to the task's clusters
        (cluster ids are arbitrary: compare partitions, not ids)."""
        e = state.extras
        sc = SoftClustering(e["logits"], e["centers"], e["scale"], e["log_prior"], e["temperature"])
        return sc.assign_logits(self.embed(x, state.params))

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, float]]:
        """Pairwise (MCL) loss of the clustering of each task's points against its partition.

        Takes clustering batches (``n_query = 0``); a few-shot batch counts as one clustering
        task of all its points. Metrics: ``loss``, ``acc`` (Hungarian clustering accuracy of
        the argmax assignment) and the current ``temperature``, ``balance`` and ``shrink``.
        """
        self.check_batch(batch)
        state = self.adapt(
            batch.x, None, steps=self.train_steps, differentiable=True, n_way=batch.n_way
        )
        logits = state.extras["logits"]
        loss = pairwise_loss(logits, batch.y)
        acc = float(np.mean(clustering_accuracy(batch.y, logits.detach().argmax(-1))))
        T, lam, s = self.clustering_params(differentiable=False)
        return loss, {
            "loss": float(loss.detach()),
            "acc": acc,
            "temperature": float(T),
            "balance": float(lam),
            "shrink": float(s),
        }

    def check_batch(self, batch: TaskBatch) -> None:
        """Accept any batch whose tasks have at least ``n_way`` points."""
        if batch.y.shape != batch.x.shape[:2]:
            raise DataError(f"labels {tuple(batch.y.shape)} do not match x {tuple(batch.x.shape)}")
        if not 1 <= batch.n_way <= batch.x.shape[1]:
            raise ConfigError(f"{self.name}: {batch.n_way} clusters but {batch.x.shape[1]} points")

    # ------------------------------------------------------------------ clustering API
    def cluster(self, x: Tensor, k: int, *, seed: int = 0, steps: int | None = None) -> Tensor:
        """Labels ``int64 [B, n]`` of the points ``x`` ``[B, n, ...]`` of ``B`` tasks.

        ``k`` clusters per task; ``seed`` seeds the initialisations (task ``b`` uses
        ``task_seeds(seed, B)[b]``, so results do not depend on chunking); ``steps`` overrides
        the test-time steps. Deterministic; works under ``torch.no_grad()``; never reads labels.
        """
        return self.cluster_path(x, k, seed, steps=[steps])[steps]

    def cluster_path(
        self,
        x: Tensor,
        k: int,
        seed: int = 0,
        steps: Sequence[int | None] = CURVE_STEPS,
    ) -> dict[int | None, Tensor]:
        """Labels after each number of ``steps`` (soft k-means iterations here): a convergence
        curve, ``{s: int64 [B, n]}``; ``None`` stands for the default test-time steps."""
        if x.dim() < 3:
            raise DataError(f"x must be [B, n, ...], got shape {tuple(x.shape)}")
        self._check_task(x, None, k)
        if not steps:
            raise ConfigError("cluster_path needs at least one number of steps")
        seeds = task_seeds(check_int("seed", seed, 0), x.shape[0])
        out: dict[int | None, list[Tensor]] = {s: [] for s in steps}
        for start in range(0, x.shape[0], self.eval_chunk):
            stop = start + self.eval_chunk
            for s, labels in self._chunk_path(x[start:stop], k, seeds[start:stop], steps).items():
                out[s].append(labels.to(x.device))
        return {s: torch.cat(v) for s, v in out.items()}

    def _chunk_path(
        self, x: Tensor, k: int, seeds: list[int], steps: Sequence[int | None]
    ) -> dict[int | None, Tensor]:
        with torch.no_grad():
            z = self.embed(x.to(self.log_temperature.device))
            return {s: self.finish(z, k, self.kmeans_iters(s, False), seeds) for s in steps}

    def finish(self, z: Tensor, k: int, n_iter: int, seeds: list[int]) -> Tensor:
        """Test-time labels ``[B, n]`` of embeddings ``z``: the best of ``restarts`` seeded runs
        of the learned soft k-means (lowest objective), optionally refined by Lloyd."""
        B = z.shape[0]
        runs = [task_seeds(s, self.restarts) for s in seeds]
        lam = self.clustering_params(False)[1]
        best = self.soft_clustering(z, k, n_iter, False, seed=[run[0] for run in runs])
        best_obj = clustering_objective(z, best, lam)
        for r in range(1, self.restarts):
            sc = self.soft_clustering(z, k, n_iter, False, seed=[run[r] for run in runs])
            obj = clustering_objective(z, sc, lam)
            keep = obj < best_obj
            best = SoftClustering(
                torch.where(keep.view(B, 1, 1), sc.logits, best.logits),
                torch.where(keep.view(B, 1, 1), sc.centers, best.centers),
                best.scale,
                torch.where(keep.view(B, 1), sc.log_prior, best.log_prior),
                best.temperature,
            )
            best_obj = torch.minimum(obj, best_obj)
        if not self.refine:
            return best.labels
        return kmeans(z, k, n_init=1, init=best.centers).labels

    # ------------------------------------------------------------------ helpers
    def _check_task(self, x: Tensor, y: Tensor | None, n_way: int | None) -> tuple[int, int]:
        if y is not None:
            self.check_support(x, y)
        if x.dim() < 3:
            raise DataError(f"x must be [B, n, ...], got shape {tuple(x.shape)}")
        if n_way is None:
            raise ConfigError(f"{self.name}: the number of clusters (n_way) is needed")
        return int(x.shape[0]), check_k(n_way, int(x.shape[1]))
