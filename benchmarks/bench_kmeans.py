"""Speed of batched k-means: ``metaunsup.cluster.kmeans`` against a loop over scikit-learn.

Protocol E of docs/protocols.md: ``--tasks`` clustering tasks of 10 classes × 20 images (200 points)
from the test split of scikit-learn's digits (64-d, default) or MNIST (784-d raw pixels,
``--dataset mnist``), drawn by ``ClusteringTaskSampler(seed=0)``. Both methods get the same
settings — ``k=10``, ``n_init=10`` k-means++ restarts, ``max_iter=300``, ``tol=1e-4`` — and the
same number of threads (``torch.set_num_threads`` for ours, ``threadpoolctl`` for
scikit-learn), in the same run. Ours is timed over ``--repeats`` runs after a warm-up (median
reported); the scikit-learn loop (``KMeans(...).fit`` per task, ``random_state`` = task index)
once. Loading and sampling are not timed. On a shared machine, run with
``OMP_WAIT_POLICY=PASSIVE`` when ``--threads`` > 1: scikit-learn's OpenMP threads otherwise spin
while waiting and slow down many-fold whenever another process holds a core (recorded in the
JSON with the load average). Quality is scored against the hidden labels:
accuracy (Hungarian), NMI, ARI, as mean ± 95% CI over tasks, plus the mean inertia.

Run: ``.venv/bin/python benchmarks/bench_kmeans.py [--tasks 1000] [--threads 1]
[--dataset digits|mnist] [--root DATA_DIR] [--json PATH]``; prints a markdown table and writes JSON
(default ``benchmarks/results/bench_kmeans.json``, or ``bench_kmeans_<dataset>.json`` for a
dataset other than digits).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metaunsup.cluster import kmeans
from metaunsup.data import load, to_float
from metaunsup.errors import MetaUnsupError
from metaunsup.metrics import mean_ci, score_clustering
from metaunsup.tasks import ClusteringTaskSampler

RESULTS = Path(__file__).resolve().parent / "results"
K, N_INIT, MAX_ITER, TOL = 10, 10, 300, 1e-4


def summarise(name: str, labels: np.ndarray, inertia: np.ndarray, y: np.ndarray, secs: float):
    scores = score_clustering(y, labels)
    row = {"method": name, "total_s": secs, "ms_per_task": 1000 * secs / len(y)}
    for key in ("acc", "nmi", "ari"):
        mean, ci = mean_ci(scores[key])
        row[key] = {"mean": mean, "ci95": ci}
    row["inertia_mean"] = float(np.mean(inertia))
    return row


def run_ours(x: torch.Tensor, repeats: int) -> tuple[object, list[float]]:
    kmeans(x[: min(len(x), 64)], K, n_init=N_INIT, max_iter=MAX_ITER, tol=TOL, seed=0)  # warm-up
    times, res = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        res = kmeans(x, K, n_init=N_INIT, max_iter=MAX_ITER, tol=TOL, seed=0)
        times.append(time.perf_counter() - start)
    return res, times


def run_sklearn(x: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    labels, inertia, n_iter = [], [], []
    with threadpool_limits(limits=threads):
        KMeans(K, n_init=N_INIT, random_state=0).fit(x[0])  # warm-up
        start = time.perf_counter()
        for i, task in enumerate(x):
            km = KMeans(
                K, init="k-means++", n_init=N_INIT, max_iter=MAX_ITER, tol=TOL, random_state=i
            ).fit(task)
            labels.append(km.labels_)
            inertia.append(km.inertia_)
            n_iter.append(km.n_iter_)
        secs = time.perf_counter() - start
    return np.stack(labels), np.asarray(inertia), np.asarray(n_iter), secs


def table(rows: list[dict], ratio: float) -> str:
    lines = [
        "| method | total s | ms/task | accuracy | NMI | ARI | inertia mean | speed ratio |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = ratio if row["method"].startswith("metaunsup") else 1.0
        lines.append(
            f"| {row['method']} | {row['total_s']:.2f} | {row['ms_per_task']:.2f} | "
            f"{row['acc']['mean']:.4f} ± {row['acc']['ci95']:.4f} | {row['nmi']['mean']:.4f} | "
            f"{row['ari']['mean']:.4f} | {row['inertia_mean']:.3f} | {r:.1f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="number of tasks (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both (default 1)")
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument("--root", default=None, help="data folder (default $METAUNSUP_DATA)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.threads < 1 or args.repeats < 1:
        parser.error("--tasks, --threads and --repeats must be >= 1")
    out = args.json or RESULTS / (
        "bench_kmeans.json" if args.dataset == "digits" else f"bench_kmeans_{args.dataset}.json"
    )
    torch.set_num_threads(args.threads)

    try:
        dataset = load(args.dataset, "test", args.root)
    except MetaUnsupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    batch = ClusteringTaskSampler(dataset, n_way=10, k_shot=20, seed=0).sample(args.tasks)
    x = to_float(batch.x).reshape(args.tasks, batch.x.shape[1], -1).contiguous()
    y = batch.y.numpy()

    res, times = run_ours(x, args.repeats)
    sk_labels, sk_inertia, sk_iter, sk_secs = run_sklearn(x.numpy(), args.threads)
    ours_secs = statistics.median(times)
    ratio = sk_secs / ours_secs
    rows = [
        summarise(
            "metaunsup kmeans (batched)", res.labels.numpy(), res.inertia.numpy(), y, ours_secs
        ),
        summarise("scikit-learn KMeans (loop)", sk_labels, sk_inertia, y, sk_secs),
    ]
    rows[0]["times_s"] = times
    rows[0]["n_iter_mean"] = float(res.n_iter.double().mean())
    rows[1]["n_iter_mean"] = float(sk_iter.mean())
    print(
        f"{args.tasks} {args.dataset} tasks of 10 classes × 20 ({x.shape[2]}-d), k={K}, "
        f"n_init={N_INIT}, k-means++, max_iter={MAX_ITER}, tol={TOL}, {args.threads} thread(s)\n"
    )
    print(table(rows, ratio))
    d_acc = rows[0]["acc"]["mean"] - rows[1]["acc"]["mean"]
    d_inertia = rows[0]["inertia_mean"] / rows[1]["inertia_mean"] - 1
    print(
        f"\nspeed ratio {ratio:.1f}×; accuracy difference {d_acc:+.4f}; "
        f"inertia difference {100 * d_inertia:+.3f}%"
    )

    record = {
        "benchmark": "bench_kmeans",
        "command": "python benchmarks/bench_kmeans.py " + " ".join(argv or sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": args.dataset,
        "n_tasks": args.tasks,
        "n_points": int(x.shape[1]),
        "dim": int(x.shape[2]),
        "settings": {"k": K, "n_init": N_INIT, "max_iter": MAX_ITER, "tol": TOL},
        "threads": args.threads,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_1min": os.getloadavg()[0],
        "speed_ratio": ratio,
        "accuracy_difference": d_acc,
        "inertia_relative_difference": d_inertia,
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
