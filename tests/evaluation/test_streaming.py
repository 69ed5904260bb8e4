"""Evaluation streams: running moments instead of every task's score, one chunk at a time."""

from __future__ import annotations

import numpy as np
import pytest

from metaunsup import data
from metaunsup.errors import DataError
from metaunsup.evaluation.clustering import CLUSTERING
from metaunsup.evaluation.protocol import MeanCI, RunningMeanCI, TaskShape, evaluate


@pytest.mark.parametrize("splits", [[1], [7, 1, 30], [100, 200, 3, 1, 696]])
def test_running_moments_equal_the_two_pass_mean_and_ci(splits):
    rng = np.random.default_rng(0)
    values = rng.normal(0.7, 0.2, size=sum(splits)) + 1e6 * (len(splits) > 2)
    running = RunningMeanCI()
    start = 0
    for size in splits:
        running.add(values[start : start + size])
        start += size
    expected, got = MeanCI.of(values), running.result()
    assert got.mean == pytest.approx(expected.mean, rel=1e-14, abs=1e-14)
    assert got.ci95 == pytest.approx(expected.ci95, rel=1e-9, abs=1e-15)


def test_running_moments_refuse_non_finite_and_empty():
    running = RunningMeanCI()
    with pytest.raises(DataError):
        running.result()
    with pytest.raises(DataError):
        running.add(np.array([0.5, np.nan]))


def test_streamed_report_equals_the_scores_of_every_task():
    """The same tasks and seeds by hand, every task's score kept: the same means and CIs."""
    ds = data.load("digits", "test")
    kind = CLUSTERING
    (method,) = kind.resolve(["kmeans"])
    shape = TaskShape(5, 4)
    report = evaluate(kind, ds, [method], shape=shape, n_tasks=23, seed=1, chunk_size=5)
    per_task: dict[str, list[np.ndarray]] = {k: [] for k in kind.scores}
    start = 0
    for batch in kind.make_sampler(ds, shape, 1).batches(23, 5):
        for key, values in kind.score(batch, method.run(batch, 1 + start)).items():
            per_task[key].append(values)
        start += batch.n_tasks
    for key, score in report.results[0].scores.items():
        expected = MeanCI.of(np.concatenate(per_task[key]))
        assert score.mean == pytest.approx(expected.mean, rel=1e-13)
        assert score.ci95 == pytest.approx(expected.ci95, rel=1e-9)
