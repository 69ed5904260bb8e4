"""Explanations of clusters (:mod:`metaunsup.cluster.explain`): effect sizes and exemplars."""

from __future__ import annotations

import numpy as np
import pytest

from metaunsup.cluster.explain import effect_sizes, explain_clusters


def test_effect_size_is_cohens_d_over_observed_cells():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 50), rng.normal(0.0, 1.0, 70)
    x = np.concatenate([a, b])[:, None]
    inside = np.arange(120) < 50
    pooled = np.sqrt(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / np.sqrt(118)
    d, m1, m0 = effect_sizes(x, inside)
    assert d[0] == pytest.approx((a.mean() - b.mean()) / pooled)
    assert (m1[0], m0[0]) == (pytest.approx(a.mean()), pytest.approx(b.mean()))
    x_missing = x.copy()
    x_missing[[0, 60]] = np.nan  # dropped from both sides
    keep = np.ones(120, bool)
    keep[[0, 60]] = False
    expected, _, _ = effect_sizes(x[keep], inside[keep])
    assert effect_sizes(x_missing, inside)[0][0] == pytest.approx(expected[0])


@pytest.mark.usefixtures("one_torch_thread")
def test_the_one_separating_feature_ranks_first():
    """Six features, of which only ``f3`` differs between two groups: the clustering finds
    the groups and every cluster's explanation puts ``f3`` first."""
    from sklearn.metrics import adjusted_rand_score

    from metaunsup.estimators.kmeans import MetaKMeans

    rng = np.random.default_rng(1)
    group = rng.integers(0, 2, 240)
    x = rng.normal(size=(240, 6))
    x[:, 3] += 8.0 * group
    x[rng.random(x.shape) < 0.05] = np.nan  # and a few missing cells
    x[np.isnan(x).all(1), 0] = 0.0
    model = MetaKMeans(2, meta_steps=40, random_state=0).fit(x)
    seen = ~np.isnan(x[:, 3])  # a row without f3 cannot be placed but by chance
    assert adjusted_rand_score(group[seen], model.labels_[seen]) > 0.9
    names = [f"f{j}" for j in range(6)]
    explained = explain_clusters(
        x, model.labels_, model.transform(x), model.cluster_centers_, names
    )
    assert [e.size for e in explained] == np.bincount(model.labels_).tolist()
    for e in explained:
        assert e.features[0].feature == "f3"
        assert abs(e.features[0].effect) > 3 * abs(e.features[1].effect)
        assert len(e.exemplars) == 3
        assert all(model.labels_[i] == e.label for i in e.exemplars)
