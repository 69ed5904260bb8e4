"""Task kinds as a registry: the built-in ones, and a kind added from outside the package that
the protocol, configs and reports then know without any other change."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from metaunsup.app.report.tables import results_table
from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.evaluation.kinds import TASK_KINDS, register_task_kind, task_kind
from metaunsup.evaluation.protocol import TaskKind, TaskShape, evaluate
from metaunsup.learners import ClusteringLearner, FewShotLearner
from metaunsup.tasks import ClusteringTaskSampler, TaskBatch
from metaunsup.training.config import config_from_dict


def test_builtin_kinds_name_their_parts():
    assert set(TASK_KINDS) >= {"clustering", "fewshot"}
    clustering, fewshot = task_kind("clustering"), task_kind("fewshot")
    assert clustering.ability is ClusteringLearner and fewshot.ability is FewShotLearner
    assert clustering.scores == ("acc", "nmi", "ari") and not clustering.has_query
    assert fewshot.scores == ("acc",) and fewshot.has_query
    assert set(clustering.score_labels) == set(clustering.scores)
    assert clustering.default_baselines == ("kmeans",) and not fewshot.baselines
    with pytest.raises(ConfigError, match="unknown task kind 'nope'; choose one of: clustering"):
        task_kind("nope")
    with pytest.raises(ConfigError, match="unknown method 'kmeans' for fewshot tasks"):
        fewshot.baseline("kmeans")


class _Largest:
    """A toy method: every example in the cluster of its largest coordinate."""

    name = "largest coordinate"

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        return batch.x.flatten(2).argmax(-1) % batch.n_way


def _purity(batch: TaskBatch, labels: torch.Tensor) -> dict[str, np.ndarray]:
    same = (labels.unsqueeze(1) == labels.unsqueeze(2)) == (
        batch.y.unsqueeze(1) == batch.y.unsqueeze(2)
    )
    return {"pairs": same.to(torch.float64).mean((1, 2)).numpy()}


TOY = TaskKind(
    name="toy-pairs",
    summary="pairwise agreement of a partition with the hidden classes",
    ability=ClusteringLearner,
    scores=("pairs",),
    score_labels={"pairs": "pair agreement"},
    has_query=False,
    chunk_size=7,
    make_sampler=lambda ds, s, seed: ClusteringTaskSampler(ds, s.n_way, s.k_shot, seed=seed),
    score=_purity,
    learner_method=lambda name, learner, steps, device: _Largest(),
    baselines={"largest": _Largest},
    default_baselines=("largest",),
)  # fmt: skip


@pytest.fixture
def toy_kind() -> Iterator[TaskKind]:
    register_task_kind(TOY)
    yield TOY
    del TASK_KINDS[TOY.name]


def _dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(name="toy", split="all", x=torch.randn(60, 5, generator=g),
                   y=torch.arange(3).repeat(20), classes=["a", "b", "c"])  # fmt: skip


@pytest.mark.usefixtures("toy_kind")
def test_a_kind_from_outside_is_evaluated_validated_in_configs_and_reported():
    kind = task_kind("toy-pairs")
    report = evaluate(kind, _dataset(), kind.resolve(kind.default_baselines),
                      shape=TaskShape(3, 4), n_tasks=10, seed=1)  # fmt: skip
    as_json = report.to_json()
    assert as_json["task"] == "toy-pairs" and "n_query" not in as_json
    pairs = as_json["results"][0]["pairs"]
    assert 0.0 < pairs["mean"] < 1.0 and pairs["ci95"] >= 0.0
    assert "pairs" in results_table(as_json).splitlines()[0]
    cfg = config_from_dict(
        {"name": "t", "data": {"dataset": "digits", "split": "train"},
         "task": {"kind": "toy-pairs", "n_way": 3, "k_shot": 2, "n_query": 0},
         "learner": {"name": "meta_kmeans"}}
    )  # fmt: skip
    assert cfg.task.kind == "toy-pairs"
    with pytest.raises(ConfigError, match="a task kind named 'toy-pairs' is registered already"):
        register_task_kind(TaskKind(**{**TOY.__dict__, "summary": "another"}))


def test_configs_and_the_command_line_refuse_an_unknown_kind(capsys):
    from metaunsup.app.cli import main

    with pytest.raises(ConfigError, match=r"task\.kind must be 'clustering' or 'fewshot'"):
        config_from_dict(
            {"name": "t", "data": {"dataset": "digits", "split": "train"},
             "task": {"kind": "anomalies"}, "learner": {"name": "maml"}}
        )  # fmt: skip
    assert main(["evaluate", "--task", "anomalies", "--tasks", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metaunsup: error: unknown task kind 'anomalies'; choose one of: clustering, "
                   "fewshot, anomaly, anomaly-hard"]  # fmt: skip


def test_the_protocol_refuses_methods_that_share_a_name_or_return_the_wrong_shape():
    kind = task_kind("clustering")
    methods = kind.resolve(["kmeans"]) * 2
    with pytest.raises(ConfigError, match="two methods share a name"):
        evaluate(kind, _dataset(), methods, shape=TaskShape(3, 4), n_tasks=2)

    class Wrong:
        name = "wrong"

        def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
            return torch.zeros(batch.n_tasks, 2, dtype=torch.int64)

    with pytest.raises(ConfigError, match="returned labels of shape"):
        evaluate(kind, _dataset(), [Wrong()], shape=TaskShape(3, 4), n_tasks=2)
