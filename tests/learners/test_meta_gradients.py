"""Exactness of the meta-gradients (float64, tiny networks).

References are independent of the library's task-batched code: finite differences of the
meta-loss, and hand-written per-task loops over the *ordinary* module forward
(``torch.func.functional_call``), with plain ``torch.autograd.grad`` inner steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaunsup.learners import ANIL, MAML, MetaLearner, MetaSGD, ProtoNet, Reptile
from metaunsup.learners.metasgd import lr_key
from metaunsup.nets import MLP, Conv4, FunctionalNet
from metaunsup.tasks.batch import TaskBatch
from tests.helpers.learners import random_batch

LR = 0.3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_conv(norm: str = "batch", n_way: int | None = 3, seed: int = 0) -> Conv4:
    torch.manual_seed(seed)
    return Conv4(1, n_way, hidden=4, image_size=8, norm=norm, groups=2, depth=2).double()


def batch(seed: int = 0) -> TaskBatch:
    return random_batch(n_tasks=3, n_way=3, k_shot=2, n_query=2, seed=seed)


def grads_of(learner: MetaLearner, b: TaskBatch) -> list[torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    loss, _ = learner.meta_loss(b)
    loss.backward()
    return [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in learner.parameters()
    ]


def check_against_finite_differences(learner: MetaLearner, b: TaskBatch) -> None:
    """For every parameter tensor, a random direction: ``∇f·d`` vs a central difference.

    ReLU and max-pooling make the meta-loss piecewise smooth; a kink within ``±eps`` of the
    point spoils one difference quotient, so a few step sizes are tried and one must agree
    to 1e-6 (a wrong gradient agrees with none).
    """
    grads = grads_of(learner, b)
    g = torch.Generator().manual_seed(7)
    for (name, p), grad in zip(learner.named_parameters(), grads, strict=True):
        d = torch.randn(p.shape, generator=g, dtype=p.dtype)
        analytic = float((grad * d).sum())
        quotients = []
        for eps in (1e-6, 1e-7, 3e-8):
            with torch.no_grad():
                p.add_(d, alpha=eps)
                plus = float(learner.meta_loss(b)[0])
                p.add_(d, alpha=-2 * eps)
                minus = float(learner.meta_loss(b)[0])
                p.add_(d, alpha=eps)
            quotients.append((plus - minus) / (2 * eps))
            if abs(quotients[-1] - analytic) <= 1e-6 * abs(analytic) + 1e-8:
                break
        else:
            raise AssertionError(f"{name}: analytic {analytic!r}, differences {quotients!r}")


def reference_maml_loss(
    net: FunctionalNet,
    b: TaskBatch,
    steps: int,
    first_order: bool,
    lrs: dict[str, torch.Tensor] | float = LR,
    adapt: tuple[str, ...] | None = None,
) -> torch.Tensor:
    """MAML's meta-loss by hand: a Python loop over tasks and inner steps, ordinary forward."""
    theta = dict(net.named_parameters())
    names = list(theta) if adapt is None else list(adapt)
    total = 0.0
    for t in range(b.n_tasks):
        phi = dict(theta)
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(net, phi, (b.support_x[t],)), b.support_y[t])
            grads = torch.autograd.grad(loss, [phi[k] for k in names], create_graph=not first_order)
            for k, gk in zip(names, grads, strict=True):
                step = lrs[k] * gk if isinstance(lrs, dict) else lrs * gk
                phi[k] = phi[k] - step
        total = total + F.cross_entropy(functional_call(net, phi, (b.query_x[t],)), b.query_y[t])
    return total / b.n_tasks


def reference_grads(net: FunctionalNet, loss: torch.Tensor, extra=()) -> list[torch.Tensor]:
    params = [*net.parameters(), *extra]
    return list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))


def assert_all_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- MAML


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_maml_second_order_matches_finite_differences(steps: int, norm: str):
    learner = MAML(tiny_conv(norm), inner_lr=LR, inner_steps=steps)
    check_against_finite_differences(learner, batch())


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("path", ["grouped", "per-task"])
def test_batched_maml_gradient_equals_loop_over_tasks(steps: int, norm: str, path: str):
    net = tiny_conv(norm)
    net.large_task = 10**9 if path == "grouped" else 0
    learner = MAML(net, inner_lr=LR, inner_steps=steps)
    b = batch()
    ours = grads_of(learner, b)
    ref = reference_grads(net, reference_maml_loss(net, b, steps, first_order=False))
    assert_all_close(ours, ref)


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_maml_equals_detached_inner_gradients(steps: int):
    net = tiny_conv("batch")
    learner = MAML(net, inner_lr=LR, inner_steps=steps, first_order=True)
    b = batch(1)
    ours = grads_of(learner, b)
    ref = reference_grads(net, reference_maml_loss(net, b, steps, first_order=True))
    assert_all_close(ours, ref)
    # ... and the flag matters: the second-order gradient is a different vector.
    second = grads_of(MAML(net, inner_lr=LR, inner_steps=steps), b)
    diff = sum(float((x - y).norm()) for x, y in zip(ours, second, strict=True))
    assert diff > 1e-4


def test_first_order_maml_with_one_step_is_the_query_gradient_at_phi():
    net = MLP(12, n_way=3, hidden=(5,), norm="batch").double()
    learner = MAML(net, inner_lr=LR, inner_steps=1, first_order=True)
    b = random_batch(2, 3, 2, 2, example_shape=(12,), seed=3)
    ours = grads_of(learner, b)
    state = learner.adapt(b.support_x, b.support_y, steps=1)  # detached φ, [B, ...]
    expected = [torch.zeros_like(p) for p in net.parameters()]
    for t in range(b.n_tasks):
        phi = {k: v[t].clone().requires_grad_() for k, v in state.params.items()}
        loss = F.cross_entropy(functional_call(net, phi, (b.query_x[t],)), b.query_y[t])
        for e, gr in zip(expected, torch.autograd.grad(loss, list(phi.values())), strict=True):
            e += gr / b.n_tasks
    assert_all_close(ours, expected)


def test_mlp_maml_second_order_matches_finite_differences():
    net = MLP(12, n_way=3, hidden=(6, 4), norm="batch").double()
    learner = MAML(net, inner_lr=LR, inner_steps=2)
    check_against_finite_differences(learner, random_batch(2, 3, 2, 2, example_shape=(12,)))


# --------------------------------------------------------------------------- Meta-SGD


def perturbed_metasgd(first_order: bool = False, steps: int = 1) -> MetaSGD:
    learner = MetaSGD(tiny_conv("batch"), inner_lr=LR, inner_steps=steps, first_order=first_order)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # learning rates that differ per entry, as after meta-training
        for p in learner.lrs.values():
            p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=g, dtype=p.dtype))
    return learner


@pytest.mark.parametrize("steps", [1, 2])
def test_metasgd_gradients_match_finite_differences(steps: int):
    check_against_finite_differences(perturbed_metasgd(steps=steps), batch(2))


@pytest.mark.parametrize("first_order", [False, True])
def test_metasgd_gradients_equal_loop_over_tasks(first_order: bool):
    learner = perturbed_metasgd(first_order, steps=2)
    net, b = learner.net, batch(3)
    ours = grads_of(learner, b)
    lrs = {k: learner.lrs[lr_key(k)] for k, _ in net.named_parameters()}
    loss = reference_maml_loss(net, b, 2, first_order, lrs=lrs)
    ref = reference_grads(net, loss, extra=list(learner.lrs.values()))
    assert_all_close(ours, ref)
    assert all(float(g.abs().sum()) > 0 for g in ours[len(list(net.parameters())) :])


# --------------------------------------------------------------------------- ANIL


def test_anil_second_order_matches_finite_differences():
    check_against_finite_differences(ANIL(tiny_conv("batch"), inner_lr=LR, inner_steps=2), batch())


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_equals_head_only_maml_loop(first_order: bool):
    net = tiny_conv("group")
    learner = ANIL(net, inner_lr=LR, inner_steps=3, first_order=first_order)
    b = batch(4)
    ours = grads_of(learner, b)
    loss = reference_maml_loss(net, b, 3, first_order, adapt=net.head_names)
    assert_all_close(ours, reference_grads(net, loss))


# --------------------------------------------------------------------------- Reptile


def test_reptile_surrogate_gradient_is_theta_minus_mean_phi():
    net = tiny_conv("batch")
    learner = Reptile(net, inner_lr=0.1, inner_steps=3, inner_optimizer="sgd")
    b = batch()
    grads = grads_of(learner, b)
    state = learner.adapt(b.support_x, b.support_y, steps=3)
    for (k, theta), grad in zip(net.named_parameters(), grads, strict=True):
        torch.testing.assert_close(grad, theta.detach() - state.params[k].mean(0))


def _reference_reptile_phi(net: FunctionalNet, b: TaskBatch, steps: int, make_opt) -> list:
    """Per task: a deep copy of the module trained with a torch.optim optimiser."""
    out = []
    for t in range(b.n_tasks):
        model = copy.deepcopy(net)
        opt = make_opt(model.parameters())
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(b.support_x[t]), b.support_y[t]).backward()
            opt.step()
        out.append(dict(model.named_parameters()))
    return out


@pytest.mark.parametrize(
    ("optimizer", "lr", "make_opt"),
    [
        ("sgd", 0.2, lambda p: torch.optim.SGD(p, lr=0.2)),
        ("adam", 0.01, lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.0, 0.999), eps=1e-8)),
    ],
)
def test_reptile_inner_loop_matches_torch_optimisers(optimizer, lr, make_opt):
    net = tiny_conv("batch")
    learner = Reptile(net, inner_lr=lr, inner_steps=4, inner_optimizer=optimizer)
    b = batch(1)
    state = learner.adapt(b.support_x, b.support_y, steps=4)
    for t, ref in enumerate(_reference_reptile_phi(net, b, 4, make_opt)):
        for k, v in ref.items():
            torch.testing.assert_close(state.params[k][t], v.detach(), rtol=1e-9, atol=1e-12)


def test_reptile_with_sgd_outer_step_is_the_paper_update():
    net = tiny_conv("batch")
    learner = Reptile(net, inner_lr=0.1, inner_steps=2, inner_optimizer="sgd")
    b = batch(2)
    theta = {k: v.detach().clone() for k, v in net.named_parameters()}
    state = learner.adapt(b.support_x, b.support_y, steps=2)
    eps = 0.25
    opt = torch.optim.SGD(learner.parameters(), lr=eps)
    opt.zero_grad()
    learner.meta_loss(b)[0].backward()
    opt.step()
    for k, v in net.named_parameters():
        expected = theta[k] + eps * (state.params[k].mean(0) - theta[k])
        torch.testing.assert_close(v.detach(), expected)


# --------------------------------------------------------------------------- ProtoNet


def test_protonet_loss_and_gradient_match_explicit_loops():
    net = tiny_conv("batch", n_way=None)
    learner = ProtoNet(net)
    b = batch(6)
    ours_loss, metrics = learner.meta_loss(b)
    ours = reference_grads(net, ours_loss)

    total = 0.0
    n_way = b.n_way
    for t in range(b.n_tasks):
        s_emb = net(b.support_x[t])
        q_emb = net(b.query_x[t])
        protos = []
        for k in range(n_way):
            members = [s_emb[i] for i in range(s_emb.shape[0]) if int(b.support_y[t, i]) == k]
            protos.append(sum(members) / len(members))
        for j in range(q_emb.shape[0]):
            logits = []
            for k in range(n_way):
                dist = sum((q_emb[j, d] - protos[k][d]) ** 2 for d in range(q_emb.shape[1]))
                logits.append(-dist)
            logits = torch.stack(logits)
            target = int(b.query_y[t, j])
            total = total - (logits[target] - torch.logsumexp(logits, 0))
    ref_loss = total / (b.n_tasks * b.query_y.shape[1])
    torch.testing.assert_close(ours_loss, ref_loss, rtol=1e-10, atol=1e-12)
    assert metrics["loss"] == pytest.approx(float(ref_loss.detach()))
    assert_all_close(ours, reference_grads(net, ref_loss))
