"""The default thread count: the idle CPUs, at least one, at most PyTorch's own default."""

from __future__ import annotations

import os

import torch

from metaunsup.training import threads


def test_idle_cpus_is_between_none_and_all():
    idle = threads.idle_cpus(sample=0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9


def test_default_threads_follows_the_idle_cpus(monkeypatch):
    threads.default_threads.cache_clear()
    ceiling = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "idle_cpus", lambda sample=0.1: 0.2)
        assert threads.default_threads() == 1  # every CPU busy: one thread, never zero
        threads.default_threads.cache_clear()
        monkeypatch.setattr(threads, "idle_cpus", lambda sample=0.1: 1000.0)
        assert threads.default_threads() == min(ceiling, threads._allowed_cpus())
        threads.default_threads.cache_clear()
        monkeypatch.setattr(threads, "idle_cpus", lambda sample=0.1: None)
        assert threads.default_threads() == min(ceiling, threads._allowed_cpus())
    finally:
        threads.default_threads.cache_clear()


def test_apply_threads_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1) == 1 and torch.get_num_threads() == 1
        chosen = threads.apply_threads(None)
        assert chosen == torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(before)
