"""Inner loops whose memory stays flat: checkpointed second-order MAML and iMAML (float64).

The checkpointed loop must give the stored loop's meta-gradient (it recomputes the same steps
in the backward pass); iMAML's meta-gradient must be the gradient of the query loss at the
proximal solution (finite differences of the converged inner problem).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaunsup.learners.inner as inner
from metaunsup.errors import ConfigError
from metaunsup.learners import ANIL, IMAML, MAML, MetaSGD, build_learner
from metaunsup.learners.imaml import conjugate_gradient
from metaunsup.learners.maml import check_recomputable
from metaunsup.nets import MLP, Conv4
from tests.helpers.learners import random_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_conv(seed: int = 0) -> Conv4:
    torch.manual_seed(seed)
    return Conv4(1, 3, hidden=4, image_size=8, norm="batch", groups=2, depth=2).double()


def meta_grads(learner: nn.Module, b) -> list[torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    loss, _ = learner.meta_loss(b)
    loss.backward()
    return [loss.detach(), *(p.grad.clone() for p in learner.parameters())]


@pytest.mark.parametrize("steps", [1, 4, 7])
@pytest.mark.parametrize("cls", [MAML, MetaSGD])
def test_checkpointed_meta_gradient_equals_the_stored_one(cls, steps: int):
    stored = cls(tiny_conv(), inner_lr=0.3, inner_steps=steps)
    if cls is MetaSGD:  # learning rates that differ per entry, so their gradients matter
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in stored.lrs.values():
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=g, dtype=p.dtype))
    ckpt = cls(tiny_conv(1), inner_lr=0.3, inner_steps=steps, inner_checkpoint=True)
    ckpt.load_state_dict(stored.state_dict())
    b = random_batch(3, 3, 2, 2)
    for x, y in zip(meta_grads(stored, b), meta_grads(ckpt, b), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_checkpointed_loop_keeps_one_parameter_copy_per_segment(monkeypatch):
    """Seven steps run as segments of ⌈√7⌉ = 3, 3 and 1, each recomputed once in backward."""
    sizes = []
    backward = inner._CheckpointedSegment.backward

    def counting(ctx, *v):
        sizes.append(ctx.seg.steps)
        return backward(ctx, *v)

    monkeypatch.setattr(inner._CheckpointedSegment, "backward", staticmethod(counting))
    learner = MAML(tiny_conv(), inner_lr=0.3, inner_steps=7, inner_checkpoint=True)
    meta_grads(learner, random_batch(2, 3, 1, 2))
    assert sorted(sizes) == [1, 3, 3]


def test_recomputation_changes_no_state():
    """The backbones keep no running statistics: nothing for a recomputed step to update."""
    net = tiny_conv()
    assert list(net.buffers()) == []
    learner = MAML(net, inner_lr=0.3, inner_steps=3, inner_checkpoint=True)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    meta_grads(learner, random_batch(2, 3, 1, 2))
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())


def test_inner_checkpoint_refuses_what_it_cannot_recompute():
    with pytest.raises(ConfigError, match="inner_checkpoint"):
        ANIL(tiny_conv(), inner_checkpoint=True)
    stateful = nn.Sequential(nn.BatchNorm2d(3))  # running statistics: updated by every pass
    with pytest.raises(ConfigError, match="updated twice"):
        check_recomputable(stateful)
    check_recomputable(tiny_conv())


def test_inner_checkpoint_is_in_the_config_only_when_on():
    assert "inner_checkpoint" not in MAML(tiny_conv()).config()
    config = MAML(tiny_conv(), inner_checkpoint=True).config()
    assert config["inner_checkpoint"] is True
    assert build_learner(config).inner_checkpoint


# --------------------------------------------------------------------------- iMAML


def test_conjugate_gradient_solves_each_task_system():
    g = torch.Generator().manual_seed(0)
    B, n = 3, 6
    m = torch.randn(B, n, n, generator=g, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + n * torch.eye(n, dtype=torch.float64)  # SPD per task
    rhs = torch.randn(B, n, generator=g, dtype=torch.float64)
    (x,) = conjugate_gradient(lambda v: [torch.einsum("bij,bj->bi", a, v[0])], [rhs], steps=n)
    torch.testing.assert_close(x, torch.linalg.solve(a, rhs), rtol=1e-10, atol=1e-12)


def test_imaml_meta_gradient_is_the_gradient_at_the_proximal_solution():
    """With the inner problem solved (many steps) and CG run to the end, the surrogate's
    gradient equals finite differences of θ ↦ L_query(φ*(θ))."""
    torch.manual_seed(0)
    net = MLP(4, 3, hidden=(5,), norm="none").double()
    n_params = sum(p.numel() for p in net.parameters())
    learner = IMAML(net, inner_lr=0.1, inner_steps=400, lam=4.0, cg_steps=3 * n_params)
    b = random_batch(2, 3, 2, 3, example_shape=(4,), seed=1)
    loss, metrics = learner.meta_loss(b)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in learner.parameters()])

    def query_loss() -> float:
        with torch.no_grad():
            state = learner.adapt(b.support_x, b.support_y, differentiable=True, n_way=3)
            logits = learner.predict(state, b.query_x)
            return float(F.cross_entropy(logits.flatten(0, 1), b.query_y.flatten()))

    assert float(loss.detach()) == pytest.approx(query_loss(), abs=1e-12)
    assert metrics["loss"] == pytest.approx(float(loss.detach()))
    d = torch.randn(n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def shift(scale: float) -> None:
        with torch.no_grad():
            start = 0
            for p in learner.parameters():
                p.add_(d[start : start + p.numel()].view_as(p), alpha=scale)
                start += p.numel()

    eps = 1e-5
    shift(eps)
    plus = query_loss()
    shift(-2 * eps)
    minus = query_loss()
    shift(eps)
    assert float(grad @ d) == pytest.approx((plus - minus) / (2 * eps), rel=1e-7, abs=1e-10)


def test_imaml_on_conv4_trains_and_adapts_without_gradients():
    learner = IMAML(tiny_conv(), inner_lr=0.1, inner_steps=3, lam=2.0, cg_steps=2, test_lam=0.0)
    b = random_batch(2, 3, 1, 2)
    grads = meta_grads(learner, b)
    assert all(torch.isfinite(g).all() for g in grads) and float(grads[1].abs().sum()) > 0
    with torch.no_grad():
        logits = learner.fewshot_logits(b)
    assert logits.shape == (2, 6, 3) and not logits.requires_grad
    assert build_learner(learner.config()).config() == learner.config()
