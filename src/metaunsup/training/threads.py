"""How many threads a command uses when the user does not say: the CPUs that are idle now.

PyTorch's own default is one intra-op thread per physical core. On a machine where other
processes keep cores busy (a laptop, a CI runner, a shared server) that loses badly: every
parallel operation ends at a barrier that waits for its slowest thread, and a thread that
shares its core with a busy process is descheduled for a whole time slice at a time, so a run
of many small operations (the inner loops, soft k-means, small batches) spends most of its time
waiting (``benchmarks/bench_threads.py`` measures it). :func:`default_threads` therefore counts
the CPUs this process may run on that were idle over a short sample of ``/proc/stat`` (the load
average where that file does not exist), rounds, and uses that many, at least one and at most
PyTorch's default. Inter-op parallelism (independent operators run concurrently) is set to one
thread: the learners run one operator after another, and a second pool would only compete with
the intra-op threads.

The choice is made once per process, when the first command starts; ``--threads N``
(``train.threads``) overrides it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time

import torch

__all__ = ["apply_threads", "default_threads", "idle_cpus"]

log = logging.getLogger(__name__)

#: Seconds over which ``/proc/stat`` is sampled.
SAMPLE_SECONDS = 0.1


def _cpu_times() -> tuple[float, float] | None:
    """``(idle, total)`` jiffies of all CPUs from ``/proc/stat`` (``None`` where unreadable)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return idle, sum(values[:8])  # user..steal (guest time is counted in user already)


def idle_cpus(sample: float = SAMPLE_SECONDS) -> float | None:
    """How many of the machine's CPUs were idle over the last ``sample`` seconds (from
    ``/proc/stat``; else from the 1-minute load average); ``None`` when neither is available."""
    n = os.cpu_count() or 1
    first = _cpu_times()
    if first is not None:
        time.sleep(sample)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            return n * (second[0] - first[0]) / (second[1] - first[1])
    try:
        return max(0.0, n - os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _allowed_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def default_threads() -> int:
    """Intra-op threads for a command given none: the idle CPUs this process may use (rounded),
    at least 1, at most PyTorch's own default (the physical cores)."""
    ceiling = min(torch.get_num_threads(), _allowed_cpus())
    idle = idle_cpus()
    if idle is None:
        return ceiling
    return max(1, min(ceiling, math.floor(idle + 0.5)))


def apply_threads(threads: int | None) -> int:
    """Set torch's threads: ``threads``, or :func:`default_threads` when ``None`` or ``0``;
    one inter-op thread. Returns the intra-op threads set."""
    n = int(threads) if threads else default_threads()
    torch.set_num_threads(n)
    # RuntimeError: inter-op work has started already (it can be set once only)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    log.info("torch threads: %d%s", n, "" if threads else " (idle CPUs)")
    return n
