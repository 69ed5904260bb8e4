"""Vectorised, seeded index sampling: which examples make up each task.

This module knows nothing about images or :class:`~metaunsup.tasks.batch.TaskBatch`; it works on
an integer grouping of example indices (:class:`ClassIndex`), so the same code serves labelled
samplers (groups = classes) and, later, unlabeled ones (groups = clusters of embeddings, as in
CACTUs).

How a batch of ``B`` tasks is drawn, with no Python loop over tasks:

1. One block of ``float64`` uniforms ``[B, per_task]`` is drawn from the sampler's generator
   (:func:`draw_uniforms`). Every random choice of task ``t`` is a pure function of row ``t``.
   The CPU generator fills a tensor in order, so drawing ``[b1, R]`` then ``[b2, R]`` gives the
   same numbers as ``[b1 + b2, R]``: tasks sampled in chunks equal tasks sampled all at once.
2. Classes: ``n_way`` of the ``C`` available classes per task, the top-``n_way`` of ``C`` random
   keys (:func:`choose_classes`). This is a uniformly random subset in a uniformly random order.
3. Examples: ``m`` distinct positions within each chosen class, for all ``B * n_way`` rows at
   once, by Robert Floyd's algorithm (:func:`floyd_sample`): ``m`` iterations of tensor ops,
   memory ``O(B * n_way * m)`` whatever the class sizes (no ``[B, n_way, max_count]`` tensor).
   Floyd gives a uniformly random *set*; its order is not uniform, so rows are then shuffled
   with random keys when the order matters (support versus query).

Sampling is therefore uniform over classes (each ``n_way``-subset of the available classes is
equally likely) and uniform over examples within a class (each ``m``-subset of a class is
equally likely, in a uniformly random order), independently across tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaunsup.errors import ConfigError

__all__ = [
    "ClassIndex",
    "choose_classes",
    "draw_uniforms",
    "floyd_sample",
    "per_task_uniforms",
    "random_order",
    "sample_grouped",
]


@dataclass(frozen=True, eq=False)
class ClassIndex:
    """Example indices grouped by class, in compressed (CSR) form.

    The examples of available class ``c`` (``0 <= c < C``) are
    ``order[offsets[c] : offsets[c] + counts[c]]``. Compared with a padded ``[C, max_count]``
    table this holds no padding, which matters when group sizes are very unequal (clusters of
    embeddings), and a lookup is still one gather: ``order[offsets[c] + position]``.

    Attributes
    ----------
    class_ids:
        ``int64 [C]`` the label value of each available class (dataset class ids).
    counts:
        ``int64 [C]`` examples per available class.
    offsets:
        ``int64 [C]`` start of each class in ``order``.
    order:
        ``int64 [sum(counts)]`` dataset indices, grouped by class, ascending within a class.
    """

    class_ids: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor
    order: torch.Tensor

    @property
    def n_classes(self) -> int:
        """``C``, the number of available classes."""
        return int(self.class_ids.shape[0])

    @classmethod
    def from_labels(
        cls,
        y: torch.Tensor,
        class_ids: torch.Tensor | None = None,
        n_labels: int | None = None,
    ) -> ClassIndex:
        """Group the indices of ``y`` by label.

        Parameters
        ----------
        y:
            ``int64 [n]`` label (or cluster id) of each example, non-negative.
        class_ids:
            ``int64 [C]`` distinct label values to keep, in the order they are numbered
            ``0..C-1`` here; examples with other labels are left out. Default: every value
            ``0..n_labels-1``.
        n_labels:
            Number of possible label values (default ``max(y) + 1``, or ``max(class_ids) + 1``
            when larger). Classes without examples get a count of 0.
        """
        y = torch.as_tensor(y)
        if y.dim() != 1 or y.dtype != torch.int64:
            raise ConfigError("labels must be an int64 tensor of shape [n]")
        if y.numel() and int(y.min()) < 0:
            raise ConfigError("labels must be non-negative")
        top = int(y.max()) + 1 if y.numel() else 0
        if class_ids is not None:
            class_ids = torch.as_tensor(class_ids, dtype=torch.int64).reshape(-1)
            if class_ids.numel():
                top = max(top, int(class_ids.max()) + 1)
        n_labels = top if n_labels is None else max(int(n_labels), top)
        if class_ids is None:
            class_ids = torch.arange(n_labels, dtype=torch.int64)
        remap = torch.full((n_labels,), -1, dtype=torch.int64)
        remap[class_ids] = torch.arange(class_ids.numel(), dtype=torch.int64)
        pos = remap[y]
        kept = torch.nonzero(pos >= 0).reshape(-1)
        pos = pos[kept]
        order = kept[torch.argsort(pos, stable=True)]
        counts = torch.bincount(pos, minlength=class_ids.numel())
        offsets = torch.cumsum(counts, 0) - counts
        return cls(class_ids=class_ids.clone(), counts=counts, offsets=offsets, order=order)


def draw_uniforms(generator: torch.Generator, n_tasks: int, per_task: int) -> torch.Tensor:
    """``float64 [n_tasks, per_task]`` uniforms in ``[0, 1)``, task-major.

    ``float64`` keeps ties between random keys (which would bias an argsort) out of reach and
    keeps ``floor(u * n)`` unbiased for any realistic ``n``.
    """
    return torch.rand((n_tasks, per_task), generator=generator, dtype=torch.float64)


def choose_classes(keys: torch.Tensor, n_way: int) -> torch.Tensor:
    """``int64 [B, n_way]`` positions of the ``n_way`` largest of ``keys [B, C]`` per row.

    With i.i.d. uniform keys this is a uniformly random ``n_way``-subset of ``0..C-1`` in a
    uniformly random order.
    """
    return torch.topk(keys, n_way, dim=1, largest=True, sorted=True).indices


def floyd_sample(counts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Distinct random positions ``0..counts[r]-1`` for each row, by Floyd's algorithm.

    For ``j = n - m, ..., n - 1``: draw ``t`` uniform in ``0..j``; take ``t`` unless already
    taken, else take ``j``. The result is a uniformly random ``m``-subset of ``0..n-1``
    (Bentley & Floyd, "A sample of brilliance", CACM 1987), drawn here for all rows at once.

    Parameters
    ----------
    counts:
        ``int64 [R]`` population size of each row; every ``counts[r] >= m``.
    u:
        ``float64 [R, m]`` uniforms in ``[0, 1)``, one per pick.

    Returns
    -------
    ``int64 [R, m]`` distinct positions per row. The set is uniform; the order is *not* (late
    columns favour large positions), so shuffle with :func:`random_order` when order matters.
    """
    n_rows, m = u.shape
    out = torch.empty((n_rows, m), dtype=torch.int64)
    for i in range(m):
        j = counts - (m - i)  # [R], the largest position allowed at this step
        t = torch.floor(u[:, i] * (j + 1).to(torch.float64)).to(torch.int64)
        t = torch.minimum(t, j)  # guards against u * (j + 1) rounding up to j + 1
        if i:
            taken = (out[:, :i] == t.unsqueeze(1)).any(dim=1)
            t = torch.where(taken, j, t)
        out[:, i] = t
    return out


def random_order(keys: torch.Tensor) -> torch.Tensor:
    """``int64 [..., m]`` a uniformly random permutation of ``0..m-1`` per row of ``keys``."""
    return torch.argsort(keys, dim=-1)


def sample_grouped(
    index: ClassIndex,
    u: torch.Tensor,
    n_way: int,
    m: int,
    shuffle_within: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes and examples of ``B`` tasks from a block of uniforms.

    Parameters
    ----------
    index:
        The available classes and their examples.
    u:
        ``float64 [B, R]`` uniforms with ``R >= per_task_uniforms(C, n_way, m, shuffle_within)``;
        columns used: ``C`` class keys, then ``n_way * m`` Floyd draws, then (if
        ``shuffle_within``) ``n_way * m`` ordering keys. Further columns are left to the caller.
    n_way, m:
        Classes per task and distinct examples per class (``m <= counts`` of every class).
    shuffle_within:
        Put each class's ``m`` examples in a uniformly random order. Needed when position
        matters (support versus query); unnecessary when the caller shuffles the whole task.

    Returns
    -------
    positions:
        ``int64 [B, n_way]`` class positions in ``index`` (``index.class_ids[positions]`` are the
        dataset class ids).
    examples:
        ``int64 [B, n_way, m]`` dataset indices, class-major.
    """
    n_tasks = u.shape[0]
    n_avail = index.n_classes
    col = n_avail
    positions = choose_classes(u[:, :col], n_way)
    rows = positions.reshape(-1)
    draws = u[:, col : col + n_way * m].reshape(n_tasks * n_way, m)
    col += n_way * m
    within = floyd_sample(index.counts[rows], draws)
    if shuffle_within:
        keys = u[:, col : col + n_way * m].reshape(n_tasks * n_way, m)
        within = torch.gather(within, 1, random_order(keys))
    examples = index.order[index.offsets[rows].unsqueeze(1) + within]
    return positions, examples.reshape(n_tasks, n_way, m)


def per_task_uniforms(n_classes: int, n_way: int, m: int, shuffle_within: bool) -> int:
    """Columns of uniforms :func:`sample_grouped` reads per task."""
    return n_classes + n_way * m * (2 if shuffle_within else 1)
