"""``MetaKMeans`` with a checkpoint: the network in float32 (now) against float64 (before).

For each packaged image checkpoint, ``MetaKMeans(10, checkpoint=NAME, random_state=0)`` is fitted
on its data (``digits``: all 1797 scikit-learn digits; ``mnist``: the first ``--mnist-rows``
MNIST test images) twice in this process: as it is (a batch-norm network embeds in float32) and
with the network cast to float64 (what the estimator did before), in alternating order over
``--repeats``. Reported: median fit seconds, Hungarian accuracy against the labels, and the
fraction of examples whose cluster label is the same in both (clusters matched by the
Hungarian assignment, so a renaming does not count).

Run: ``python benchmarks/bench_estimator_dtype.py [--repeats 3] [--threads 1] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _record import write_record
from metaunsup import MetaKMeans
from metaunsup.metrics import clustering_accuracy

RESULTS = Path(__file__).resolve().parent / "results"


class Float64MetaKMeans(MetaKMeans):
    """The estimator as it was: the network cast to float64 on the CPU."""

    def _set_learner(self, learner):
        super()._set_learner(learner)
        self.learner_ = self.learner_.double()


def data(name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    from metaunsup.data import load

    ds = load("mnist", "test")
    return ds.x[:rows].numpy(), ds.y[:rows].numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", nargs="+", default=["digits", "mnist"])
    parser.add_argument("--mnist-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_estimator_dtype.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.checkpoints:
        X, y = data(name, args.mnist_rows)
        times: dict[str, list[float]] = {"float32": [], "float64": []}
        labels: dict[str, np.ndarray] = {}
        for i in range(args.repeats):
            order = ("float32", "float64") if i % 2 == 0 else ("float64", "float32")
            for kind in order:
                cls = MetaKMeans if kind == "float32" else Float64MetaKMeans
                t0 = time.perf_counter()
                model = cls(10, checkpoint=name, random_state=0).fit(X)
                times[kind].append(time.perf_counter() - t0)
                labels[kind] = model.labels_
        agree = clustering_accuracy(labels["float64"], labels["float32"])
        row = {
            "checkpoint": name,
            "rows": len(X),
            "float32_seconds": statistics.median(times["float32"]),
            "float64_seconds": statistics.median(times["float64"]),
            "float32_acc": clustering_accuracy(y, labels["float32"]),
            "float64_acc": clustering_accuracy(y, labels["float64"]),
            "label_agreement": agree,
            "times": times,
        }
        rows.append(row)
        print(
            f"{name}: float32 {row['float32_seconds']:.2f} s acc {row['float32_acc']:.4f} | "
            f"float64 {row['float64_seconds']:.2f} s acc {row['float64_acc']:.4f} | "
            f"same labels {agree:.4f}",
            file=sys.stderr,
        )
    lines = [
        "| checkpoint | rows | float64 s | float32 s | speed-up | acc float64 | acc float32 "
        "| same labels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['checkpoint']} | {r['rows']} | {r['float64_seconds']:.2f} | "
            f"{r['float32_seconds']:.2f} | {r['float64_seconds'] / r['float32_seconds']:.2f}× | "
            f"{r['float64_acc']:.4f} | {r['float32_acc']:.4f} | {r['label_agreement']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    write_record(
        "bench_estimator_dtype",
        argv,
        args.json,
        torch=torch.__version__,
        python=platform.python_version(),
        threads=args.threads,
        rows=rows,
        table=table,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
