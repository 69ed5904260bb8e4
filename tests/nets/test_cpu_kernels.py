"""The private CPU fast path (``metaunsup.nets._cpu``) against the generic layers and forward.

Each kernel is compared with PyTorch's own operations, and Conv4's fast path with its generic
forward (``cpu_kernels = False``): values and first and second derivatives, in float64.
"""

from __future__ import annotations

import pytest
import torch

from metaunsup.nets import Conv4
from metaunsup.nets._cpu import layers
from metaunsup.nets._cpu.batchnorm import batch_norm_2d
from metaunsup.nets._cpu.conv import conv2d
from metaunsup.nets._cpu.first_layer import data_patches, task_conv_batch_norm_of_data
from metaunsup.nets._cpu.layers import channels_last
from metaunsup.nets._cpu.pointwise import max_pool2_relu, relu
from metaunsup.nets.functional import task_batch_norm, task_conv2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B = 3


def test_channels_last_restrides_single_channel_tensors():
    x = torch.rand(2, 1, 5, 4, requires_grad=True)
    y = channels_last(x)
    assert y.stride() == (20, 1, 4, 1) and torch.equal(y, x)
    assert channels_last(y) is y
    z = channels_last(torch.rand(2, 3, 5, 4))
    assert z.stride() == (60, 1, 12, 3)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_batch_norm_2d_matches_aten_with_first_and_second_derivatives():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(
        batch_norm_2d(x, w, b), torch.nn.functional.batch_norm(x, None, None, w, b, training=True)
    )
    assert torch.autograd.gradcheck(batch_norm_2d, (x, w, b))
    assert torch.autograd.gradgradcheck(batch_norm_2d, (x, w, b))


def test_batch_norm_2d_is_accurate_in_float32():
    """Statistics of shifted data: aten's [M, C] kernel loses ~1e-5; ours stays near 1e-6."""
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(20000, 8, generator=g, dtype=torch.float64) * 0.5 + 3.0
    w, b = torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    ref = torch.nn.functional.batch_norm(x64, None, None, w, b, training=True)
    ours = batch_norm_2d(x64.float(), w.float(), b.float())
    assert float((ours.double() - ref).abs().max()) < 3e-6


@pytest.mark.parametrize("n_tasks", [1, 3])
@pytest.mark.parametrize("batched", [False, True])
def test_first_layer_gemm_equals_convolution_then_batch_norm(n_tasks: int, batched: bool):
    g = torch.Generator().manual_seed(n_tasks)
    dt = torch.float64
    x = torch.rand(3, n_tasks * 2, 4, 3, generator=g, dtype=dt)
    lead = (n_tasks,) if batched else ()
    w = torch.randn(*lead, 3, 2, 3, 3, generator=g, dtype=dt, requires_grad=True)
    gamma = torch.randn(*lead, 3, generator=g, dtype=dt, requires_grad=True)
    beta = torch.randn(*lead, 3, generator=g, dtype=dt, requires_grad=True)

    def ours(w, gamma, beta):
        return task_conv_batch_norm_of_data(x, w, gamma, beta, n_tasks)

    def reference(w, gamma, beta):
        return task_batch_norm(task_conv2d(x, w, None, n_tasks), gamma, beta, n_tasks)

    out = ours(w, gamma, beta)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference(w, gamma, beta))
    assert torch.autograd.gradgradcheck(ours, (w, gamma, beta))


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("channels_last_input", [False, True])
def test_conv2d_double_backward_matches_finite_differences(groups: int, channels_last_input: bool):
    g = torch.Generator().manual_seed(groups)
    x = torch.randn(2, 2 * groups, 5, 4, generator=g, dtype=torch.float64)
    if channels_last_input:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(2 * groups, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        return conv2d(x, w, groups=groups, padding=1)

    torch.testing.assert_close(f(x, w), torch.nn.functional.conv2d(x, w, padding=1, groups=groups))
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))


@pytest.mark.parametrize("op", ["pool_relu", "relu"])
@pytest.mark.parametrize("channels_last_input", [False, True])
def test_pool_and_relu_second_derivatives_match_aten(channels_last_input: bool, op: str):
    """max_pool2_relu (one node) and relu against aten's operations, to second order."""
    ours_op, aten_op = (
        (max_pool2_relu, lambda t: torch.relu(torch.nn.functional.max_pool2d(t, 2)))
        if op == "pool_relu"
        else (relu, torch.relu)
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    if channels_last_input:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    v = torch.randn(aten_op(x).shape, generator=g, dtype=torch.float64)

    def ours(x):
        return (ours_op(x) * v).sum() * x.sum()  # a non-zero second derivative

    def reference(x):
        return (aten_op(x) * v).sum() * x.sum()

    torch.testing.assert_close(ours(x), reference(x))
    (g1,) = torch.autograd.grad(ours(x), x, create_graph=True)
    (r1,) = torch.autograd.grad(reference(x), x, create_graph=True)
    torch.testing.assert_close(g1, r1)
    u = torch.randn(x.shape, generator=g, dtype=torch.float64)
    (g2,) = torch.autograd.grad((g1 * u).sum(), x)
    (r2,) = torch.autograd.grad((r1 * u).sum(), x)
    torch.testing.assert_close(g2, r2)
    assert torch.autograd.gradgradcheck(lambda t: ours_op(t).pow(2), (x,))


def test_data_patches_are_unfold_in_task_major_order():
    g = torch.Generator().manual_seed(0)
    n_tasks, C = 3, 2
    x = torch.randn(4, n_tasks * C, 5, 6, generator=g)
    ours = data_patches(x, n_tasks)  # [n*H*W, B, C*9]
    ref = torch.nn.functional.unfold(x, 3, padding=1)  # [n, B*C*9, H*W]
    ref = ref.view(4, n_tasks, C * 9, 30).permute(0, 3, 1, 2).reshape(4 * 30, n_tasks, C * 9)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("size", [(6, 4), (7, 5)])
@pytest.mark.parametrize("chunked", [False, True])
def test_first_layer_with_fused_pooling_equals_pooling_its_output(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], chunked: bool
):
    """Chunks of images (and odd sizes, where pooling drops the last row/column) change
    nothing: values, gradients and second derivatives are those of pooling the full map."""
    import metaunsup.nets._cpu.first_layer as first_layer

    if chunked:  # 17 images in chunks of 2 (and a last one of 1)
        monkeypatch.setattr(first_layer, "POOL_CHUNK_ELEMENTS", 1)
        monkeypatch.setattr(first_layer, "POOL_CHUNK_MIN_IMAGES", 2)
    n_tasks = 2
    g = torch.Generator().manual_seed(1)
    dt = torch.float64
    x = torch.rand(17 if chunked else 3, n_tasks, *size, generator=g, dtype=dt)
    w = torch.randn(n_tasks, 3, 1, 3, 3, generator=g, dtype=dt, requires_grad=True)
    gamma = torch.randn(n_tasks, 3, generator=g, dtype=dt, requires_grad=True)
    beta = torch.randn(n_tasks, 3, generator=g, dtype=dt, requires_grad=True)

    def fused(w, gamma, beta):
        return task_conv_batch_norm_of_data(x, w, gamma, beta, n_tasks, pool_relu=True)

    def reference(w, gamma, beta):
        out = task_conv_batch_norm_of_data(x, w, gamma, beta, n_tasks)
        return torch.relu(torch.nn.functional.max_pool2d(out, 2))

    out = fused(w, gamma, beta)
    assert out.shape == (x.shape[0], n_tasks * 3, size[0] // 2, size[1] // 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference(w, gamma, beta))
    v = torch.randn(out.shape, generator=g, dtype=dt)
    grads = torch.autograd.grad((fused(w, gamma, beta) * v).sum(), (w, gamma, beta))
    want = torch.autograd.grad((reference(w, gamma, beta) * v).sum(), (w, gamma, beta))
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradgradcheck(fused, (w, gamma, beta))


def test_first_layer_gemm_differentiates_with_respect_to_its_input():
    g = torch.Generator().manual_seed(2)
    dt = torch.float64
    x = torch.rand(3, 2, 4, 5, generator=g, dtype=dt, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=dt)
    gamma, beta = torch.randn(3, generator=g, dtype=dt), torch.randn(3, generator=g, dtype=dt)

    def ours(x):
        return task_conv_batch_norm_of_data(x, w, gamma, beta, 1)

    torch.testing.assert_close(ours(x), task_batch_norm(task_conv2d(x, w, None, 1), gamma, beta, 1))
    assert torch.autograd.gradcheck(ours, (x,))


def test_cpu_kernels_off_runs_the_generic_path(monkeypatch: pytest.MonkeyPatch):
    """``cpu_kernels = False`` skips the CPU rewrites (here: the first layer's GEMM), with the
    same values."""
    import metaunsup.nets._cpu.conv4 as conv4_module

    net = Conv4(1, 3, hidden=4, image_size=8, norm="batch").double()
    x = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fast = net.functional_forward(net.params(), x)
    calls = []
    real = conv4_module.task_conv_batch_norm_of_data
    monkeypatch.setattr(
        conv4_module,
        "task_conv_batch_norm_of_data",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    net.cpu_kernels = False
    generic = net.functional_forward(net.params(), x)
    assert calls == []
    torch.testing.assert_close(generic, fast)
    net.cpu_kernels = True
    net.functional_forward(net.params(), x)
    assert calls == [1]


# --------------------------------------------------------------------------- fast == generic


def _derivatives(forward, params: dict[str, torch.Tensor], x: torch.Tensor, seed: int):
    """``forward(params, x)``, the gradient of a random projection of it with respect to the
    parameters, and that gradient's directional derivative (a Hessian-vector product)."""
    g = torch.Generator().manual_seed(seed)
    out = forward(params, x)
    weights = torch.randn(out.shape, generator=g, dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), list(params.values()), create_graph=True)
    probe = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params.values()]
    hvp_obj = sum((gr * v).sum() for gr, v in zip(grads, probe, strict=True))
    hvp = torch.autograd.grad(hvp_obj, list(params.values()), allow_unused=True)
    return out, grads, hvp


def _assert_same_derivatives(ours, reference) -> None:
    (out_a, g_a, h_a), (out_b, g_b, h_b) = ours, reference
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_a, g_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for a, b in zip(h_a, h_b, strict=True):
        if a is None or b is None:
            assert (a is None and b is None) or (a if a is not None else b).abs().max() == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def _params(net: Conv4, mode: str, seed: int) -> dict[str, torch.Tensor]:
    """Per-task perturbed float64 copies (``mode="mixed"``: every other entry shared)."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for i, (k, v) in enumerate(net.named_parameters()):
        lead = (B,) if mode == "batched" or i % 2 == 0 else ()
        noise = torch.randn(*lead, *v.shape, generator=g, dtype=torch.float64)
        params[k] = (v.detach().double() + 0.3 * noise).requires_grad_()
    return params


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("input_pool", [1, 2])
@pytest.mark.parametrize("path", ["grouped", "per-task"])
@pytest.mark.parametrize("mode", ["batched", "mixed"])
def test_fast_path_equals_the_generic_forward(norm: str, input_pool: int, path: str, mode: str):
    """Conv4 on CPU with ``cpu_kernels`` on against the generic forward, to second order.

    Blocks run on 8×8 down to 1×1 maps (the last without pooling: ReLU alone), so every rewrite
    is taken: the first layer's GEMM (batch norm) or channels-last convolution, the matrix
    batch norm, max-pool + ReLU, and ReLU."""
    torch.manual_seed(0)
    size = 8 * input_pool + input_pool - 1  # odd sizes: pooling drops a row and a column
    net = Conv4(2, 3, hidden=4, image_size=size, norm=norm, groups=2, input_pool=input_pool)
    net = net.double()
    assert [b.pool for b in net.blocks] == [True, True, True, False]
    net.large_task = 0 if path == "per-task" else 10**9
    x = torch.rand(B, 5, 2, size, size, generator=torch.Generator().manual_seed(1)).double()
    results = []
    for cpu_kernels in (True, False):
        net.cpu_kernels = cpu_kernels
        results.append(_derivatives(net.functional_forward, _params(net, mode, 2), x, seed=3))
    _assert_same_derivatives(*results)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_channels_last_convolution_equals_the_generic_one(batched: bool, bias: bool):
    g = torch.Generator().manual_seed(0)
    x = channels_last(torch.randn(4, B * 2, 5, 4, generator=g, dtype=torch.float64))
    lead = (B,) if batched else ()
    params = {"weight": torch.randn(*lead, 3, 2, 3, 3, generator=g, dtype=torch.float64)}
    if bias:
        params["bias"] = torch.randn(*lead, 3, generator=g, dtype=torch.float64)
    params = {k: v.requires_grad_() for k, v in params.items()}

    def forward(op):
        return lambda p, x: op(x, p["weight"], p.get("bias"), B) ** 2  # second order ≠ 0

    out = layers.task_conv2d(x, params["weight"], params.get("bias"), B)
    assert out.is_contiguous(memory_format=torch.channels_last)
    _assert_same_derivatives(
        _derivatives(forward(layers.task_conv2d), params, x, seed=1),
        _derivatives(forward(task_conv2d), params, x, seed=1),
    )


@pytest.mark.parametrize("batched", [False, True])
def test_channels_last_batch_norm_equals_the_generic_one(batched: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, B * 3, 5, 4, generator=g, dtype=torch.float64)
    lead = (B,) if batched else ()
    params = {
        "x": channels_last(x).requires_grad_(),
        "weight": torch.randn(*lead, 3, generator=g, dtype=torch.float64).requires_grad_(),
        "bias": torch.randn(*lead, 3, generator=g, dtype=torch.float64).requires_grad_(),
    }

    def forward(op):
        return lambda p, _: op(p["x"], p["weight"], p["bias"], B)

    assert forward(layers.task_batch_norm)(params, None).is_contiguous(
        memory_format=torch.channels_last
    )
    _assert_same_derivatives(
        _derivatives(forward(layers.task_batch_norm), params, x, seed=1),
        _derivatives(forward(task_batch_norm), params, x, seed=1),
    )
    no_affine = layers.task_batch_norm(params["x"], None, None, B)
    torch.testing.assert_close(no_affine, task_batch_norm(params["x"], None, None, B))


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_other_devices_never_take_the_cpu_kernels(monkeypatch: pytest.MonkeyPatch, norm: str):
    """The fast path is for CPU tensors only: on any other device (here ``meta``, which
    computes shapes only) Conv4 runs the generic forward, whatever ``cpu_kernels`` says."""
    import metaunsup.nets.conv4 as conv4_module

    def fail(*args, **kwargs):
        raise AssertionError("the CPU kernels ran on another device")

    monkeypatch.setattr(conv4_module, "conv4_features", fail)
    net = Conv4(hidden=4, image_size=8, norm=norm, groups=2)
    net.large_task = 0
    assert net.cpu_kernels
    with pytest.raises(AssertionError, match="another device"):  # the patch is in place
        net.functional_forward(net.params(), torch.rand(B, 5, 1, 8, 8))
    net = net.to("meta")
    out = net.functional_forward(net.params(), torch.empty(B, 5, 1, 8, 8, device="meta"))
    assert out.shape == (B, 5, 5) and out.device.type == "meta"
