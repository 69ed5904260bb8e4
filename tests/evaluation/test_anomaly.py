"""The anomaly kinds: scores against scikit-learn, calibrated thresholds (conformal and
meta), the baselines on identical tasks, and a learner through the one protocol."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from metaunsup.data.base import Dataset
from metaunsup.errors import ConfigError, DataError, DataWarning
from metaunsup.evaluation.anomaly import ScorerMethod, anomaly_kind, anomaly_scores
from metaunsup.evaluation.calibration import (
    NullTable,
    calibrated_pvalues,
    check_fpr,
    conformal_pvalues,
    conformal_reaches,
    leave_one_out_scores,
    threshold_at,
)
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape, evaluate
from metaunsup.learners import AnomalyScorer, build_learner
from metaunsup.tasks.anomaly import AnomalyTaskSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n: int = 60, d: int = 5) -> Dataset:
    """4 well-separated Gaussian classes."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(n)
    x = torch.randn(len(y), d, generator=g) * 0.3 + 3.0 * torch.eye(4, d)[y]
    return Dataset("blobs", "all", x, y, ("a", "b", "c", "d"))


def test_scores_match_scikit_learn():
    g = torch.Generator().manual_seed(1)
    truth = (torch.rand(6, 40, generator=g) > 0.5).long()
    score = truth.double() + torch.randn(6, 40, generator=g, dtype=torch.float64)
    score[0, :5] = 0.0  # ties count half
    flags = (score > 0.5).double()
    out = anomaly_scores(truth, torch.stack([score, flags], -1))
    y, s = truth.numpy(), score.numpy()
    for b in range(6):
        assert out["auroc"][b] == pytest.approx(roc_auc_score(y[b], s[b]))
        assert out["auprc"][b] == pytest.approx(average_precision_score(y[b], s[b]))
        f = flags[b].numpy() > 0
        tpr, fpr = f[y[b] == 1].mean(), f[y[b] == 0].mean()
        assert out["fpr"][b] == pytest.approx(fpr)
        assert out["balanced_acc"][b] == pytest.approx(0.5 * (tpr + 1 - fpr))
    with pytest.raises(ConfigError, match="score and flag"):
        anomaly_scores(truth, score)


def test_conformal_pvalues_ranks_and_what_k_can_reach():
    cal = torch.tensor([[1.0, 2.0, 3.0]])
    p = conformal_pvalues(cal, torch.tensor([[0.5, 2.0, 2.5, 9.0]]))
    assert p.tolist() == [[1.0, 0.75, 0.5, 0.25]]
    assert not conformal_reaches(2, 0.05) and not conformal_reaches(18, 0.05)
    assert conformal_reaches(19, 0.05) and conformal_reaches(2, 1 / 3)
    # the threshold flags exactly the scores whose p-value is at most fpr
    values = torch.arange(1.0, 40.0)
    t = threshold_at(values, 0.05)
    s = torch.linspace(0, 45, 451).unsqueeze(0)
    flagged = conformal_pvalues(values.unsqueeze(0), s) <= 0.05
    assert torch.equal(flagged, s > t)
    assert math.isinf(threshold_at(torch.tensor([1.0, 2.0]), 0.05))
    for bad in (0, 1, 1.5, -0.1, "x"):
        with pytest.raises(ConfigError, match="fpr"):
            check_fpr(bad)


def test_leave_one_out_scores_each_example_against_the_others():
    support = torch.tensor([[[0.0], [1.0], [5.0]]])

    def centroid(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (q - s.mean(1, keepdim=True)).pow(2).sum(-1)

    loo = leave_one_out_scores(centroid, support)
    assert loo.tolist() == [[9.0, 2.25, 20.25]]
    with pytest.raises(DataError, match="at least 2"):
        leave_one_out_scores(centroid, support[:, :1])


def test_conformal_false_alarms_are_controlled_where_k_allows():
    """Exchangeable normal scores: the realised false-alarm rate of p <= fpr is at most fpr."""
    g = torch.Generator().manual_seed(0)
    support = torch.randn(400, 39, 1, generator=g)
    query = torch.randn(400, 50, 1, generator=g)

    def centroid(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (q - s.mean(1, keepdim=True)).pow(2).sum(-1)

    scores = centroid(support, query)
    p, how = calibrated_pvalues(centroid, support, scores, fpr=0.1)
    assert how == "conformal"
    rate = float((p <= 0.1).double().mean())
    assert 0.07 < rate <= 0.105


def test_meta_calibration_normalises_by_the_shrunk_spread_of_the_nearest_size():
    # a table of the earlier statistic (mean leave-one-out score, prior 1), read as measured
    scores = torch.stack([torch.arange(100.0), torch.zeros(100), torch.full((100,), torch.nan)])
    spread = torch.tensor([2.0, 1.0, torch.nan])
    table = NullTable(torch.tensor([2, 10, 20]), scores, spread, prior=1.0, stat="mean")
    assert table.ready and table.measured.tolist() == [True, True, False]
    assert torch.equal(table.row(3), torch.arange(100.0))
    assert torch.equal(table.row(30), torch.zeros(100))  # nearest measured size: 10
    # support of 2 at 0 and 4: mean leave-one-out score 16; scale (2*16 + 1*2) / 3
    support = torch.tensor([[[0.0], [4.0]]])
    scale = (2 * 16 + 2.0) / 3
    scores_q = torch.tensor([[96.5 * scale, 50.0 * scale]])

    def centroid(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (q - s.mean(1, keepdim=True)).pow(2).sum(-1)

    p, how = calibrated_pvalues(centroid, support, scores_q, fpr=0.05, null=table)
    assert how == "meta" and p[0, 0] <= 0.05 < p[0, 1]
    assert p[0, 1] == pytest.approx((1 + 49) / 101)
    fresh = NullTable(
        torch.tensor([2]), torch.full((1, 4), torch.nan), torch.tensor([torch.nan]), 1.0
    )
    with pytest.raises(ConfigError, match="no meta-calibration"):
        calibrated_pvalues(centroid, support, scores_q, fpr=0.05, calibration="meta", null=fresh)
    # An unmeasured table where conformal p-values cannot reach fpr: it flags nothing, and says so.
    with pytest.warns(DataWarning, match="null table was never measured.*--resume"):
        p, how = calibrated_pvalues(centroid, support, scores_q, fpr=0.05, null=fresh)
    assert how == "conformal" and (p > 0.05).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # where conformal p-values reach fpr: nothing to say
        calibrated_pvalues(centroid, support, scores_q, fpr=0.4, null=fresh)


class _Centroid(torch.nn.Module):
    """A toy AnomalyScorer: squared distance to the support mean."""

    name = "centroid-learner"

    def score(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return (query - support.mean(1, keepdim=True)).pow(2).sum(-1)


def test_learners_and_baselines_on_identical_tasks():
    kind = task_kind("anomaly")
    assert kind.ability is AnomalyScorer and kind.scores[0] == "auroc"
    learner = _Centroid()
    methods = [*kind.resolve(["mahalanobis", "centroid"]), ScorerMethod("toy", learner)]  # type: ignore[arg-type]
    report = evaluate(kind, _blobs(), methods, shape=TaskShape(10, 25, 10), n_tasks=12,
                      seed=0).to_json()  # fmt: skip
    assert report["n_way"] == 1 and report["n_query"] == 10
    by = {r["method"]: r for r in report["results"]}
    assert by["toy"]["auroc"]["mean"] == pytest.approx(by["centroid"]["auroc"]["mean"])
    assert by["centroid"]["auroc"]["mean"] > 0.95
    # K = 25 reaches fpr = 0.05: separable blobs are flagged with few false alarms
    assert by["centroid"]["balanced_acc"]["mean"] > 0.85 and by["toy"]["fpr"]["mean"] < 0.2
    protonet = build_learner(
        {"name": "protonet", "net": {"name": "mlp", "in_features": 5, "hidden": [4], "n_way": None}}
    )
    with pytest.raises(ConfigError, match="'protonet' learner, which does not score anomalies"):
        kind.method_of("x", protonet)


def test_pyod_baselines_run_raw_and_on_pca():
    pytest.importorskip("pyod")
    kind = task_kind("anomaly")
    methods = kind.resolve(["knn", "pca95-ocsvm", "iforest"])
    report = evaluate(kind, _blobs(), methods, shape=TaskShape(1, 5, 10), n_tasks=3, seed=0)
    scores = {r.method: r.scores["auroc"].mean for r in report.results}
    assert scores["knn"] > 0.9 and set(scores) == {"knn", "pca95-ocsvm", "iforest"}
    assert all(np.isfinite(v) for v in scores.values())
    with pytest.raises(ConfigError, match="unknown method 'nope' for anomaly tasks"):
        kind.baseline("nope")


def test_hard_kind_needs_groups():
    kind = task_kind("anomaly-hard")
    with pytest.raises(ConfigError, match="needs classes with groups"):
        kind.make_sampler(_blobs(), TaskShape(1, 2, 2), 0)


def test_boundary_calibration_flags_above_the_learned_boundary():
    """``calibration="boundary"``: a Meta-SVDD's flags are its scores above its radius, for any
    fpr; a learner without a boundary is refused before any task, and p-values refuse it."""
    torch.manual_seed(0)
    mlp = {"name": "mlp", "in_features": 5, "hidden": [8], "n_way": None}
    svdd = build_learner({"name": "meta_svdd", "net": mlp})
    batch = AnomalyTaskSampler(_blobs(), 3, 10, seed=0).sample(6)
    scores = svdd.score(batch.support_x, batch.query_x).to(torch.float64)
    with torch.no_grad():
        svdd.radius.fill_(float(scores.median()))
    kind = anomaly_kind(calibration="boundary", fpr=0.2)
    assert "learned boundary" in kind.score_labels["balanced_acc"]
    out = kind.method_of("svdd", svdd).run(batch, seed=0)
    assert torch.equal(out[..., 1] > 0.5, scores > svdd.decision_boundary(3))
    assert 0 < int(out[..., 1].sum()) < out[..., 1].numel()
    with pytest.raises(ConfigError, match="'meta_gmvae' has none"):
        gmvae = build_learner({"name": "meta_gmvae", "latent_dim": 2, "decoder_hidden": [4],
                               "net": mlp})  # fmt: skip
        kind.method_of("gmvae", gmvae)
    with pytest.raises(ConfigError, match="sets no p-values"):
        calibrated_pvalues(svdd.score, batch.support_x, scores, fpr=0.05, calibration="boundary")
