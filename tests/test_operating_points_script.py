"""``benchmarks/anomaly_operating_points.py``: the two per-task oracle operating points that
bound what any threshold could reach with a scorer's scores."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.scripts import benchmark_module


@pytest.fixture(scope="module")
def script():
    yield from benchmark_module("anomaly_operating_points")


def brute_force(scores: np.ndarray, anomalous: np.ndarray, fpr: float) -> tuple[float, float]:
    """Every threshold between and around the scores, flag = score > threshold."""
    s = np.sort(np.unique(scores))
    cuts = np.concatenate([[s[0] - 1], (s[:-1] + s[1:]) / 2, [s[-1] + 1]])
    best_at, best = 0.0, 0.0
    for t in cuts:
        tpr = (scores[anomalous] > t).mean()
        false = (scores[~anomalous] > t).mean()
        ba = 0.5 * (tpr + 1 - false)
        best = max(best, ba)
        if false <= fpr + 1e-12:
            best_at = max(best_at, ba)
    return best_at, best


def test_oracle_points_match_a_brute_force_search(script):
    rng = np.random.default_rng(0)
    anomalous = np.repeat([False, True], 40)[None].repeat(6, 0)
    scores = rng.normal(size=(6, 80)) + 1.5 * anomalous
    scores[0, :3] = scores[0, 3]  # ties among the normal scores
    out = script.oracle_operating_points(scores, anomalous, 0.05)
    for b in range(6):
        at, best = brute_force(scores[b], anomalous[b], 0.05)
        assert out["oracle_ba_at_fpr"][b] == pytest.approx(at)
        assert out["youden_ba"][b] == pytest.approx(best)
    assert (out["youden_ba"] >= out["oracle_ba_at_fpr"]).all()


def test_separated_scores_reach_one_and_a_false_alarm_budget_is_used(script):
    anomalous = np.array([[False] * 20 + [True] * 20])
    apart = np.concatenate([np.arange(20.0), 100 + np.arange(20.0)])[None]
    out = script.oracle_operating_points(apart, anomalous, 0.05)
    assert out["oracle_ba_at_fpr"][0] == 1.0 and out["youden_ba"][0] == 1.0
    # the largest normal score sits above every anomaly: at 5% of 20 normals one may be flagged
    mixed = apart.copy()
    mixed[0, 19] = 1000.0
    out = script.oracle_operating_points(mixed, anomalous, 0.05)
    assert out["oracle_ba_at_fpr"][0] == pytest.approx(0.5 * (1 + 1 - 1 / 20))
    assert script.oracle_operating_points(mixed, anomalous, 0.0)["oracle_ba_at_fpr"][0] == 0.5


def test_the_budget_bound_spends_the_false_alarms_where_they_catch_most(script):
    """Three tasks of 4 normal + 4 anomalous queries: brute force over every combination of
    their thresholds gives the best mean balanced accuracy with mean false alarms <= 0.1."""
    import itertools

    rng = np.random.default_rng(1)
    anomalous = np.repeat([False, True], 4)[None].repeat(3, 0)
    scores = rng.normal(size=(3, 8)) + 1.0 * anomalous
    curves = script.task_curves(scores, anomalous)
    best = 0.0
    for pick in itertools.product(*[range(t.size) for t, _ in curves]):
        tpr = np.mean([curves[i][0][j] for i, j in enumerate(pick)])
        false = np.mean([curves[i][1][j] for i, j in enumerate(pick)])
        if false <= 0.1 + 1e-12:
            best = max(best, 0.5 * (tpr + 1 - false))
    out = script.budget_bound(curves, 0.1)
    assert out["fpr"] <= 0.1 + 1e-12
    # deterministic thresholds on the Lagrangian's hull: at most the brute force, and within
    # one task's step (1 / 4 of a task's rate, over 3 tasks) of it
    assert best - 0.5 / 12 <= out["ba"] <= best + 1e-12
    per_task = script.oracle_operating_points(scores, anomalous, 0.0)["oracle_ba_at_fpr"]
    assert out["ba"] >= per_task.mean() - 1e-12  # spending the budget never loses
