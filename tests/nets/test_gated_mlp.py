"""GatedMaskedMLP: label-free column descriptors, weights that start at one and learn, and
the masked MLP's handling of missing and absent columns."""

from __future__ import annotations

import torch

from metaunsup.nets import GatedMaskedMLP, build_net
from metaunsup.nets.gated_mlp import column_descriptors


def test_descriptors_tell_correlated_bimodal_columns_from_noise():
    g = torch.Generator().manual_seed(0)
    groups = (torch.arange(400) % 2).float()
    signal = groups[:, None] * 4 + torch.randn(400, 2, generator=g) * 0.5
    x = torch.cat([signal, torch.randn(400, 1, generator=g)], 1)
    x = torch.cat([x, torch.full((400, 1), float("nan"))], 1)  # an absent column
    d = column_descriptors(x.unsqueeze(0))[0]
    assert d.shape == (4, 6)
    assert d[:3, 0].eq(1).all() and d[3, 0] == 0  # present
    assert (d[:2, 2] < -1).all() and abs(float(d[2, 2])) < 0.5  # bimodal: negative kurtosis
    assert (d[:2, 5] > 0.9).all() and d[2, 5] < 0.2  # largest |corr| with the others


def test_weights_start_at_one_and_the_gate_gets_gradients():
    torch.manual_seed(0)
    net = GatedMaskedMLP(5, None, hidden=(8,))
    x = torch.randn(2, 30, 5)
    x[:, :, 4] = float("nan")
    x[0, 3, 1] = float("nan")
    w = net.column_weights(dict(net.named_parameters()), x)
    assert torch.allclose(w[:, :4], torch.ones(2, 4), atol=1e-4) and (w[:, 4] == 0).all()
    z = net.functional_features(dict(net.named_parameters()), x)
    assert z.shape == (2, 30, 5 + 8) and net.feature_dim == 13 and torch.isfinite(z).all()
    assert torch.equal(z[..., :5].isnan(), torch.zeros_like(z[..., :5], dtype=torch.bool))
    z.pow(2).sum().backward()
    assert net.gate[2].weight.grad is not None and net.gate[2].weight.grad.abs().sum() > 0
    assert torch.allclose(net(x[0]), z[0].detach(), atol=1e-6)
    assert isinstance(build_net(net.config()), GatedMaskedMLP)
