"""UMTRA: few-shot tasks from random unlabeled images and their augmentations.

Khodadadeh, Bölöni & Shah, "Unsupervised Meta-Learning for Few-Shot Image Classification",
NeurIPS 2019. A task takes ``n_way`` random distinct images of the unlabeled set and declares
each one a class of its own: the support is the images themselves (one shot), the query is
``n_query`` augmented copies of each. With many underlying classes and few ways, the ``n_way``
images rarely share a class, so the pseudo-labels are mostly right; the augmentation decides
what the meta-learner learns to be invariant to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metaunsup._validation import MAX_SEED, check_int
from metaunsup.data.augment import Augment
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.errors import ConfigError
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.samplers import gather_float
from metaunsup.tasks.sampling import draw_uniforms, floyd_sample, random_order
from metaunsup.tasks.stream import SeededStream

__all__ = ["UmtraTaskSource"]

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class UmtraTaskSource(SeededStream):
    """Seeded UMTRA tasks over unlabeled images.

    Per task: ``n_way`` distinct images, uniformly among all ``n`` (Floyd's algorithm, so no
    ``[B, n]`` tensor, in a random order); support = those images, optionally augmented
    (``augment_support``); query = ``n_query`` independent augmentations of each.

    Parameters
    ----------
    source:
        An :class:`~metaunsup.data.unlabeled.UnlabeledView` (or a dataset, of which only ``x``
        is read, or a tensor ``[n, *example_shape]``).
    n_way:
        Images (pseudo-classes) per task.
    n_query:
        Augmented copies of each image in the query.
    augment:
        An :class:`~metaunsup.data.augment.Augment` (or any ``f(x, generator) -> x`` that maps
        ``[..., *example_shape]`` to the same shape); default
        ``Augment.for_shape(example_shape)``. ``Augment()`` (the identity) makes the query
        plain copies of the support.
    seed:
        Seed of the source's own ``torch.Generator`` (images and augmentations).
    augment_support:
        Augment the support images too (the paper augments only the query).
    device:
        Where to augment (e.g. ``"cuda"``); the batch is returned there. Default CPU.

    The :class:`~metaunsup.tasks.TaskBatch` has ``k_shot = 1``: the support ``[B, n_way, ...]``
    (label ``i`` for image ``i``) then the query ``[B, n_way * n_query, ...]``, class-major
    (query example ``j`` has label ``j // n_query``). ``classes`` and ``indices`` hold the
    dataset index of each task's images.

    Example
    -------
    >>> source = UmtraTaskSource(UnlabeledView(omniglot_bg), n_way=5, n_query=1, seed=0)
    >>> batch = source.sample(16)  # support [16, 5, 1, 28, 28], query [16, 5, 1, 28, 28]
    """

    k_shot = 1

    def __init__(
        self,
        source: Dataset | UnlabeledView | torch.Tensor,
        n_way: int,
        n_query: int = 1,
        augment: Augment | AugmentFn | None = None,
        seed: int = 0,
        *,
        augment_support: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.view = as_unlabeled(source)
        self.n_way = check_int("n_way", n_way, 1, len(self.view))
        self.n_query = check_int("n_query", n_query, 0)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.augment = Augment.for_shape(self.view.example_shape) if augment is None else augment
        if not callable(self.augment):
            raise ConfigError(f"augment must be an Augment or a callable, got {augment!r}")
        self.augment_support = bool(augment_support)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.start_stream()

    def stream_facts(self) -> dict[str, int]:
        """A saved state must be of as many examples."""
        return {"n_examples": len(self.view)}

    def sample_indices(self, n_tasks: int) -> torch.Tensor:
        """``int64 [B, n_way]``: the images of the next ``n_tasks`` tasks, nothing gathered.

        :meth:`sample` draws its augmentations from the same generator after these indices, so
        a stream read with ``sample_indices`` goes on differently from one read with ``sample``.
        """
        n_tasks = check_int("n_tasks", n_tasks, 1)
        u = draw_uniforms(self._generator, n_tasks, 2 * self.n_way)
        counts = torch.full((n_tasks,), len(self.view), dtype=torch.int64)
        chosen = floyd_sample(counts, u[:, : self.n_way])
        chosen = torch.gather(chosen, 1, random_order(u[:, self.n_way :]))
        self.tasks_drawn += n_tasks
        return chosen

    def sample(self, n_tasks: int) -> TaskBatch:
        """The next ``n_tasks`` tasks: ``x`` ``float32 [B, n_way * (1 + n_query), ...]``."""
        chosen = self.sample_indices(n_tasks)
        b, n, q = chosen.shape[0], self.n_way, self.n_query
        shape = self.view.example_shape
        images = gather_float(self.view.x, chosen.reshape(-1)).reshape(b, n, *shape)
        images = images.to(self.device)
        support = self.augment(images, self._generator) if self.augment_support else images
        query_src = images.unsqueeze(2).expand(b, n, q, *shape).reshape(b, n * q, *shape)
        query = self.augment(query_src, self._generator) if q else query_src
        indices = torch.cat([chosen, chosen.repeat_interleave(q, dim=1)], dim=1)
        way = torch.arange(n, dtype=torch.int64)
        y = torch.cat([way, way.repeat_interleave(q)]).expand(b, -1).contiguous()
        return TaskBatch(
            x=torch.cat([support, query], dim=1),
            y=y.to(self.device),
            classes=chosen.to(self.device),
            indices=indices.to(self.device),
            n_way=n,
            k_shot=1,
            n_query=q,
        )

    def __repr__(self) -> str:
        return (
            f"UmtraTaskSource({self.view.name}/{self.view.split}, n_way={self.n_way}, "
            f"n_query={self.n_query}, seed={self.seed}, tasks_drawn={self.tasks_drawn})"
        )
