"""``metaunsup cluster`` on the files a user would bring, scored against the hidden labels.

Builds the inputs of ``tests/app/test_cluster_goals.py`` in a temporary folder (the same seeds):
all 1797 scikit-learn digits as a CSV with a header row, 200 MNIST test PNGs (10 digits × 20),
and 200 Omniglot evaluation characters (10 characters × their 20 drawings) as PNGs. It runs the
command on each, as a user would, scores the written labels and beside them K-means on the
same pixels, then prints a table and writes ``benchmarks/results/cluster_goals.json``.

    .venv/bin/python benchmarks/cluster_goals.py --threads 1
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from metaunsup import data
from metaunsup.app.cli import main as cli
from metaunsup.metrics import clustering_accuracy

RESULTS = Path(__file__).resolve().parent / "results"


def pngs(folder: Path, dataset, indices) -> tuple[np.ndarray, np.ndarray]:
    """Write ``dataset.x[indices]`` as numbered PNGs; returns their pixels ``[n, H*W]`` and
    classes in file-name order."""
    folder.mkdir()
    for n, i in enumerate(indices):
        Image.fromarray(dataset.x[i, 0].numpy()).save(folder / f"{n:03d}.png")
    x = dataset.x[list(indices)].flatten(1).numpy().astype(np.float64)
    return x, dataset.y[list(indices)].numpy()


def run(argv: list[str], out: Path, classes: np.ndarray) -> tuple[float, int]:
    """Run ``metaunsup cluster`` and score its labels (rows are in input / file-name order)."""
    code = cli([*argv, "--out", str(out), "--quiet"])
    if code != 0:
        raise SystemExit(f"metaunsup {' '.join(argv)} failed with status {code}")
    with open(out, newline="") as f:
        labels = np.array([int(r[1]) for r in list(csv.reader(f))[1:]])
    return float(clustering_accuracy(classes, labels)), len(set(labels.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "cluster_goals.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        X, y = load_digits(return_X_y=True)
        table = root / "digits.csv"
        header = ",".join(f"pixel{i}" for i in range(64))
        np.savetxt(table, X, fmt="%d", delimiter=",", header=header, comments="")
        inputs = [("1797 digits, CSV", table, ["--k", "10", "--checkpoint", "digits"], X, y)]
        inputs.append(("1797 digits, CSV", table, ["--k", "10"], X, y))
        mnist = data.load("mnist", "test")
        rng = np.random.default_rng(0)
        my = mnist.y.numpy()
        picks = [
            i for d in range(10) for i in rng.choice(np.flatnonzero(my == d), 20, replace=False)
        ]
        mx, my = pngs(root / "mnist", mnist, picks)
        inputs.append(
            ("200 MNIST test PNGs", root / "mnist", ["--k", "10", "--checkpoint", "mnist"], mx, my)
        )
        omniglot = data.load("omniglot", "evaluation")
        rng = np.random.default_rng(0)
        oy = omniglot.y.numpy()
        chars = rng.choice(omniglot.n_classes, 10, replace=False)
        ox, oy = pngs(
            root / "omniglot", omniglot, [i for c in chars for i in np.flatnonzero(oy == c)]
        )
        argv = ["--k", "auto", "--k-by", "eigengap", "--checkpoint", "omniglot-protonet"]
        inputs.append(("200 unseen Omniglot characters, PNGs", root / "omniglot", argv, ox, oy))
        for n, (what, path, options, pixels, classes) in enumerate(inputs):
            acc, k = run(["cluster", str(path), *options], root / f"labels{n}.csv", classes)
            km = KMeans(len(set(classes.tolist())), n_init=10, random_state=0).fit(pixels)
            kmeans_acc = float(clustering_accuracy(classes, km.labels_))
            rows.append(
                {"input": what, "options": " ".join(options), "accuracy": acc, "k": k}
                | {"kmeans_accuracy": kmeans_acc}
            )
    print("| input | options | accuracy | k | K-means on the pixels (k known) |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [r["input"], f"`{r['options']}`", f"{r['accuracy']:.3f}", str(r["k"])]
        print("| " + " | ".join([*cells, f"{r['kmeans_accuracy']:.3f}"]) + " |")
    command = f"python benchmarks/cluster_goals.py --threads {args.threads}"
    record = {"date": dt.date.today().isoformat(), "command": command, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
