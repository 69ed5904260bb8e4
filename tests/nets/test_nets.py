"""Backbones: shapes, configs, and the task-batched forward against a loop over tasks."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metaunsup.errors import ConfigError, DataError
from metaunsup.nets import MLP, Conv4, FunctionalNet, build_net
from metaunsup.nets.functional import task_linear

B = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("size", "feature_dim", "out_hw"),
    [(8, 64, (1, 1)), (28, 64, (1, 1)), (84, 1600, (5, 5)), ((28, 20), 64, (1, 1))],
)
def test_conv4_feature_sizes(size, feature_dim, out_hw):
    net = Conv4(in_channels=1, n_way=5, hidden=64, image_size=size)
    assert net.feature_dim == feature_dim
    assert net.out_hw == out_hw
    h, w = (size, size) if isinstance(size, int) else size
    assert net(torch.rand(2, 1, h, w)).shape == (2, 5)
    assert net.functional_forward(net.params(), torch.rand(3, 2, 1, h, w)).shape == (3, 2, 5)


def test_input_pool_equals_the_same_net_on_pooled_images():
    torch.manual_seed(0)
    pooled = Conv4(n_way=None, hidden=8, image_size=28, input_pool=2)
    plain = Conv4(n_way=None, hidden=8, image_size=14)
    plain.load_state_dict(pooled.state_dict())
    assert pooled.feature_dim == plain.feature_dim == 8 and pooled.out_hw == (1, 1)
    x = torch.rand(3, 6, 1, 28, 28)
    small = torch.nn.functional.avg_pool2d(x.flatten(0, 1), 2).view(3, 6, 1, 14, 14)
    torch.testing.assert_close(
        pooled.functional_features(pooled.params(), x),
        plain.functional_features(plain.params(), small),
    )
    torch.testing.assert_close(pooled(x[0]), plain(small[0]))
    assert pooled.config()["input_pool"] == 2 and "input_pool" not in plain.config()


def test_backbones_declare_their_example_shape():
    assert Conv4(in_channels=3, image_size=[12, 10]).example_shape == (3, 12, 10)
    assert Conv4(image_size=28, input_pool=2).example_shape == (1, 28, 28)
    assert MLP(20).example_shape == (20,)
    net = Conv4(in_channels=2, hidden=4, image_size=(9, 7))
    assert net(torch.rand(3, *net.example_shape)).shape == (3, 5)


def test_conv4_batchnorm_drops_redundant_conv_bias():
    assert "blocks.0.conv.bias" not in Conv4(norm="batch").params()
    assert "blocks.0.conv.bias" in Conv4(norm="group").params()
    assert "blocks.0.conv.bias" in Conv4(norm="none").params()


def test_embedding_nets_have_no_head():
    conv = Conv4(n_way=None, hidden=8, image_size=8)
    assert conv.head_names == ()
    assert conv(torch.rand(4, 1, 8, 8)).shape == (4, 8)
    mlp = MLP(10, n_way=None, hidden=(7,))
    assert mlp.functional_forward(mlp.params(), torch.rand(2, 4, 10)).shape == (2, 4, 7)


@pytest.mark.parametrize(
    "net",
    [
        Conv4(in_channels=3, n_way=4, hidden=8, image_size=[12, 10], norm="group", groups=4),
        Conv4(n_way=None, depth=2),
        Conv4(n_way=None, input_pool=2),
        MLP(20, n_way=3, hidden=[5, 6], norm="batch"),
    ],
)
def test_build_net_round_trip(net: FunctionalNet):
    import json

    config = json.loads(json.dumps(net.config()))
    again = build_net(config)
    assert type(again) is type(net) and again.config() == net.config()
    again.load_state_dict(net.state_dict())


@pytest.mark.parametrize(
    "config",
    [
        {"name": "resnet"},
        {"hidden": 3},
        {"name": "conv4", "width": 3},
        {"name": "conv4", "norm": "layer"},
        {"name": "conv4", "norm": "group", "hidden": 6, "groups": 4},
        {"name": "conv4", "hidden": 0},
        {"name": "conv4", "input_pool": 0},
        {"name": "conv4", "input_pool": 29},
        {"name": "conv4", "input_pool": 1.5},
        {"name": "mlp", "in_features": 4, "n_way": None, "hidden": []},
        {"name": "mlp"},
    ],
)
def test_build_net_rejects_bad_configs(config):
    with pytest.raises(ConfigError):
        build_net(config)


def test_functional_forward_rejects_unbatched_input():
    net = Conv4(hidden=4, image_size=8)
    with pytest.raises(DataError):
        net.functional_forward(net.params(), torch.rand(5, 1, 8, 8))


def test_task_linear_shared_and_batched():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, generator=g)
    w, b = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, generator=g)
    out = task_linear(x, w, b)
    for t in range(2):
        torch.testing.assert_close(out[t], x[t] @ w[t].T + b[t])
    torch.testing.assert_close(task_linear(x, w[0], b[0]), x @ w[0].T + b[0])
    torch.testing.assert_close(task_linear(x, w, b[0]), torch.bmm(x, w.transpose(1, 2)) + b[0])


# --------------------------------------------------------------------------- batched vs loop


def _nets(norm: str) -> list[tuple[str, FunctionalNet, tuple[int, ...]]]:
    torch.manual_seed(0)
    return [
        (
            "conv4-grouped",
            Conv4(in_channels=2, n_way=3, hidden=4, image_size=8, norm=norm, groups=2, depth=3),
            (2, 8, 8),
        ),
        (
            "conv4-nchw",
            Conv4(in_channels=2, n_way=3, hidden=4, image_size=8, norm=norm, groups=2, depth=3),
            (2, 8, 8),
        ),
        (
            "conv4-per-task",
            Conv4(in_channels=2, n_way=3, hidden=4, image_size=8, norm=norm, groups=2, depth=3),
            (2, 8, 8),
        ),
        (
            "conv4-input-pool",
            Conv4(
                in_channels=2, n_way=3, hidden=4, image_size=9, norm=norm, groups=2, input_pool=2
            ),
            (2, 9, 9),
        ),
        ("mlp", MLP(12, n_way=3, hidden=(6, 4), norm=norm, groups=2), (12,)),
    ]


def _task_params(net: FunctionalNet, mode: str, seed: int) -> dict[str, torch.Tensor]:
    """Per-task perturbed copies of the parameters (``mode="mixed"``: every other one shared)."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for i, (k, v) in enumerate(net.named_parameters()):
        base = v.detach().double()
        if mode == "batched" or i % 2 == 0:
            p = base + 0.3 * torch.randn(B, *v.shape, generator=g, dtype=torch.float64)
        else:
            p = base + 0.3 * torch.randn(*v.shape, generator=g, dtype=torch.float64)
        params[k] = p.requires_grad_()
    return params


def _loop_forward(net: FunctionalNet, params: dict[str, torch.Tensor], x: torch.Tensor):
    """The reference: the ordinary module forward, one task at a time."""
    shapes = {k: v.shape for k, v in net.named_parameters()}
    outs = []
    for t in range(x.shape[0]):
        p_t = {k: (v[t] if v.shape != shapes[k] else v) for k, v in params.items()}
        outs.append(functional_call(net, p_t, (x[t],)))
    return torch.stack(outs)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("mode", ["batched", "mixed"])
def test_batched_forward_equals_task_loop_with_gradients(norm: str, mode: str):
    for name, net, shape in _nets(norm):
        net = net.double()
        if isinstance(net, Conv4):
            # "per-task" forces the CPU large-task path (task by task, channels-last); the
            # other Conv4 takes the one-pass grouped convolution path.
            net.large_task = 0 if name == "conv4-per-task" else 10**9
        g = torch.Generator().manual_seed(1)
        x = torch.rand(B, 5, *shape, generator=g, dtype=torch.float64)
        weights = torch.randn(B, 5, 3, generator=g, dtype=torch.float64)
        probe = {
            k: torch.randn(v.shape, generator=g, dtype=torch.float64)
            for k, v in _task_params(net, mode, 2).items()
        }
        results = []
        if name == "conv4-nchw":  # the generic (non-CPU) path: grouped NCHW, aten batch norm
            net.cpu_kernels = False
        for forward in (net.functional_forward, lambda p, x_, n=net: _loop_forward(n, p, x_)):
            params = _task_params(net, mode, 2)
            out = forward(params, x)
            loss = (out * weights).sum()
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            # second order: gradient of a directional derivative (a Hessian-vector product)
            hvp_obj = sum((gr * probe[k]).sum() for k, gr in zip(params, grads, strict=True))
            hvp = torch.autograd.grad(hvp_obj, list(params.values()), allow_unused=True)
            results.append((out, grads, hvp))
        (out_b, g_b, h_b), (out_l, g_l, h_l) = results
        torch.testing.assert_close(out_b, out_l, rtol=1e-10, atol=1e-10, msg=name)
        for a, b in zip(g_b, g_l, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
        for a, b in zip(h_b, h_l, strict=True):
            if a is None or b is None:
                assert (a is None and b is None) or (a if a is not None else b).abs().max() == 0
                continue
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


def test_shared_params_equal_every_task_using_them():
    net = Conv4(hidden=4, image_size=8, depth=2).double()
    x = torch.rand(4, 6, 1, 8, 8, dtype=torch.float64)
    out = net.functional_forward({k: v for k, v in net.params().items()}, x)
    for t in range(4):
        torch.testing.assert_close(out[t], net(x[t]))


def test_functional_forward_follows_the_input_device_and_dtype():
    net = MLP(6, n_way=2, hidden=(4,), norm="batch").to(torch.float64)
    out = net.functional_forward(net.params(), torch.rand(2, 3, 6, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - only on machines with a GPU
        conv = Conv4(hidden=4, image_size=8).cuda()
        x = torch.rand(2, 3, 1, 8, 8, device="cuda")
        assert conv.functional_forward(conv.params(), x).device.type == "cuda"
