"""One-class pseudo-tasks from CACTUs partitions of unlabeled examples.

The anomaly counterpart of :class:`~metaunsup.tasks.pseudo.cactus.CactusTaskSource` (Hsu,
Levine & Finn, ICLR 2019): each task picks one of the ``P`` k-means partitions, one of its
clusters as the *normal* pseudo-class (``k_shot`` support + ``n_query`` query examples) and
``n_query`` anomalies from the partition's other clusters — the one-class tasks of Frikha et
al. (AAAI 2021) with clusters in place of classes. No label exists on this path: the examples
arrive through an :class:`~metaunsup.data.unlabeled.UnlabeledView`, and the partitions are
the only grouping.

``TaskBatch.y`` holds the pseudo-labels (1 = from another cluster), ``classes`` the normal
cluster as ``partition * n_clusters + cluster``.
"""

from __future__ import annotations

import torch

from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.errors import DataError
from metaunsup.tasks.anomaly import Grouping, OneClassStream

__all__ = ["CactusAnomalySource"]


class CactusAnomalySource(OneClassStream):
    """Seeded one-class pseudo-tasks whose normal classes are clusters of CACTUs partitions.

    Parameters
    ----------
    source:
        The unlabeled examples the partitions index (a view, a dataset whose ``x`` alone is
        read, or a tensor ``[n, *example_shape]``).
    partitions:
        ``[P, n]`` integer cluster ids (:func:`~metaunsup.tasks.cactus_partitions`).
    k_shot, n_query:
        Support size and query examples per side.
    seed:
        Seed of the source's own generator.
    contamination:
        Fraction of support slots holding examples of other clusters (see
        :class:`~metaunsup.tasks.anomaly.OneClassStream`).
    batch_size:
        Tasks per batch when iterating.

    Example
    -------
    >>> source = CactusAnomalySource(UnlabeledView(mnist_train), parts, 5, 20, seed=0)
    >>> batch = source.sample(8)  # x: [8, 45, 1, 28, 28]; query_y: 1 = another cluster
    """

    def __init__(
        self,
        source: Dataset | UnlabeledView | torch.Tensor,
        partitions: torch.Tensor,
        k_shot: int,
        n_query: int,
        seed: int = 0,
        *,
        contamination: float = 0.0,
        batch_size: int = 4,
    ) -> None:
        self.view = as_unlabeled(source)
        if partitions.dim() != 2 or partitions.shape[1] != len(self.view):
            raise DataError(
                f"partitions must be [P, {len(self.view)}] cluster ids of the "
                f"{len(self.view)} examples, got shape {tuple(partitions.shape)}"
            )
        if partitions.dtype.is_floating_point or partitions.numel() == 0:
            raise DataError("partitions must be a non-empty integer tensor")
        self.n_clusters = int(partitions.max()) + 1
        groupings = []
        for p in range(partitions.shape[0]):
            labels = partitions[p].to(torch.int64)
            clusters = torch.unique(labels)
            groupings.append(Grouping(labels, clusters, offset=p * self.n_clusters))
        super().__init__(
            self.view.x,
            groupings,
            k_shot,
            n_query,
            anomalies="other-classes",
            contamination=contamination,
            seed=seed,
            batch_size=batch_size,
        )

    def __repr__(self) -> str:
        return (
            f"CactusAnomalySource({self.view.name}/{self.view.split}, "
            f"partitions={len(self.groupings)}, k_shot={self.k_shot}, n_query={self.n_query}, "
            f"seed={self.seed}, tasks_drawn={self.tasks_drawn})"
        )
