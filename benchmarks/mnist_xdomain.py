"""Cross-domain track of protocol A: cluster MNIST 10 × 20 test tasks with embeddings
meta-trained on **Omniglot** (never an MNIST label, never an MNIST image in training).

Each model's embedding of a task (its batch-norm statistics are the task's own) is clustered
by k-means (10 restarts) and by spectral clustering of the task's 10-nearest-neighbour graph
(:func:`metaunsup.cluster.spectral_clustering`), beside K-means on the pixels, on the same
1000 seeded tasks as ``metaunsup experiment mnist-clustering`` (seed 0), so its rows compare
with that page's.

    .venv/bin/python benchmarks/mnist_xdomain.py --threads 1

Models: the packaged ``omniglot-protonet`` (Prototypical Networks, Omniglot background labels)
and, if trained, ``runs/omniglot-xdomain-meta-kmeans/best.safetensors`` (Meta-K-means on
Omniglot-labelled clustering tasks). Prints a table and writes
``docs/results/mnist_xdomain.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

from metaunsup import data
from metaunsup.cluster import kmeans, spectral_clustering
from metaunsup.data.base import to_float
from metaunsup.evaluation.clustering import ClusteringMethod, evaluate_clustering
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import load_learner

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "Prototypical Networks (omniglot-protonet)": "omniglot-protonet",
    "Meta-K-means (omniglot-xdomain-meta-kmeans)": (
        "runs/omniglot-xdomain-meta-kmeans/best.safetensors"
    ),
}


def task_embeddings(learner: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, n, D]`` unit-length embeddings of the tasks ``x`` ``[B, n, C, H, W]``."""
    z = learner.embed(to_float(x))
    return torch.nn.functional.normalize(z.double(), dim=-1)


def methods_of(label: str, learner: torch.nn.Module, neighbors: int) -> list[ClusteringMethod]:
    def by_kmeans(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            return kmeans(task_embeddings(learner, x), k, n_init=10, seed=seed).labels

    def by_spectral(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            z = task_embeddings(learner, x).float()
        return spectral_clustering(z, k, n_neighbors=neighbors, seed=seed)

    return [
        ClusteringMethod(f"{label} + k-means", by_kmeans),
        ClusteringMethod(f"{label} + spectral clustering", by_spectral),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=None, help="folder of the datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    test = data.load("mnist", "test", root=args.root)
    methods = [
        ClusteringMethod(
            "K-means, pixels",
            lambda x, k, seed: kmeans(to_float(x).flatten(2), k, n_init=10, seed=seed).labels,
        )
    ]
    used = {}
    for label, checkpoint in MODELS.items():
        path = ROOT / checkpoint if "/" in checkpoint else checkpoint
        if "/" in checkpoint and not Path(path).is_file():
            print(f"skipping {label}: {checkpoint} not trained")
            continue
        learner = load_learner(path).eval()
        methods += methods_of(label, learner, args.neighbors)
        used[label] = checkpoint
    start = time.perf_counter()
    report = evaluate_clustering(
        test, methods, n_way=10, k_shot=20, n_tasks=args.tasks, seed=args.seed
    ).to_json()
    command = (
        f"python benchmarks/mnist_xdomain.py --tasks {args.tasks} --seed {args.seed} "
        f"--neighbors {args.neighbors} --threads {args.threads}"
    )
    report.update(command=command, models=used, seconds=round(time.perf_counter() - start, 1))
    rows = [
        "| method | accuracy | NMI | ARI | ms/task |",
        "|---|---|---|---|---|",
        *(
            f"| {r['method']} | {r['acc']['mean']:.3f} ± {r['acc']['ci95']:.3f} | "
            f"{r['nmi']['mean']:.3f} ± {r['nmi']['ci95']:.3f} | "
            f"{r['ari']['mean']:.3f} ± {r['ari']['ci95']:.3f} | {r['ms_per_task']:.1f} |"
            for r in report["results"]
        ),
    ]
    table = "\n".join(rows)
    print(table)
    page = f"""# MNIST clustering with embeddings meta-trained on Omniglot (cross-domain track)

Measured {dt.date.today().isoformat()} on this 2-core CPU ({args.threads} torch thread(s)),
{args.tasks} MNIST test tasks of 10 classes × 20 images (seed {args.seed}: the same tasks as
`mnist_fewshot_clustering.md`), accuracy (Hungarian), NMI and ARI as mean ± 95% CI. The models
never saw an MNIST image or label: both were meta-trained on the labelled Omniglot background
characters. Each task is embedded on its own (batch-norm statistics of the task) and clustered
by k-means (10 restarts) or by spectral clustering of its {args.neighbors}-nearest-neighbour
graph.

{table}

Reproduce: `{command}` (models: {json.dumps(used)}; the first is packaged, the second is
trained by `metaunsup train configs/omniglot-xdomain-meta-kmeans.toml`).
"""
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "mnist_xdomain.json", report)
    atomic_write_text(args.out / "mnist_xdomain.md", page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
