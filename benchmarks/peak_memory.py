"""Peak memory of a piece of work above what the process held before it (shared by benchmarks).

On the CPU: the Linux resident-set high-water mark (``VmHWM``), reset just before the work by
writing ``5`` to ``/proc/self/clear_refs``, minus the resident set (``VmRSS``) at that moment,
so the figure is what the work added at its peak, counted the same way for every library
(PyTorch's CPU tensors come from ``malloc``, which no Python-level tracer sees). On CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory
allocated before. Run each measurement in a fresh process: memory a previous piece of work
freed but the allocator kept resident would otherwise be reused unseen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MB = 1024 * 1024


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def measure(work: Callable[[], Any], device: str = "cpu") -> tuple[float, float, Any]:
    """``(peak MB above the start, seconds, result)`` of ``work()``."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        result = work()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return (torch.cuda.max_memory_allocated() - before) / MB, seconds, result
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    t0 = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - t0
    return (_status("VmHWM") - before) / MB, seconds, result


def resident_mb() -> float:
    """The process's resident set now, in MB."""
    return _status("VmRSS") / MB
