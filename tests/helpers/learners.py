"""Helpers shared by the network and meta-learner tests: synthetic few-shot task batches."""

from __future__ import annotations

import torch

from metaunsup.tasks.batch import TaskBatch


def fewshot_labels(n_tasks: int, n_way: int, k_shot: int, n_query: int) -> torch.Tensor:
    """``int64 [B, n_way*(k_shot+n_query)]``: support then query, each class-major."""
    support = torch.arange(n_way).repeat_interleave(k_shot)
    query = torch.arange(n_way).repeat_interleave(n_query)
    return torch.cat([support, query]).expand(n_tasks, -1).contiguous()


def random_batch(
    n_tasks: int = 3,
    n_way: int = 3,
    k_shot: int = 2,
    n_query: int = 2,
    example_shape: tuple[int, ...] = (1, 8, 8),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> TaskBatch:
    """A few-shot batch of random examples (values only matter for gradient checks)."""
    g = torch.Generator().manual_seed(seed)
    n = n_way * (k_shot + n_query)
    x = torch.rand(n_tasks, n, *example_shape, generator=g, dtype=dtype)
    return TaskBatch(
        x=x,
        y=fewshot_labels(n_tasks, n_way, k_shot, n_query),
        classes=torch.arange(n_way).expand(n_tasks, -1).contiguous(),
        indices=torch.arange(n_tasks * n).view(n_tasks, n),
        n_way=n_way,
        k_shot=k_shot,
        n_query=n_query,
    )


def gaussian_tasks(
    n_tasks: int,
    n_way: int,
    k_shot: int,
    n_query: int,
    generator: torch.Generator,
    dim: int = 16,
    informative: int = 4,
) -> TaskBatch:
    """Vectors whose classes differ only in the first ``informative`` coordinates.

    Each task draws new class means there (spread 2.0); every coordinate gets unit noise and
    the uninformative ones extra noise (spread 3.0). A learner that meta-learns to look at the
    informative coordinates classifies new tasks far better than one that does not.
    """
    n = n_way * (k_shot + n_query)
    y = fewshot_labels(n_tasks, n_way, k_shot, n_query)
    means = torch.zeros(n_tasks, n_way, dim)
    means[:, :, :informative] = 2.0 * torch.randn(n_tasks, n_way, informative, generator=generator)
    noise = torch.randn(n_tasks, n, dim, generator=generator)
    noise[:, :, informative:] *= 3.0
    x = torch.gather(means, 1, y.unsqueeze(-1).expand(-1, -1, dim)) + noise
    return TaskBatch(
        x=x,
        y=y,
        classes=torch.arange(n_way).expand(n_tasks, -1).contiguous(),
        indices=torch.arange(n_tasks * n).view(n_tasks, n),
        n_way=n_way,
        k_shot=k_shot,
        n_query=n_query,
    )
