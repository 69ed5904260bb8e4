"""Speed of task sampling: metaunsup's vectorised samplers against a per-task Python loop.

Cases (dataset loading excluded from every timing):

- MNIST test split, 1000 clustering tasks of 10 classes × 20 images (the reference experiment);
- Omniglot evaluation split, 1000 few-shot tasks, 5-way 1-shot + 15 query (if the files exist).

Each case is timed twice: *indices* (which examples form each task) and *batch* (the float32
``[B, n, 1, 28, 28]`` tensor of examples as well). The peer, measured in the same run on the same
threads, is the naive approach: a Python loop over tasks calling NumPy ``Generator.choice`` for the
classes and for the examples of each class (per-class index lists precomputed, as for us), then
gathering and stacking the examples. Reported: median (and min) of ``--repeats`` runs after one
warm-up, and the peer/metaunsup time ratio. Both run on one thread by default (``--threads``),
since the peer cannot use more; the load average is recorded because other processes on a
small machine make every timing noisier.

Run: ``.venv/bin/python benchmarks/bench_sampling.py [--json PATH] [--repeats 7]``
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from metaunsup.data import Dataset, load, to_float
from metaunsup.errors import DataError
from metaunsup.tasks import ClusteringTaskSampler, FewShotTaskSampler

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_sampling.json"


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and min seconds of ``fn`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        del out
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


class NaiveSampler:
    """The peer: one Python iteration per task, NumPy ``choice`` without replacement."""

    def __init__(self, ds: Dataset, n_way: int, k_shot: int, n_query: int, seed: int) -> None:
        y = ds.y.numpy()
        self.by_class = [np.flatnonzero(y == c) for c in range(ds.n_classes)]
        self.x = ds.x.numpy()
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.rng = np.random.default_rng(seed)

    def task(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, m = self.rng, self.k_shot + self.n_query
        classes = rng.choice(len(self.by_class), self.n_way, replace=False)
        picked = np.stack([rng.choice(self.by_class[c], m, replace=False) for c in classes])
        labels = np.repeat(np.arange(self.n_way), m).reshape(self.n_way, m)
        if self.n_query == 0:  # clustering: shuffle the whole task
            perm = rng.permutation(self.n_way * m)
            return classes, picked.reshape(-1)[perm], labels.reshape(-1)[perm]
        k = self.k_shot
        idx = np.concatenate([picked[:, :k].reshape(-1), picked[:, k:].reshape(-1)])
        lab = np.concatenate([labels[:, :k].reshape(-1), labels[:, k:].reshape(-1)])
        return classes, idx, lab

    def indices(self, n_tasks: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [self.task() for _ in range(n_tasks)]

    def batch(self, n_tasks: int) -> torch.Tensor:
        xs = []
        for _ in range(n_tasks):
            _, idx, _ = self.task()
            xs.append(self.x[idx].astype(np.float32) / np.float32(255.0))
        return torch.from_numpy(np.stack(xs))


def run_case(
    name: str,
    ds: Dataset,
    n_way: int,
    k_shot: int,
    n_query: int,
    n_tasks: int,
    repeats: int,
) -> dict[str, object]:
    if n_query:
        ours = FewShotTaskSampler(ds, n_way, k_shot, n_query, seed=0)
    else:
        ours = ClusteringTaskSampler(ds, n_way, k_shot, seed=0)
    peer = NaiveSampler(ds, n_way, k_shot, n_query, seed=0)
    check = ours.sample(4)
    assert torch.equal(ds.y[check.indices], torch.gather(check.classes, 1, check.y))
    assert torch.equal(check.x, to_float(ds.x[check.indices]))
    results = {
        "ours_indices": timed(lambda: ours.sample_indices(n_tasks), repeats),
        "peer_indices": timed(lambda: peer.indices(n_tasks), repeats),
        "ours_batch": timed(lambda: ours.sample(n_tasks), repeats),
        "peer_batch": timed(lambda: peer.batch(n_tasks), repeats),
    }
    return {
        "case": name,
        "dataset": f"{ds.name}/{ds.split}",
        "n_classes": ds.n_classes,
        "n_examples": len(ds),
        "n_way": n_way,
        "k_shot": k_shot,
        "n_query": n_query,
        "n_tasks": n_tasks,
        "batch_shape": list(check.x.shape[1:]),
        **results,
        "ratio_indices": results["peer_indices"]["median_s"] / results["ours_indices"]["median_s"],
        "ratio_batch": results["peer_batch"]["median_s"] / results["ours_batch"]["median_s"],
    }


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| case | what | metaunsup median (min) | per-task loop median (min) | speed-up |\n"
        "|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        for what in ("indices", "batch"):
            ours, peer = r[f"ours_{what}"], r[f"peer_{what}"]
            lines.append(
                f"| {r['case']} | {what} | {ours['median_s'] * 1e3:.1f} ms "
                f"({ours['min_s'] * 1e3:.1f}) | {peer['median_s'] * 1e3:.1f} ms "
                f"({peer['min_s'] * 1e3:.1f}) | {r[f'ratio_{what}']:.1f}× |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement")
    parser.add_argument("--n-tasks", type=int, default=1000, help="tasks per timed call")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the peer is single-threaded, and on a shared "
        "machine several threads wait on each other in every small op)",
    )
    parser.add_argument("--root", default=None, help="data folder (default $METAUNSUP_DATA)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    cases = [
        ("MNIST 10×20 clustering", "mnist", "test", 10, 20, 0),
        ("Omniglot 5-way 1-shot + 15 query", "omniglot", "evaluation", 5, 1, 15),
    ]
    for name, dataset, split, n_way, k_shot, n_query in cases:
        try:
            ds = load(dataset, split, args.root)
        except DataError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        rows.append(run_case(name, ds, n_way, k_shot, n_query, args.n_tasks, args.repeats))
    if not rows:
        print("no dataset found; set METAUNSUP_DATA or pass --root", file=sys.stderr)
        return 1

    print(table(rows))
    meta = {
        "benchmark": "bench_sampling",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "results": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
