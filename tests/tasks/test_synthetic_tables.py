"""The synthetic-table prior: seeded, the promised shapes, widths, standardisation, missing
cells and anomalies."""

from __future__ import annotations

import pytest
import torch

from metaunsup.errors import ConfigError
from metaunsup.tasks.synthetic_tables import SyntheticTables


def test_same_seed_same_tasks_other_seed_other_tasks():
    a, b = SyntheticTables(seed=3).sample(4), SyntheticTables(seed=3).sample(4)
    assert torch.equal(a.x.nan_to_num(7.0), b.x.nan_to_num(7.0)) and torch.equal(a.y, b.y)
    c = SyntheticTables(seed=4).sample(4)
    assert not (a.x.shape == c.x.shape and torch.equal(a.x.nan_to_num(7.0), c.x.nan_to_num(7.0)))


def test_batch_shapes_labels_and_absent_columns():
    prior = SyntheticTables(max_features=40, max_clusters=6, rows=120, seed=0)
    widths = set()
    for _ in range(10):
        batch = prior.sample(3)
        k, n = batch.n_way, batch.x.shape[1]
        assert 2 <= k <= 6 and n == k * (120 // k) and batch.x.shape == (3, n, 40)
        assert batch.y.shape == (3, n) and batch.x.dtype == torch.float32
        for x, y in zip(batch.x, batch.y, strict=True):
            assert set(y.tolist()) == set(range(k))  # every cluster has rows
            present = ~torch.isnan(x).all(0)
            d = int(present.sum())
            assert present[:d].all() and not present[d:].any()  # first d columns, then absent
            assert (~torch.isnan(x)).any(1).all()  # every row keeps an observed cell
            widths.add(d)
    assert min(widths) >= 2 and max(widths) <= 40 and len(widths) > 5


def test_complete_columns_are_standardised_and_some_tasks_miss_cells():
    prior = SyntheticTables(max_features=30, seed=1)
    rates = []
    for _ in range(40):
        t = prior.sample_table(3, 90)
        x = t.x[:, : t.d]
        missing = torch.isnan(x)
        rates.append(float(missing.float().mean()))
        if not missing.any():
            assert torch.allclose(x.mean(0), torch.zeros(t.d), atol=1e-4)
            std = x.std(0)
            assert ((std - 1).abs() < 1e-3).logical_or(std < 1e-3).all()
    assert max(rates) <= 0.3 + 0.05 and sum(r > 0 for r in rates) >= 8
    assert sum(r == 0 for r in rates) >= 8


def test_anomalies_only_when_asked_and_far_from_their_clusters():
    clean = SyntheticTables(max_features=10, seed=2).sample_table(3, 300)
    assert not clean.anomaly.any()
    prior = SyntheticTables(max_features=10, missing_prob=0.0, anomaly_rate=0.1, seed=2)
    t = prior.sample_table(3, 600)
    share = float(t.anomaly.float().mean())
    assert 0.05 < share < 0.15
    x = t.x[:, : t.d]
    centres = torch.stack([x[(t.y == c) & ~t.anomaly].mean(0) for c in range(3)])
    dist = torch.cdist(x, centres).min(1).values
    assert dist[t.anomaly].median() > dist[~t.anomaly].median()


def test_resume_from_state_and_bad_settings():
    prior = SyntheticTables(max_features=20, seed=5)
    prior.sample(2)
    state = prior.state_dict()
    expected = prior.sample(2)
    again = SyntheticTables(max_features=20, seed=5)
    again.load_state_dict(state)
    assert torch.equal(again.sample(2).x.nan_to_num(9.0), expected.x.nan_to_num(9.0))
    with pytest.raises(ConfigError):
        SyntheticTables(max_features=20, seed=6).load_state_dict(state)
    with pytest.raises(ConfigError, match="min_features"):
        SyntheticTables(max_features=5, min_features=6)
    with pytest.raises(ConfigError, match="max_missing"):
        SyntheticTables(max_missing=0.95)


def _kind_table(kind: str, seed: int = 3):
    prior = SyntheticTables(
        max_features=12, min_features=6, missing_prob=0.0, anomaly_rate=0.08,
        anomaly_kinds=(kind,), seed=seed,
    )  # fmt: skip
    t = prior.sample_table(3, 600)
    assert 0.04 < float(t.anomaly.float().mean()) < 0.12
    return t.x[:, : t.d], t.anomaly


def test_clustered_anomalies_form_a_cluster_of_their_own():
    ratios = []
    for seed in range(8):
        x, bad = _kind_table("clustered", seed)
        centre = x[bad].mean(0)
        # the anomalies gather round their centre; the normal rows lie farther from it (noise
        # columns, which carry no cluster, blur it on some tables)
        inside = (x[bad] - centre).norm(dim=1).median()
        outside = (x[~bad] - centre).norm(dim=1).median()
        ratios.append(float(inside / outside))
    assert max(ratios) < 1.0 and sorted(ratios)[4] < 0.7, ratios


def test_global_anomalies_fill_the_widened_range_and_dependency_ones_keep_the_marginals():
    x, bad = _kind_table("global")
    normal, odd = x[~bad], x[bad]
    low, high = normal.min(0).values, normal.max(0).values
    pad = 0.1 * (high - low) + 1e-5
    assert bool(((odd >= low - pad) & (odd <= high + pad)).all())
    assert float(((odd < low) | (odd > high)).any(1).float().mean()) > 0.2  # some leave the range
    x, bad = _kind_table("dependency")
    normal, odd = x[~bad], x[bad]
    for c in range(x.shape[1]):  # every cell is a value of its column among the normal rows
        assert bool(torch.isin(odd[:, c], normal[:, c]).all())
    assert not any(bool((normal == row).all(1).any()) for row in odd)  # rows are new


def test_anomaly_kinds_one_per_task_and_bad_kinds_refused():
    prior = SyntheticTables(max_features=8, missing_prob=0.0, anomaly_rate=0.1,
                            anomaly_kinds=("global", "dependency"), seed=0)  # fmt: skip
    again = SyntheticTables(max_features=8, missing_prob=0.0, anomaly_rate=0.1,
                            anomaly_kinds=("global", "dependency"), seed=0)  # fmt: skip
    a, b = prior.sample_table(2, 100), again.sample_table(2, 100)
    assert torch.equal(a.x.nan_to_num(9.0), b.x.nan_to_num(9.0))
    with pytest.raises(ConfigError, match="anomaly_kinds"):
        SyntheticTables(anomaly_kinds=("spiky",))
    with pytest.raises(ConfigError, match="anomaly_kinds"):
        SyntheticTables(anomaly_kinds=())
