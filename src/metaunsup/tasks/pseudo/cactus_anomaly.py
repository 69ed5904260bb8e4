"""One-class pseudo-tasks from CACTUs partitions of unlabeled examples.

The anomaly counterpart of :class:`~metaunsup.tasks.pseudo.cactus.CactusTaskSource` (Hsu,
Levine & Finn, ICLR 2019): each task picks one of the ``P`` k-means partitions, one of its
clusters as the *normal* pseudo-class (``k_shot`` support + ``n_query`` query examples) and
``n_query`` anomalies from the partition's other clusters — the one-class tasks of Frikha et
al. (AAAI 2021) with clusters in place of classes. No label exists on this path: the examples
arrive through an :class:`~metaunsup.data.unlabeled.UnlabeledView`, and the partitions are
the only grouping.

**Near anomalies** (``anomalies="same-group"``, the pseudo-tasks of the ``anomaly-hard`` kind).
Anomalies from any other cluster are mostly far from the normal one: the pseudo-tasks are easy,
and a learner meta-trained on them learns little about telling a class from its look-alikes,
the task of Omniglot's hard track (anomalies from the same alphabet), for which OC-MAML is
meta-trained on tasks of the same kind with labels. Without labels, :func:`pseudo_class_groups`
groups each partition's clusters by k-means of their centres in the embedding the partitions were
cut from: a task's anomalies then come from the other clusters of the normal cluster's group,
its neighbours, as a character's look-alikes come from its own alphabet.

``TaskBatch.y`` holds the pseudo-labels (1 = from another cluster), ``classes`` the normal
cluster as ``partition * n_clusters + cluster``.
"""

from __future__ import annotations

import torch

from metaunsup._validation import check_int
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.errors import ConfigError, DataError
from metaunsup.tasks.anomaly import Grouping, OneClassStream

__all__ = ["CactusAnomalySource", "no_groups_error", "pseudo_class_groups"]


def no_groups_error(kind: str) -> ConfigError:
    """The error of a label-free run of ``kind`` (one whose pseudo-anomalies come from the
    normal cluster's group) whose clusters were given no groups, with the fix."""
    return ConfigError(
        f"{kind} pseudo-tasks draw anomalies from the normal cluster's group, and clusters "
        "have no groups: set unsupervised.pseudo_groups (e.g. 30), or use task.kind = 'anomaly'"
    )


def pseudo_class_groups(
    embeddings: torch.Tensor, partitions: torch.Tensor, n_groups: int, seed: int = 0
) -> torch.Tensor:
    """Groups of the clusters of each partition: ``int64 [P, k]``, the group of each cluster.

    Each partition's cluster centres (the mean of ``embeddings`` ``[n, d]`` over the cluster's
    examples) are split into ``n_groups`` groups by k-means (10 restarts, seeded by ``seed`` and
    the partition): clusters of one group are neighbours in the embedding, so its other
    clusters are a cluster's look-alikes. An empty cluster (no example; never a normal class)
    gets group 0. No label is read.
    """
    from metaunsup.cluster.kmeans import kmeans

    n_groups = check_int("n_groups", n_groups, 2)
    if partitions.dim() != 2 or embeddings.dim() != 2 or embeddings.shape[0] != partitions.shape[1]:
        raise DataError(
            f"embeddings [n, d] and partitions [P, n] of the same examples are needed, got "
            f"{tuple(embeddings.shape)} and {tuple(partitions.shape)}"
        )
    z = embeddings.to(torch.float64)
    k = int(partitions.max()) + 1
    out = torch.zeros(partitions.shape[0], k, dtype=torch.int64)
    for p in range(partitions.shape[0]):
        labels = partitions[p].to(torch.int64)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros(k, z.shape[1], dtype=z.dtype).index_add_(0, labels, z)
        present = torch.nonzero(counts > 0).reshape(-1)
        if present.numel() < n_groups:
            raise DataError(
                f"partition {p} has {present.numel()} non-empty clusters, fewer than the "
                f"{n_groups} groups asked for: use fewer groups (unsupervised.pseudo_groups)"
            )
        centres = sums[present] / counts[present, None]
        fit = kmeans(centres.to(torch.float32), n_groups, n_init=10, seed=seed + p)
        out[p, present] = fit.labels
    return out


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
    anomalies:
        ``"other-classes"`` (any other cluster of the partition) or ``"same-group"`` (the other
        clusters of the normal cluster's group: near anomalies; needs ``groups``).
    groups:
        ``int64 [P, k]`` group of each cluster of each partition
        (:func:`pseudo_class_groups`), or ``None``.
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
        anomalies: str = "other-classes",
        groups: torch.Tensor | None = None,
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
        if groups is not None and tuple(groups.shape) != (partitions.shape[0], self.n_clusters):
            raise DataError(
                f"groups must be [{partitions.shape[0]}, {self.n_clusters}], the group of each "
                f"cluster of each partition, got shape {tuple(groups.shape)}"
            )
        groupings = []
        for p in range(partitions.shape[0]):
            labels = partitions[p].to(torch.int64)
            clusters = torch.unique(labels)
            of_clusters = None if groups is None else groups[p].to(torch.int64)
            groupings.append(Grouping(labels, clusters, of_clusters, p * self.n_clusters))
        super().__init__(
            self.view.x,
            groupings,
            k_shot,
            n_query,
            anomalies=anomalies,
            contamination=contamination,
            seed=seed,
            batch_size=batch_size,
        )

    def __repr__(self) -> str:
        return (
            f"CactusAnomalySource({self.view.name}/{self.view.split}, "
            f"partitions={len(self.groupings)}, anomalies={self.anomalies!r}, "
            f"k_shot={self.k_shot}, n_query={self.n_query}, "
            f"seed={self.seed}, tasks_drawn={self.tasks_drawn})"
        )
