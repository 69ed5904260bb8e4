"""Tasks: seeded samplers that turn a dataset into batches of small tasks.

- :class:`ClusteringTaskSampler` — ``n_way`` classes × ``k_shot`` examples in a random order,
  labels kept only to score a clustering.
- :class:`FewShotTaskSampler` — support and query sets for few-shot classification.
- :func:`split_classes` — disjoint meta-train / meta-val / meta-test classes.
- :class:`TaskBatch` — what the samplers return: tensors stacked over tasks.
"""

from __future__ import annotations

from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.pseudo.cactus import CactusTaskSource, cactus_partitions
from metaunsup.tasks.pseudo.umtra import UmtraTaskSource
from metaunsup.tasks.samplers import (
    ClusteringTaskSampler,
    FewShotTaskSampler,
    classes_with_min_examples,
)
from metaunsup.tasks.sampling import ClassIndex
from metaunsup.tasks.splits import ClassSplit, split_classes

__all__ = [
    "CactusTaskSource",
    "ClassIndex",
    "ClassSplit",
    "ClusteringTaskSampler",
    "FewShotTaskSampler",
    "TaskBatch",
    "UmtraTaskSource",
    "cactus_partitions",
    "classes_with_min_examples",
    "split_classes",
]
