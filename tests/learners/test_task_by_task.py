"""MAML's ``task_by_task`` CPU meta-step (one task's graph alive at a time) gives the
task-batched meta-loss and meta-gradient (float64), for every learner that inherits it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaunsup.learners import ANIL, MAML, MetaSGD
from metaunsup.learners.base import MetaLearner
from metaunsup.learners.maml import meta_loss_task_by_task
from metaunsup.nets import Conv4
from tests.helpers.learners import random_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grads(learner: nn.Module, loss: torch.Tensor) -> list[torch.Tensor | None]:
    learner.zero_grad(set_to_none=True)
    loss.backward()
    return [None if p.grad is None else p.grad.clone() for p in learner.parameters()]


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (MAML, {}),
        (MAML, {"first_order": True}),
        (MAML, {"inner_checkpoint": True}),
        (MetaSGD, {}),
        (ANIL, {}),
    ],
    ids=["maml", "fomaml", "maml-checkpointed", "metasgd", "anil"],
)
def test_task_by_task_equals_the_task_batched_meta_step(cls, options):
    torch.manual_seed(0)
    net = Conv4(1, 3, hidden=4, image_size=8, norm="batch", groups=2, depth=2).double()
    learner = cls(net, inner_lr=0.3, inner_steps=3, task_by_task=True, **options)
    batch = random_batch(n_tasks=4, n_way=3, k_shot=2, n_query=2)
    batched, batched_metrics = MetaLearner.meta_loss(learner, batch)  # all tasks in one pass
    reference = _grads(learner, batched)
    loss, metrics = learner.meta_loss(batch)  # the CPU path: task by task
    assert torch.equal(loss.detach(), meta_loss_task_by_task(learner, batch)[0].detach())
    found = _grads(learner, loss)
    assert float(loss.detach()) == pytest.approx(float(batched.detach()), rel=1e-12)
    assert metrics["acc"] == pytest.approx(batched_metrics["acc"])
    for got, want in zip(found, reference, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_task_by_task_is_a_recorded_setting_off_by_default():
    net = Conv4(1, 3, hidden=4, image_size=8, depth=2)
    assert "task_by_task" not in MAML(net).config()
    assert MAML(net, task_by_task=True).config()["task_by_task"] is True


def test_one_task_and_no_grad_take_the_plain_path():
    torch.manual_seed(0)
    net = Conv4(1, 3, hidden=4, image_size=8, depth=2).double()
    learner = MAML(net, inner_lr=0.3, task_by_task=True)
    one = random_batch(n_tasks=1, n_way=3, k_shot=1, n_query=2)
    loss, _ = learner.meta_loss(one)
    assert loss.grad_fn is not None
    with torch.no_grad():
        value, _ = learner.meta_loss(random_batch(n_tasks=3, n_way=3, k_shot=1, n_query=2))
    assert value.grad_fn is None
