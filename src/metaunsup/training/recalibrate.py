"""Calibrate a finished run after the fact: :func:`ensure_calibrated` rebuilds the run's
training source from its folder's caches and runs the calibration step of
:mod:`metaunsup.training.calibrate` on checkpoints that lack it (a run trained before its kind
calibrated, or one interrupted during the calibration)."""

from __future__ import annotations

from pathlib import Path

import torch

from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.evaluation.anomaly import learner_null_table
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape
from metaunsup.learners import load_learner
from metaunsup.training.build import fresh_learner, load_training_split, split_for_training
from metaunsup.training.calibrate import calibrate_run
from metaunsup.training.config import RunConfig
from metaunsup.training.trainer import BEST
from metaunsup.training.unsupervised import unsupervised_source

__all__ = ["ensure_calibrated"]


def ensure_calibrated(cfg: RunConfig, run_dir: str | Path, device: str = "cpu") -> bool:
    """Calibrate a finished run whose checkpoints hold no calibration yet (e.g. trained before
    its kind calibrated, or interrupted during the calibration); ``True`` when it did. The
    training source is rebuilt from the run folder's caches (pre-training, partitions)."""
    run_dir = Path(run_dir)
    kind = task_kind(cfg.task.kind)
    table = learner_null_table(load_learner(run_dir / BEST))
    if kind.calibrate is None or table is None or table.ready:
        return False
    if cfg.unsupervised is not None:
        view = UnlabeledView(load_training_split(cfg))
        learner = fresh_learner(cfg, view.example_shape)
        source, _ = unsupervised_source(cfg, learner, view, run_dir, torch.device(device))
    else:
        train_ds, _ = split_for_training(cfg)
        t = cfg.task
        source = kind.make_sampler(train_ds, TaskShape(t.n_way, t.k_shot, t.n_query), 0)
        learner = fresh_learner(cfg, train_ds.example_shape)
    calibrate_run(kind.calibrate, learner, source, run_dir, cfg.train.seed)
    return True
