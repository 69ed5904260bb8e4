"""Where the test time of Meta-K-means goes, against scikit-learn K-means in the same run.

Protocol A's speed goal: cluster a 10 × 20 MNIST task in fewer milliseconds than scikit-learn's
``KMeans(n_clusters=10, n_init=10)`` on the pixels. ``--tasks`` test tasks
(``ClusteringTaskSampler(seed=0)``, the experiment's first tasks) are clustered by each
checkpoint given (packaged names or ``.safetensors`` paths) and by the scikit-learn loop
(``random_state`` = task index), interleaved ``--repeats`` times on ``--threads`` threads;
medians are reported. For each checkpoint the time is split into

* ``embed``: the network on the 200 images (chunks of ``eval_chunk`` tasks, as ``cluster`` runs);
* ``soft k-means``: the learned soft k-means from ``restarts`` seeds, ``test_iter`` iterations;
* ``total``: ``learner.cluster`` end to end (what the experiment times);
* ``soft k-means, previous kernels``: the same clustering with the distance and softmax
  kernels metaunsup used before 2026-11-21 (squared distances from the ``[B, n, K, D]``
  differences, ``torch.softmax`` over the 10 clusters), patched in for the measurement.

Accuracy (Hungarian) of each is printed beside it, so a faster path that clusters differently
would show. Loading and sampling are not timed.

Run: ``.venv/bin/python benchmarks/bench_test_time.py [--checkpoints mnist RUN/best.safetensors]
[--tasks 128] [--repeats 5] [--threads 1] [--root DATA_DIR] [--json PATH]``; prints a markdown
table and writes JSON (default ``benchmarks/results/bench_test_time.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metaunsup.cluster import task_seeds
from metaunsup.data import load
from metaunsup.errors import MetaUnsupError
from metaunsup.fileio import atomic_write_json
from metaunsup.learners import load_learner
from metaunsup.metrics import clustering_accuracy
from metaunsup.tasks import ClusteringTaskSampler

# the module, not the function ``metaunsup.cluster.soft_kmeans`` that shadows it as an attribute
clustering = importlib.import_module("metaunsup.cluster.soft_kmeans")

RESULTS = Path(__file__).resolve().parent / "results"
K = 10


def _previous_sqdist(z: Tensor, c: Tensor, scale: Tensor) -> Tensor:
    return (z.unsqueeze(2) - c.unsqueeze(1)).pow(2).sum(-1) / scale.view(-1, 1, 1)


@contextlib.contextmanager
def previous_kernels() -> Iterator[None]:
    """Swap in the earlier distance and softmax kernels of ``metaunsup.cluster.soft_kmeans``."""
    names = ("relative_sqdist", "softmax_clusters", "log_softmax_clusters")
    saved = {name: getattr(clustering, name) for name in names}
    clustering.relative_sqdist = _previous_sqdist
    clustering.softmax_clusters = lambda logits: torch.softmax(logits, dim=-1)
    clustering.log_softmax_clusters = lambda logits: torch.log_softmax(logits, dim=-1)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(clustering, name, fn)


def chunks(x: Tensor, size: int) -> list[Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def stages(learner, x: Tensor) -> dict[str, Callable[[], Tensor]]:
    """Callables for each timed stage of one checkpoint; each returns labels or embeddings."""
    params = learner.meta_params(False)
    seeds = task_seeds(0, len(x))
    size = learner.eval_chunk
    with torch.no_grad():
        z = torch.cat([learner.embed(c, params) for c in chunks(x, size)])

    def embed() -> Tensor:
        with torch.no_grad():
            return torch.cat([learner.embed(c, params) for c in chunks(x, size)])

    def soft_kmeans() -> Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    learner.finish(c, K, learner.test_iter, seeds[i : i + size])
                    for i, c in zip(range(0, len(z), size), chunks(z, size), strict=True)
                ]
            )

    def soft_kmeans_previous() -> Tensor:
        with previous_kernels():
            return soft_kmeans()

    def total() -> Tensor:
        return learner.cluster(x, K, seed=0)

    return {
        "embed": embed,
        "soft k-means": soft_kmeans,
        "soft k-means, previous kernels": soft_kmeans_previous,
        "total": total,
    }


def sklearn_loop(x: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    def run() -> np.ndarray:
        with threadpool_limits(limits=threads):
            return np.stack(
                [KMeans(K, n_init=10, random_state=i).fit(task).labels_ for i, task in enumerate(x)]
            )

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", default=["mnist"])
    parser.add_argument("--tasks", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=None, help="dataset folder (default: METAUNSUP_DATA)")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_test_time.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        test = load("mnist", "test", root=args.root)
        learners = {name: load_learner(name).eval() for name in args.checkpoints}
    except MetaUnsupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    batch = ClusteringTaskSampler(test, n_way=K, k_shot=20, seed=0).sample(args.tasks)
    y = batch.y.numpy()

    timed: dict[tuple[str, str], Callable[[], object]] = {}
    for name, learner in learners.items():
        for stage, fn in stages(learner, batch.x).items():
            timed[(name, stage)] = fn
    timed[("scikit-learn KMeans(n_init=10)", "total")] = sklearn_loop(
        batch.x.flatten(2).numpy().astype(np.float64), args.threads
    )
    for fn in timed.values():  # warm-up
        fn()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in timed}
    outputs: dict[tuple[str, str], object] = {}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every row alike
        for key, fn in timed.items():
            start = time.perf_counter()
            outputs[key] = fn()
            times[key].append(time.perf_counter() - start)

    sk_ms = 1000 * statistics.median(times[("scikit-learn KMeans(n_init=10)", "total")]) / len(y)
    rows = []
    for (name, stage), ts in times.items():
        ms = 1000 * statistics.median(ts) / len(y)
        out = outputs[(name, stage)]
        labels = None if stage == "embed" else np.asarray(out)
        acc = None if labels is None else float(np.mean(clustering_accuracy(y, labels)))
        rows.append(
            {
                "model": name,
                "stage": stage,
                "ms_per_task": ms,
                "ms_per_task_all": [1000 * t / len(y) for t in ts],
                "acc": acc,
                "sklearn_over_this": sk_ms / ms,
            }
        )

    print(
        f"{args.tasks} MNIST test tasks of 10 × 20, {args.threads} thread(s), "
        f"medians of {args.repeats} interleaved repeats"
    )
    print("| model | stage | ms / task | accuracy | scikit-learn time / this |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        acc = "" if r["acc"] is None else f"{r['acc']:.3f}"
        print(
            f"| {r['model']} | {r['stage']} | {r['ms_per_task']:.2f} | {acc} | "
            f"{r['sklearn_over_this']:.2f}× |"
        )
    report = {
        "benchmark": "bench_test_time",
        "tasks": args.tasks,
        "repeats": args.repeats,
        "threads": args.threads,
        "rows": rows,
        "command": "python benchmarks/bench_test_time.py " + " ".join(argv or sys.argv[1:]),
        "environment": {
            "date": _dt.date.today().isoformat(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {atomic_write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
