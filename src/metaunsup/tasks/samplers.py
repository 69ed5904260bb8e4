"""Seeded task samplers over a labelled :class:`~metaunsup.data.Dataset`.

- :class:`ClusteringTaskSampler`: ``n_way`` classes × ``k_shot`` examples, in a random order; the
  labels travel with the batch only to score a clustering.
- :class:`FewShotTaskSampler`: ``n_way`` classes × (``k_shot`` support + ``n_query`` query)
  examples, class-major, for few-shot classification.

Both own a ``torch.Generator`` seeded from ``seed`` (never the global RNG), so the same seed gives
the same tasks on every run and machine, and draw whole batches with tensor ops
(:mod:`metaunsup.tasks.sampling`). Sampling is uniform over classes and over examples within a
class. A sampler is a stream: each :meth:`~ClusteringTaskSampler.sample` call returns the next
tasks; :meth:`~ClusteringTaskSampler.batches` returns the same next tasks in chunks, and
:meth:`~ClusteringTaskSampler.reset` rewinds to the first task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from metaunsup._validation import MAX_SEED, check_int
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.sampling import ClassIndex, draw_uniforms, per_task_uniforms, sample_grouped
from metaunsup.tasks.stream import SeededStream

__all__ = ["ClusteringTaskSampler", "FewShotTaskSampler", "classes_with_min_examples"]

logger = logging.getLogger(__name__)

ClassIds = torch.Tensor | Sequence[int]


def _check_class_ids(classes: ClassIds, n_classes: int, what: str) -> torch.Tensor:
    """``classes`` as distinct ``int64 [C]`` ids in ``0..n_classes-1``."""
    try:
        ids = torch.as_tensor(classes)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"classes must be a sequence of class ids: {exc}") from None
    if ids.dim() != 1:
        raise ConfigError(f"classes must be one-dimensional, got shape {tuple(ids.shape)}")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise ConfigError(f"classes must be integer class ids, got dtype {ids.dtype}")
    ids = ids.to(torch.int64)
    if ids.numel():
        bad = ids[(ids < 0) | (ids >= n_classes)]
        if bad.numel():
            raise ConfigError(
                f"class id {int(bad[0])} out of range: {what} has {n_classes} classes "
                f"(ids 0..{n_classes - 1})"
            )
    if torch.unique(ids).numel() != ids.numel():
        raise ConfigError("classes must not repeat a class id")
    return ids


#: Bytes of ``float32`` output converted per step in :func:`gather_float` (cache-sized).
_GATHER_CHUNK_BYTES = 1 << 22


def gather_float(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``to_float(x[indices])``, computed in cache-sized chunks.

    Equal to :func:`~metaunsup.data.to_float` of the gather, but converts a few MiB at a time
    straight into the output, instead of gathering all ``uint8`` rows into a temporary first:
    for 1000 MNIST tasks of 200 images (a 627 MB output) this saves a pass over memory.

    Parameters
    ----------
    x:
        ``[n, *example_shape]`` examples, ``uint8`` or floating.
    indices:
        ``int64 [m]`` rows to take.

    Returns
    -------
    ``float32 [m, *example_shape]``
    """
    row = max(1, x[0].numel() if len(x) else 1)
    step = max(1, _GATHER_CHUNK_BYTES // (4 * row))
    out = torch.empty((indices.numel(), *x.shape[1:]), dtype=torch.float32)
    for start in range(0, indices.numel(), step):
        part = out[start : start + step]
        part.copy_(x.index_select(0, indices[start : start + step]))
        if x.dtype == torch.uint8:
            part.div_(255.0)  # same arithmetic as to_float: cast to float32, then divide
    return out


def classes_with_min_examples(
    source: Dataset | torch.Tensor,
    min_examples: int,
    classes: ClassIds | None = None,
) -> torch.Tensor:
    """The class ids with at least ``min_examples`` examples.

    Use it to leave out classes (or clusters, when ``source`` holds cluster assignments) too
    small for a task, e.g. ``min_examples = k_shot + n_query``.

    Parameters
    ----------
    source:
        A dataset, or ``int64 [n]`` labels / cluster ids.
    min_examples:
        Smallest count kept.
    classes:
        Candidate class ids (default all); their order is kept.

    Returns
    -------
    ``int64 [C']`` the kept class ids.
    """
    min_examples = check_int("min_examples", min_examples, 0)
    if isinstance(source, Dataset):
        y, n_classes, what = source.y, source.n_classes, f"dataset {source.name}/{source.split}"
    else:
        y = torch.as_tensor(source)
        if y.dim() != 1 or y.dtype != torch.int64:
            raise ConfigError("labels must be an int64 tensor of shape [n]")
        n_classes, what = (int(y.max()) + 1 if y.numel() else 0), "the labels"
    ids = (
        torch.arange(n_classes, dtype=torch.int64)
        if classes is None
        else _check_class_ids(classes, n_classes, what)
    )
    counts = torch.bincount(y, minlength=n_classes)
    return ids[counts[ids] >= min_examples]


class _TaskSampler(SeededStream):
    """Shared machinery: validation, class index, generator, chunked and endless iteration.

    Subclasses set ``_shuffle_within`` and implement ``_per_task`` and ``_layout``.
    """

    _shuffle_within: bool = True

    def __init__(
        self,
        dataset: Dataset,
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int,
        classes: ClassIds | None,
        drop_small: bool,
        batch_size: int,
    ) -> None:
        if not isinstance(dataset, Dataset):
            raise ConfigError(
                f"dataset must be a metaunsup.data.Dataset, got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.n_way = check_int("n_way", n_way, 1)
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.n_query = check_int("n_query", n_query, 0)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.drop_small = bool(drop_small)
        what = f"dataset {dataset.name}/{dataset.split}"
        ids = (
            torch.arange(dataset.n_classes, dtype=torch.int64)
            if classes is None
            else _check_class_ids(classes, dataset.n_classes, what)
        )
        need = self.k_shot + self.n_query
        counts = dataset.class_counts()[ids]
        small = counts < need
        if bool(small.any()):
            if self.drop_small:
                logger.info(
                    "%s: leaving out %d of %d classes with fewer than %d examples",
                    what,
                    int(small.sum()),
                    ids.numel(),
                    need,
                )
                ids = ids[~small]
            else:
                first = int(torch.nonzero(small)[0])
                cid = int(ids[first])
                raise ConfigError(
                    f"{what}: class {cid} ({dataset.classes[cid]!r}) has {int(counts[first])} "
                    f"examples, fewer than the {self._need_text(need)} a task takes from each "
                    f"class ({int(small.sum())} such classes, the smallest with "
                    f"{int(counts.min())}); ask for at most {int(counts.min())} examples per "
                    "class",
                    api_hint="(or pass drop_small=True to leave those classes out, or choose "
                    "classes with classes_with_min_examples())",
                )
        if self.n_way > ids.numel():
            raise ConfigError(
                f"n_way={self.n_way} but only {ids.numel()} classes are available in {what}"
                + (f" with at least {need} examples" if self.drop_small else "")
            )
        self.classes = ids
        self._index = ClassIndex.from_labels(dataset.y, ids, n_labels=dataset.n_classes)
        self.start_stream()

    def _need_text(self, need: int) -> str:
        if self.n_query:
            return f"{need} (k_shot + n_query)"
        return f"{need} (k_shot)"

    # -- the stream ------------------------------------------------------------------------

    @property
    def n_per_task(self) -> int:
        """Examples per task, ``n_way * (k_shot + n_query)``."""
        return self.n_way * (self.k_shot + self.n_query)

    def _per_task(self) -> int:
        raise NotImplementedError

    def _layout(
        self, u: torch.Tensor, positions: torch.Tensor, examples: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample_indices(self, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next ``n_tasks`` tasks as indices only (no examples gathered).

        Returns
        -------
        classes:
            ``int64 [B, n_way]`` dataset class id behind each task-local label.
        indices:
            ``int64 [B, n]`` dataset index of each example.
        y:
            ``int64 [B, n]`` task-local labels ``0..n_way-1``.
        """
        n_tasks = check_int("n_tasks", n_tasks, 1)
        m = self.k_shot + self.n_query
        u = draw_uniforms(self._generator, n_tasks, self._per_task())
        positions, examples = sample_grouped(
            self._index, u, self.n_way, m, shuffle_within=self._shuffle_within
        )
        indices, y = self._layout(u, positions, examples)
        self.tasks_drawn += n_tasks
        return self._index.class_ids[positions], indices, y

    def sample(self, n_tasks: int) -> TaskBatch:
        """The next ``n_tasks`` tasks, examples as ``float32 [B, n, *example_shape]``."""
        classes, indices, y = self.sample_indices(n_tasks)
        x = gather_float(self.dataset.x, indices.reshape(-1))
        return TaskBatch(
            x=x.reshape(*indices.shape, *self.dataset.example_shape),
            y=y,
            classes=classes,
            indices=indices,
            n_way=self.n_way,
            k_shot=self.k_shot,
            n_query=self.n_query,
        )

    def batches(self, n_tasks: int | None, batch_size: int | None = None) -> Iterator[TaskBatch]:
        """The next ``n_tasks`` tasks in chunks of ``batch_size`` (the last may be smaller).

        Together the chunks are exactly the tasks one ``sample(n_tasks)`` call would return,
        so evaluating in chunks (to bound memory) gives the same result as all at once.
        ``n_tasks=None`` goes on forever. ``batch_size`` defaults to the sampler's.
        """
        size = self.batch_size if batch_size is None else check_int("batch_size", batch_size, 1)
        total = None if n_tasks is None else check_int("n_tasks", n_tasks, 0)
        return self._chunks(total, size)  # validated now, not at the first next()

    def _chunks(self, total: int | None, size: int) -> Iterator[TaskBatch]:
        while total is None or total > 0:
            b = size if total is None else min(size, total)
            yield self.sample(b)
            if total is not None:
                total -= b

    def __iter__(self) -> Iterator[TaskBatch]:
        """Batches of ``batch_size`` tasks, forever (a meta-training stream)."""
        return self.batches(None)

    def __repr__(self) -> str:
        query = f", n_query={self.n_query}" if self.n_query else ""
        return (
            f"{type(self).__name__}(dataset={self.dataset.name}/{self.dataset.split}, "
            f"n_way={self.n_way}, k_shot={self.k_shot}{query}, seed={self.seed}, "
            f"classes={len(getattr(self, 'classes', ()))} available, "
            f"tasks_drawn={getattr(self, 'tasks_drawn', 0)})"
        )


class ClusteringTaskSampler(_TaskSampler):
    """Clustering tasks: ``n_way`` classes × ``k_shot`` examples, in a random order.

    Each task takes ``n_way`` distinct classes, uniformly from the available ones, and
    ``k_shot`` distinct examples of each, uniformly within the class, then permutes the
    ``n = n_way * k_shot`` examples uniformly, so that a method cannot read the labels from the
    order. ``y`` holds task-local labels ``0..n_way-1`` only to score the clustering.

    Parameters
    ----------
    dataset:
        Labelled examples to draw from.
    n_way:
        Classes (true clusters) per task.
    k_shot:
        Examples per class.
    seed:
        Seed of the sampler's own ``torch.Generator``; same seed, same tasks.
    classes:
        Dataset class ids to draw from (e.g. one part of a :func:`split_classes`); default all.
    drop_small:
        Leave out classes with fewer than ``k_shot`` examples instead of raising.
    batch_size:
        Tasks per batch when iterating (``iter(sampler)``, :meth:`batches`).

    Attributes
    ----------
    classes:
        ``int64 [C]`` the dataset class ids tasks are drawn from (after ``drop_small``).
    tasks_drawn:
        Tasks returned since construction or the last :meth:`reset`.

    Raises
    ------
    ConfigError
        For non-integer or out-of-range numbers, unknown or repeated class ids, fewer available
        classes than ``n_way``, or a class with fewer than ``k_shot`` examples.

    Notes
    -----
    :meth:`sample_indices` draws the same tasks without gathering examples (indices only), for
    callers that gather themselves or need only provenance.

    Examples
    --------
    >>> sampler = ClusteringTaskSampler(load("mnist", "test"), n_way=10, k_shot=20, seed=0)
    >>> batch = sampler.sample(1000)  # x: [1000, 200, 1, 28, 28], y: [1000, 200]
    >>> for chunk in sampler.batches(1000, batch_size=100):  # the next 1000, 100 at a time
    ...     ...
    """

    _shuffle_within = False  # the whole task is permuted instead

    def __init__(
        self,
        dataset: Dataset,
        n_way: int,
        k_shot: int,
        seed: int = 0,
        classes: ClassIds | None = None,
        *,
        drop_small: bool = False,
        batch_size: int = 16,
    ) -> None:
        super().__init__(dataset, n_way, k_shot, 0, seed, classes, drop_small, batch_size)

    def _per_task(self) -> int:
        n_avail, m = self._index.n_classes, self.k_shot
        return per_task_uniforms(n_avail, self.n_way, m, False) + self.n_per_task

    def _layout(
        self, u: torch.Tensor, positions: torch.Tensor, examples: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.n_per_task
        perm = torch.argsort(u[:, -n:], dim=1)
        indices = torch.gather(examples.reshape(-1, n), 1, perm)
        y = torch.div(perm, self.k_shot, rounding_mode="floor")  # class-major before permuting
        return indices, y


class FewShotTaskSampler(_TaskSampler):
    """Few-shot classification tasks: ``n_way`` classes × (``k_shot`` + ``n_query``) examples.

    Classes are uniform among the available ones; the ``k_shot + n_query`` examples of a class
    are distinct and uniform within the class, and which of them are support is uniform too.
    Layout (see :class:`TaskBatch`): the support (``n_way * k_shot``) then the query
    (``n_way * n_query``), each class-major, so support example ``i`` has label
    ``i // k_shot`` and query example ``i`` has label ``i // n_query``.

    Parameters
    ----------
    dataset, n_way, k_shot, seed, classes, drop_small, batch_size:
        As for :class:`ClusteringTaskSampler` (a class needs ``k_shot + n_query`` examples).
    n_query:
        Query examples per class (``0`` for support only).

    Examples
    --------
    >>> sampler = FewShotTaskSampler(omniglot, n_way=5, k_shot=1, n_query=15, seed=0)
    >>> batch = sampler.sample(4)  # batch.support_x: [4, 5, ...], batch.query_x: [4, 75, ...]
    """

    def __init__(
        self,
        dataset: Dataset,
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int = 0,
        classes: ClassIds | None = None,
        *,
        drop_small: bool = False,
        batch_size: int = 4,
    ) -> None:
        super().__init__(dataset, n_way, k_shot, n_query, seed, classes, drop_small, batch_size)

    def _per_task(self) -> int:
        m = self.k_shot + self.n_query
        return per_task_uniforms(self._index.n_classes, self.n_way, m, True)

    def _layout(
        self, u: torch.Tensor, positions: torch.Tensor, examples: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_tasks, k, q = examples.shape[0], self.k_shot, self.n_query
        support = examples[:, :, :k].reshape(n_tasks, -1)
        query = examples[:, :, k:].reshape(n_tasks, -1)
        indices = torch.cat([support, query], dim=1)
        way = torch.arange(self.n_way, dtype=torch.int64)
        y = torch.cat([way.repeat_interleave(k), way.repeat_interleave(q)])
        return indices, y.expand(n_tasks, -1).contiguous()
