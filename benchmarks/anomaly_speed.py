"""Scoring one MT-MNIST one-class task against PyOD's Isolation Forest, in the same run.

Issue 15's speed goal: scoring a task with ``K = 10`` normal images and 1000 query images
(500 normal, 500 anomalous; MNIST test, ``AnomalyTaskSampler(seed=0)``) costs fewer
milliseconds than PyOD's ``IForest`` fit on the support plus scoring (and flagging) the query,
one thread. Timed per task, interleaved over ``--tasks`` tasks and ``--repeats`` rounds;
medians reported:

* each checkpoint given (packaged name or ``.safetensors`` path): the method the evaluation
  runs (:class:`~metaunsup.evaluation.anomaly.ScorerMethod`): scores, the calibration's
  leave-one-out scores and the flags at ``fpr = 0.05``;
* ``pyod-iforest``: ``IForest(contamination=0.05)`` fit on the 10 flattened support images,
  ``decision_function`` and ``predict`` on the 1000 queries (PyOD's defaults: 100 trees);
* ``pyod-iforest (score only)``: the same fit and ``decision_function`` only.

The AUROC of each is printed beside it. Loading and sampling are not timed; the machine may be
shared, so only ratios within one run mean anything.

Run: ``.venv/bin/python benchmarks/anomaly_speed.py [--checkpoints mnist-anomaly ...]
[--tasks 20] [--repeats 3] [--threads 1] [--json PATH]``; prints a markdown table and writes
JSON (default ``benchmarks/results/anomaly_speed.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # scikit-learn's and numba's thread pools
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import torch

from metaunsup.data import load
from metaunsup.evaluation.anomaly import ScorerMethod, anomaly_scores
from metaunsup.fileio import atomic_write_json
from metaunsup.learners import load_learner
from metaunsup.tasks.anomaly import AnomalyTaskSampler
from metaunsup.tasks.batch import TaskBatch

RESULTS = Path(__file__).resolve().parent / "results"


def _iforest(batch: TaskBatch, predict: bool) -> torch.Tensor:
    from pyod.models.iforest import IForest

    s = batch.support_x[0].reshape(batch.support_x.shape[1], -1).numpy()
    q = batch.query_x[0].reshape(batch.query_x.shape[1], -1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = IForest(contamination=0.05, random_state=0).fit(s)
        scores = det.decision_function(q)
        flags = det.predict(q) if predict else np.zeros_like(scores)
    return torch.from_numpy(np.stack([scores, flags], -1)).unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", default=["mnist-anomaly"])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=None)
    parser.add_argument("--json", type=Path, default=RESULTS / "anomaly_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = load("mnist", "test", root=args.root)
    tasks = list(AnomalyTaskSampler(test, 10, 500, seed=0).batches(args.tasks, 1))
    methods: dict[str, Callable[[TaskBatch], torch.Tensor]] = {}
    for name in args.checkpoints:
        method = ScorerMethod(name, load_learner(name))
        methods[name] = lambda b, m=method: m.run(b, 0)
    methods["pyod-iforest"] = lambda b: _iforest(b, True)
    methods["pyod-iforest (score only)"] = lambda b: _iforest(b, False)
    for fn in methods.values():  # warm-up (numba, first calls)
        fn(tasks[0])
    times: dict[str, list[float]] = {name: [] for name in methods}
    auroc: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for batch in tasks:
            for name, fn in methods.items():
                start = time.perf_counter()
                out = fn(batch)
                times[name].append(1000 * (time.perf_counter() - start))
                auroc[name].append(float(anomaly_scores(batch.query_y, out)["auroc"][0]))
    forest = statistics.median(times["pyod-iforest"])
    rows = []
    print("| method | ms per task (median) | × IForest fit + score | AUROC |")
    print("|---|---|---|---|")
    for name in methods:
        ms = statistics.median(times[name])
        rows.append({"method": name, "ms_median": ms, "ratio_to_iforest": ms / forest,
                     "auroc": float(np.mean(auroc[name]))})  # fmt: skip
        print(f"| {name} | {ms:.1f} | {ms / forest:.2f} | {np.mean(auroc[name]):.3f} |")
    atomic_write_json(args.json, {
        "command": "python benchmarks/anomaly_speed.py --checkpoints "
                   f"{' '.join(args.checkpoints)} --tasks {args.tasks} --repeats {args.repeats} "
                   f"--threads {args.threads}",
        "task": {"k_shot": 10, "queries": 1000, "dataset": "mnist/test"},
        "results": rows,
        "environment": {"date": _dt.date.today().isoformat(), "torch": torch.__version__,
                        "threads": args.threads, "machine": platform.machine(),
                        "note": "shared CPU: compare ratios within this run only"},
    })  # fmt: skip


if __name__ == "__main__":
    main()
