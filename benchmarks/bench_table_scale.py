"""Time and peak memory of clustering a large table: ``MetaKMeans`` self-training against
scikit-learn's ``MiniBatchKMeans``, at growing numbers of rows (issue 16, "Scale").

Each (method, size, seed) runs in its own child process, so that its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. A child makes the table (Gaussian
blobs from scikit-learn's ``make_blobs``: ``--clusters`` centres in 50 columns), fits the method
on it and reports the fit's seconds, its peak memory (table included; the memory after making
the table is reported beside it) and the ARI of its labels against the blobs. Both methods run on
``--threads`` threads (torch, BLAS and OpenMP). Wall-clock and CPU seconds are both reported:
on a machine shared with other jobs a one-thread process may get less than a whole core, and
its CPU seconds are then the closer measure of its own work. Goals (issue 16): 1,000,000 x 50
in under 5 minutes on one thread and under 4 GiB peak.

Timings on a shared machine vary; the ratio to ``MiniBatchKMeans`` in the same run is the number
to compare. Prints a table and writes ``benchmarks/results/table_scale.json``::

    nice -n 10 python benchmarks/bench_table_scale.py --threads 1 --seeds 0 1 2
    python benchmarks/bench_table_scale.py --page   # docs/results/table_scale.md from the JSON

``--missing KIND`` removes cells as the other missing-cell benchmarks do
(``benchmarks/_missing_cells.py``: ``mcar10``, ``mcar30`` or ``mnar``) and times ``MetaKMeans``
taking them natively against scikit-learn's ``SimpleImputer`` (column means) +
``MiniBatchKMeans``, the imputation timed with the fit; it writes
``benchmarks/results/table_scale_missing.json`` and ``docs/results/table_scale_missing.md``::

    nice -n 10 python benchmarks/bench_table_scale.py --threads 1 --seeds 0 1 2 \
        --sizes 10000 100000 --missing mcar10
    python benchmarks/bench_table_scale.py --missing mcar10 --page
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _missing_cells import KINDS

RESULTS = Path(__file__).resolve().parent / "results" / "table_scale.json"
RESULTS_MISSING = RESULTS.with_name("table_scale_missing.json")
PAGES = Path(__file__).resolve().parents[1] / "docs" / "results"
#: The peer when cells are missing: column means filled in, then MiniBatchKMeans.
IMPUTED_PEER = "mean-impute + MiniBatchKMeans"
GiB = 1024**3


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(method: str, n: int, d: int, k: int, seed: int, threads: int, missing: str = "") -> dict:
    """Fit ``method`` on ``n`` x ``d`` blobs (cells removed as ``missing`` says, if given); its
    seconds, peak memory and ARI."""
    import numpy as np
    import torch
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    torch.set_num_threads(threads)
    x, y = make_blobs(n, d, centers=k, cluster_std=6.0, random_state=seed)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if missing:
        from _missing_cells import remove_cells

        x = remove_cells(x, missing, seed)

    def fit():
        if method == "MetaKMeans":
            from metaunsup.estimators.kmeans import MetaKMeans

            return MetaKMeans(k, random_state=seed).fit(x)
        from sklearn.cluster import MiniBatchKMeans

        table = x
        if method == IMPUTED_PEER:
            from sklearn.impute import SimpleImputer

            table = SimpleImputer().fit_transform(x)
        return MiniBatchKMeans(k, random_state=seed, n_init="auto").fit(table)

    model, measured = timed_fit(fit, threads)
    return {
        "method": method,
        "n": n,
        "d": d,
        "seed": seed,
        **measured,
        "ari": float(adjusted_rand_score(y, model.labels_)),
    }


def timed_fit(fit: Callable[[], Any], threads: int) -> tuple[Any, dict]:
    """``(fit(), measures)``: ``fit`` run with ``threads`` BLAS/OpenMP threads; its wall and
    CPU seconds, the process's peak memory after it and before it (the data made), in GiB."""
    from threadpoolctl import threadpool_limits

    data_rss = peak_rss_bytes()
    with threadpool_limits(threads):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fit()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return result, {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_gib": peak_rss_bytes() / GiB,
        "data_rss_gib": data_rss / GiB,
    }


def run_script_child(script: str, words: list[object], threads: int) -> dict:
    """Run ``script --child WORDS...`` in a fresh process limited to ``threads`` threads (torch,
    BLAS and OpenMP) and return the JSON line it prints last."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    cmd = [sys.executable, script, "--child", *(str(w) for w in words)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(method: str, n: int, args: argparse.Namespace, seed: int) -> dict:
    words: list[object] = [method, n, args.columns, args.clusters, seed, args.threads]
    return run_script_child(__file__, [*words, args.missing or "-"], args.threads)


def methods_of(missing: str | None) -> tuple[str, ...]:
    """The two methods timed: ``MetaKMeans`` and its peer (imputing first when cells are
    missing)."""
    return ("MetaKMeans", IMPUTED_PEER if missing else "MiniBatchKMeans")


def spread(values: list[float], digits: int) -> str:
    """``mean (min-max)`` of ``values``."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def paired_rows(
    sizes: list[int],
    seeds: list[int],
    methods: tuple[str, ...],
    run: Callable[[str, int, int], dict],
    peer: str,
    ratio_key: str,
    line: Callable[[int, int, str, dict], str],
) -> list[dict]:
    """Every method's record (``run(method, n, seed)``) at every size and seed, in that order,
    each with its time as a multiple of ``peer``'s of the same size and seed (``ratio_key``),
    printed as ``line(n, seed, method, record)`` when it is done: the loop both scale
    benchmarks share."""
    rows = []
    for n in sizes:
        for seed in seeds:
            pair = {m: run(m, n, seed) for m in methods}
            for m in methods:
                r = pair[m]
                r[ratio_key] = r["seconds"] / pair[peer]["seconds"]
                rows.append(r)
                print(line(n, seed, m, r), flush=True)
    return rows


def scale_record(script: str, args: argparse.Namespace, rows: list[dict], **extra) -> dict:
    """The JSON record of a scale run of ``benchmarks/SCRIPT``: its command, date, machine,
    threads and columns, ``extra`` fields, then the ``rows``."""
    return {
        "command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
        "threads": args.threads,
        "columns": args.columns,
        **extra,
        "rows": rows,
    }


def size_rows(
    rows: list[dict], methods: tuple[str, ...], fields: list[tuple[str, int]]
) -> list[str]:
    """Markdown rows ``| n | method | field... |``, one per size and method, each field the
    mean (min-max) over the seeds of ``rows``, with its number of digits."""
    lines = []
    for n in sorted({r["n"] for r in rows}):
        for method in methods:
            runs = [r for r in rows if r["n"] == n and r["method"] == method]
            cells = [spread([r[key] for r in runs], digits) for key, digits in fields]
            lines.append(f"| {n:,} | {method} | " + " | ".join(cells) + " |")
    return lines


def write_page(record: dict, path: Path) -> None:
    """The results page: one line per (size, method), mean (min-max) over the seeds."""
    seeds = sorted({r["seed"] for r in record["rows"]})
    missing = record.get("missing")
    methods = methods_of(missing)
    lines = [
        "# Clustering a large table: time and memory against n"
        + (f", cells missing ({missing})" if missing else ""),
        "",
        "<!-- Written by `python benchmarks/bench_table_scale.py"
        + (f" --missing {missing}" if missing else "")
        + " --page` from benchmarks/results/"
        + ("table_scale_missing.json" if missing else "table_scale.json")
        + ". -->",
        "",
        f"Measured by `{record['command']}` on {record['date']}, {record['threads']} thread(s), "
        f"on {record['machine']}: wall-clock times depend on that load, so the ratio to "
        "`MiniBatchKMeans` in the same run and the CPU seconds are the numbers to compare. "
        f"Tables of Gaussian blobs (`make_blobs`, {record['clusters']} centres, "
        f"{record['columns']} columns, `cluster_std=6`), one child process per method, size "
        "and seed; peak memory is the child's peak resident set (`getrusage`), the table "
        "included (beside it, the peak right after making the table, `make_blobs`' own "
        "temporaries included). `MetaKMeans` self-trains "
        "with its defaults (300 meta-training steps, `n_init=10`); `MiniBatchKMeans` runs with "
        "scikit-learn's defaults. Both are told the number of blobs; ARI is against the blobs. "
        f"Mean (min-max) over the seeds {', '.join(map(str, seeds))}.",
        "",
    ]
    if missing:
        lines += [
            f"Cells are removed from every table as `{missing}` (`benchmarks/_missing_cells.py`: "
            "`mcar10` / `mcar30` each cell at random with probability 0.10 / 0.30, `mnar` from "
            "the top 40% of each column with probability 1/2; seeded, every row keeps a cell). "
            "`MetaKMeans` takes them natively (its default); the peer fills "
            "them with the column means (scikit-learn's `SimpleImputer`, timed with the fit) "
            "and runs `MiniBatchKMeans`. The complete tables are on "
            "[table_scale.md](table_scale.md).",
            "",
        ]
    else:
        lines += [
            "Goals (issue 16): 1,000,000 x 50 clustered in under 5 minutes on one thread and "
            "under 4 GiB peak memory.",
            "",
        ]
    lines += [
        "| rows | method | seconds | CPU seconds | x MiniBatchKMeans | peak GiB | "
        "GiB after the table | ARI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fields = [("seconds", 1), ("cpu_seconds", 1), ("time_ratio_to_minibatch", 1)]
    fields += [("peak_rss_gib", 2), ("data_rss_gib", 2), ("ari", 3)]
    lines += size_rows(record["rows"], methods, fields)
    lines += [
        "",
        "How `MetaKMeans` bounds its memory and time on a large table "
        "(`src/metaunsup/estimators/kmeans.py`, `src/metaunsup/estimators/self_train.py`): the "
        "table is scaled, embedded and assigned to centres in chunks (no float64 copy of the "
        "whole table; above 100,000 rows no distances of all rows to the centres at once); "
        "each pseudo-label graph "
        "is built on at most 10,000 sampled rows, the other rows taking the label of their "
        "nearest sampled row; above 100,000 rows (with missing cells, above 10,000: there "
        "each sample is filled and searched over observed features) the partitions share one "
        "sample, so that search over all rows runs once instead of once per partition; with "
        "missing cells the guard fills them from the 5 nearest of at most 10,000 rows "
        "(`src/metaunsup/estimators/missing.py`), and where it falls back to the features "
        "every row is filled so, in chunks; the label-free guard "
        "(`src/metaunsup/estimators/guard.py`) assigns all rows to the centres of its 12 "
        "k-means partitions in chunks; k-means in the embedding runs on a seeded sample of "
        "100,000 rows, every row then going to its nearest centre. Meta-training itself works "
        "on small pseudo-tasks and does not grow with `n`. The rest of the peak is the table "
        "itself (the column beside it).",
        "",
        "The blobs are easy to separate (`MiniBatchKMeans` falls short of an ARI of 1 only "
        "where it lands in a worse local optimum on some seeds): this page "
        "measures scale, not quality. Quality on real tables against the tools a data "
        "scientist would pick is in [tables_vs_tools.md](tables_vs_tools.md).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--missing", choices=KINDS, help="remove cells (_missing_cells.py)")
    parser.add_argument("--out", type=Path, help="the JSON (default: benchmarks/results/...)")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--page", action="store_true", help="write the docs page from --out")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS_MISSING if args.missing else RESULTS
    page = PAGES / args.out.with_suffix(".md").name
    if args.page:
        write_page(json.loads(args.out.read_text()), page)
        print(f"wrote {page}")
        return
    if args.child:
        method, *nums = args.child
        n, d, k, seed, threads = (int(v) for v in nums[:5])
        print(json.dumps(child(method, n, d, k, seed, threads, nums[5].strip("-"))))
        return
    print(
        f"{'n':>9} {'seed':>4} {'method':>16} {'seconds':>9} {'cpu s':>8} {'x MBKM':>7} "
        f"{'peak GiB':>8} {'data GiB':>8} {'ARI':>6}"
    )
    methods = methods_of(args.missing)
    rows = paired_rows(
        args.sizes,
        args.seeds,
        methods,
        lambda m, n, seed: run_child(m, n, args, seed),
        methods[1],
        "time_ratio_to_minibatch",
        lambda n, seed, m, r: (
            f"{n:>9} {seed:>4} {m:>16} {r['seconds']:>9.1f} {r['cpu_seconds']:>8.1f} "
            f"{r['time_ratio_to_minibatch']:>7.1f} {r['peak_rss_gib']:>8.2f} "
            f"{r['data_rss_gib']:>8.2f} {r['ari']:>6.3f}"
        ),
    )
    extra: dict[str, Any] = {"clusters": args.clusters}
    if args.missing:
        extra["missing"] = args.missing
    else:
        extra["goals"] = {"seconds_at_1M": 300, "peak_gib_at_1M": 4.0}
    record = scale_record("bench_table_scale.py", args, rows, **extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
