"""How many eigenvectors the self-training's pseudo-label graphs keep, and how many rows they use.

Run on one CPU thread (about 20 minutes):

    python benchmarks/self_train_eigenvectors.py --threads 1

:func:`metaunsup.estimators.self_train.graph_partitions` makes each pseudo-label partition by
k-means (into ``k`` clusters) of a spectral embedding of a neighbourhood graph. This script fits
``MetaKMeans(k, random_state=seed)`` with its defaults but two settings of
:class:`~metaunsup.estimators.self_train.SelfTrainSettings`, each variant in turn:

* ``eigenvectors_per_cluster``: the embedding keeps ``ceil(e * k)`` eigenvectors (``e = 1``: k);
* ``graph_rows``: most rows of a graph (a random sample; the others take their nearest sampled
  row's label).

Data (labels used only to score, Hungarian accuracy):

* ``digits``: all 1797 scikit-learn digits (pixels / 16), k = 10;
* ``MNIST test``: the 10,000 MNIST test images as a 784-column table (pixels / 255), k = 10;
* ``MNIST train, subset s``: ``n`` MNIST training images drawn with seed ``s`` (10,000, 10,000,
  5,000 and 20,000 for s = 0..3), k = 10. These were not looked at when the default was chosen
  (from ``e`` in 1, 1.5, 2 on the first two data sets): they are its check on unseen data.

The variants are set by replacing ``SelfTrainSettings`` in
:mod:`metaunsup.estimators.self_train` with one whose defaults differ (``MetaKMeans`` builds its
settings from that name when it fits), so each fit is the estimator's own path: the same table
scaling, label-free guard and final k-means. Writes ``benchmarks/results/
self_train_eigenvectors.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from unittest import mock

import numpy as np

from _record import write_record
from _threads import pin_threads
from metaunsup import MetaKMeans
from metaunsup import data as datasets
from metaunsup.estimators import self_train
from metaunsup.metrics import clustering_accuracy

RESULTS = Path(__file__).resolve().parent / "results"
#: (eigenvectors_per_cluster, graph_rows): the old default first, the new default last.
VARIANTS = [(1.0, 4000), (1.5, 4000), (2.0, 4000), (1.0, 10_000), (2.0, 10_000), (1.5, 10_000)]
#: MNIST training subsets: (seed, rows).
SUBSETS = [(0, 10_000), (1, 10_000), (2, 5000), (3, 20_000)]


def load_data() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, X [n, d] float32, y [n])`` for every data set of the module docstring."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = [("digits", (digits.data / 16.0).astype(np.float32), digits.target)]
    test = datasets.load("mnist", "test")
    out.append(("MNIST test", test.x.flatten(1).numpy() / 255.0, test.y.numpy()))
    train = datasets.load("mnist", "train")
    pixels, labels = train.x.flatten(1).numpy(), train.y.numpy()
    for seed, rows in SUBSETS:
        idx = np.random.default_rng(seed).choice(len(pixels), rows, replace=False)
        name = f"MNIST train, subset {seed} ({rows:,})"
        out.append((name, pixels[idx].astype(np.float32) / 255.0, labels[idx]))
    return out


def fit(x: np.ndarray, y: np.ndarray, seed: int, variant: tuple[float, int]) -> dict:
    """Accuracy, guard decision and seconds of ``MetaKMeans`` self-trained with ``variant``."""
    settings = functools.partial(
        self_train.SelfTrainSettings,
        eigenvectors_per_cluster=variant[0],
        graph_rows=variant[1],
    )
    t0 = time.perf_counter()
    with mock.patch.object(self_train, "SelfTrainSettings", settings):
        model = MetaKMeans(len(np.unique(y)), random_state=seed).fit(x)
    return {
        "accuracy": round(clustering_accuracy(y, model.labels_), 4),
        "guard": model.guard_.use if model.guard_ is not None else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "self_train_eigenvectors.json")
    args = parser.parse_args()
    pin_threads(args.threads)
    rows = []
    header = " | ".join(f"e={e:g}, rows={r:,}" for e, r in VARIANTS)
    print(f"| data | {header} |")
    for name, x, y in load_data():
        cells = []
        for variant in VARIANTS:
            runs = [fit(x, y, seed, variant) for seed in args.seeds]
            mean = float(np.mean([r["accuracy"] for r in runs]))
            cells.append(f"{mean:.3f}")
            rows.append(
                {
                    "data": name,
                    "rows": len(x),
                    "eigenvectors_per_cluster": variant[0],
                    "graph_rows": variant[1],
                    "runs": runs,
                    "mean_accuracy": round(mean, 4),
                }
            )
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    write_record(
        "self_train_eigenvectors",
        None,
        args.json,
        threads=args.threads,
        seeds=args.seeds,
        variants=VARIANTS,
        results=rows,
    )


if __name__ == "__main__":
    main()
