"""The meta-learner protocol: configs and registry, shapes, evaluation mode, learning."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from metaunsup.errors import ConfigError, DataError
from metaunsup.learners import (
    ANIL,
    LEARNERS,
    MAML,
    AdaptedState,
    MetaLearner,
    MetaSGD,
    ProtoNet,
    Reptile,
    build_learner,
)
from metaunsup.nets import MLP, Conv4
from metaunsup.tasks.batch import TaskBatch
from tests.helpers.learners import gaussian_tasks, random_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conv(n_way: int | None = 3, norm: str = "batch") -> Conv4:
    torch.manual_seed(0)
    return Conv4(1, n_way, hidden=4, image_size=8, norm=norm, groups=2, depth=2)


def all_learners() -> list[MetaLearner]:
    return [
        MAML(conv(), inner_lr=0.3, inner_steps=2, test_steps=3),
        MAML(conv(norm="group"), first_order=True),
        MetaSGD(conv(), inner_lr=0.1),
        ANIL(conv(), inner_steps=2, first_order=True),
        Reptile(conv(), inner_lr=0.05, inner_steps=2, test_steps=4, inner_optimizer="sgd"),
        Reptile(conv()),
        ProtoNet(conv(None)),
        ProtoNet(MLP(64, n_way=None, hidden=(8,), norm="batch")),
    ]


def fewshot(seed: int = 0, n_way: int = 3) -> TaskBatch:
    return random_batch(2, n_way, 2, 3, dtype=torch.float32, seed=seed)


def ids(learner: MetaLearner) -> str:
    return learner.name


@pytest.mark.parametrize("learner", all_learners(), ids=ids)
def test_meta_loss_is_a_scalar_with_float_metrics_and_gradients(learner: MetaLearner):
    loss, metrics = learner.meta_loss(fewshot())
    assert loss.dim() == 0 and loss.requires_grad
    assert {"loss", "acc"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["loss"] == pytest.approx(float(loss.detach()))
    assert 0.0 <= metrics["acc"] <= 1.0
    loss.backward()
    assert all(p.grad is not None for p in learner.parameters())


@pytest.mark.parametrize("learner", all_learners(), ids=ids)
def test_config_round_trip_rebuilds_the_same_model(learner: MetaLearner):
    config = learner.config()
    assert config["name"] == learner.name and config["name"] in LEARNERS
    rebuilt = build_learner(json.loads(json.dumps(config)))  # JSON-serialisable
    assert type(rebuilt) is type(learner) and rebuilt.config() == config
    rebuilt.load_state_dict(learner.state_dict())
    b = fewshot(1)
    torch.testing.assert_close(rebuilt.fewshot_logits(b), learner.fewshot_logits(b))


@pytest.mark.parametrize("learner", all_learners(), ids=ids)
def test_adapt_and_predict_shapes_and_evaluation_mode(learner: MetaLearner):
    b = fewshot(2)
    with torch.no_grad():
        state = learner.adapt(b.support_x, b.support_y, n_way=b.n_way)
        logits = learner.predict(state, b.query_x)
    assert isinstance(state, AdaptedState) and state.n_tasks == 2 and state.n_way == 3
    assert logits.shape == (2, b.query_x.shape[1], 3)
    assert all(not v.requires_grad for v in state.params.values())
    assert all(not v.requires_grad for v in state.extras.values())
    # outside no_grad too: evaluation results never hold a graph to the meta-parameters
    logits = learner.fewshot_logits(b, steps=1)
    assert not logits.requires_grad and logits.shape == (2, 9, 3)
    labels = learner.assign(state, b.query_x)
    assert labels.dtype == torch.int64 and labels.shape == (2, 9)


def test_adapted_params_are_per_task_and_steps_zero_is_the_initialisation():
    learner = MAML(conv(), inner_lr=0.3, inner_steps=1, test_steps=2)
    b = fewshot(3)
    state = learner.adapt(b.support_x, b.support_y)
    for k, v in learner.net.named_parameters():
        assert state.params[k].shape == (2, *v.shape)
        assert not torch.equal(state.params[k][0], state.params[k][1])
    start = learner.adapt(b.support_x, b.support_y, steps=0)
    with torch.no_grad():
        expected = torch.stack([learner.net(b.query_x[t]) for t in range(2)])
    torch.testing.assert_close(learner.predict(start, b.query_x), expected)


def test_adaptation_lowers_the_support_loss():
    learner = MAML(conv(), inner_lr=0.1)
    b = fewshot(4)
    losses = []
    for steps in (0, 1, 5):
        state = learner.adapt(b.support_x, b.support_y, steps=steps)
        logits = learner.predict(state, b.support_x)
        losses.append(float(F.cross_entropy(logits.flatten(0, 1), b.support_y.flatten())))
    assert losses[0] > losses[1] > losses[2]


def test_anil_adapts_only_the_head():
    learner = ANIL(conv(), inner_steps=2)
    b = fewshot(5)
    state = learner.adapt(b.support_x, b.support_y)
    for k, v in learner.net.named_parameters():
        batched = state.params[k].dim() == v.dim() + 1
        assert batched == (k in learner.net.head_names)


def test_metasgd_learning_rates_are_meta_parameters():
    learner = MetaSGD(conv(), inner_lr=0.2)
    names = {k for k, _ in learner.named_parameters()}
    assert "lrs.blocks_0_conv_weight" in names and "net.blocks.0.conv.weight" in names
    assert all(torch.all(p == 0.2) for p in learner.lrs.values())
    loss, _ = learner.meta_loss(fewshot())
    loss.backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in learner.lrs.values())


def test_protonet_handles_any_number_of_classes():
    learner = ProtoNet(conv(None))
    b = random_batch(2, 5, 1, 2, dtype=torch.float32)
    logits = learner.fewshot_logits(b)
    assert logits.shape == (2, 10, 5)
    assert torch.all(logits <= 0)  # negative squared distances
    torch.testing.assert_close(learner.fewshot_logits(b, steps=0), logits)
    state = learner.adapt(b.support_x, b.support_y)  # n_way inferred from the labels
    assert state.extras["prototypes"].shape == (2, 5, learner.net.feature_dim)


def test_protonet_transductive_refinement_is_soft_kmeans_from_the_prototypes():
    torch.manual_seed(0)
    learner = ProtoNet(conv(None)).double()
    b = random_batch(2, 3, 2, 4, dtype=torch.float64)
    params = learner.meta_params(False)
    support = learner.net.functional_features(params, b.support_x)
    query = learner.net.functional_features(params, b.query_x)
    expected = []
    for t in range(2):  # by hand, task by task
        s, q, y = support[t], query[t], b.support_y[t]
        centres = torch.stack([s[y == k].mean(0) for k in range(3)])
        for _ in range(2):
            r = (-torch.cdist(q, centres).pow(2)).softmax(1)
            sums = torch.stack([s[y == k].sum(0) for k in range(3)]) + r.T @ q
            centres = sums / (torch.bincount(y, minlength=3).to(r) + r.sum(0)).unsqueeze(1)
        expected.append(-torch.cdist(q, centres).pow(2))
    torch.testing.assert_close(learner.fewshot_logits(b, steps=2), torch.stack(expected))
    refining = ProtoNet(conv(None), transductive_steps=2).double()
    refining.load_state_dict(learner.state_dict())
    torch.testing.assert_close(refining.fewshot_logits(b), torch.stack(expected))
    assert refining.config()["transductive_steps"] == 2
    with pytest.raises(ConfigError, match="transductive_steps"):
        ProtoNet(conv(None), transductive_steps=-1)


def test_mismatched_ways_and_clustering_batches_are_rejected():
    learner = MAML(conv(n_way=3))
    with pytest.raises(ConfigError, match="3 outputs"):
        learner.meta_loss(fewshot(n_way=4))
    b = fewshot()
    clustering = TaskBatch(b.x, b.y, b.classes, b.indices, n_way=3, k_shot=5, n_query=0)
    with pytest.raises(ConfigError, match="query"):
        learner.meta_loss(clustering)
    with pytest.raises(DataError):
        learner.adapt(b.support_x, b.support_y[:, :-1])


@pytest.mark.parametrize(
    "config",
    [
        {"name": "matching-nets", "net": {"name": "conv4"}},
        {"net": {"name": "conv4"}},
        {"name": "maml"},
        {"name": "maml", "net": {"name": "conv4"}, "inner_lr": -1.0},
        {"name": "maml", "net": {"name": "conv4"}, "inner_steps": 1.5},
        {"name": "maml", "net": {"name": "conv4"}, "outer_lr": 0.1},
        {"name": "maml", "net": {"name": "conv4"}, "first_order": "yes"},
        {"name": "maml", "net": {"name": "conv4", "n_way": None}},
        {"name": "reptile", "net": {"name": "conv4"}, "inner_optimizer": "rmsprop"},
        {"name": "reptile", "net": {"name": "conv4"}, "betas": [0.9]},
        {"name": "protonet", "net": {"name": "conv4"}, "inner_lr": 0.1},
        "maml",
    ],
)
def test_bad_configs_raise_config_error(config):
    with pytest.raises(ConfigError):
        build_learner(config)


# --------------------------------------------------------------------------- learning


def _make(name: str) -> tuple[MetaLearner, torch.optim.Optimizer, int, float, float]:
    """Learner, outer optimiser, shots, and the required loss ratio and accuracy gain."""
    torch.manual_seed(0)
    net = MLP(16, n_way=5, hidden=(32,))
    if name == "reptile":
        # The paper's outer update, SGD on the surrogate (ε = 1). Reptile fits each support
        # and is rewarded for it less directly than MAML: its gains here are smaller.
        learner = Reptile(net, inner_lr=0.1, inner_steps=3, test_steps=3, inner_optimizer="sgd")
        return learner, torch.optim.SGD(learner.parameters(), lr=1.0), 5, 0.97, 0.04
    learner = {
        "maml": lambda: MAML(net, inner_lr=0.4),
        "fomaml": lambda: MAML(net, inner_lr=0.4, first_order=True),
        "metasgd": lambda: MetaSGD(net, inner_lr=0.4),
        "anil": lambda: ANIL(net, inner_lr=0.4, inner_steps=2, test_steps=2),
        "protonet": lambda: ProtoNet(MLP(16, n_way=None, hidden=(32,))),
    }[name]()
    return learner, torch.optim.Adam(learner.parameters(), lr=1e-2), 1, 0.8, 0.15


def _query_loss_and_acc(learner: MetaLearner, batches: list[TaskBatch]) -> tuple[float, float]:
    loss = acc = 0.0
    for b in batches:
        logits = learner.fewshot_logits(b)
        loss += float(F.cross_entropy(logits.flatten(0, 1), b.query_y.flatten()))
        acc += float((logits.argmax(-1) == b.query_y).float().mean())
    return loss / len(batches), acc / len(batches)


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile", "protonet"])
def test_meta_training_reduces_the_query_loss_of_new_tasks(name: str):
    """40 meta-steps on tasks whose classes differ in 4 of 16 noisy coordinates: after
    meta-training, adapting to held-out tasks must give a lower query loss and a clearly
    higher accuracy than adapting from the random initialisation (fails with no or wrong
    meta-gradients)."""
    learner, opt, shots, loss_ratio, acc_gain = _make(name)
    train, held_out = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    test = [gaussian_tasks(8, 5, shots, 5, held_out) for _ in range(2)]
    loss0, acc0 = _query_loss_and_acc(learner, test)
    for _ in range(40):
        loss, _ = learner.meta_loss(gaussian_tasks(8, 5, shots, 5, train))
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, acc1 = _query_loss_and_acc(learner, test)
    assert loss1 < loss_ratio * loss0, (loss0, loss1)
    assert acc1 > acc0 + acc_gain, (acc0, acc1)
