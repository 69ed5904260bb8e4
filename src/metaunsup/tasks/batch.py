""":class:`TaskBatch`: a batch of tasks as stacked tensors, so methods vectorise over tasks."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class TaskBatch:
    """``B`` tasks of equal shape.

    Attributes
    ----------
    x:
        ``float32 [B, n, *example_shape]`` examples (images ``[B, n, C, H, W]`` scaled to
        ``[0, 1]``, tables ``[B, n, d]``).
    y:
        ``int64 [B, n]`` task-local labels ``0..n_way-1``. In clustering tasks the method must
        not read them: they travel with the batch only to score the result.
    classes:
        ``int64 [B, n_way]`` dataset class id behind each task-local label.
    indices:
        ``int64 [B, n]`` dataset index of each example (for provenance and tests).
    n_way, k_shot, n_query:
        Classes per task, examples per class in the support (or in the whole clustering task)
        and query examples per class (``0`` for clustering tasks).

    Clustering tasks (``n_query == 0``) hold ``n = n_way * k_shot`` examples in a random order
    per task. Few-shot tasks hold the support first (``n_way * k_shot`` examples) then the query
    (``n_way * n_query``), each class-major: support example ``i`` has label ``i // k_shot``.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: torch.Tensor
    indices: torch.Tensor
    n_way: int
    k_shot: int
    n_query: int = 0

    @property
    def n_tasks(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return self.n_tasks

    @property
    def n_support(self) -> int:
        return self.n_way * self.k_shot

    @property
    def support_x(self) -> torch.Tensor:
        """``[B, n_way*k_shot, ...]``"""
        return self.x[:, : self.n_support]

    @property
    def support_y(self) -> torch.Tensor:
        """``int64 [B, n_way*k_shot]``"""
        return self.y[:, : self.n_support]

    @property
    def query_x(self) -> torch.Tensor:
        """``[B, n_way*n_query, ...]`` (empty for clustering tasks)."""
        return self.x[:, self.n_support :]

    @property
    def query_y(self) -> torch.Tensor:
        """``int64 [B, n_way*n_query]``"""
        return self.y[:, self.n_support :]

    def to(self, device: torch.device | str) -> TaskBatch:
        """The same batch on ``device``."""
        return TaskBatch(
            x=self.x.to(device),
            y=self.y.to(device),
            classes=self.classes.to(device),
            indices=self.indices.to(device),
            n_way=self.n_way,
            k_shot=self.k_shot,
            n_query=self.n_query,
        )

    def __getitem__(self, item: slice | int) -> TaskBatch:
        """A sub-batch of tasks (an ``int`` keeps the task dimension, of size 1)."""
        if isinstance(item, int):
            item = slice(item, item + 1 if item != -1 else None)
        return TaskBatch(
            x=self.x[item],
            y=self.y[item],
            classes=self.classes[item],
            indices=self.indices[item],
            n_way=self.n_way,
            k_shot=self.k_shot,
            n_query=self.n_query,
        )
