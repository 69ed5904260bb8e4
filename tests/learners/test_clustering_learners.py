"""Meta-learned clustering: the pairwise loss, Meta-K-means and Clustering-MAML (exact
gradients, label-free adaptation, learning, determinism), and clustering runs end to end
(config, Trainer, ``evaluate --checkpoint``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from metaunsup.app.cli import main
from metaunsup.cluster import kmeans, task_seeds
from metaunsup.cluster.soft_kmeans import balanced_soft_kmeans, clustering_objective
from metaunsup.data import load
from metaunsup.errors import ConfigError
from metaunsup.evaluation.fewshot import evaluate_fewshot
from metaunsup.learners import (
    ClusterMAML,
    FewShotLearner,
    MetaKMeansLearner,
    MetaLearner,
    build_learner,
)
from metaunsup.learners.pairwise import (
    offdiagonal_mask,
    pair_log_probabilities,
    pairwise_loss,
    pairwise_targets,
)
from metaunsup.metrics import clustering_accuracy
from metaunsup.nets import MLP, Conv4
from metaunsup.tasks.batch import TaskBatch
from metaunsup.training.config import config_from_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clustering_batch(x: torch.Tensor, y: torch.Tensor, n_way: int) -> TaskBatch:
    B, n = y.shape
    return TaskBatch(
        x=x,
        y=y,
        classes=torch.arange(n_way).expand(B, -1).contiguous(),
        indices=torch.arange(B * n).view(B, n),
        n_way=n_way,
        k_shot=n // n_way,
    )


def random_clustering_batch(
    seed: int = 0, B: int = 2, n_way: int = 3, k_shot: int = 3, dim: int = 4
):
    """Gaussian points (float64) with shuffled balanced labels; values only matter for gradients."""
    g = torch.Generator().manual_seed(seed)
    n = n_way * k_shot
    y = torch.stack([torch.randperm(n, generator=g) // k_shot for _ in range(B)])
    x = torch.randn(B, n, dim, generator=g, dtype=torch.float64) + y.unsqueeze(-1).double()
    return clustering_batch(x, y, n_way)


#: A fixed rotation of R^8: the blob tasks' shared "linear distortion".
DISTORTION = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(5)))[0]


def blob_tasks(
    n_tasks: int, generator: torch.Generator, n_way: int = 3, per: int = 10
) -> TaskBatch:
    """2-D Gaussian blobs (new means every task) plus 6 loud noise coordinates, all rotated by
    one fixed :data:`DISTORTION`. K-means on the raw points is fooled by the noise; a learner
    that meta-learns to undo the rotation and drop the noise clusters new tasks far better."""
    n = n_way * per
    y = torch.stack([torch.randperm(n, generator=generator) // per for _ in range(n_tasks)])
    means = 3.0 * torch.randn(n_tasks, n_way, 2, generator=generator)
    signal = torch.gather(means, 1, y.unsqueeze(-1).expand(-1, -1, 2))
    signal = signal + 0.7 * torch.randn(n_tasks, n, 2, generator=generator)
    noise = 4.0 * torch.randn(n_tasks, n, 6, generator=generator)
    return clustering_batch(torch.cat([signal, noise], -1) @ DISTORTION, y, n_way)


def mlp(seed: int = 0, norm: str = "none", d_in: int = 4, hidden: int = 5) -> MLP:
    torch.manual_seed(seed)
    return MLP(d_in, n_way=None, hidden=(hidden,), norm=norm)


def check_against_finite_differences(learner: MetaLearner, batch: TaskBatch) -> None:
    """For every parameter tensor, a random direction: ``∇f·d`` against central differences.

    ReLU kinks and the piecewise-constant choice of k-means++ seed points make the meta-loss
    piecewise smooth; a few step sizes are tried and one must agree (a wrong gradient agrees
    with none).
    """
    learner.zero_grad(set_to_none=True)
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    g = torch.Generator().manual_seed(7)
    for name, p in learner.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        d = torch.randn(p.shape, generator=g, dtype=p.dtype)
        analytic = float((grad * d).sum())
        quotients = []
        for eps in (1e-6, 1e-7, 3e-8):
            with torch.no_grad():
                p.add_(d, alpha=eps)
                plus = float(learner.meta_loss(batch)[0])
                p.add_(d, alpha=-2 * eps)
                minus = float(learner.meta_loss(batch)[0])
                p.add_(d, alpha=eps)
            quotients.append((plus - minus) / (2 * eps))
            if abs(quotients[-1] - analytic) <= 1e-6 * abs(analytic) + 1e-8:
                break
        else:
            raise AssertionError(f"{name}: analytic {analytic!r}, differences {quotients!r}")


# --------------------------------------------------------------------------- pairwise loss


def test_pairwise_loss_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    r = torch.softmax(torch.randn(2, 5, 3, generator=g, dtype=torch.float64), -1)
    y = torch.tensor([[0, 0, 1, 1, 2], [2, 1, 1, 0, 0]])
    expected, expected_bal = [], []
    for b in range(2):
        pos, neg = [], []
        for i in range(5):
            for j in range(5):
                if i == j:
                    continue
                p = float(r[b, i] @ r[b, j])
                if y[b, i] == y[b, j]:
                    pos.append(-math.log(p))
                else:
                    neg.append(-math.log(1 - p))
        expected.append((sum(pos) + sum(neg)) / 20)
        expected_bal.append(0.5 * (sum(pos) / len(pos) + sum(neg) / len(neg)))
    log_r = r.log()
    per_task = pairwise_loss(log_r, y, reduction="none")
    torch.testing.assert_close(per_task, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(pairwise_loss(log_r, y), torch.tensor(np.mean(expected)).double())
    torch.testing.assert_close(
        pairwise_loss(log_r, y, balanced=True, reduction="none"),
        torch.tensor(expected_bal, dtype=torch.float64),
    )


def test_pairwise_loss_is_invariant_to_relabelling_clusters_and_classes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (3, 8), generator=g)
    base = pairwise_loss(logits, y, reduction="none")
    cluster_perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(pairwise_loss(logits[..., cluster_perm], y, reduction="none"), base)
    class_perm = torch.tensor([1, 2, 0])
    torch.testing.assert_close(pairwise_loss(logits, class_perm[y], reduction="none"), base)
    # the perfect partition scores ~0, the uniform assignment log-terms of 1/K and 1 - 1/K
    perfect = torch.nn.functional.one_hot(y, 4).double().mul(50.0)
    assert float(pairwise_loss(perfect, y)) < 1e-12


def test_pair_log_probabilities_stay_finite_for_confident_mistakes():
    logits = torch.tensor([[[60.0, 0.0], [0.0, 60.0], [60.0, 0.0]]], dtype=torch.float64)
    logits.requires_grad_(True)
    log_same, log_diff = pair_log_probabilities(logits)
    r = torch.softmax(logits.detach(), -1)
    p = r @ r.transpose(1, 2)
    torch.testing.assert_close(log_same.exp(), p)
    torch.testing.assert_close(log_diff.exp(), 1 - p)
    y = torch.tensor([[0, 0, 1]])  # points 0 and 1 belong together but sit apart, 0 and 2 not
    loss = pairwise_loss(logits, y)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 10  # not clamped away
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) > 0.1


def test_pairwise_targets_and_mask():
    y = torch.tensor([[0, 1, 0]])
    s = pairwise_targets(y)
    assert s.tolist() == [[[1, 0, 1], [0, 1, 0], [1, 0, 1]]]
    assert offdiagonal_mask(3).tolist() == [
        [False, True, True],
        [True, False, True],
        [True, True, False],
    ]


# --------------------------------------------------------------------------- exact gradients


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_meta_kmeans_gradient_matches_finite_differences(norm: str):
    learner = MetaKMeansLearner(mlp(norm=norm), temperature=0.5, balance=0.3, shrink=0.8).double()
    check_against_finite_differences(learner, random_clustering_batch())


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_cluster_maml_second_order_gradient_matches_finite_differences(norm: str):
    learner = ClusterMAML(
        mlp(norm=norm), inner_lr=0.3, inner_steps=2, first_order=False,
        temperature=0.5, balance=0.3, shrink=0.8, n_iter=3,
    ).double()  # fmt: skip
    check_against_finite_differences(learner, random_clustering_batch())


def test_cluster_maml_first_order_equals_a_detached_hand_computation():
    """Per task, with the ordinary module forward: one inner step on the task's unsupervised
    objective with the gradient detached, then the pairwise loss at the adapted weights."""
    learner = ClusterMAML(
        mlp(), inner_lr=0.3, inner_steps=1, first_order=True,
        temperature=0.5, balance=0.3, shrink=0.8, n_iter=3,
    ).double()  # fmt: skip
    batch = random_clustering_batch(seed=1, B=3)
    learner.zero_grad(set_to_none=True)
    learner.meta_loss(batch)[0].backward()
    got = {k: v.grad.clone() for k, v in learner.named_parameters()}

    net, B, k = learner.net, batch.n_tasks, batch.n_way
    seeds = task_seeds(0, B)
    names = [f"net.{n}" for n in net.params()]
    clustering = [learner.log_temperature, learner.balance_logit, learner.init_shrink]
    want = {n: torch.zeros_like(p) for n, p in learner.named_parameters()}
    for b in range(B):
        xb, yb = batch.x[b : b + 1], batch.y[b : b + 1]
        T, lam = learner.log_temperature.exp(), torch.tanh(learner.balance_logit)
        s = learner.init_shrink
        theta = {n: p.detach().clone().requires_grad_() for n, p in net.params().items()}
        z = functional_call(net, theta, (xb[0],)).unsqueeze(0)
        sc = balanced_soft_kmeans(
            z, k, temperature=T.detach(), balance=lam.detach(), shrink=s.detach(),
            n_iter=3, seed=seeds[b],
        )  # fmt: skip
        inner = clustering_objective(z, sc, lam.detach()).sum()
        grads = torch.autograd.grad(inner, list(theta.values()))
        phi = {
            n: (v - 0.3 * g).detach().requires_grad_()
            for (n, v), g in zip(theta.items(), grads, strict=True)
        }
        z = functional_call(net, phi, (xb[0],)).unsqueeze(0)
        sc = balanced_soft_kmeans(
            z, k, temperature=T, balance=lam, shrink=s, n_iter=3, seed=seeds[b]
        )
        outer = pairwise_loss(sc.logits, yb) / B
        gs = torch.autograd.grad(outer, list(phi.values()) + clustering)
        for n, g in zip(
            [*names, "log_temperature", "balance_logit", "init_shrink"], gs, strict=True
        ):
            want[n] += g
    for n in got:
        torch.testing.assert_close(got[n], want[n], msg=n)


# --------------------------------------------------------------------------- no labels read


@pytest.mark.parametrize("cls", [MetaKMeansLearner, ClusterMAML])
def test_adaptation_and_clustering_never_read_labels(cls):
    learner = cls(mlp(d_in=4, hidden=8)).double()
    batch = random_clustering_batch(seed=3, B=2, n_way=3, k_shot=4)
    garbage = torch.randint(0, 50, batch.y.shape, generator=torch.Generator().manual_seed(9))
    states = [
        learner.adapt(batch.x, y, n_way=3, differentiable=True) for y in (batch.y, garbage, None)
    ]
    for state in states[1:]:
        for key, value in state.extras.items():
            torch.testing.assert_close(value, states[0].extras[key], msg=key)
        for key, value in state.params.items():
            torch.testing.assert_close(value, states[0].params[key], msg=key)
    labels = learner.cluster(batch.x, 3, seed=1)
    shuffled = clustering_batch(batch.x, garbage, 3)  # the batch's labels play no part
    assert torch.equal(learner.cluster(shuffled.x, 3, seed=1), labels)


# --------------------------------------------------------------------------- learning


def _blob_accuracy(learner: MetaKMeansLearner, tasks: TaskBatch) -> float:
    return float(np.mean(clustering_accuracy(tasks.y, learner.cluster(tasks.x, tasks.n_way))))


@pytest.mark.parametrize("name", ["meta_kmeans", "cluster_maml"])
def test_meta_training_improves_clustering_of_new_tasks(name: str):
    """40 meta-steps on blob tasks under a fixed distortion: clustering accuracy on held-out
    tasks must rise well above the untrained learner's and above K-means on the raw points
    (fails with no or wrong meta-gradients)."""
    torch.manual_seed(0)
    net = MLP(8, n_way=None, hidden=(16,))
    if name == "meta_kmeans":
        learner: MetaKMeansLearner = MetaKMeansLearner(net, temperature=0.5)
    else:
        learner = ClusterMAML(net, temperature=0.5, inner_lr=0.1)
    train, held_out = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    test = blob_tasks(32, held_out)
    raw = float(np.mean(clustering_accuracy(test.y, kmeans(test.x, 3, n_init=10).labels)))
    acc0 = _blob_accuracy(learner, test)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    for _ in range(40):
        loss, _ = learner.meta_loss(blob_tasks(8, train))
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc1 = _blob_accuracy(learner, test)
    assert acc1 > acc0 + 0.2, (acc0, acc1)  # measured: 0.49 -> 0.78 (both learners)
    assert acc1 > raw + 0.15, (raw, acc1)  # K-means on the raw points: 0.53


# --------------------------------------------------------------------------- determinism, API


@pytest.mark.parametrize("cls", [MetaKMeansLearner, ClusterMAML])
def test_clustering_is_deterministic_and_independent_of_chunking(cls):
    learner = cls(mlp(d_in=4, hidden=8), restarts=3)
    x = blob_tasks(5, torch.Generator().manual_seed(4)).x[..., :4].float()
    a = learner.cluster(x, 3, seed=11)
    assert a.shape == (5, 30) and a.dtype == torch.int64
    assert torch.equal(learner.cluster(x, 3, seed=11), a)
    learner.eval_chunk = 2
    assert torch.equal(learner.cluster(x, 3, seed=11), a)
    # a task alone, with the seed the batch gave it, gets the same labels
    alone = learner.cluster(x[3:4], 3, seed=task_seeds(11, 5)[3])
    assert torch.equal(alone[0], a[3])


def test_cluster_maml_path_matches_cluster_at_each_step():
    learner = ClusterMAML(mlp(d_in=8, hidden=8), inner_lr=0.3, test_steps=2)
    x = blob_tasks(3, torch.Generator().manual_seed(5)).x
    path = learner.cluster_path(x, 3, seed=2, steps=[0, 1, 2, 3, None])
    assert set(path) == {0, 1, 2, 3, None}
    for s in (0, 1, 3):
        assert torch.equal(path[s], learner.cluster(x, 3, seed=2, steps=s)), s
    assert torch.equal(path[None], path[2])  # None: the default test_steps
    state = learner.adapt(x, None, steps=3, n_way=3, seed=task_seeds(2, 3))
    logits = learner.predict(state, x)
    torch.testing.assert_close(logits, state.extras["logits"])


def test_meta_kmeans_predict_adapt_and_refine():
    learner = MetaKMeansLearner(mlp(d_in=8, hidden=8), test_iter=3, refine=True)
    tasks = blob_tasks(2, torch.Generator().manual_seed(6))
    state = learner.adapt(tasks.x, tasks.y, n_way=3)
    assert state.extras["centers"].shape == (2, 3, 8) and state.n_way == 3
    logits = learner.predict(state, tasks.x)
    assert logits.shape == (2, 30, 3)
    torch.testing.assert_close(logits, state.extras["logits"])
    path = learner.cluster_path(tasks.x, 3, steps=[0, 1, 5])
    assert [v.shape for v in path.values()] == [(2, 30)] * 3
    loss, metrics = learner.meta_loss(tasks)
    assert loss.requires_grad and {"loss", "acc", "temperature", "balance", "shrink"} <= set(
        metrics
    )
    assert not isinstance(learner, FewShotLearner)  # cluster ids are arbitrary: no query logits
    with pytest.raises(ConfigError, match="does not classify few-shot tasks"):
        evaluate_fewshot(
            load("digits", "test"), [("mk", learner)], n_way=3, k_shot=1, n_query=2, n_tasks=1
        )
    with pytest.raises(ConfigError, match="n_way"):
        learner.adapt(tasks.x)
    with pytest.raises(ConfigError):
        learner.cluster(tasks.x, 31)


@pytest.mark.parametrize("cls", [MetaKMeansLearner, ClusterMAML])
def test_config_round_trip_rebuilds_the_same_model(cls):
    torch.manual_seed(0)
    learner = cls(Conv4(1, None, hidden=4, image_size=8, depth=2), temperature=0.3, balance=0.2)
    with torch.no_grad():
        learner.log_temperature.add_(0.1)  # learned values travel in the state dict
    config = json.loads(json.dumps(learner.config()))
    assert config["name"] == cls.name and config["net"]["n_way"] is None
    rebuilt = build_learner(config)
    rebuilt.load_state_dict(learner.state_dict())
    assert rebuilt.config() == learner.config()
    x = torch.rand(2, 12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rebuilt.cluster(x, 3, seed=4), learner.cluster(x, 3, seed=4))


@pytest.mark.parametrize(
    "config",
    [
        {"name": "meta_kmeans", "net": {"name": "mlp", "in_features": 4}, "balance": 1.0},
        {"name": "meta_kmeans", "net": {"name": "mlp", "in_features": 4}, "temperature": 0},
        {"name": "meta_kmeans", "net": {"name": "mlp", "in_features": 4}, "restarts": 0},
        {"name": "meta_kmeans", "net": {"name": "mlp", "in_features": 4}, "sharpness": 3.0},
        {"name": "cluster_maml", "net": {"name": "mlp", "in_features": 4}, "inner_lr": -1.0},
        {"name": "cluster_maml", "net": {"name": "mlp", "in_features": 4}, "first_order": 1},
    ],
)
def test_bad_configs_raise_config_error(config):
    with pytest.raises(ConfigError):
        build_learner(config)


# --------------------------------------------------------------------------- runs end to end

RUN = {
    "name": "tiny-clustering",
    "data": {"dataset": "digits", "split": "train", "val_fraction": 0.2, "val_by": "examples"},
    "task": {"kind": "clustering", "n_way": 5, "k_shot": 10},
    "learner": {"name": "meta_kmeans", "net": {"name": "conv4", "hidden": 8}},
    "train": {"steps": 3, "meta_batch": 2, "val_every": 2, "val_tasks": 4, "checkpoint_every": 2},
}


def _run_config(**patch):
    raw = json.loads(json.dumps(RUN))
    for table, values in patch.items():
        raw[table].update(values)
    return config_from_dict(raw)


def test_clustering_config_validation():
    assert _run_config().data.val_by == "examples"
    with pytest.raises(ConfigError, match="val_by"):
        _run_config(data={"val_by": "tasks"})


def test_train_then_evaluate_a_clustering_checkpoint(tmp_path, capsys):
    from metaunsup.evaluation.clustering import checkpoint_method
    from metaunsup.learners import load_learner
    from metaunsup.training.build import train_run

    result = train_run(_run_config(), tmp_path, progress=False)
    assert result.steps == 3
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3]
    vals = [x["val"] for x in lines if "val" in x]
    assert len(vals) == 2 and all(0.0 < v["acc"] <= 1.0 for v in vals)
    learner = load_learner(tmp_path / "best.safetensors")
    assert isinstance(learner, MetaKMeansLearner) and learner.net.n_way is None

    out_json = tmp_path / "eval.json"
    code = main([
        "evaluate", "--checkpoint", str(tmp_path / "best.safetensors"), "--tasks", "5",
        "--n-way", "5", "--k-shot", "10", "--json", str(out_json), "--quiet",
    ])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out_json.read_text())
    methods = [r["method"] for r in report["results"]]
    assert methods == ["kmeans", str(tmp_path / "best.safetensors")]
    assert report["tasks"] == 5 and 0.0 < report["results"][1]["acc"]["mean"] <= 1.0

    method = checkpoint_method(tmp_path / "best.safetensors", label="mk")
    x = torch.rand(2, 10, 1, 8, 8)
    assert method.name == "mk" and method.fn(x, 5, 0).shape == (2, 10)


def test_clustering_runs_reject_mismatched_learners(tmp_path):
    from metaunsup.training.build import train_run

    with pytest.raises(ConfigError, match="clustering"):
        train_run(_run_config(learner={"name": "maml"}), tmp_path, progress=False)
    fewshot = _run_config(task={"kind": "fewshot", "n_query": 2})
    with pytest.raises(ConfigError, match="clustering"):
        train_run(fewshot, tmp_path, progress=False)


def test_split_examples_holds_out_part_of_every_class():
    from metaunsup import data
    from metaunsup.training.build import split_examples

    ds = data.load("digits", "train")
    kept, held = split_examples(ds, 0.25, seed=0)
    assert len(kept) + len(held) == len(ds)
    assert set(kept.y.tolist()) == set(held.y.tolist()) == set(range(10))
    ratio = held.class_counts().double() / ds.class_counts().double()
    assert bool(((ratio - 0.25).abs() < 0.02).all())
    again = split_examples(ds, 0.25, seed=0)[1]
    assert torch.equal(again.x, held.x)
