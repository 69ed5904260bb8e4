"""The one-class learners: Meta-SVDD's scores, OC-MAML's support-only batch norm and second
order, Meta-GMVAE's density score; each scores a query example on its own (non-transductive)."""

from __future__ import annotations

import math

import pytest
import torch

from metaunsup.checkpoint import save_checkpoint
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners import BoundaryScorer, build_learner, load_learner
from metaunsup.learners.meta_svdd import one_class_scores
from metaunsup.learners.oc_maml import support_statistics_forward
from metaunsup.tasks.anomaly import AnomalyTaskSampler
from tests.evaluation.test_anomaly import _blobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONV = {"name": "conv4", "in_channels": 1, "image_size": [8, 8], "hidden": 8, "depth": 2}


def _images(b: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_one_class_scores_centre_and_nearest():
    s = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    q = torch.tensor([[[1.0, 1.0], [3.0, 0.0]]])
    assert one_class_scores(s, q, "centre").tolist() == [[1.0, 4.0]]
    assert one_class_scores(s, q, "nearest").tolist() == [[2.0, 1.0]]


def test_meta_svdd_scores_each_query_on_its_own_and_learns():
    torch.manual_seed(0)
    svdd = build_learner({"name": "meta_svdd", "net": {**CONV, "n_way": None, "norm": "group",
                                                      "groups": 2}})  # fmt: skip
    support, query = _images(2, 3), _images(2, 7, seed=1)
    full = svdd.score(support, query)
    assert full.shape == (2, 7)
    assert torch.allclose(svdd.score(support, query[:, 2:4]), full[:, 2:4], atol=1e-6)
    with pytest.raises(DataError, match="examples must be"):
        svdd.score(support, torch.rand(2, 4, 1, 6, 6))
    with pytest.raises(ConfigError, match="norm = 'group' or 'none'"):
        build_learner({"name": "meta_svdd", "net": {**CONV, "n_way": None, "norm": "batch"}})
    mlp = {"name": "mlp", "in_features": 5, "hidden": [16], "n_way": None}
    learner = build_learner({"name": "meta_svdd", "net": mlp})
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    tasks = AnomalyTaskSampler(_blobs(), 3, 8, seed=0)
    losses = []
    for _ in range(30):
        loss, metrics = learner.meta_loss(tasks.sample(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert sum(losses[-5:]) < sum(losses[:5]) and set(metrics) >= {"auroc", "radius"}


def test_oc_maml_normalises_with_the_support_only():
    torch.manual_seed(0)
    learner = build_learner({"name": "oc_maml", "net": {**CONV, "n_way": 1, "norm": "batch"}})
    net, params = learner.net, learner.net.params()
    support, query = _images(3, 4), _images(3, 9, seed=1)
    out_s, out_q = support_statistics_forward(net, params, support, query)
    # the support alone goes through ordinary (per-task batch-statistics) batch norm
    net.cpu_kernels = False
    assert torch.allclose(out_s, net.functional_forward(params, support), atol=1e-5)
    # a query example's output does not depend on the other queries
    _, part = support_statistics_forward(net, params, support, query[:, 3:5])
    assert out_q is not None and torch.allclose(part, out_q[:, 3:5], atol=1e-5)
    scores = learner.score(support, query)
    assert scores.shape == (3, 9)
    assert torch.allclose(learner.score(support, query[:, :2]), scores[:, :2], atol=1e-5)
    with pytest.raises(ConfigError, match="one output"):
        build_learner({"name": "oc_maml", "net": {**CONV, "n_way": 2}})


def test_oc_maml_second_order_differs_from_first_order():
    grads = {}
    for first_order in (False, True):
        torch.manual_seed(0)
        learner = build_learner({"name": "oc_maml", "first_order": first_order,
                                 "inner_steps": 2, "net": {**CONV, "n_way": 1}})  # fmt: skip
        batch = AnomalyTaskSampler(_blobs_images(), 3, 4, seed=0).sample(2)
        loss, _ = learner.meta_loss(batch)
        loss.backward()
        grads[first_order] = learner.net.blocks[0].conv.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def _blobs_images():
    ds = _blobs(20, 64)
    x = (ds.x - ds.x.min()) / (ds.x.max() - ds.x.min())
    return type(ds)(ds.name, ds.split, x.reshape(-1, 1, 8, 8), ds.y, ds.classes)


def test_meta_gmvae_density_score():
    torch.manual_seed(0)
    gmvae = build_learner({"name": "meta_gmvae", "latent_dim": 3, "decoder_hidden": [4],
                           "net": {"name": "mlp", "in_features": 4, "hidden": [8],
                                   "n_way": None}})  # fmt: skip
    support = torch.zeros(2, 5, 4) + 0.01 * torch.randn(2, 5, 4)
    query = torch.cat([torch.zeros(2, 1, 4), torch.full((2, 1, 4), 10.0)], 1)
    s = gmvae.score(support, query)
    assert s.shape == (2, 2) and bool((s[:, 1] > s[:, 0]).all())
    # half the squared Mahalanobis distance: the negative log density of the support's Gaussian
    # less the part every query of the task shares, so never negative and ranked as the density
    mean, log_var = gmvae.encode(gmvae.encoder_params(False), torch.cat([support, query], 1))
    ms, mq = mean[:, :5], mean[:, 5:]
    var = ms.var(1, unbiased=False, keepdim=True) + log_var[:, :5].exp().mean(1, keepdim=True)
    var = var + gmvae.reg_covar
    density = torch.distributions.Normal(ms.mean(1, keepdim=True), var.sqrt())
    neg_log = -density.log_prob(mq).sum(-1)
    shared = 0.5 * (var.log() + math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(s, neg_log - shared, atol=1e-5) and bool((s >= 0).all())


def test_decision_boundaries_are_the_learners_own_decisions():
    """Meta-SVDD flags above its meta-learned radius and OC-MAML above logit 0: exactly where
    their ``predict`` calls a query an anomaly; Meta-GMVAE learned no boundary."""
    torch.manual_seed(0)
    net = {**CONV, "n_way": None, "norm": "group", "groups": 2}
    svdd = build_learner({"name": "meta_svdd", "radius": 0.3, "net": net})
    ocmaml = build_learner({"name": "oc_maml", "net": {**CONV, "n_way": 1}})
    gmvae = build_learner({"name": "meta_gmvae", "latent_dim": 3, "decoder_hidden": [4],
                           "net": {**CONV, "n_way": None}})  # fmt: skip
    assert isinstance(svdd, BoundaryScorer) and isinstance(ocmaml, BoundaryScorer)
    assert not isinstance(gmvae, BoundaryScorer)
    support, query = _images(2, 3), _images(2, 6, seed=1)
    middle = float(svdd.score(support, query).median())
    with torch.no_grad():
        svdd.radius.fill_(middle)  # some queries on each side
    # not meta-trained: no support size recorded, the radius at every size
    assert svdd.decision_boundary(3) == pytest.approx(middle) == svdd.decision_boundary(10)
    assert ocmaml.decision_boundary(3) == 0.0
    for learner in (svdd, ocmaml):
        decided = learner.predict(learner.adapt(support), query).argmax(-1) == 1
        flagged = learner.score(support, query) > learner.decision_boundary(3)
        assert torch.equal(decided, flagged)
        if learner is svdd:
            assert 0 < int(flagged.sum()) < flagged.numel()


def test_meta_svdd_boundary_follows_the_support_size_it_was_learned_at():
    """Meta-training records K0; the centre score's boundary at K is r (1 + 1/K) / (1 + 1/K0),
    which the meta-loss uses too; the nearest-example score keeps r; the buffer is saved."""
    mlp = {"name": "mlp", "in_features": 5, "hidden": [8], "n_way": None}
    svdd = build_learner({"name": "meta_svdd", "net": mlp})
    nearest = build_learner({"name": "meta_svdd", "score": "nearest", "net": mlp})
    tasks = AnomalyTaskSampler(_blobs(), 4, 6, seed=0)
    for learner in (svdd, nearest):
        learner.meta_loss(tasks.sample(2))
        assert float(learner.radius_support) == 4.0
    r = float(svdd.radius)
    assert svdd.decision_boundary(4) == pytest.approx(r)
    assert svdd.decision_boundary(2) == pytest.approx(r * 1.5 / 1.25)
    assert svdd.decision_boundary(20) == pytest.approx(r * 1.05 / 1.25)
    assert nearest.decision_boundary(2) == pytest.approx(float(nearest.radius))
    svdd.meta_loss(AnomalyTaskSampler(_blobs(), 2, 6, seed=0).sample(2))
    assert float(svdd.radius_support) == 4.0  # the size of the first tasks is kept
    assert "radius_support" in svdd.state_dict()


def test_an_older_meta_svdd_checkpoint_recovers_its_support_size_from_its_run(tmp_path):
    """Saved before ``radius_support`` existed: one-class runs record their support size in
    ``task.k_shot``, from which it is restored; without a run it stays unrecorded."""
    mlp = {"name": "mlp", "in_features": 5, "hidden": [8], "n_way": None}
    svdd = build_learner({"name": "meta_svdd", "net": mlp})
    tensors = {f"model.{k}": v for k, v in svdd.state_dict().items() if k != "radius_support"}
    run = {"task": {"kind": "anomaly", "k_shot": 7}}
    for meta, want in (({"run": run}, 7.0), ({}, None)):
        path = tmp_path / f"old{len(meta)}.safetensors"
        save_checkpoint(path, tensors, {"kind": "model", "learner": svdd.config(), **meta})
        loaded = load_learner(path)
        got = float(loaded.radius_support)
        assert got == want if want is not None else math.isnan(got)
    assert loaded.decision_boundary(2) == pytest.approx(float(svdd.radius))
