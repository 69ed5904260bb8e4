"""How well a run's CACTUs pseudo-classes agree with the hidden classes (a diagnostic).

Meta-training never reads labels; this script does, after the fact, to say how good the
pseudo-classes a run trained on were: the Hungarian accuracy, NMI and ARI of each of its
partitions (``partitions.safetensors``) against the true labels of the split it was made from
(points dropped from a partition, label ``-1``, are left out of its scores).

Run: ``.venv/bin/python benchmarks/cactus_quality.py runs/mnist-unsup runs/mnist-unsup-fast
[--dataset mnist --split train] [--root DATA_DIR] [--json PATH]``; the runs must have been made
from that dataset split (the partition length is checked). Prints a markdown table and writes
JSON (default ``benchmarks/results/cactus_quality.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import numpy as np

from metaunsup.data import load
from metaunsup.errors import DataError, MetaUnsupError
from metaunsup.fileio import atomic_write_json
from metaunsup.metrics import score_clustering
from metaunsup.tasks.pseudo.cactus import load_partitions
from metaunsup.training.unsupervised import PARTITIONS_FILE

RESULTS = Path(__file__).resolve().parent / "results"


def partition_scores(parts: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Accuracy, NMI and ARI of each partition (row of ``parts`` ``[P, n]``) against ``y``."""
    rows = []
    for p in parts:
        keep = p >= 0
        s = score_clustering(y[None, keep], p[None, keep])
        rows.append({k: float(v[0]) for k, v in s.items()} | {"kept": float(keep.mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of CACTUs runs")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--split", default="train")
    parser.add_argument("--root", default=None, help="dataset folder (default: METAUNSUP_DATA)")
    parser.add_argument("--json", type=Path, default=RESULTS / "cactus_quality.json")
    args = parser.parse_args(argv)
    report = {
        "date": _dt.date.today().isoformat(),
        "data": f"{args.dataset}/{args.split}",
        "command": "python benchmarks/cactus_quality.py " + " ".join(argv or sys.argv[1:]),
        "runs": {},
    }
    print("| run | partitions | accuracy (mean) | NMI | ARI | points kept |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        y = load(args.dataset, args.split, root=args.root).y.numpy()
        for run in args.runs:
            parts = load_partitions(run / PARTITIONS_FILE)[0].numpy()
            if parts.shape[1] != len(y):
                raise DataError(
                    f"{run}: partitions of {parts.shape[1]} points, but {args.dataset}/"
                    f"{args.split} has {len(y)}"
                )
            rows = partition_scores(parts, y)
            report["runs"][str(run)] = rows
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(
                f"| {run} | {len(rows)} | {mean['acc']:.3f} | {mean['nmi']:.3f} | "
                f"{mean['ari']:.3f} | {mean['kept']:.3f} |"
            )
    except MetaUnsupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {atomic_write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
