"""The command line on a large CSV: ``metaunsup cluster table.csv`` at growing numbers of rows,
reading and encoding included (issue 16, "Scale"; ``bench_table_scale.py`` measures the
estimator alone on an array already in memory).

For each size a child process writes the table (Gaussian blobs from scikit-learn's
``make_blobs``, ``--clusters`` centres in ``--columns`` columns, ``cluster_std=6`` as in
``bench_table_scale.py``, a header row, 6 significant digits) to a temporary folder; then another
child runs ``metaunsup cluster TABLE --k K --out labels.csv --threads T --quiet`` in-process
and reports its wall and CPU seconds and its peak resident memory (``getrusage``: the whole
command — reading the CSV with pandas, encoding, self-training, clustering, writing the labels).
The ARI of the written labels against the blobs is computed after the command has returned.
Beside it, ``MiniBatchKMeans`` on the same CSV read with ``pandas.read_csv`` (its read
included), in its own child, as the peer. Goals (issue 16): 1,000,000 x 50 in under 5 minutes on
one thread and under 4 GiB peak.

    nice -n 10 python benchmarks/bench_cluster_csv.py --threads 1

Prints a table, writes ``benchmarks/results/cluster_csv.json`` and ``docs/results/cluster_csv.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cluster_csv.json"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "results" / "cluster_csv.md"
METHODS = ("metaunsup cluster", "read_csv + MiniBatchKMeans")
GiB = 1024**3


def _peak_gib() -> float:
    """Peak resident memory of this process so far (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def _blobs(n: int, d: int, k: int, seed: int):
    from sklearn.datasets import make_blobs

    return make_blobs(n, d, centers=k, cluster_std=6.0, random_state=seed)


def make_csv(path: Path, n: int, d: int, k: int, seed: int) -> None:
    """Write the blobs as a CSV with a header ``f0..f{d-1}``."""
    import pandas as pd

    x, _ = _blobs(n, d, k, seed)
    pd.DataFrame(x, columns=[f"f{j}" for j in range(d)]).to_csv(
        path, index=False, float_format="%.6g"
    )


def run_method(method: str, path: Path, k: int, seed: int, threads: int) -> dict:
    """Run ``method`` on the CSV at ``path``; seconds, CPU seconds, peak memory, labels file."""
    t0, c0 = time.perf_counter(), time.process_time()
    labels_path = path.with_name(f"labels-{method.split()[0]}.csv")
    if method == "metaunsup cluster":
        from metaunsup.app.cli import main as cli

        argv = ["cluster", str(path), "--k", str(k), "--out", str(labels_path), "--seed", str(seed)]
        status = cli([*argv, "--threads", str(threads), "--quiet"])
        if status != 0:
            raise SystemExit(f"metaunsup cluster exited with {status}")
    else:
        import numpy as np
        import pandas as pd
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads):
            x = pd.read_csv(path).to_numpy(dtype=np.float64)
            labels = MiniBatchKMeans(k, random_state=seed, n_init="auto").fit(x).labels_
        pd.DataFrame({"index": np.arange(len(labels)), "label": labels}).to_csv(
            labels_path, index=False
        )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_gib": _peak_gib(),
            "labels": str(labels_path)}  # fmt: skip


def _child(argv: list[str], threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    out = subprocess.run(
        [sys.executable, __file__, *argv], env=env, check=True, capture_output=True, text=True
    )
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def measure(n: int, args: argparse.Namespace, folder: Path) -> list[dict]:
    """Both methods on one freshly written CSV of ``n`` rows."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    path = folder / f"blobs-{n}.csv"
    shape = [str(n), str(args.columns), str(args.clusters), str(args.seed)]
    _child(["--make-csv", str(path), *shape], args.threads)
    size_gib = path.stat().st_size / GiB
    _, y = _blobs(n, args.columns, args.clusters, args.seed)
    rows = []
    for method in METHODS:
        r = _child(
            ["--run", method, str(path), str(args.clusters), str(args.seed), str(args.threads)],
            args.threads,
        )
        labels = pd.read_csv(r.pop("labels"))["label"].to_numpy()
        r.update(method=method, n=n, d=args.columns, seed=args.seed, csv_gib=size_gib,
                 ari=float(adjusted_rand_score(y, labels)))  # fmt: skip
        rows.append(r)
    peer = rows[-1]["seconds"]
    for r in rows:
        r["time_ratio_to_peer"] = r["seconds"] / peer
    path.unlink()
    return rows


def write_page(record: dict, path: Path) -> None:
    lines = [
        "# `metaunsup cluster` on a large CSV: time and memory against n",
        "",
        "<!-- Written by benchmarks/bench_cluster_csv.py from "
        "benchmarks/results/cluster_csv.json. -->",
        "",
        f"Measured by `{record['command']}` on {record['date']}, {record['threads']} thread(s), "
        f"on {record['machine']}: wall-clock times depend on that load, so the CPU seconds and "
        "the ratio to the peer in the same run are the numbers to compare. Each table is "
        f"`make_blobs` ({record['clusters']} centres, {record['columns']} columns, "
        f"`cluster_std=6`, seed {record['seed']}) written as a CSV with a header; "
        "`metaunsup cluster TABLE --k K --out labels.csv` runs in its own process and its peak "
        "resident set (`getrusage`) covers the whole command: reading the CSV with pandas, "
        "encoding the columns, self-training, clustering and writing the labels. The peer reads "
        "the same CSV with `pandas.read_csv` and fits scikit-learn's `MiniBatchKMeans`. ARI is "
        "against the blobs.",
        "",
        "Goals (issue 16): 1,000,000 x 50 clustered in under 5 minutes on one thread and under "
        "4 GiB peak memory.",
        "",
        "| rows | CSV GiB | method | seconds | CPU seconds | x peer | peak GiB | ARI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['csv_gib']:.2f} | {r['method']} | {r['seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['time_ratio_to_peer']:.1f} | {r['peak_rss_gib']:.2f} "
            f"| {r['ari']:.3f} |"
        )
    ours = [r for r in record["rows"] if r["method"] == METHODS[0] and r["n"] == 1_000_000]
    if ours:
        r = ours[0]
        lines += [
            "",
            f"At 1,000,000 rows the command took {r['cpu_seconds']:.0f} CPU seconds "
            f"({'under' if r['cpu_seconds'] < 300 else 'over'} the 5 minutes of one thread; "
            f"{r['seconds']:.0f} s of wall-clock time on this machine's load) and peaked at "
            f"{r['peak_rss_gib']:.2f} GiB ({'under' if r['peak_rss_gib'] < 4 else 'over'} "
            "4 GiB).",
        ]
    lines += [
        "",
        "The estimator alone, on the same kind of table already in memory, over three seeds: "
        "[table_scale.md](table_scale.md).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--make-csv", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--run", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_csv:
        path, *nums = args.make_csv
        make_csv(Path(path), *(int(v) for v in nums))
        return
    if args.run:
        method, path, k, seed, threads = args.run
        print(json.dumps(run_method(method, Path(path), int(k), int(seed), int(threads))))
        return
    rows = []
    print(
        f"{'n':>9} {'method':>28} {'seconds':>8} {'cpu s':>8} {'x peer':>7} {'GiB':>6} {'ARI':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cluster-csv-") as tmp:
        for n in args.sizes:
            for r in measure(n, args, Path(tmp)):
                rows.append(r)
                print(
                    f"{n:>9} {r['method']:>28} {r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} "
                    f"{r['time_ratio_to_peer']:>7.1f} {r['peak_rss_gib']:>6.2f} {r['ari']:>6.3f}",
                    flush=True,
                )
    record = {
        "command": " ".join(["python", "benchmarks/bench_cluster_csv.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
        "threads": args.threads,
        "columns": args.columns,
        "clusters": args.clusters,
        "seed": args.seed,
        "goals": {"seconds_at_1M": 300, "peak_gib_at_1M": 4.0},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    write_page(record, PAGE)
    print(f"wrote {args.out} and {PAGE}")


if __name__ == "__main__":
    main()
