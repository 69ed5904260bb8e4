"""Unsupervised embedding learners: autoencoder and SimCLR-style contrastive (metaunsup.embed)."""

from __future__ import annotations

import math

import pytest
import torch

from metaunsup.data import load
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.embed import (
    AutoEncoder,
    ConvEncoder,
    MLPEncoder,
    build_encoder,
    embed,
    fit_autoencoder,
    fit_contrastive,
    load_encoder,
    nt_xent_loss,
    save_encoder,
)
from metaunsup.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def digits() -> UnlabeledView:
    """256 of scikit-learn's 8×8 digits, without labels."""
    ds = load("digits", "train")
    return UnlabeledView(ds).subset(torch.arange(256))


def strokes(n: int = 64, size: int = 28, seed: int = 0) -> torch.Tensor:
    """``uint8 [n, 1, size, size]`` images of one bright bar each (varying position/direction)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    pos = torch.randint(4, size - 4, (n,), generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    for i in range(n):
        p = int(pos[i])
        if vertical[i]:
            x[i, 0, 3:-3, p - 1 : p + 2] = 255
        else:
            x[i, 0, p - 1 : p + 2, 3:-3] = 255
    return x


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- autoencoder


def test_autoencoder_mlp_learns_digits_and_is_deterministic(digits):
    kwargs = dict(dim=8, steps=40, batch_size=64, lr=3e-3, width=16, seed=0)
    enc = fit_autoencoder(digits, **kwargs)
    assert isinstance(enc, MLPEncoder) and not enc.training
    assert len(enc.losses) == 40
    assert mean(enc.losses[-5:]) < 0.8 * mean(enc.losses[:5])
    again = fit_autoencoder(digits, **kwargs)
    assert again.losses == enc.losses and same_weights(enc, again)
    other = fit_autoencoder(digits, **{**kwargs, "seed": 1})
    assert not same_weights(enc, other)


def test_autoencoder_conv_on_28x28():
    view = UnlabeledView(strokes())
    enc = fit_autoencoder(view, dim=8, steps=30, batch_size=16, lr=3e-3, width=8, seed=0)
    assert isinstance(enc, ConvEncoder)
    assert mean(enc.losses[-5:]) < 0.8 * mean(enc.losses[:5])
    z = embed(enc, view)
    assert z.shape == (64, 8) and z.dtype == torch.float32


def test_autoencoder_loss_and_arch_choices():
    tables = torch.randn(40, 5) * 3  # outside [0, 1]: "auto" picks MSE
    enc = fit_autoencoder(tables, dim=2, steps=3, batch_size=8)
    assert isinstance(enc, MLPEncoder)
    with pytest.raises(ConfigError):
        fit_autoencoder(tables, loss="l1")
    with pytest.raises(ConfigError):
        fit_autoencoder(tables, arch="conv")
    with pytest.raises(ConfigError):
        fit_autoencoder(torch.rand(10, 1, 8, 8), arch="conv")  # 8×8 too small to decode
    with pytest.raises(ConfigError):
        fit_autoencoder(tables, steps=0)
    with pytest.raises(ConfigError):
        fit_autoencoder(tables, lr=-1.0)
    model = AutoEncoder.build((1, 28, 28), dim=4, width=4)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)


def test_global_rng_is_left_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_autoencoder(digits, dim=2, steps=2, batch_size=8, width=4)
    fit_contrastive(digits, dim=2, proj_dim=2, steps=2, batch_size=8, width=4)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- contrastive


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
    kwargs = dict(dim=16, proj_dim=16, steps=30, batch_size=64, lr=3e-3, width=8, seed=0)
    enc = fit_contrastive(digits, **kwargs)
    assert isinstance(enc, ConvEncoder) and len(enc.losses) == 30
    assert mean(enc.losses[-5:]) < mean(enc.losses[:5]) - 0.3
    again = fit_contrastive(digits, **kwargs)
    assert again.losses == enc.losses and same_weights(enc, again)
    assert not same_weights(enc, fit_contrastive(digits, **{**kwargs, "seed": 1}))


def test_contrastive_options():
    tables = torch.rand(32, 6)
    enc = fit_contrastive(tables, dim=3, proj_dim=2, steps=3, batch_size=8, seed=0)
    assert isinstance(enc, MLPEncoder)  # tables: MLP, "vector" augmentation
    custom = Augment(noise_std=0.1)
    enc = fit_contrastive(torch.rand(16, 1, 8, 8), augment=custom, steps=2, batch_size=8, dim=3)
    assert enc.dim == 3
    with pytest.raises(ConfigError, match="non-identity"):
        fit_contrastive(tables, augment=Augment(), steps=2)
    with pytest.raises(ConfigError):
        fit_contrastive(tables, temperature=0.0, steps=2)


# ----------------------------------------------------------------------------- features, saving


def test_embed_is_batch_independent_and_restores_mode(digits):
    enc = fit_autoencoder(digits, dim=4, steps=3, batch_size=32, width=8)
    conv = fit_contrastive(digits, dim=4, proj_dim=4, steps=3, batch_size=32, width=8)
    for e in (enc, conv):
        e.train()
        whole = embed(e, digits, batch_size=1000)
        torch.testing.assert_close(embed(e, digits, batch_size=7), whole)
        assert e.training
        torch.testing.assert_close(embed(e, digits.x[:10]), whole[:10])


def test_save_and_load_encoder(tmp_path, digits):
    enc = fit_contrastive(digits, dim=4, proj_dim=4, steps=3, batch_size=32, width=8)
    path = save_encoder(tmp_path / "enc.safetensors", enc, {"trained_on": "digits"})
    back = load_encoder(path)
    assert back.config() == enc.config() and not back.training
    torch.testing.assert_close(embed(back, digits), embed(enc, digits))
    assert build_encoder(enc.config()).config() == enc.config()
    with pytest.raises(ConfigError):
        build_encoder({"name": "resnet"})
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "bad.safetensors")
