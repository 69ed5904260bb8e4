"""Input checks and per-task seeding shared by the clustering routines.

Every routine here works on a batch of tasks ``x: [B, n, d]`` (or one task ``[n, d]``). The
randomness of task ``b`` comes from its own :class:`torch.Generator`, seeded with the ``b``-th
entry of :func:`task_seeds`, so the result for a task depends only on its data and its seed —
not on which other tasks share the batch, nor on its position in it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch

from metaunsup._validation import check_int
from metaunsup.errors import ConfigError, DataError

_MASK64 = (1 << 64) - 1

#: What ``seed`` may be: one int for the whole batch, or one int per task.
SeedLike = int | Sequence[int] | np.ndarray | torch.Tensor


def _splitmix64(z: int) -> int:
    """One step of the SplitMix64 mixer (Steele, Lea & Flood 2014): a 64-bit bijective hash."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def task_seeds(seed: int, n_tasks: int) -> list[int]:
    """The seed of each of ``n_tasks`` tasks when a batch is run with the one int ``seed``.

    Task ``0`` keeps ``seed`` itself; task ``b > 0`` gets a 63-bit hash of ``(seed, b)``. So a
    batched call with ``seed=s`` gives task ``b`` exactly what a call on that task alone gives
    with ``seed=task_seeds(s, B)[b]`` (and a call on task ``0`` alone with ``seed=s``), and the
    seeds do not depend on the batch size: a prefix of a batch gets the same results.
    """
    seed = check_int("seed", seed)
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed}")
    out = [seed]
    base = _splitmix64(seed & _MASK64)
    for b in range(1, n_tasks):
        out.append(_splitmix64(base ^ _splitmix64(b)) >> 1)
    return out


def resolve_seeds(seed: SeedLike, n_tasks: int) -> list[int]:
    """One non-negative int seed per task from ``seed`` (an int, or a sequence of ``n_tasks``)."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return task_seeds(int(seed), n_tasks)
    if isinstance(seed, torch.Tensor):
        seed = seed.tolist()
    if isinstance(seed, np.ndarray):
        seed = seed.tolist()
    if not isinstance(seed, Sequence) or isinstance(seed, str):
        raise ConfigError(f"seed must be an int or a sequence of ints, got {type(seed).__name__}")
    if len(seed) != n_tasks:
        raise ConfigError(f"got {len(seed)} seeds for {n_tasks} tasks; give one per task")
    out = [check_int("seed", s) for s in seed]
    if any(s < 0 for s in out):
        raise ConfigError("seeds must be non-negative ints")
    return out


def task_uniforms(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """``float64 [B, *shape]`` uniforms in ``[0, 1)``: row ``b`` from ``torch.Generator(seeds[b])``.

    One generator per task keeps tasks independent and reproducible one by one; drawing all the
    numbers a run needs up front costs one small call per task, not one per step.
    """
    out = torch.empty((len(seeds), *shape), dtype=torch.float64)
    g = torch.Generator()
    for b, s in enumerate(seeds):
        g.manual_seed(s)
        torch.rand(shape, generator=g, dtype=torch.float64, out=out[b])
    return out


def check_points(x: object, name: str = "x") -> tuple[torch.Tensor, bool]:
    """``(x as a floating [B, n, d] tensor, whether the input was batched)``.

    Accepts a tensor or array of shape ``[n, d]`` (one task) or ``[B, n, d]``. Integer inputs
    become ``float32``; ``float16``/``bfloat16`` are computed in ``float32``. Raises
    :class:`DataError` for other shapes, empty tasks, and NaN or infinite values.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise DataError(
            f"{name} must have shape [n, d] (one task) or [B, n, d] (a batch of tasks), "
            f"got {tuple(x.shape)}"
        )
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{name} must hold real numbers, got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(0)
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise DataError(f"{name} is empty: shape {tuple(x.shape)}")
    # A sum is finite only if every term is: one reduction checks the common case.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise DataError(f"{name} contains NaN or infinite values")
    return x, batched


def check_k(k: object, n: int) -> int:
    """The number of clusters as an int in ``[1, n]``."""
    k = check_int("k", k, 1)
    if k > n:
        raise ConfigError(f"k={k} clusters but only {n} points per task")
    return k


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``x[b, idx[b, ...]]`` of ``x [B, n, d]`` at ``idx: int64 [B, ...]``: ``[B, ..., d]``."""
    B, _, d = x.shape
    flat = idx.reshape(B, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(B, flat.shape[1], d))
    return out.reshape(*idx.shape, d)
