"""Small checkpoints for the estimator, ``cluster`` command and bad-input tests.

They are built in seconds: a Meta-K-means learner over a small MLP meta-trained for a few steps
on digits clustering tasks (labels read only by the meta-loss), an untrained Conv4 one (for
image-shape checks), a Clustering-MAML one and a few-shot MAML one (which does not cluster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaunsup import data
from metaunsup.checkpoint import save_checkpoint
from metaunsup.learners import MAML, ClusterMAML, MetaKMeansLearner, MetaLearner
from metaunsup.nets import MLP, Conv4
from metaunsup.tasks import ClusteringTaskSampler


def save_learner(learner: MetaLearner, path: Path) -> Path:
    """Write ``learner`` as a model checkpoint that
    :func:`metaunsup.training.build.load_learner` reads."""
    tensors = {f"model.{k}": v for k, v in learner.state_dict().items()}
    save_checkpoint(path, tensors, {"kind": "model", "learner": learner.config()})
    return path


def train_mlp_checkpoint(path: Path, steps: int = 40, seed: int = 0) -> Path:
    """Meta-K-means over MLP(64 -> 32) meta-trained on digits/train 10 x 10 clustering tasks."""
    torch.manual_seed(seed)
    learner = MetaKMeansLearner(MLP(64, n_way=None, hidden=(32,)), n_iter=3, temperature=0.1)
    sampler = ClusteringTaskSampler(data.load("digits", "train"), 10, 10, seed=seed)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = learner.meta_loss(sampler.sample(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_learner(learner.eval(), path)


def conv_checkpoint(path: Path) -> Path:
    """An untrained Meta-K-means over a tiny Conv4 that takes 1 x 8 x 8 images."""
    torch.manual_seed(0)
    net = Conv4(in_channels=1, n_way=None, hidden=4, image_size=(8, 8), norm="batch", depth=2)
    return save_learner(MetaKMeansLearner(net), path)


def cluster_maml_checkpoint(path: Path) -> Path:
    """An untrained Clustering-MAML over MLP(64 -> 16): its embedding adapts to the data."""
    torch.manual_seed(0)
    learner = ClusterMAML(MLP(64, n_way=None, hidden=(16,)), inner_lr=0.5, test_steps=1)
    return save_learner(learner, path)


def maml_checkpoint(path: Path) -> Path:
    """A few-shot MAML learner: a valid checkpoint of a learner that does not cluster."""
    torch.manual_seed(0)
    return save_learner(MAML(MLP(64, n_way=5, hidden=(8,))), path)


def digits_xy(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(X float64 [n, 64] in 0..16, y int [n])``."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X, y) if n is None else (X[:n], y[:n])
