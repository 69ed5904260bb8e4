"""Contrastive pre-training of a backbone, run by the one Trainer.

:func:`pretrain_contrastive` trains a backbone in place by SimCLR
(:mod:`metaunsup.embed.simclr`): the objective and its task source go through
:class:`~metaunsup.training.trainer.Trainer` like any meta-training, so with an ``out_dir`` the
pre-training is logged, checkpointed every ``checkpoint_every`` steps and resumable to the exact
step (an interrupted and an unbroken pre-training end with the same weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from metaunsup._validation import check_int, check_positive, check_seed
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.embed.simclr import ContrastiveObjective, ContrastiveViews
from metaunsup.nets import FunctionalNet
from metaunsup.training.config import TrainConfig
from metaunsup.training.trainer import LOG, Trainer, TrainResult

__all__ = ["final_loss", "pretrain_contrastive"]


def pretrain_contrastive(
    net: FunctionalNet,
    source: UnlabeledView | torch.Tensor,
    *,
    steps: int = 500,
    batch_size: int = 256,
    temperature: float = 0.5,
    proj_dim: int = 64,
    augment: Augment | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    out_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 100,
    identity: dict | None = None,
    remedy: str = "lower the pre-training learning rate",
) -> TrainResult:
    """Train ``net``'s body in place by SimCLR's NT-Xent loss (Adam); returns the run's result.

    Parameters
    ----------
    net:
        The backbone (its head, if any, is not used or changed).
    source:
        Unlabeled examples ``[n, *example_shape]`` (labels are never read).
    steps, batch_size, lr:
        Adam steps, examples per step (``2 * batch_size`` views) and learning rate.
    temperature, proj_dim:
        NT-Xent temperature, and the output size of the projection head.
    augment:
        How views are drawn (default ``Augment.for_shape(example_shape, strong=True)``).
    seed:
        Seeds the head's initial weights, the batches and the augmentations.
    out_dir, resume, checkpoint_every:
        Where the Trainer keeps its log and checkpoints (``None``: in memory), whether to
        continue from ``out_dir/last.safetensors``, and how often to checkpoint.
    identity:
        What a resumed pre-training must have been started with (default: the backbone's
        configuration and these settings).
    remedy:
        What the error says to change if the loss diverges.
    """
    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 2)
    lr = check_positive("lr", lr)
    seed = check_seed("seed", seed)
    views = ContrastiveViews(source, augment, seed)
    objective = ContrastiveObjective(net, proj_dim, temperature, seed)
    settings = TrainConfig(
        steps=steps,
        meta_batch=batch_size,
        lr=lr,
        checkpoint_every=check_int("checkpoint_every", checkpoint_every, 1),
        seed=seed,
    )
    default_identity = {
        "net": net.config(),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "temperature": temperature,
        "proj_dim": proj_dim,
        "seed": seed,
    }
    trainer = Trainer(
        objective,
        objective.loss,
        views,
        settings,
        out_dir,
        identity={"pretraining": identity or default_identity},
        device=device,
        progress=progress,
        name=f"contrastive pre-training[{views.view.name}/{views.view.split}]",
        remedy=remedy,
    )
    return trainer.fit(resume=resume)


def final_loss(result: TrainResult, last: int = 20) -> float:
    """Mean loss of the ``last`` steps of a run: from its JSONL log when it has one (so a
    resumed run reports what an unbroken one would), else from the steps run in memory."""
    losses = result.losses
    if result.out_dir is not None and (result.out_dir / LOG).is_file():
        lines = (result.out_dir / LOG).read_text(encoding="utf-8").splitlines()
        losses = [r["loss"] for r in map(json.loads, lines) if "loss" in r]
    tail = losses[-last:]
    return sum(tail) / len(tail)
