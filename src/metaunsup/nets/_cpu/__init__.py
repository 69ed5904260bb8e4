"""Private CPU fast path of Conv4's task-batched forward (not part of the public API).

:class:`~metaunsup.nets.Conv4` calls :func:`conv4_features` in one place, for inputs on the CPU
when ``net.cpu_kernels`` is on; every other device, and ``cpu_kernels = False``, runs the
readable generic forward (:meth:`metaunsup.nets.Conv4.functional_features` over
:mod:`metaunsup.nets.functional`), which is the reference these kernels are tested against
(``tests/nets/test_cpu_kernels.py``: values and first and second derivatives). Kept apart from
the model as scikit-learn keeps ``_k_means_lloyd`` apart from ``KMeans``.

Modules, one rewrite each (their effect is measured by ``benchmarks/bench_meta_step.py`` and
``benchmarks/bench_test_time.py``):

* :mod:`~metaunsup.nets._cpu.conv4`: the dispatch (grouped or per-task) and the channels-last
  pass over the blocks;
* :mod:`~metaunsup.nets._cpu.layers`: channels-last task-batched convolution and batch norm;
* :mod:`~metaunsup.nets._cpu.first_layer`: first convolution + batch norm as one GEMM;
* :mod:`~metaunsup.nets._cpu.batchnorm`, :mod:`~metaunsup.nets._cpu.conv`,
  :mod:`~metaunsup.nets._cpu.pointwise`: closed-form double backwards (second-order MAML).
"""

from __future__ import annotations

from metaunsup.nets._cpu.conv4 import conv4_features

__all__ = ["conv4_features"]
