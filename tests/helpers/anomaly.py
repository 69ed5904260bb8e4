"""A small meta-calibrated anomaly checkpoint, built in seconds: Meta-SVDD over an MLP
(64 -> 32) meta-trained on digits/train one-class tasks, its null table measured on them."""

from __future__ import annotations

from pathlib import Path

import torch

from metaunsup import data
from metaunsup.data.base import Dataset
from metaunsup.evaluation.kinds import task_kind
from metaunsup.learners import MetaSVDD
from metaunsup.nets import MLP
from metaunsup.tasks.anomaly import AnomalyTaskSampler
from tests.helpers.estimators import save_learner


def svdd_checkpoint(path: Path, steps: int = 40, seed: int = 0) -> Path:
    """Meta-SVDD (MLP 64 -> 32) trained and calibrated on digits/train, saved at ``path``."""
    torch.manual_seed(seed)
    learner = MetaSVDD(MLP(64, n_way=None, hidden=(32,)))
    digits = data.load("digits", "train")
    flat = Dataset(digits.name, digits.split, digits.x.reshape(len(digits), -1), digits.y,
                   digits.classes)  # fmt: skip
    sampler = AnomalyTaskSampler(flat, 5, 10, seed=seed)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = learner.meta_loss(sampler.sample(4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learner.eval()
    calibrate = task_kind("anomaly").calibrate
    assert calibrate is not None
    calibrate(learner, sampler, seed)
    return save_learner(learner, path)
