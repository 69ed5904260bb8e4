"""Calibrate a finished run after the fact.

* :func:`ensure_calibrated` rebuilds the run's training source from its folder's caches and runs
  the calibration step of :mod:`metaunsup.training.calibrate` on checkpoints that lack it (a run
  trained before its kind calibrated, or one interrupted during the calibration) or hold a
  stale one (measured with an earlier statistic);
* :func:`recalibrate_checkpoint` measures a checkpoint's calibration anew (e.g. a packaged
  checkpoint whose null table was measured with an earlier statistic) and rewrites its
  calibration buffers, nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metaunsup.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.errors import ConfigError
from metaunsup.evaluation.anomaly import learner_null_table
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape
from metaunsup.learners import MetaLearner, load_learner
from metaunsup.training.build import fresh_learner, load_training_split, split_for_training
from metaunsup.training.calibrate import (
    CALIBRATION_SEED_OFFSET,
    calibrate_run,
    run_calibrator,
)
from metaunsup.training.config import RunConfig
from metaunsup.training.trainer import BEST
from metaunsup.training.unsupervised import PARTITIONS_FILE, unsupervised_source

__all__ = ["ensure_calibrated", "recalibrate_checkpoint", "training_source"]


def training_source(
    cfg: RunConfig, run_dir: str | Path, device: str = "cpu"
) -> tuple[MetaLearner, Any]:
    """``(fresh learner, training task source)`` of the run ``cfg`` trained into ``run_dir``,
    rebuilt from the folder's caches (pre-training, partitions; nothing is trained again when
    they are there)."""
    kind = task_kind(cfg.task.kind)
    if cfg.unsupervised is not None:
        view = UnlabeledView(load_training_split(cfg))
        learner = fresh_learner(cfg, view.example_shape)
        source, _, _ = unsupervised_source(cfg, learner, view, run_dir, torch.device(device))
        return learner, source
    train_ds, _ = split_for_training(cfg)
    t = cfg.task
    source = kind.make_sampler(train_ds, TaskShape(t.n_way, t.k_shot, t.n_query), 0)
    return fresh_learner(cfg, train_ds.example_shape), source


def ensure_calibrated(cfg: RunConfig, run_dir: str | Path, device: str = "cpu") -> bool:
    """Calibrate a finished run whose checkpoints hold no calibration yet (e.g. trained before
    its kind calibrated, or interrupted during the calibration) or one measured with an earlier
    statistic (``stat="mean"``); ``True`` when it did. The training source is rebuilt from the
    run folder's caches (pre-training, partitions)."""
    run_dir = Path(run_dir)
    best = load_learner(run_dir / BEST)
    calibrator = run_calibrator(cfg.task.kind, best)
    table = learner_null_table(best)
    if calibrator is None or table is None or (table.ready and table.stat == "max"):
        return False
    learner, source = training_source(cfg, run_dir, device)
    calibrate_run(calibrator, learner, source, run_dir, cfg.train.seed)
    return True


def recalibrate_checkpoint(
    cfg: RunConfig, run_dir: str | Path, checkpoint: str | Path, device: str = "cpu"
) -> None:
    """Measure the calibration of ``checkpoint`` (weights of the run ``cfg`` trained into
    ``run_dir``) anew on the run's training source, with the seed a run's own calibration uses,
    and rewrite the file's calibration buffers (``null_*``) in place; its weights and metadata
    are kept. Raises :class:`ConfigError` when such a run has no calibration step
    (:func:`~metaunsup.training.calibrate.run_calibrator`)."""
    trained = load_learner(checkpoint)
    calibrator = run_calibrator(cfg.task.kind, trained)
    if calibrator is None:
        raise ConfigError(
            f"a {trained.name!r} run of task.kind {cfg.task.kind!r} has no calibration to "
            "measure: only anomaly scorers carry one (meta_svdd, oc_maml, meta_gmvae)"
        )
    if cfg.unsupervised is not None and not (Path(run_dir) / PARTITIONS_FILE).is_file():
        raise ConfigError(
            f"{str(run_dir)!r} holds no {PARTITIONS_FILE} of the run: give the folder the "
            "checkpoint's run was trained into (its pseudo-classes are not made again)"
        )
    learner, source = training_source(cfg, run_dir, device)
    tensors, meta = read_checkpoint(checkpoint)
    load_model_state(learner, tensors, str(checkpoint))
    learner.eval()
    calibrator(learner, source, cfg.train.seed + CALIBRATION_SEED_OFFSET)
    for name, value in learner.state_dict().items():
        if name.startswith("null_"):
            tensors[f"model.{name}"] = value.detach().cpu()
    save_checkpoint(checkpoint, tensors, meta)
