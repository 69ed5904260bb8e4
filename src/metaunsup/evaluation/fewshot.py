"""The ``fewshot`` task kind: adapt on a labelled support, classify the query (accuracy).

Tasks hold ``n_way`` classes × (``k_shot`` support + ``n_query`` query) examples. A method
returns its predicted class of each query example ``int64 [B, m]``; the query labels score it.
Learners: any :class:`~metaunsup.learners.FewShotLearner`. No classical baseline is defined:
few-shot evaluation compares trained models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError
from metaunsup.evaluation.protocol import EvaluationReport, TaskKind, TaskShape, evaluate
from metaunsup.learners import FewShotLearner, MetaLearner
from metaunsup.learners.fit import learner_example_shape
from metaunsup.tasks import FewShotTaskSampler, TaskBatch

__all__ = ["FEWSHOT", "FewShotMethod", "evaluate_fewshot"]


@dataclass(frozen=True)
class FewShotMethod:
    """A few-shot learner under evaluation: query predictions ``int64 [B, m]`` after adapting
    on the support with ``steps`` (``None``: its test-time steps), on ``device``."""

    name: str
    learner: MetaLearner
    steps: int | None = None
    device: torch.device | str = "cpu"

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        assert isinstance(self.learner, FewShotLearner)
        shape = learner_example_shape(self.learner)  # rows of a table for images, ...
        batch = dataclasses.replace(batch, x=batch.x.reshape(*batch.x.shape[:2], *shape))
        logits = self.learner.fewshot_logits(batch.to(self.device), steps=self.steps)
        return logits.argmax(-1)


def learner_method(
    name: str,
    learner: MetaLearner,
    steps: int | None = None,
    device: torch.device | str = "cpu",
) -> FewShotMethod:
    """A :class:`~metaunsup.learners.FewShotLearner` as an evaluation method."""
    if not isinstance(learner, FewShotLearner):
        raise ConfigError(
            f"{name!r} holds a {learner.name!r} learner, which does not classify few-shot "
            "tasks; evaluate it with --task clustering"
        )
    return FewShotMethod(name, learner, steps, device)


def _sampler(dataset: Dataset, shape: TaskShape, seed: int) -> FewShotTaskSampler:
    return FewShotTaskSampler(dataset, shape.n_way, shape.k_shot, shape.n_query, seed=seed)


def _score(batch: TaskBatch, pred: torch.Tensor) -> dict[str, np.ndarray]:
    truth = batch.query_y.cpu()
    if pred.shape != truth.shape:
        raise ConfigError(
            f"a few-shot method returned predictions of shape {tuple(pred.shape)}, expected "
            f"{tuple(truth.shape)}"
        )
    return {"acc": (pred == truth).to(torch.float64).mean(1).numpy()}


FEWSHOT = TaskKind(
    name="fewshot",
    summary="classify the query of n_way classes after k_shot labelled examples (accuracy)",
    ability=FewShotLearner,
    scores=("acc",),
    score_labels={"acc": "query accuracy"},
    has_query=True,
    chunk_size=50,
    make_sampler=_sampler,
    score=_score,
    learner_method=learner_method,
)


def evaluate_fewshot(
    dataset: Dataset,
    learners: Sequence[tuple[str, MetaLearner]],
    *,
    n_way: int,
    k_shot: int,
    n_query: int,
    n_tasks: int,
    seed: int = 0,
    steps: int | None = None,
    chunk_size: int = 50,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Few-shot classification of ``n_tasks`` tasks by every learner, on the same tasks;
    ``steps`` overrides the test-time adaptation steps (see
    :func:`~metaunsup.evaluation.protocol.evaluate`)."""
    methods = [learner_method(name, learner, steps, device) for name, learner in learners]
    return evaluate(
        FEWSHOT,
        dataset,
        methods,
        shape=TaskShape(n_way, k_shot, n_query),
        n_tasks=n_tasks,
        seed=seed,
        chunk_size=chunk_size,
        progress=progress,
    )
