"""Everything that needs a CUDA device; each test skips with the reason on a machine without
one (``benchmarks/gpu.sh`` runs this file on a GPU machine)."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.datasets import load_digits

from metaunsup import MetaKMeans
from metaunsup.app.cli import main
from metaunsup.checkpoint import read_checkpoint
from metaunsup.learners import IMAML, MAML
from metaunsup.metrics import clustering_accuracy
from metaunsup.nets import Conv4
from metaunsup.nets import conv4 as conv4_module
from tests.helpers.learners import random_batch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)"
)

TINY = """
name = "tiny-cuda"
[data]
dataset = "digits"
split = "train"
val_fraction = 0.3
[task]
kind = "fewshot"
n_way = 3
k_shot = 1
n_query = 3
[learner]
name = "{learner}"
{extra}
[learner.net]
name = "conv4"
hidden = 8
depth = 3
[train]
steps = 4
meta_batch = 2
val_every = 2
val_tasks = 4
precision = "{precision}"
"""


def _train(tmp_path, learner="maml", extra="inner_steps = 1", precision="float32") -> dict:
    config = tmp_path / "run.toml"
    config.write_text(TINY.format(learner=learner, extra=extra, precision=precision))
    out = tmp_path / "run"
    status = main(["train", str(config), "--out", str(out), "--device", "cuda", "--quiet"])
    assert status == 0
    tensors, meta = read_checkpoint(out / "last.safetensors")
    assert meta["step"] == 4
    return tensors


def test_train_on_cuda_writes_a_checkpoint(tmp_path):
    tensors = _train(tmp_path)
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


@pytest.mark.parametrize(
    ("learner", "extra"),
    [("protonet", ""), ("maml", "inner_steps = 1\nfirst_order = true")],
)
def test_bf16_autocast_trains_where_it_is_safe(tmp_path, learner, extra):
    _train(tmp_path, learner, extra, precision="bf16")


def test_the_cpu_kernels_are_never_taken_on_cuda(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the CPU kernels ran on a CUDA tensor")

    monkeypatch.setattr(conv4_module, "conv4_features", refuse)
    net = Conv4(1, 5, hidden=8, image_size=28).cuda()
    out = net.functional_forward(net.params(), torch.rand(3, 5, 1, 28, 28, device="cuda"))
    assert out.shape == (3, 5, 5) and out.device.type == "cuda"


def test_flat_memory_meta_gradients_on_cuda_equal_the_stored_ones():
    torch.manual_seed(0)
    net = Conv4(1, 3, hidden=4, image_size=8, depth=2).double().cuda()
    b = random_batch(3, 3, 2, 2).to("cuda")
    stored = MAML(net, inner_lr=0.3, inner_steps=4)
    ckpt = MAML(Conv4(1, 3, hidden=4, image_size=8, depth=2), 0.3, 4, inner_checkpoint=True)
    ckpt = ckpt.double().cuda()
    ckpt.load_state_dict(stored.state_dict())
    grads = []
    for learner in (stored, ckpt):
        learner.meta_loss(b)[0].backward()
        grads.append([p.grad for p in learner.parameters()])
    for a, c in zip(*grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    imaml = IMAML(Conv4(1, 3, hidden=4, image_size=8, depth=2), 0.1, 3).double().cuda()
    imaml.meta_loss(b)[0].backward()
    assert all(torch.isfinite(p.grad).all() for p in imaml.parameters())


def test_evaluate_on_cuda_matches_the_cpu(tmp_path):
    reports = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        args = ["evaluate", "--dataset", "digits", "--checkpoint", "digits", "--tasks", "40"]
        assert main([*args, "--device", device, "--json", str(out), "--quiet"]) == 0
        reports[device] = json.loads(out.read_text())["results"]
    for cpu, gpu in zip(reports["cpu"], reports["cuda"], strict=True):
        assert abs(cpu["acc"]["mean"] - gpu["acc"]["mean"]) < 0.02


def test_estimator_on_cuda():
    X, _ = load_digits(return_X_y=True)
    cpu = MetaKMeans(10, checkpoint="digits", random_state=0).fit(X)
    gpu = MetaKMeans(10, checkpoint="digits", random_state=0, device="cuda").fit(X)
    assert clustering_accuracy(cpu.labels_, gpu.labels_) > 0.95  # the same partition
    trained = MetaKMeans(10, meta_steps=5, random_state=0, device="cuda").fit(X[:300])
    assert trained.labels_.shape == (300,)
