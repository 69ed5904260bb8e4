"""The checkpoints shipped in the package: loadable by name, with a card, and as good as their
cards say on fresh tasks (a smaller sample than the card's 1000 tasks, so a looser bound)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metaunsup.checkpoint import packaged_dir, packaged_names
from metaunsup.data import load
from metaunsup.errors import DataError
from metaunsup.evaluation.fewshot import evaluate_fewshot
from metaunsup.learners import load_learner
from metaunsup.metrics import clustering_accuracy
from metaunsup.tasks import ClusteringTaskSampler
from metaunsup.training.config import load_config
from tests.helpers.data import needs_omniglot


def test_digits_and_mnist_are_packaged_with_cards():
    assert {"digits", "mnist"} <= set(packaged_names())
    for name in ("digits", "mnist"):
        card = json.loads((packaged_dir() / f"{name}.json").read_text())
        words = card["command"].split("&&")[-1].split()  # the last command trains the model
        assert card["name"] == name and words[:2] == ["metaunsup", "train"]
        config = words[2]  # a file of configs/ or a packaged config, and the run it names
        root = Path(__file__).resolve().parents[1]
        path = root / config if config.startswith("configs/") else config
        assert load_config(path).name == card["config"]["name"]
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


@needs_omniglot
def test_packaged_omniglot_unsup_card_and_fresh_fewshot_tasks():
    card = json.loads((packaged_dir() / "omniglot-unsup.json").read_text())
    assert card["data"] == {"dataset": "omniglot", "split": "background", "labels_used": "none"}
    settings = {(e["report"]["n_way"], e["report"]["k_shot"]) for e in card["evaluations"]}
    assert settings == {(5, 1), (5, 5), (20, 1), (20, 5)}
    for e in card["evaluations"]:
        assert e["command"].startswith("metaunsup evaluate --checkpoint omniglot-unsup ")
        assert e["report"]["tasks"] == 1000 and e["report"]["n_query"] == 15
    one_shot = next(e for e in card["evaluations"] if e["report"]["k_shot"] == 1)
    carded = one_shot["report"]["results"][0]["acc"]["mean"]
    assert carded > 0.838  # UMTRA's published 5-way 1-shot
    report = evaluate_fewshot(
        load("omniglot", "evaluation"), [("omniglot-unsup", load_learner("omniglot-unsup"))],
        n_way=5, k_shot=1, n_query=15, n_tasks=40, seed=321,
    ).to_json()  # fmt: skip
    assert report["results"][0]["acc"]["mean"] > 0.85  # fresh tasks, looser bound (card 0.914)


def _anomaly_card(name: str) -> dict:
    card = json.loads((packaged_dir() / f"{name}.json").read_text())
    assert card["name"] == name and card["learner"] == "meta_svdd"
    assert card["data"]["labels_used"] == "none"  # meta-trained without labels
    words = card["command"].split()
    assert words[:2] == ["metaunsup", "train"]
    root = Path(__file__).resolve().parents[1]
    assert load_config(root / words[2]).name == card["config"]["name"]
    assert card["training_seconds"]["meta_training"] > 0
    for e in card["evaluations"]:
        assert e["command"].startswith(f"metaunsup evaluate --checkpoint {name} ")
        assert e["report"]["tasks"] == 1000
    return card


def _fresh_auroc(name: str, dataset, kind_name: str, k: int, n_query: int) -> float:
    from metaunsup.evaluation.kinds import task_kind
    from metaunsup.evaluation.protocol import TaskShape, evaluate

    kind = task_kind(kind_name)
    method = kind.method_of(name, load_learner(name))
    report = evaluate(kind, dataset, [method], shape=TaskShape(1, k, n_query), n_tasks=20,
                      seed=4321)  # fmt: skip
    return report.results[0].scores["auroc"].mean


def test_packaged_mnist_anomaly_card_and_fresh_tasks():
    card = _anomaly_card("mnist-anomaly")
    assert card["data"]["dataset"] == "mnist" and card["config"]["data"]["classes"] == []
    carded = {e["report"]["k_shot"]: e["report"] for e in card["evaluations"]}
    assert set(carded) == {2, 10}
    ours = next(r for r in carded[10]["results"] if r["method"] == "mnist-anomaly")
    centroid = next(r for r in carded[10]["results"] if r["method"] == "centroid")
    assert ours["auroc"]["mean"] > centroid["auroc"]["mean"] + 0.05
    try:
        test = load("mnist", "test")
    except DataError as err:
        pytest.skip(f"MNIST files not found ({err})")
    fresh = _fresh_auroc("mnist-anomaly", test, "anomaly", 10, 100)
    assert abs(fresh - ours["auroc"]["mean"]) < 0.03  # 20 fresh tasks, a looser bound


@needs_omniglot
def test_packaged_omniglot_anomaly_card_and_fresh_tasks():
    card = _anomaly_card("omniglot-anomaly")
    assert card["data"] == {"dataset": "omniglot", "split": "background", "labels_used": "none"}
    tracks = {(e["report"]["task"], e["report"]["k_shot"]) for e in card["evaluations"]}
    assert tracks == {("anomaly", 2), ("anomaly", 10), ("anomaly-hard", 2), ("anomaly-hard", 10)}
    easy = next(e["report"] for e in card["evaluations"] if e["report"]["task"] == "anomaly"
                and e["report"]["k_shot"] == 10)  # fmt: skip
    ours = next(r for r in easy["results"] if r["method"] == "omniglot-anomaly")
    fresh = _fresh_auroc("omniglot-anomaly", load("omniglot", "evaluation"), "anomaly", 10, 10)
    assert abs(fresh - ours["auroc"]["mean"]) < 0.04
