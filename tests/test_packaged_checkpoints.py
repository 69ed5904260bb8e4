"""The checkpoints shipped in the package: loadable by name, with a card, and as good as their
cards say on fresh tasks (a smaller sample than the card's 1000 tasks, so a looser bound)."""

from __future__ import annotations

import json

import pytest
import torch

from metaunsup.checkpoint import packaged_dir, packaged_names
from metaunsup.data import load
from metaunsup.errors import DataError
from metaunsup.metrics import clustering_accuracy
from metaunsup.runs import load_learner
from metaunsup.tasks import ClusteringTaskSampler


def test_digits_and_mnist_are_packaged_with_cards():
    assert {"digits", "mnist"} <= set(packaged_names())
    for name in ("digits", "mnist"):
        card = json.loads((packaged_dir() / f"{name}.json").read_text())
        assert card["name"] == name and card["command"].startswith("metaunsup train configs/")
        assert card["data"]["labels_used"] == "none"  # both trained without labels
        assert card["training_seconds"]["meta_training"] > 0
        report = card["evaluations"][0]["report"]
        ours = next(r for r in report["results"] if r["method"] == name)
        kmeans = next(r for r in report["results"] if r["method"] == "kmeans")
        assert ours["acc"]["mean"] > kmeans["acc"]["mean"] + 0.2


def _score(name: str, dataset, tasks: int) -> float:
    learner = load_learner(name)
    batch = ClusteringTaskSampler(dataset, 10, 20, seed=123).sample(tasks)
    with torch.no_grad():
        labels = learner.cluster(batch.x, 10, seed=0)
    return float(clustering_accuracy(batch.y, labels).mean())


def test_packaged_digits_clusters_unseen_digits_tasks():
    assert _score("digits", load("digits", "test"), 64) > 0.92


def test_packaged_mnist_clusters_mnist_test_tasks():
    try:
        test = load("mnist", "test")
    except DataError as err:
        pytest.skip(f"MNIST files not found ({err})")
    assert _score("mnist", test, 32) > 0.93
