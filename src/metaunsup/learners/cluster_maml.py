"""Clustering-MAML: MAML whose inner loop is unsupervised clustering of the task's own points.

MAML (Finn, Abbeel & Levine, ICML 2017) adapts meta-learned weights ``θ`` to a task by a few
gradient steps on the task's loss. Here a task is an unlabeled set of points and the number of
clusters ``K``, so the inner loss is a clustering objective that reads no labels: the balanced
soft k-means objective (:func:`~metaunsup.cluster.soft_kmeans.clustering_objective`),

``L_inner(φ) = mean_i Σ_j r_ij d̃_ij − T mean_i H(r_i) − λ T H(r̄)``

evaluated at the learned soft k-means clustering of the embeddings ``z = f_φ(x)`` (distances in
units of the task's variance, so the first term is the within-cluster share of the variance:
descending it pulls the points of each cluster together and the clusters apart, as in deep
k-means, Fard et al. 2020). For each task ``φ ← φ − α ∇_φ L_inner(φ)`` from ``φ = θ``, a few
steps; then the task is clustered with the adapted embedding and the meta-loss is the
permutation-invariant pairwise loss (MCL, Hsu et al., ICLR 2019) of that clustering against the
task's partition. Second order differentiates through the inner gradients
(``create_graph=True``); first order treats them as constants.

Meta-parameters: ``θ`` and, as in :class:`~metaunsup.learners.meta_kmeans.MetaKMeansLearner`
(which this class extends, and equals with zero inner steps), the soft k-means temperature,
balance and seed shrinkage; only ``θ`` adapts. Test time: fine-tune on the task for
``test_steps`` steps (:meth:`ClusterMAML.cluster`), then assign; :meth:`ClusterMAML.cluster_path`
gives the labels after each step (convergence curves). Shapes: ``x`` ``[B, n, ...]``, adapted
parameters ``[B, *θ.shape]``, embeddings ``[B, n, D]``, logits ``[B, n, K]``.

Fine-tuning beyond the trained number of inner steps can drift (the unsupervised objective
reinforces its own mistakes, and the meta-learned initialisation carries most of the result):
read the convergence curve before raising ``test_steps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from metaunsup._validation import check_int
from metaunsup.cluster._common import SeedLike
from metaunsup.cluster.soft_kmeans import balanced_soft_kmeans, clustering_objective
from metaunsup.learners.inner import InnerLoopSettings, gradient_steps
from metaunsup.learners.meta_kmeans import MetaKMeansLearner
from metaunsup.nets import FunctionalNet, ParamDict


class ClusterMAML(InnerLoopSettings, MetaKMeansLearner):
    """Clustering-MAML with a first/second-order flag.

    Parameters
    ----------
    net:
        The embedding backbone (built with ``n_way=None``).
    inner_lr:
        Inner step size ``α``.
    inner_steps:
        Inner steps during meta-training.
    test_steps:
        Default fine-tuning steps at test time (``None``: ``inner_steps``).
    first_order:
        ``True`` (default) for the first-order approximation (stop-gradient of the inner
        gradients); ``False`` for the exact second-order meta-gradient. In short runs on
        digits clustering tasks second order trained worse: the inner objective is sharply
        curved (the same step size that helps after one step hurts after five), and its
        Hessian term makes the meta-gradient noisy, with spikes that stall Adam.
    n_iter, test_iter, temperature, balance, shrink, restarts, refine:
        The clustering, as in :class:`~metaunsup.learners.meta_kmeans.MetaKMeansLearner`; the
        inner loss always unrolls ``n_iter`` soft k-means iterations, the final assignment
        ``n_iter`` in training and ``test_iter`` at test time.

    ``steps`` of :meth:`adapt`, :meth:`cluster` and :meth:`cluster_path` counts inner gradient
    steps.
    """

    name: ClassVar[str] = "cluster_maml"
    eval_chunk: int = 8

    def __init__(
        self,
        net: FunctionalNet,
        inner_lr: float = 0.1,
        inner_steps: int = 1,
        test_steps: int | None = None,
        first_order: bool = True,
        n_iter: int = 5,
        test_iter: int | None = None,
        temperature: float = 0.1,
        balance: float = 0.0,
        shrink: float = 1.0,
        restarts: int = 1,
        refine: bool = False,
    ) -> None:
        super().__init__(
            net,
            n_iter=n_iter,
            test_iter=test_iter,
            temperature=temperature,
            balance=balance,
            shrink=shrink,
            restarts=restarts,
            refine=refine,
        )
        self.set_inner_loop(inner_lr, inner_steps, test_steps, first_order)

    def hparams(self) -> dict[str, Any]:
        return {**self.inner_loop_hparams(), **super().hparams()}

    def inner_names(self) -> list[str]:
        """The parameters the inner loop adapts: the embedding's (a head, if any, is unused)."""
        return [k for k in self.net.params() if k not in self.net.head_names]

    def inner_loss(
        self, x: Tensor, k: int, differentiable: bool, seed: SeedLike = 0
    ) -> Callable[[ParamDict], Tensor]:
        """``p ↦`` the sum over tasks of each task's unsupervised clustering objective (the
        clustering seeded with ``seed`` at every step)."""
        T, lam, s = self.clustering_params(differentiable)

        def loss_fn(p: ParamDict) -> Tensor:
            z = self.embed(x, p)
            sc = balanced_soft_kmeans(
                z, k, temperature=T, balance=lam, shrink=s, n_iter=self.n_iter, seed=seed
            )
            return clustering_objective(z, sc, lam).sum()

        return loss_fn

    def adapted_params(
        self, x: Tensor, k: int, steps: int | None, differentiable: bool, seed: SeedLike
    ) -> ParamDict:
        """``steps`` task-batched gradient steps from ``θ`` on the unsupervised inner loss."""
        if steps is None:
            steps = self.inner_steps if differentiable else self.test_steps
        steps = check_int("steps", steps, 0)
        return gradient_steps(
            self.inner_loss(x, k, differentiable, seed),
            self.meta_params(differentiable),
            self.inner_names(),
            int(x.shape[0]),
            steps,
            self.inner_lr,
            track=differentiable,
            create_graph=not self.first_order,
        )

    def kmeans_iters(self, steps: int | None, differentiable: bool) -> int:
        return self.n_iter if differentiable else self.test_iter

    # ------------------------------------------------------------------ evaluation
    def adaptation_path(
        self, x: Tensor, k: int, max_steps: int, seed: SeedLike = 0
    ) -> Iterator[ParamDict]:
        """Detached parameters after 0, 1, ..., ``max_steps`` evaluation-mode inner steps.

        The same arithmetic as :meth:`adapt` with ``differentiable=False`` (which goes through
        :func:`~metaunsup.learners.inner.gradient_steps`), one step at a time.
        """
        params = self.meta_params(False)
        yield params
        loss_fn = self.inner_loss(x, k, False, seed)
        B = int(x.shape[0])
        with torch.enable_grad():
            fast = {
                n: params[n].expand(B, *params[n].shape).requires_grad_()
                for n in self.inner_names()
            }
            for _ in range(max_steps):
                loss = loss_fn({**params, **fast})
                grads = torch.autograd.grad(loss, list(fast.values()), materialize_grads=True)
                with torch.no_grad():
                    fast = {
                        n: torch.add(v, g, alpha=-self.inner_lr).requires_grad_()
                        for (n, v), g in zip(fast.items(), grads, strict=True)
                    }
                yield {**params, **{n: v.detach() for n, v in fast.items()}}

    def _chunk_path(
        self, x: Tensor, k: int, seeds: list[int], steps: Sequence[int | None]
    ) -> dict[int | None, Tensor]:
        x = x.to(self.log_temperature.device)
        wanted = {s: self.test_steps if s is None else check_int("steps", s, 0) for s in steps}
        out: dict[int | None, Tensor] = {}
        path = self.adaptation_path(x, k, max(wanted.values()), seed=seeds)
        for t, params in enumerate(path):
            for s in (s for s, n in wanted.items() if n == t):
                with torch.no_grad():
                    out[s] = self.finish(self.embed(x, params), k, self.test_iter, seeds)
        return out
