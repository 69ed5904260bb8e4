"""The backbone registry: a toy backbone defined here, outside the package, registered with one
line and used end to end through the public registries (``build_net``, ``build_learner``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup.errors import ConfigError
from metaunsup.learners import ProtoNet, build_learner
from metaunsup.nets import (
    BACKBONES,
    MLP,
    Conv4,
    FunctionalNet,
    ParamDict,
    build_net,
    register_backbone,
)
from metaunsup.nets.functional import task_linear
from tests.helpers.learners import gaussian_tasks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOY = "toy-linear"


class ToyNet(FunctionalNet):
    """One linear layer + ReLU over vectors, with an optional head: the whole backbone."""

    def __init__(self, in_features: int = 16, width: int = 32, n_way: int | None = None) -> None:
        super().__init__()
        self.in_features, self.width, self.n_way = in_features, width, n_way
        self.example_shape = (in_features,)
        self.feature_dim = width
        self.body = nn.Linear(in_features, width)
        self.head = nn.Linear(width, n_way) if n_way is not None else None
        self.head_names = ("head.weight", "head.bias") if n_way is not None else ()

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.body(x.flatten(1)))
        return self.head(h) if self.head is not None else h

    def functional_features(self, params: ParamDict, x: Tensor) -> Tensor:
        self._check_batched_input(x, len(self.example_shape))
        return F.relu(task_linear(x, params["body.weight"], params["body.bias"]))

    @classmethod
    def shape_config(cls, example_shape: tuple[int, ...]) -> dict[str, Any]:
        return {"in_features": math.prod(example_shape)}

    def config(self) -> dict[str, Any]:
        return {
            "name": TOY,
            "in_features": self.in_features,
            "width": self.width,
            "n_way": self.n_way,
        }


@pytest.fixture
def toy_registered() -> Iterator[None]:
    assert register_backbone(TOY)(ToyNet) is ToyNet  # the one registry line
    yield
    BACKBONES.pop(TOY)


@pytest.mark.usefixtures("toy_registered")
def test_a_backbone_from_outside_the_package_builds_and_meta_trains():
    net = build_net({"name": TOY, "in_features": 16, "width": 32})
    assert type(net) is ToyNet and net.example_shape == (16,)
    learner = build_learner({"name": "protonet", "net": net.config()})
    assert isinstance(learner, ProtoNet) and type(learner.net) is ToyNet
    again = build_learner(learner.config())
    again.load_state_dict(learner.state_dict())

    torch.manual_seed(0)
    learner = ProtoNet(build_net(net.config()))
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    train, held_out = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    test = [gaussian_tasks(8, 5, 1, 5, held_out) for _ in range(2)]

    def query_loss() -> float:
        return sum(
            float(F.cross_entropy(learner.fewshot_logits(b).flatten(0, 1), b.query_y.flatten()))
            for b in test
        ) / len(test)

    loss0 = query_loss()
    for _ in range(40):
        loss, _ = learner.meta_loss(gaussian_tasks(8, 5, 1, 5, train))
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1 = query_loss()
    assert loss1 < 0.8 * loss0, (loss0, loss1)


@pytest.mark.usefixtures("toy_registered")
def test_registering_is_idempotent_and_names_are_unique():
    assert register_backbone(TOY)(ToyNet) is ToyNet
    with pytest.raises(ConfigError, match="taken"):
        register_backbone(TOY)(MLP)
    with pytest.raises(ConfigError, match="taken"):
        register_backbone("conv4")(ToyNet)
    assert BACKBONES["conv4"] is Conv4 and BACKBONES[TOY] is ToyNet


def test_register_backbone_rejects_bad_names_and_classes():
    with pytest.raises(ConfigError):
        register_backbone("")
    with pytest.raises(ConfigError):
        register_backbone(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="FunctionalNet"):
        register_backbone("linear")(nn.Linear)
    assert "linear" not in BACKBONES


@pytest.mark.parametrize(
    ("name", "net"),
    [("conv4", Conv4(hidden=4, image_size=8)), ("mlp", MLP(6, hidden=(4,)))],
)
def test_builtin_backbones_are_registered_under_their_config_names(name: str, net: FunctionalNet):
    assert BACKBONES[name] is type(net) and net.config()["name"] == name
    assert type(build_net(net.config())) is type(net)
