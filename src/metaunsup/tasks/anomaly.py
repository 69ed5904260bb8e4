"""One-class (anomaly detection) tasks: a support of normal examples, a query to score.

A task takes one *normal* class and ``k_shot`` of its examples as the support, then a query of
``n_query`` further normal examples and ``n_query`` anomalies, drawn uniformly from the examples
of the classes the task counts as anomalous:

* ``"other-classes"`` — every other class (MT-MNIST: one digit normal, the other nine
  anomalous; Frikha et al., "Few-Shot One-Class Classification via Meta-Learning", AAAI 2021);
* ``"other-groups"`` — classes of other groups (Omniglot one-class, easy track: anomalies from
  other alphabets);
* ``"same-group"`` — the other classes of the normal class's group (Omniglot, hard track: other
  characters of the same alphabet).

With ``contamination > 0`` a fixed number ``round(contamination * k_shot)`` of the support
slots hold anomalies instead (drawn like the query's, never the same examples): a support that
is *mostly* normal, as real reference data is.

Layout (a :class:`~metaunsup.tasks.batch.TaskBatch` with ``n_way = 1``): the support
(``k_shot`` examples, in a random order) then the query (``2 * n_query`` examples, in a random
order). ``y`` is 1 for an anomaly and 0 for a normal example, in the support (where it marks
contamination) and in the query alike; it travels with the batch only to score a method, which
sees the examples alone. ``classes`` ``[B, 1]`` holds the normal class of each task.

The same draw serves labelled datasets (:class:`AnomalyTaskSampler`: evaluation, supervised
meta-training) and pseudo-classes of unlabeled data (``tasks.pseudo.cactus_anomaly``): a
*grouping* is one labelling of the examples (the dataset's classes, or one CACTUs partition).
Tasks are drawn one at a time from the stream's own generator, each consuming its random numbers
in order, so tasks drawn in chunks are the tasks drawn at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from metaunsup._validation import MAX_SEED, check_choice, check_float, check_int
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.samplers import gather_float
from metaunsup.tasks.stream import SeededStream

__all__ = ["ANOMALY_SOURCES", "AnomalyTaskSampler", "Grouping", "OneClassStream"]

logger = logging.getLogger(__name__)

#: Where a task's anomalies come from (see the module docstring).
ANOMALY_SOURCES = ("other-classes", "other-groups", "same-group")


@dataclass(frozen=True, eq=False)
class Grouping:
    """One labelling of ``n`` examples that tasks are cut from.

    Attributes
    ----------
    labels:
        ``int64 [n]`` class (or cluster) of each example.
    normal:
        ``int64 [C]`` the classes a task may take as normal.
    groups:
        ``int64 [n_labels]`` group of each class (for ``"other-groups"`` and ``"same-group"``),
        or ``None``.
    offset:
        Added to a class id in ``TaskBatch.classes`` (CACTUs: ``partition * n_clusters``).
    """

    labels: torch.Tensor
    normal: torch.Tensor
    groups: torch.Tensor | None = None
    offset: int = 0


def contaminated_slots(contamination: float, k_shot: int) -> int:
    """Support slots holding anomalies: ``round(contamination * k_shot)``; a contamination that
    rounds to no slot is a :class:`ConfigError` (it would silently mean a clean support)."""
    contamination = check_float("contamination", contamination, 0.0, 0.5)
    n_bad = round(contamination * k_shot)
    if contamination > 0 and n_bad == 0:
        raise ConfigError(
            f"contamination={contamination} of a support of {k_shot} examples is no example; "
            f"use a larger k_shot or contamination >= {0.5 / k_shot:.3g}"
        )
    if n_bad >= k_shot:
        raise ConfigError(f"contamination={contamination} leaves no normal support example")
    return n_bad


class OneClassStream(SeededStream):
    """Seeded one-class tasks over one or more groupings of the examples ``x``.

    Each task picks a grouping uniformly, then a normal class uniformly among its usable ones
    (classes with at least ``k_shot + n_query`` examples and enough anomalies), then the
    examples (see the module docstring).

    Parameters
    ----------
    x:
        ``[n, *example_shape]`` the examples (``uint8`` or floating, as stored).
    groupings:
        The labellings tasks are cut from.
    k_shot, n_query:
        Support size ``K`` and query examples per side.
    anomalies:
        One of :data:`ANOMALY_SOURCES`.
    contamination:
        Fraction of the support that is anomalous (rounded to whole examples).
    seed:
        Seed of the stream's own ``torch.Generator``.
    batch_size:
        Tasks per batch when iterating (meta-training).
    """

    def __init__(
        self,
        x: torch.Tensor,
        groupings: Sequence[Grouping],
        k_shot: int,
        n_query: int,
        *,
        anomalies: str = "other-classes",
        contamination: float = 0.0,
        seed: int = 0,
        batch_size: int = 4,
    ) -> None:
        self.x = x
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.n_query = check_int("n_query", n_query, 1)
        self.anomalies = check_choice("anomalies", anomalies, ANOMALY_SOURCES)
        self.contamination = float(contamination)
        self.n_bad = contaminated_slots(contamination, self.k_shot)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self._all_groupings = list(groupings)
        self.groupings = [self._usable(g) for g in groupings]
        self.groupings = [g for g in self.groupings if g.normal.numel()]
        if not self.groupings:
            raise ConfigError(
                f"no class has the {self.k_shot + self.n_query} examples a task needs "
                f"(k_shot {self.k_shot} + n_query {self.n_query}) and "
                f"{self.n_query + self.n_bad} {self.anomalies} anomalies; use smaller tasks"
            )
        self.start_stream()

    def _usable(self, g: Grouping) -> Grouping:
        if self.anomalies != "other-classes" and g.groups is None:
            raise ConfigError(
                f"anomalies={self.anomalies!r} needs classes with groups (e.g. Omniglot's "
                "alphabets); this data has none: use anomalies='other-classes'"
            )
        n_labels = int(max(g.labels.max(), g.normal.max() if g.normal.numel() else 0)) + 1
        counts = torch.bincount(g.labels, minlength=n_labels)
        ok = counts[g.normal] >= self.k_shot + self.n_query
        pool = torch.tensor([self._pool(g, int(c)).numel() for c in g.normal.tolist()])
        ok &= pool >= self.n_query + self.n_bad
        return Grouping(g.labels, g.normal[ok], g.groups, g.offset)

    def _pool(self, g: Grouping, c: int) -> torch.Tensor:
        """``int64 [m]`` the examples that count as anomalies when ``c`` is normal."""
        if self.anomalies == "other-classes":
            return torch.nonzero(g.labels != c).reshape(-1)
        assert g.groups is not None
        example_group = g.groups[g.labels]
        same = example_group == g.groups[c]
        if self.anomalies == "other-groups":
            return torch.nonzero(~same).reshape(-1)
        return torch.nonzero(same & (g.labels != c)).reshape(-1)

    def with_shape(self, k_shot: int, n_query: int, seed: int) -> OneClassStream:
        """A new stream of tasks of another shape over the same examples and groupings
        (clean supports), e.g. to measure scores at other support sizes."""
        return OneClassStream(
            self.x,
            self._all_groupings,
            k_shot,
            n_query,
            anomalies=self.anomalies,
            seed=seed,
            batch_size=self.batch_size,
        )

    def stream_facts(self) -> dict[str, int]:
        """A saved state must be of as many examples and usable groupings."""
        return {"n_examples": int(self.x.shape[0]), "n_groupings": len(self.groupings)}

    def _pick(self, pool: torch.Tensor, m: int) -> torch.Tensor:
        return pool[torch.randperm(pool.numel(), generator=self._generator)[:m]]

    def _one_task(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(class id, indices [k + 2q], y [k + 2q])`` of the next task."""
        g = self._generator
        grouping = self.groupings[int(torch.randint(len(self.groupings), (1,), generator=g))]
        c = int(grouping.normal[int(torch.randint(grouping.normal.numel(), (1,), generator=g))])
        k, q, bad = self.k_shot, self.n_query, self.n_bad
        normals = self._pick(torch.nonzero(grouping.labels == c).reshape(-1), k - bad + q)
        odd = self._pick(self._pool(grouping, c), q + bad)
        support = torch.cat([normals[: k - bad], odd[q:]])
        support_y = torch.cat([torch.zeros(k - bad), torch.ones(bad)]).to(torch.int64)
        query = torch.cat([normals[k - bad :], odd[:q]])
        query_y = torch.cat([torch.zeros(q), torch.ones(q)]).to(torch.int64)
        s_order = torch.randperm(k, generator=g)
        q_order = torch.randperm(2 * q, generator=g)
        indices = torch.cat([support[s_order], query[q_order]])
        y = torch.cat([support_y[s_order], query_y[q_order]])
        return c + grouping.offset, indices, y

    def sample_indices(self, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next ``n_tasks`` tasks as ``(classes [B, 1], indices [B, n], y [B, n])``."""
        n_tasks = check_int("n_tasks", n_tasks, 1)
        drawn = [self._one_task() for _ in range(n_tasks)]
        self.tasks_drawn += n_tasks
        classes = torch.tensor([[c] for c, _, _ in drawn], dtype=torch.int64)
        return classes, torch.stack([i for _, i, _ in drawn]), torch.stack([y for _, _, y in drawn])

    def sample(self, n_tasks: int) -> TaskBatch:
        """The next ``n_tasks`` tasks, examples as ``float32 [B, k + 2q, *example_shape]``."""
        classes, indices, y = self.sample_indices(n_tasks)
        x = gather_float(self.x, indices.reshape(-1))
        return TaskBatch(
            x=x.reshape(*indices.shape, *self.x.shape[1:]),
            y=y,
            classes=classes,
            indices=indices,
            n_way=1,
            k_shot=self.k_shot,
            n_query=self.n_query,
        )

    def batches(self, n_tasks: int | None, batch_size: int | None = None) -> Iterator[TaskBatch]:
        """The next ``n_tasks`` tasks in chunks of ``batch_size`` (together: the tasks of one
        ``sample(n_tasks)`` call); ``None`` goes on forever."""
        size = self.batch_size if batch_size is None else check_int("batch_size", batch_size, 1)
        total = None if n_tasks is None else check_int("n_tasks", n_tasks, 0)
        return self._chunks(total, size)

    def _chunks(self, total: int | None, size: int) -> Iterator[TaskBatch]:
        while total is None or total > 0:
            b = size if total is None else min(size, total)
            yield self.sample(b)
            if total is not None:
                total -= b

    def __iter__(self) -> Iterator[TaskBatch]:
        return self.batches(None)


class AnomalyTaskSampler(OneClassStream):
    """One-class tasks from a labelled dataset (evaluation, supervised meta-training).

    Parameters
    ----------
    dataset:
        Labelled examples; the labels choose the normal class and the anomalies, and score.
    k_shot, n_query:
        ``K`` normal support examples; ``n_query`` normal and ``n_query`` anomalous queries.
    seed:
        Seed of the sampler's own generator; same seed, same tasks.
    normal_classes:
        Dataset class ids a task may take as normal (default: all); e.g. ``[7]`` for the tasks
        of one MT-MNIST test digit.
    anomalies:
        ``"other-classes"``, ``"other-groups"`` or ``"same-group"`` (the last two need
        ``dataset.groups``, e.g. Omniglot's alphabets).
    contamination:
        Fraction of support slots that hold anomalies.
    batch_size:
        Tasks per batch when iterating.

    Example
    -------
    >>> sampler = AnomalyTaskSampler(load("mnist", "test"), k_shot=5, n_query=500,
    ...                              normal_classes=[7], seed=0)
    >>> batch = sampler.sample(20)  # support_x [20, 5, 1, 28, 28], query_x [20, 1000, 1, 28, 28]
    """

    def __init__(
        self,
        dataset: Dataset,
        k_shot: int,
        n_query: int,
        seed: int = 0,
        *,
        normal_classes: Sequence[int] | torch.Tensor | None = None,
        anomalies: str = "other-classes",
        contamination: float = 0.0,
        batch_size: int = 4,
    ) -> None:
        if not isinstance(dataset, Dataset):
            raise ConfigError(
                f"dataset must be a metaunsup.data.Dataset, got {type(dataset).__name__}"
            )
        self.dataset = dataset
        normal = torch.arange(dataset.n_classes, dtype=torch.int64)
        if normal_classes is not None:
            normal = torch.as_tensor(normal_classes, dtype=torch.int64).reshape(-1)
            bad = normal[(normal < 0) | (normal >= dataset.n_classes)]
            if bad.numel() or not normal.numel():
                raise ConfigError(
                    f"normal_classes must be class ids of {dataset.name}/{dataset.split} "
                    f"(0..{dataset.n_classes - 1}), got {normal.tolist()}"
                )
        groups = None
        if dataset.groups is not None:
            names = {name: i for i, name in enumerate(dict.fromkeys(dataset.groups))}
            groups = torch.tensor([names[gname] for gname in dataset.groups], dtype=torch.int64)
        super().__init__(
            dataset.x,
            [Grouping(dataset.y, normal, groups)],
            k_shot,
            n_query,
            anomalies=anomalies,
            contamination=contamination,
            seed=seed,
            batch_size=batch_size,
        )
        left_out = normal.numel() - self.groupings[0].normal.numel()
        if left_out:
            logger.info(
                "%s/%s: %d of %d normal classes left out (too few examples or anomalies)",
                dataset.name,
                dataset.split,
                left_out,
                normal.numel(),
            )

    def __repr__(self) -> str:
        return (
            f"AnomalyTaskSampler(dataset={self.dataset.name}/{self.dataset.split}, "
            f"k_shot={self.k_shot}, n_query={self.n_query}, anomalies={self.anomalies!r}, "
            f"contamination={self.contamination}, seed={self.seed}, "
            f"tasks_drawn={self.tasks_drawn})"
        )
