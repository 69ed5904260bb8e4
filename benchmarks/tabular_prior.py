"""Table models on held-out tasks of their own synthetic prior: how the ``tabular`` candidates
were chosen, without any real table's labels.

Tasks come from :class:`metaunsup.tasks.synthetic_tables.SyntheticTables` with seeds that
meta-training never uses (meta-training draws from ``train.seed`` = 0): ``--tasks`` clustering
tasks (seed 999; ``k`` cycling through 2..7, 200 rows, complete cells) and ``--tasks``
anomaly tasks (seed 998; 5% anomalies, ``k`` in 2..5, 300 rows). Each checkpoint clusters
with :class:`metaunsup.MetaKMeans` (``guard=False``: the embedding itself is measured) and
scores with :class:`metaunsup.MetaOutlierDetector`; beside them K-means on the same
standardised columns and PyOD's KNN. Scores: mean ARI and mean AUROC over the tasks.

    python benchmarks/tabular_prior.py --threads 1 --checkpoint tabular

Prints the table and writes ``docs/results/tabular_prior.json``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from _record import write_record
from metaunsup.tasks.synthetic_tables import SyntheticTables

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def clustering_tasks(count: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    prior = SyntheticTables(seed=999, missing_prob=0.0)
    out = []
    for i in range(count):
        k = 2 + i % 6
        t = prior.sample_table(k, 200)
        out.append((t.x[:, : t.d].numpy().astype(np.float64), t.y.numpy(), k))
    return out


def anomaly_tasks(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    prior = SyntheticTables(seed=998, missing_prob=0.0, anomaly_rate=0.05)
    out = []
    while len(out) < count:
        t = prior.sample_table(2 + len(out) % 4, 300)
        if t.anomaly.any():
            out.append((t.x[:, : t.d].numpy().astype(np.float64), t.anomaly.numpy()))
    return out


def measure(checkpoints: list[str], count: int) -> dict[str, dict[str, float]]:
    from pyod.models.knn import KNN
    from sklearn.cluster import KMeans

    from metaunsup import MetaKMeans, MetaOutlierDetector

    ari: dict[str, list[float]] = {name: [] for name in [*checkpoints, "K-means"]}
    auroc: dict[str, list[float]] = {name: [] for name in [*checkpoints, "KNN (PyOD)"]}
    for x, y, k in clustering_tasks(count):
        z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
        ari["K-means"].append(
            adjusted_rand_score(y, KMeans(k, n_init=10, random_state=0).fit_predict(z))
        )
        for name in checkpoints:
            model = MetaKMeans(k, checkpoint=name, random_state=0, guard=False).fit(x)
            ari[name].append(adjusted_rand_score(y, model.labels_))
    for x, flags in anomaly_tasks(count):
        z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
        auroc["KNN (PyOD)"].append(roc_auc_score(flags, KNN().fit(z).decision_scores_))
        for name in checkpoints:
            scores = MetaOutlierDetector(checkpoint=name, random_state=0).fit(x).decision_scores_
            auroc[name].append(roc_auc_score(flags, scores))
    return {
        "ari": {m: float(np.mean(v)) for m, v in ari.items()},
        "auroc": {m: float(np.mean(v)) for m, v in auroc.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--json", type=Path, default=RESULTS / "tabular_prior.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    scores = measure(args.checkpoint, args.tasks)
    for metric, row in scores.items():
        print(f"{metric}: " + ", ".join(f"{m} {v:.3f}" for m, v in row.items()))
    write_record("tabular_prior", None, args.json, threads=args.threads, tasks=args.tasks, **scores)


if __name__ == "__main__":
    main()
