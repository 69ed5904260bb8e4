"""From a :class:`~metaunsup.config.RunConfig` to a trained checkpoint.

This module wires the pieces a run needs — dataset, class split, task source, learner,
validation — and hands them to the algorithm-agnostic :class:`~metaunsup.train.Trainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metaunsup import data
from metaunsup.config import RunConfig
from metaunsup.data.base import Dataset
from metaunsup.data.transforms import with_rotations
from metaunsup.errors import ConfigError
from metaunsup.learners import MetaLearner, build_learner
from metaunsup.metrics import mean_ci
from metaunsup.tasks import FewShotTaskSampler, split_classes
from metaunsup.train import Trainer, TrainResult

log = logging.getLogger(__name__)

#: Seed offset of the fixed meta-validation tasks (distinct from the training stream).
VAL_SEED_OFFSET = 1_000_003


def learner_config(cfg: RunConfig, example_shape: tuple[int, ...]) -> dict[str, Any]:
    """The learner config with the network's input shape and head size filled in from the data.

    ``[learner.net]`` may omit ``in_channels``, ``image_size`` (images) or ``in_features``
    (tables), and ``n_way``; they are taken from the dataset and ``[task]``.
    """
    learner = dict(cfg.learner)
    net = dict(learner.get("net", {"name": "conv4" if len(example_shape) == 3 else "mlp"}))
    if net.get("name") == "conv4":
        if len(example_shape) != 3:
            raise ConfigError(f"conv4 needs images [C, H, W], the data has {example_shape}")
        net.setdefault("in_channels", example_shape[0])
        net.setdefault("image_size", list(example_shape[1:]))
    elif net.get("name") == "mlp":
        flat = 1
        for size in example_shape:
            flat *= size
        net.setdefault("in_features", flat)
    if learner["name"] == "protonet":
        net["n_way"] = None  # a metric learner embeds; it has no classification head
    else:
        net.setdefault("n_way", cfg.task.n_way)
    learner["net"] = net
    return learner


def split_for_training(cfg: RunConfig) -> tuple[Dataset, Dataset | None]:
    """Load the meta-training split and hold out ``val_fraction`` of its classes."""
    ds = data.load(cfg.data.dataset, cfg.data.split, root=cfg.data.root)
    n_val = round(cfg.data.val_fraction * ds.n_classes)
    val = None
    if n_val > 0:
        parts = split_classes(
            ds.n_classes, counts=(ds.n_classes - n_val, n_val, 0), seed=cfg.train.seed
        )
        train_ds, val, _ = parts.apply(ds)
    else:
        train_ds = ds
    if cfg.data.rotations:
        train_ds = with_rotations(train_ds)
    return train_ds, val


def fewshot_accuracy(
    learner: MetaLearner,
    sampler: FewShotTaskSampler,
    n_tasks: int,
    chunk: int = 50,
    device: torch.device | str = "cpu",
) -> tuple[float, float, float]:
    """Query accuracy of ``learner`` over ``n_tasks`` tasks: ``(mean, ci95, ms_per_task)``."""
    import time

    accs = []
    seconds = 0.0
    learner.eval()
    for batch in sampler.batches(n_tasks, chunk):
        batch = batch.to(device)
        t0 = time.perf_counter()
        logits = learner.fewshot_logits(batch)
        seconds += time.perf_counter() - t0
        accs.append((logits.argmax(-1) == batch.query_y).float().mean(1).cpu())
    values = torch.cat(accs).numpy()
    mean, ci = mean_ci(values)
    return float(mean), float(ci), 1000.0 * seconds / n_tasks


def make_validator(
    cfg: RunConfig, val: Dataset, device: torch.device | str
) -> Callable[[MetaLearner], dict[str, float]]:
    """Validation on a fixed set of meta-validation tasks (the same tasks every time)."""
    t = cfg.task

    def validate(learner: MetaLearner) -> dict[str, float]:
        sampler = FewShotTaskSampler(
            val, t.val_n_way or t.n_way, t.k_shot, t.n_query, seed=cfg.train.seed + VAL_SEED_OFFSET
        )
        acc, ci, _ = fewshot_accuracy(learner, sampler, cfg.train.val_tasks, device=device)
        return {"acc": acc, "acc_ci95": ci}

    return validate


def train_run(
    cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Meta-train the run described by ``cfg`` into ``out_dir`` (``--resume`` continues)."""
    t, tr = cfg.task, cfg.train
    if t.kind != "fewshot":
        raise ConfigError(f"task.kind {t.kind!r} is not trainable yet; use 'fewshot'")
    if tr.threads:
        torch.set_num_threads(tr.threads)
    device = torch.device(tr.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    train_ds, val = split_for_training(cfg)
    source = FewShotTaskSampler(train_ds, t.n_way, t.k_shot, t.n_query, seed=tr.seed)
    with torch.random.fork_rng():
        torch.manual_seed(tr.seed)
        learner = build_learner(learner_config(cfg, train_ds.example_shape))
    trainer = Trainer(
        learner,
        source,
        tr,
        out_dir,
        validate=None if val is None else make_validator(cfg, val, device),
        run_config=cfg.to_dict(),
        device=device,
        progress=progress,
    )
    return trainer.fit(resume=resume)


def load_learner(name_or_path: str | Path, device: torch.device | str = "cpu") -> MetaLearner:
    """A learner from a checkpoint file or packaged name, weights validated against its config."""
    from metaunsup.checkpoint import read_checkpoint, resolve_checkpoint
    from metaunsup.errors import CheckpointError
    from metaunsup.train import load_model_state

    path = resolve_checkpoint(name_or_path)
    tensors, meta = read_checkpoint(path)
    if "learner" not in meta:
        raise CheckpointError(f"{str(path)!r} holds no learner configuration")
    try:
        learner = build_learner(meta["learner"])
    except ConfigError as err:
        raise CheckpointError(
            f"{str(path)!r} describes a learner this version cannot build: {err}"
        ) from None
    load_model_state(learner, tensors, str(path))
    return learner.to(device).eval()
