"""The user's path without a checkpoint: ``MetaKMeans`` (self-trained) beside scikit-learn.

Separated blobs (``sklearn.datasets.make_blobs``: ``n`` rows × 50 features, 10 centres, unit
spread, ``random_state = seed``), ``k = 10``, for ``n`` in 1,000 / 10,000 / 100,000. Each fit
runs in a fresh process on one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``):

* ``metakmeans``: ``MetaKMeans(10, random_state=seed).fit(X)`` with its defaults: the guard
  first checks whether the features' k-means clusters are separated, and if so clusters them
  without self-training; otherwise pseudo-task partitions, 300 meta-training steps, embedding,
  k-means. Recorded with the time of its self-training part and the guard's reason;
* ``metakmeans-no-guard``: the same with ``guard=False``, which always self-trains (the cost
  of self-training itself on these rows);
* ``kmeans``: ``sklearn.cluster.KMeans(10, n_init=10, random_state=seed)``;
* ``minibatch``: ``sklearn.cluster.MiniBatchKMeans(10, n_init=3, random_state=seed)``.

Reported: fit seconds (the median of 3 fits in that process), the ratio to ``KMeans``, peak
memory of the first fit above the data (``peak_memory.py``,
glibc's ``mmap`` threshold fixed at 64 KiB), and the adjusted Rand index against the blobs.

Run: ``python benchmarks/bench_self_train.py [--rows 1000 10000 100000] [--seed 0]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _record import write_record

RESULTS = Path(__file__).resolve().parent / "results"
#: Fits per method and size (in one process); the median is reported, the first one's peak
#: memory.
REPEATS = 3
METHODS = ("kmeans", "minibatch", "metakmeans", "metakmeans-no-guard")


def child(method: str, rows: int, seed: int) -> dict:
    import torch
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from metaunsup import MetaKMeans
    from peak_memory import measure

    torch.set_num_threads(1)
    X, y = make_blobs(rows, n_features=50, centers=10, random_state=seed)
    if method == "kmeans":
        model = KMeans(10, n_init=10, random_state=seed)
    elif method == "minibatch":
        model = MiniBatchKMeans(10, n_init=3, random_state=seed)
    elif method == "metakmeans":
        model = MetaKMeans(10, random_state=seed)
    else:
        model = MetaKMeans(10, guard=False, random_state=seed)
    peak, first, fitted = measure(lambda: model.fit(X))
    times = [first]
    for _ in range(REPEATS - 1):  # the same fit again: the median is steadier than one fit
        t0 = time.perf_counter()
        model.fit(X)
        times.append(time.perf_counter() - t0)
    record = {
        "method": method,
        "rows": rows,
        "seconds": statistics.median(times),
        "seconds_each": times,
        "peak_mb": peak,
        "ari": float(adjusted_rand_score(y, fitted.labels_)),
    }
    if method.startswith("metakmeans"):
        record["self_training"] = fitted.training_
        record["guard"] = fitted.guard_.reason if fitted.guard_ is not None else None
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_self_train.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.seed)))
        return 0
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", **os.environ}
    rows = []
    for n in args.rows:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--child", method, str(n), "--seed", str(args.seed)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{method:10s} {n:>7d}: {r['seconds']:7.2f} s {r['peak_mb']:7.1f} MB "
                  f"ARI {r['ari']:.3f}", file=sys.stderr)  # fmt: skip
    base = {r["rows"]: r["seconds"] for r in rows if r["method"] == "kmeans"}
    lines = [
        "| rows | method | fit s | / KMeans | peak MB | ARI | self-training s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['seconds'] / base[r['rows']]:.1f}×" if r["rows"] in base else "–"
        st = r.get("self_training") or {}
        lines.append(
            f"| {r['rows']} | {r['method']} | {r['seconds']:.2f} | {ratio} | {r['peak_mb']:.0f} "
            f"| {r['ari']:.3f} | {st.get('seconds', '')} |"
        )
    table = "\n".join(lines)
    print(table)
    write_record(
        "bench_self_train",
        argv,
        args.json,
        python=platform.python_version(),
        machine=platform.processor() or platform.machine(),
        rows=rows,
        table=table,
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
