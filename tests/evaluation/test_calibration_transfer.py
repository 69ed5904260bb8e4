"""The meta-calibrated threshold on classes it was not calibrated on: the measured false-alarm
rate on fresh normal tasks of unseen, broader classes stays near the target (the old
normalisation, by the mean leave-one-out score shrunk towards the pseudo-classes' typical
spread, flagged several times the target there), and what the calibration stores and loads."""

from __future__ import annotations

import pytest
import torch

from metaunsup.checkpoint import load_model_state
from metaunsup.errors import CheckpointError
from metaunsup.evaluation.anomaly import (
    calibration_sources,
    learner_null_table,
    measure_null_table,
    worst_family,
)
from metaunsup.evaluation.calibration import NullTable, calibrated_pvalues, threshold_at
from metaunsup.learners.one_class import NULL_PRIOR, NullTableMixin
from metaunsup.tasks.anomaly import Grouping, OneClassStream
from metaunsup.tasks.pseudo.cactus_anomaly import CactusAnomalySource

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Centroid(NullTableMixin, torch.nn.Module):
    """A toy anomaly scorer with a null table: squared distance to the support mean."""

    def __init__(self) -> None:
        super().__init__()
        self.init_null_table()

    def score(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return (query - support.mean(1, keepdim=True)).pow(2).sum(-1)


def _classes(n_classes: int, scales: torch.Tensor, seed: int, n: int = 90, d: int = 6):
    """``(x [n_classes·n, d], labels)``: Gaussian classes far apart, class ``c`` with standard
    deviation ``scales[c]``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n)
    centres = torch.randn(n_classes, d, generator=g) * 50.0
    x = centres[y] + torch.randn(len(y), d, generator=g) * scales[y, None]
    return x, y


def _stream(x: torch.Tensor, y: torch.Tensor, k: int, seed: int) -> OneClassStream:
    return OneClassStream(x, [Grouping(y, torch.unique(y))], k, 20, seed=seed)


def _unseen_false_alarms(prior: float) -> list[float]:
    """False-alarm rates at K = 2, 5, 10 on classes 2-4x broader than the compact (sd 1)
    classes the scorer's table was measured on with prior weight ``prior``."""
    x, y = _classes(12, torch.ones(12), seed=0)
    scorer = _Centroid()
    scores, spread = measure_null_table(scorer, _stream(x, y, 5, 0), seed=1)
    scorer.set_null_table(scores, spread, prior, "max")
    table = learner_null_table(scorer)
    assert table is not None and table.stat == "max" and table.prior == prior
    unseen_x, unseen_y = _classes(30, torch.linspace(2.0, 4.0, 30), seed=7)
    rates = []
    for k in (2, 5, 10):
        batch = _stream(unseen_x, unseen_y, k, 3).sample(400)
        s = scorer.score(batch.support_x, batch.query_x)
        p, how = calibrated_pvalues(scorer.score, batch.support_x, s, fpr=0.05, null=table)
        assert how == "meta"
        rates.append(float((p[batch.query_y == 0] <= 0.05).double().mean()))
    return rates


def test_false_alarms_on_unseen_broader_classes_stay_near_the_target():
    # calibrated on compact classes (sd 1), measured on classes the table never saw, 2-4x
    # broader: a typical spread learnt on the former must not set the threshold of the latter
    assert NULL_PRIOR == 0.0
    for k, rate in zip((2, 5, 10), _unseen_false_alarms(NULL_PRIOR), strict=True):
        assert 0.03 <= rate <= 0.07, (k, rate)


def test_a_typical_scale_prior_over_fires_on_broader_classes(monkeypatch):
    """Why the prior weight stays 0 (docs/results/anomaly_calibration.md): with ``m > 0`` the
    pseudo-classes' typical spread enters every threshold, and classes broader than it are
    flagged far above the target, the more so the fewer support examples and the larger m."""
    import metaunsup.evaluation.anomaly as anomaly

    rates = {}
    for m in (1.0, 16.0):
        monkeypatch.setattr(anomaly, "NULL_PRIOR", m)  # the table's normalisation
        rates[m] = _unseen_false_alarms(m)
    assert rates[1.0][0] > 0.14 and rates[1.0][1] > 0.08  # K = 2, 5: over twice / 1.6x
    assert min(rates[16.0]) > 0.3 and rates[16.0][0] > 0.7
    assert rates[16.0][0] > rates[16.0][1] > rates[16.0][2]


def test_the_scale_is_the_largest_leave_one_out_score_of_the_first_examples():
    table = NullTable(torch.tensor([2]), torch.zeros(1, 3), torch.tensor([5.0]), 0.0)
    loo = torch.tensor([[1.0, 4.0, 2.0] + [0.0] * 14 + [99.0]])  # the 18th is not read
    assert table.loo_limit == 16
    assert float(table.scale(2, loo)[0]) == 4.0
    legacy = NullTable(torch.tensor([2]), torch.zeros(1, 3), torch.tensor([5.0]), 1.0, "mean")
    assert legacy.loo_limit == 8
    # mean of the first 8 (7/8), shrunk towards 5 with weight 1 against K = 2
    assert float(legacy.scale(2, loo)[0]) == pytest.approx((2 * 7 / 8 + 5.0) / 3)


def test_a_checkpoint_saved_before_the_statistic_existed_loads_as_the_mean():
    old = _Centroid()
    old.set_null_table(torch.zeros(old.null_scores.shape), torch.ones(len(old.null_k)), 1.0)
    tensors = {f"model.{k}": v for k, v in old.state_dict().items() if k != "null_stat"}
    fresh = _Centroid()
    load_model_state(fresh, tensors, "old.safetensors")
    table = learner_null_table(fresh)
    assert table is not None and table.stat == "mean" and table.prior == 1.0
    with pytest.raises(CheckpointError, match="missing null_prior, null_scores"):
        load_model_state(_Centroid(), {"model.null_k": old.null_k}, "broken.safetensors")


def test_label_free_runs_calibrate_on_held_out_pixel_clusters_too():
    x, y = _classes(6, torch.ones(6), seed=0, n=40)
    parts = torch.stack([y, (y + 1) % 6]).to(torch.int32)  # two "partitions" of the examples
    source = CactusAnomalySource(x, parts, 5, 10, seed=0)
    found = calibration_sources(source, seed=3)
    assert len(found) == 2 and found[0] is source
    held_out = found[1]
    assert isinstance(held_out, CactusAnomalySource) and held_out.n_clusters == 6
    # its clusters come from the pixels (here: the well-separated classes), not the partitions
    batch = held_out.sample(4)
    assert batch.support_x.shape == (4, 5, 6)
    plain = _stream(x, y, 5, 0)
    assert calibration_sources(plain, seed=3) == [plain]


def test_the_worst_family_table_holds_on_each_family_where_pooling_over_fires_on_one():
    g = torch.Generator().manual_seed(0)
    compact = torch.randn(4000, generator=g).abs()
    heavy = torch.randn(4000, generator=g).abs() * 3.0
    table = worst_family([compact, heavy], 2000)
    assert table.shape == (2000,) and bool((table[1:] >= table[:-1]).all())
    pooled = torch.cat([compact, heavy])
    for family in (compact, heavy):
        # a threshold at p <= 0.05 from the table holds on each family (up to sampling)
        cut = threshold_at(table, 0.05)
        assert float((family > cut).double().mean()) <= 0.055
    # pooling puts the threshold between the families: the heavy one is flagged ~2x too often
    assert float((heavy > threshold_at(pooled, 0.05)).double().mean()) > 0.08


def test_a_two_family_table_thresholds_at_least_as_high_as_each_family_alone():
    x, y = _classes(6, torch.ones(6), seed=0, n=60)
    broad_x, broad_y = _classes(6, torch.full((6,), 3.0), seed=1, n=60)
    scorer = _Centroid()
    sources = [_stream(x, y, 5, 0), _stream(broad_x, broad_y, 5, 0)]
    two, _ = measure_null_table(scorer, sources, seed=1)
    # each alone, on the very tasks the two-family measurement drew from it (source j's
    # streams are seeded seed + 1000 j)
    first, _ = measure_null_table(scorer, sources[0], seed=1)
    second, _ = measure_null_table(scorer, sources[1], seed=1001)
    for row in (0, 3, 6):  # K = 2, 5, 10
        both = threshold_at(two[row], 0.05)
        for single in (first, second):
            assert both >= 0.99 * threshold_at(single[row], 0.05), row
        # and not above the larger of them (it is their larger quantile, not a new tail)
        assert both <= 1.01 * max(threshold_at(t[row], 0.05) for t in (first, second))
