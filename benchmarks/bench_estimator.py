"""MetaKMeans without a checkpoint against K-means on all 1797 scikit-learn digits (k = 10).

Run on one CPU thread:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_estimator.py --seeds 0 1 2

For each seed it fits ``MetaKMeans(10, random_state=seed)`` (meta-training on pseudo-tasks
from the digits themselves, no labels) and ``sklearn.cluster.KMeans(10, n_init=10,
random_state=seed)`` on the pixels, and prints the Hungarian accuracy of both against the digit
labels and the fit times as a table, and writes them to
``benchmarks/results/bench_estimator.json`` (``--json PATH``). ``--auto`` also reports what
``n_clusters="auto"`` chooses. ``--setting key=value`` (a field of
:class:`metaunsup.estimators.self_train.SelfTrainSettings`, repeatable) tries variants of the
self-training.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from metaunsup import MetaKMeans
from metaunsup.cluster.choose_k import choose_k
from metaunsup.estimators.self_train import SelfTrainSettings, self_train
from metaunsup.metrics import clustering_accuracy

RESULTS = Path(__file__).resolve().parent / "results"


def variant(X: np.ndarray, seed: int, settings: SelfTrainSettings) -> np.ndarray:
    """Labels of k-means in the embedding self-trained with ``settings`` (same scaling and
    final clustering as MetaKMeans)."""
    from metaunsup.cluster import kmeans

    centred = X - X.mean(0)
    x = torch.tensor(centred / np.sqrt((centred**2).mean()), dtype=torch.float32)
    result = self_train(x, 10, settings, seed=seed)
    with torch.no_grad():
        z = result.learner.embed(x[None])[0].double()
    return kmeans(z, 10, n_init=10, seed=seed).labels.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--auto", action="store_true", help="also report n_clusters='auto'")
    parser.add_argument("--setting", action="append", default=[], help="key=value variant")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_estimator.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    overrides = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.setting)}
    print(f"all {len(X)} digits, k=10, one thread; settings {overrides or 'default'}")
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        if overrides:
            labels = variant(X, seed, SelfTrainSettings(**overrides))
        else:
            labels = MetaKMeans(10, random_state=seed).fit(X).labels_
        t1 = time.perf_counter()
        km = KMeans(10, n_init=10, random_state=seed).fit(X).labels_
        t2 = time.perf_counter()
        rows.append(
            {
                "seed": seed,
                "metakmeans_acc": clustering_accuracy(y, labels),
                "metakmeans_seconds": t1 - t0,
                "kmeans_acc": clustering_accuracy(y, km),
                "kmeans_seconds": t2 - t1,
            }
        )
    print("| seed | MetaKMeans acc | fit s | KMeans(n_init=10) acc | fit s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['metakmeans_acc']:.4f} | {r['metakmeans_seconds']:.1f} "
            f"| {r['kmeans_acc']:.4f} | {r['kmeans_seconds']:.2f} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("metakmeans_acc", "kmeans_acc")}
    print(
        f"mean accuracy: MetaKMeans {mean['metakmeans_acc']:.4f}, KMeans {mean['kmeans_acc']:.4f}"
    )
    record = {
        "benchmark": "bench_estimator",
        "command": "python benchmarks/bench_estimator.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "settings": overrides or "default",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "mean": mean,
        "results": rows,
    }
    if args.auto:
        print("choose_k on the pixels:", choose_k(X, 2, 15, seed=0).reason)
        model = MetaKMeans("auto", random_state=0).fit(X)
        print(f"MetaKMeans('auto'): k={model.n_clusters_}: {model.k_choice_.reason}")
        record["auto"] = {"k": int(model.n_clusters_), "reason": model.k_choice_.reason}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
