"""SimCLR over a backbone (metaunsup.embed, run by metaunsup.training.pretraining)."""

from __future__ import annotations

import math

import pytest
import torch

from metaunsup.data import load
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.embed import ContrastiveViews, net_embeddings, nt_xent_loss
from metaunsup.errors import ConfigError, TrainingDivergedError
from metaunsup.nets import MLP, Conv4
from metaunsup.training.pretraining import final_loss, pretrain_contrastive

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> UnlabeledView:
    """256 of scikit-learn's 8×8 digits, without labels."""
    return UnlabeledView(load("digits", "train")).subset(torch.arange(256))


def conv(seed: int = 0, norm: str = "batch") -> Conv4:
    torch.manual_seed(seed)
    return Conv4(1, n_way=None, hidden=8, image_size=8, norm=norm, groups=2)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [math.exp(float(z[i] @ z[m]) / t) for m in range(2 * n) if m != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / sum(others))
    return torch.tensor(total / (2 * n))


def test_nt_xent_loss_values():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for t in (0.1, 0.5, 1.0):
        torch.testing.assert_close(
            nt_xent_loss(z1, z2, t), naive_nt_xent(z1, z2, t), rtol=1e-5, atol=1e-5
        )
    alike = torch.ones(5, 3)
    torch.testing.assert_close(nt_xent_loss(alike, alike, 0.5), torch.tensor(math.log(9.0)))
    eye = torch.eye(5)  # partners equal, strangers orthogonal: far below log(2N - 1)
    assert float(nt_xent_loss(eye, eye, 0.1)) < 0.01
    with pytest.raises(ConfigError):
        nt_xent_loss(torch.ones(1, 3), torch.ones(1, 3))


def test_contrastive_learns_and_is_deterministic(digits):
    kwargs = dict(steps=30, batch_size=64, lr=3e-3, proj_dim=16, seed=0)
    net = conv()
    losses = pretrain_contrastive(net, digits, **kwargs).losses
    assert len(losses) == 30
    assert mean(losses[-5:]) < mean(losses[:5]) - 0.3
    again = conv()
    assert pretrain_contrastive(again, digits, **kwargs).losses == losses
    assert same_weights(net, again)
    other = conv()
    pretrain_contrastive(other, digits, **{**kwargs, "seed": 1})
    assert not same_weights(net, other)


def test_contrastive_options():
    tables = torch.rand(32, 6)
    mlp = MLP(6, n_way=None, hidden=(4,))
    result = pretrain_contrastive(mlp, tables, steps=3, batch_size=8, proj_dim=2)  # "vector" aug
    assert result.steps == 3 and result.out_dir is None
    custom = Augment(noise_std=0.1)
    pretrain_contrastive(conv(), torch.rand(16, 1, 8, 8), augment=custom, steps=2, batch_size=8)
    with pytest.raises(ConfigError, match="non-identity"):
        pretrain_contrastive(mlp, tables, augment=Augment(), steps=2)
    with pytest.raises(ConfigError, match="temperature"):
        pretrain_contrastive(mlp, tables, temperature=0.0, steps=2)
    with pytest.raises(ConfigError, match="at least 2 examples"):
        ContrastiveViews(tables[:1], None, seed=0)


def test_global_rng_is_left_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain_contrastive(conv(seed=5), digits, steps=2, batch_size=8, proj_dim=2)
    torch.manual_seed(123)  # conv() seeds the global RNG on purpose; the training must not
    assert torch.equal(torch.rand(3), expected)


def test_interrupted_pretraining_resumes_to_identical_weights(digits, tmp_path, monkeypatch):
    kwargs = dict(steps=10, batch_size=32, proj_dim=4, seed=0, checkpoint_every=3)
    unbroken = conv()
    whole = pretrain_contrastive(unbroken, digits, out_dir=tmp_path / "a", **kwargs)

    calls = {"n": 0}
    original = ContrastiveViews.sample

    def stop_at_step_eight(self, batch_size):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, batch_size)

    monkeypatch.setattr(ContrastiveViews, "sample", stop_at_step_eight)
    broken = conv()
    with pytest.raises(KeyboardInterrupt):
        pretrain_contrastive(broken, digits, out_dir=tmp_path / "b", **kwargs)
    monkeypatch.setattr(ContrastiveViews, "sample", original)
    resumed = conv(seed=9)  # other initial weights: everything must come from the checkpoint
    again = pretrain_contrastive(resumed, digits, out_dir=tmp_path / "b", resume=True, **kwargs)
    assert again.steps == 10 and len(again.losses) == 4  # steps 7..10 ran after the resume
    assert same_weights(unbroken, resumed)
    assert final_loss(again) == final_loss(whole)


def test_a_diverging_loss_stops_with_the_setting_to_lower():
    x = torch.rand(16, 1, 8, 8)
    x[3] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step \d+; lower it"):
        pretrain_contrastive(conv(), x, steps=50, batch_size=16, remedy="lower it")


def test_features_do_not_depend_on_the_chunk_without_batch_statistics(digits):
    net = conv(norm="group")
    x = digits.float_x()
    whole = net_embeddings(net, x, chunk=1000)
    assert whole.shape == (256, 8 * 1 * 1)
    torch.testing.assert_close(net_embeddings(net, x, chunk=7), whole)
    torch.testing.assert_close(whole.norm(dim=1), torch.ones(256))
