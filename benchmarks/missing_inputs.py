"""What the self-trained network should read of a row with missing cells: chosen on tables that
the benchmark pages do not score.

Run on one CPU thread (about 16 minutes; ``--tables`` splits it across processes):

    python benchmarks/missing_inputs.py --threads 1

:func:`metaunsup.estimators.self_train.self_train` meta-trains an embedding on pseudo-tasks of
the user's table; its pseudo-labels come from graphs of the rows with their missing cells filled
from the nearest rows. This script keeps those partitions and the whole recipe and varies only
what the network reads of each row (``inputs``):

* ``mask``: the observed cells (missing ones as 0, the column mean) beside the observed-cell
  mask, through a :class:`~metaunsup.nets.MaskedMLP` (the default);
* ``filled``: the row with each missing cell filled from its 5 nearest rows over the features
  both observe (:class:`~metaunsup.estimators.missing.FilledFeatures`), through a plain MLP
  (what ``impute="knn"`` gives, but for the imputer's donors);
* ``filled + mask``: those filled cells beside the observed-cell mask (the network still knows
  which cells were seen; a corrupted cell takes its donor's value and mask together).

Then k-means (10 restarts) in the embedding, scored against the known classes (Hungarian
accuracy, NMI, ARI). Each table runs complete once (every variant is the plain network there)
and with cells removed as ``benchmarks/_missing_cells.py`` removes them (``mcar10``, ``mcar30``,
``mnar``), one mask per seed, the seed also seeding the self-training and the k-means.

Tables (none is scored by ``tables_vs_tools.py`` or any page of ``docs/results``):

* ``prior k=K``: tables of the synthetic prior the ``tabular`` checkpoint was meta-trained on
  (:class:`~metaunsup.tasks.synthetic_tables.SyntheticTables`, no missing cells of its own),
  1000 rows in ``K`` clusters, the table drawn with the stream seed of its name;
* ``MNIST train 7x7`` / ``14x14``: 2000 MNIST *training* images (the pages use the test
  images) drawn with seed 0, each averaged over 4x4 or 2x2 pixel blocks (49 or 196 columns).

Writes ``benchmarks/results/missing_inputs.json`` (every run, the mean accuracy over the tables
per variant and kind, and per variant over the three kinds) and prints the means.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _missing_cells import KINDS, remove_cells
from _record import write_record
from _threads import pin_threads
from metaunsup import data as datasets
from metaunsup.cluster import kmeans
from metaunsup.estimators.missing import FilledFeatures
from metaunsup.estimators.scaling import table_scaling
from metaunsup.estimators.self_train import self_train
from metaunsup.metrics import ari, clustering_accuracy, nmi
from metaunsup.tasks.synthetic_tables import SyntheticTables

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("mask", "filled", "filled + mask")
#: (stream seed, clusters) of the prior's tables.
PRIOR_TABLES = ((0, 4), (1, 6), (2, 8), (3, 10))
Table = tuple[str, np.ndarray, np.ndarray]


def prior_table(seed: int, k: int) -> Table:
    stream = SyntheticTables(missing_prob=0.0, seed=seed)
    t = stream.sample_table(k, 1000)
    return f"prior k={k} ({t.d} columns)", t.x[:, : t.d].numpy(), t.y.numpy()


def mnist_table(block: int) -> Table:
    mnist = datasets.load("mnist", "train")
    take = np.random.default_rng(0).choice(len(mnist.y), 2000, replace=False)
    images = mnist.x[take].reshape(-1, 1, 28, 28).float() / 255.0
    pooled = torch.nn.functional.avg_pool2d(images, block).flatten(1).numpy()
    side = 28 // block
    return f"MNIST train {side}x{side}", pooled, mnist.y[take].numpy()


def load_tables() -> list[Table]:
    return [prior_table(s, k) for s, k in PRIOR_TABLES] + [mnist_table(4), mnist_table(2)]


def network_inputs(scaled: np.ndarray, variant: str, seed: int) -> torch.Tensor | None:
    """What the network reads (``None``: the table itself, the masked network)."""
    if variant == "mask" or not np.isnan(scaled).any():
        return None
    values = torch.from_numpy(FilledFeatures(scaled, seed).fill(scaled))
    if variant == "filled":
        return values
    return torch.cat([values, torch.from_numpy(np.isnan(scaled)).to(values.dtype)], 1)


def run_one(x: np.ndarray, y: np.ndarray, variant: str, seed: int) -> dict[str, float]:
    scaled = table_scaling(x, "auto").apply(x)
    table = torch.from_numpy(scaled.astype(np.float32))
    inputs = network_inputs(scaled, variant, seed)
    k = len(np.unique(y))
    learner = self_train(table, k, seed=seed, inputs=inputs).learner
    with torch.no_grad():
        z = learner.embed((table if inputs is None else inputs.float()).unsqueeze(0))[0]
    labels = kmeans(z.double(), k, n_init=10, seed=seed).labels.numpy()
    return {
        "accuracy": float(clustering_accuracy(y, labels)),
        "nmi": float(nmi(y, labels)),
        "ari": float(ari(y, labels)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", type=int, nargs="+", help="positions of the tables to run")
    parser.add_argument("--json", type=Path, default=RESULTS / "missing_inputs.json")
    args = parser.parse_args()
    pin_threads(args.threads)
    t0 = time.perf_counter()
    tables = load_tables()
    chosen = args.tables if args.tables is not None else range(len(tables))
    runs = []
    for i in chosen:
        name, x, y = tables[i]
        for seed in args.seeds:
            row = {"table": name, "kind": "complete", "seed": seed, "variant": "all"}
            runs.append({**row, **run_one(x, y, "mask", seed)})
            print(json.dumps(runs[-1]), flush=True)
            for kind in KINDS:
                xm = remove_cells(x, kind, seed)
                for variant in VARIANTS:
                    row = {"table": name, "kind": kind, "seed": seed, "variant": variant}
                    runs.append({**row, **run_one(xm, y, variant, seed)})
                    print(json.dumps(runs[-1]), flush=True)
    means = {
        f"{kind} / {variant}": float(
            np.mean([r["accuracy"] for r in runs if r["kind"] == kind and r["variant"] == variant])
        )
        for kind in KINDS
        for variant in VARIANTS
    }
    overall = {
        variant: float(
            np.mean(
                [r["accuracy"] for r in runs if r["kind"] != "complete" and r["variant"] == variant]
            )
        )
        for variant in VARIANTS
    }
    for key, value in [*means.items(), *overall.items()]:
        print(f"{key:28s} mean accuracy {value:.3f}")
    write_record(
        "missing_inputs",
        None,
        args.json,
        threads=args.threads,
        seeds=args.seeds,
        seconds=round(time.perf_counter() - t0, 1),
        mean_accuracy=means,
        mean_accuracy_all_kinds=overall,
        runs=runs,
    )


if __name__ == "__main__":
    main()
