"""The pairwise loss's log-space matrix product equals logsumexp, values and gradients, also
where its float64 sums underflow and the exact fallback takes over."""

from __future__ import annotations

import pytest
import torch

from metaunsup.learners.pairwise import log_pair_sums


@pytest.mark.parametrize("scale", [1.0, 50.0, 2000.0])
def test_log_pair_sums_equals_logsumexp(scale: float):
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(2, 7, 4, generator=g, dtype=torch.float64) * scale).log_softmax(-1)
    b = (torch.randn(2, 6, 4, generator=g, dtype=torch.float64) * scale).log_softmax(-1)
    a.requires_grad_()
    b.requires_grad_()
    reference = torch.logsumexp(a.unsqueeze(2) + b.unsqueeze(1), -1)
    got = log_pair_sums(a, b)
    if scale > 1000:  # some pairs are below 1e-280: the fallback path is taken
        assert float(reference.min()) < -700
    torch.testing.assert_close(got, reference, rtol=1e-13, atol=1e-12)
    w = torch.randn(reference.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad((reference * w).sum(), (a, b))
    for x, y in zip(torch.autograd.grad((got * w).sum(), (a, b)), expected, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_log_pair_sums_keeps_the_input_dtype():
    a = torch.randn(1, 3, 2).log_softmax(-1)
    assert log_pair_sums(a, a).dtype == torch.float32
