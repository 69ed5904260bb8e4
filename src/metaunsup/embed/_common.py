"""What the embedding learners share: seeding, mini-batches, the training loop, feature extraction.

Determinism: weights are initialised from ``seed`` inside :func:`torch.random.fork_rng`, so the
global RNG is left as it was; mini-batches and augmentations come from the learner's own
``torch.Generator``. The same seed on the same machine and thread count gives the same encoder.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaunsup._validation import MAX_SEED, check_int
from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.embed.networks import Encoder, build_encoder
from metaunsup.errors import CheckpointError, ConfigError, DataError
from metaunsup.tasks.samplers import gather_float

logger = logging.getLogger(__name__)

Source = Dataset | UnlabeledView | torch.Tensor


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build modules with weights drawn from ``seed``, leaving the global CPU RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def check_fit_args(
    steps: int, batch_size: int, lr: float, seed: int
) -> tuple[int, int, float, int]:
    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 2)
    seed = check_int("seed", seed, 0, MAX_SEED)
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"lr must be a number, got {lr!r}") from None
    if not lr > 0 or lr == float("inf"):
        raise ConfigError(f"lr must be positive and finite, got {lr}")
    return steps, batch_size, lr, seed


class BatchStream:
    """Indices of mini-batches: a seeded shuffle of ``0..n-1`` cut into batches, reshuffled each
    epoch (no example twice in a batch, every example once per epoch)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator
        self._perm = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def next(self) -> torch.Tensor:
        """``int64 [batch_size]``."""
        if self._pos + self.batch_size > self._perm.numel():
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        out = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return out


def train_loop(
    name: str,
    params: list[nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    progress: bool,
) -> list[float]:
    """Adam on ``loss_fn(step)`` for ``steps`` steps; the loss of every step, as floats.

    Logs the mean loss ten times over the run; shows a tqdm bar when ``progress``.
    """
    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=name, unit="step", dynamic_ncols=True)
    every = max(1, steps // 10)
    try:
        for step in range(steps):
            loss = loss_fn(step)
            if not torch.isfinite(loss):
                raise DataError(
                    f"{name}: the loss became {float(loss)} at step {step}; lower lr or check "
                    "the inputs for NaN/inf"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            if (step + 1) % every == 0 or step + 1 == steps:
                recent = losses[-every:]
                logger.info(
                    "%s step %d/%d: loss %.5f", name, step + 1, steps, sum(recent) / len(recent)
                )
    finally:
        if bar is not None:
            bar.close()
    return losses


def batch_of(view: UnlabeledView, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``float32 [b, *example_shape]`` examples ``idx`` of the view, on ``device``."""
    x = gather_float(view.x, idx)
    return x.to(device)


def resolve_device(device: torch.device | str | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def embed(
    encoder: nn.Module,
    x: Source,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Features of every example: ``float32 [n, dim]`` on the CPU.

    Parameters
    ----------
    encoder:
        A trained encoder (any module mapping ``[b, *example_shape]`` to ``[b, dim]``). It runs
        in ``eval()`` mode (batch norms use their running statistics, so an example's features
        do not depend on the batch it is in); its previous mode is restored afterwards.
    x:
        A view, a dataset (only its examples are read) or examples ``[n, *example_shape]``
        (``uint8`` or floating, see :func:`~metaunsup.data.to_float`).
    batch_size:
        Examples per forward pass (memory only; the result does not depend on it).
    device:
        Where to run (default: where the encoder's parameters are).
    """
    view = as_unlabeled(x)
    batch_size = check_int("batch_size", batch_size, 1)
    if device is None:
        p = next(iter(encoder.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    was_training = encoder.training
    encoder.eval()
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(view), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(view)))
                outs.append(encoder(batch_of(view, idx, dev)).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(outs)


def save_encoder(
    path: str | os.PathLike, encoder: Encoder, info: dict[str, Any] | None = None
) -> Path:
    """Write an encoder (weights + architecture) as a metaunsup safetensors checkpoint."""
    if not isinstance(encoder, Encoder):
        raise ConfigError(f"save_encoder needs a metaunsup.embed Encoder, got {type(encoder)}")
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    meta = {"kind": "encoder", "encoder": encoder.config(), "info": dict(info or {})}
    return save_checkpoint(path, tensors, meta)


def load_encoder(path: str | os.PathLike) -> Encoder:
    """The encoder saved by :func:`save_encoder`, in ``eval()`` mode."""
    tensors, meta = read_checkpoint(path)
    if meta.get("kind") != "encoder":
        raise CheckpointError(f"{str(path)!r} holds a {meta.get('kind')!r}, not an encoder")
    try:
        enc = build_encoder(meta["encoder"])
        enc.load_state_dict(
            {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
        )
    except (ConfigError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{str(path)!r}: cannot rebuild the encoder: {err}") from None
    return enc.eval()
