"""One thread setting for everything a benchmark runs.

``pin_threads(n)`` sets torch's threads and, through ``threadpoolctl``, the BLAS and OpenMP
threads of NumPy, SciPy, scikit-learn and PyOD: the baselines' results can move with those
(UMAP + GMM on MNIST in ``tables_vs_tools.py`` does), so a run reproduces only at the same
setting.

Imported by the scripts in this folder as ``from _threads import pin_threads``.
"""

from __future__ import annotations

import torch


def pin_threads(threads: int) -> None:
    """Run torch and every BLAS / OpenMP pool of the process on ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
