"""``TabularKMeans``: Meta-K-means plus a k-NN anomaly score in its embedding; and the
``tabular`` run config meta-trains it on the synthetic prior through ``metaunsup train``."""

from __future__ import annotations

import pytest
import torch

from metaunsup.errors import ConfigError
from metaunsup.learners import AnomalyScorer, build_learner, load_learner
from metaunsup.learners.tabular import TabularKMeans
from metaunsup.nets import MaskedMLP
from metaunsup.training.build import train_run
from metaunsup.training.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _learner(neighbors: int = 3) -> TabularKMeans:
    torch.manual_seed(0)
    return TabularKMeans(MaskedMLP(6, None, hidden=(16, 8)), score_neighbors=neighbors)


def test_score_is_the_mean_distance_to_the_nearest_others_leaving_the_query_out():
    learner = _learner(2)
    support = torch.randn(1, 20, 6)
    far = support[:, :1] + 50.0
    scores = learner.score(support, torch.cat([support[:, :3], far], 1))
    assert scores.shape == (1, 4) and (scores[0, :3] > 0).all()  # not its own neighbour
    assert scores[0, 3] > scores[0, :3].max()
    z_s, z_q = learner.embed(support), learner.embed(support[:, :1])
    d = torch.cdist(z_q, z_s)[0, 0]
    assert torch.isclose(scores[0, 0], d[1:].sort().values[:2].mean(), atol=1e-5)


def test_config_round_trip_and_ability():
    learner = _learner(7)
    again = build_learner(learner.config())
    assert isinstance(again, TabularKMeans) and again.score_neighbors == 7
    assert isinstance(again, AnomalyScorer)


def test_a_share_of_the_support_reaches_past_a_clustered_anomaly():
    learner = _learner(3)
    g = torch.Generator().manual_seed(1)
    normal = torch.randn(1, 90, 6, generator=g)
    rare = 8.0 + 0.05 * torch.randn(1, 10, 6, generator=g)  # a dense rare class, far away
    table = torch.cat([normal, rare], 1)
    few = learner.score(table, table)[0]
    learner.score_neighbors = 0.2  # 20 of the 100 rows: past the 10 rare ones
    share = learner.score(table, table)[0]
    assert learner.neighbors(100) == 20 and learner.neighbors(3) == 1
    assert few[90:].min() < few[:90].max()  # 3 neighbours: the rare rows look like normals
    assert share[90:].min() > share[:90].max()  # a share: every rare row ranks above
    again = build_learner(learner.config())
    assert isinstance(again, TabularKMeans) and again.score_neighbors == 0.2
    for bad in (0.0, 1.0, 1.5, 0, True):
        with pytest.raises(ConfigError, match="score_neighbors"):
            TabularKMeans(MaskedMLP(6, None, hidden=(16, 8)), score_neighbors=bad)


@pytest.mark.slow
def test_the_tabular_config_trains_on_the_prior(tmp_path):
    cfg = load_config("tabular", {"train.steps": 3, "train.checkpoint_every": 3})
    assert cfg.data.dataset == "synthetic-tables"
    train_run(cfg, tmp_path / "run", progress=False)
    learner = load_learner(tmp_path / "run" / "best.safetensors")
    assert isinstance(learner, TabularKMeans) and learner.net.example_shape == (100,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fast_neighbour_search_gives_the_exact_nearest_distances(dtype):
    """The fast path (one matrix product, the pairs close against their norms then computed
    difference by difference) equals the exact distances of every pair, repeated rows
    included."""
    from metaunsup.learners.tabular import _nearest_distances

    def exact_distances(zq, zs):  # difference by difference; the query itself (0) left out
        dist = torch.cdist(zq, zs, compute_mode="donot_use_mm_for_euclid_dist")
        return dist.masked_fill(dist <= 1e-9, float("inf"))

    g = torch.Generator().manual_seed(0)
    zs = torch.randn(2, 300, 16, generator=g, dtype=dtype)
    zs[:, 10:14] = zs[:, 3:4]  # a row repeated 5 times
    zq = torch.cat([zs[:, :40], torch.randn(2, 30, 16, generator=g, dtype=dtype)], 1)
    for m in (1, 3, 10):
        fast = _nearest_distances(zq, zs, m)
        exact = exact_distances(zq, zs).topk(m, dim=-1, largest=False).values
        assert torch.allclose(fast, exact, rtol=1e-5 if dtype == torch.float32 else 1e-12)
    # the repeated row: its copies are left out as the query itself, the next m kept
    assert torch.isfinite(_nearest_distances(zq, zs, 3)[:, 3]).all()


def test_a_checkpoint_rescored_keeps_its_weights_and_refuses_bad_options(tmp_path):
    from metaunsup.checkpoint import read_checkpoint, resolve_checkpoint
    from metaunsup.learners import with_learner_options

    out = with_learner_options("tabular", tmp_path / "share.safetensors", {"score_neighbors": 0.1})
    before, after = load_learner("tabular"), load_learner(out)
    assert isinstance(after, TabularKMeans) and after.score_neighbors == 0.1
    weights, again = before.state_dict(), after.state_dict()
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[name], again[name]) for name in weights)
    packaged = read_checkpoint(resolve_checkpoint("tabular"))[1]
    assert read_checkpoint(out)[1]["run"] == packaged["run"]
    for bad in ({"score_neighbors": 1.5}, {"no_such_option": 1}):
        with pytest.raises(ConfigError):
            with_learner_options("tabular", tmp_path / "bad.safetensors", bad)
    assert not (tmp_path / "bad.safetensors").exists()


def test_score_in_the_columns_is_the_knn_distance_there_missing_cells_at_the_mean():
    learner = _learner(2)
    learner.score_space = "columns"
    g = torch.Generator().manual_seed(3)
    support = torch.randn(1, 30, 6, generator=g)
    query = torch.randn(1, 4, 6, generator=g)
    query[0, 0, 2] = float("nan")  # a missing cell: at its column's mean (0, standardised)
    scores = learner.score(support, query)[0]
    filled = query.nan_to_num(0.0)
    expected = torch.cdist(filled, support)[0].sort(-1).values[:, :2].mean(-1)
    assert torch.allclose(scores, expected, atol=1e-5)
    again = build_learner(learner.config())
    assert isinstance(again, TabularKMeans) and again.score_space == "columns"
    with pytest.raises(ConfigError, match="score_space"):
        TabularKMeans(MaskedMLP(6, None, hidden=(16, 8)), score_space="pixels")
