"""Time and peak memory of scoring anomalies in a large table: ``MetaOutlierDetector`` with the
zero-shot ``tabular`` checkpoint against scikit-learn's ``IsolationForest``, at growing numbers
of rows (issue 16, "Scale": ``detect`` on 1,000,000 rows x 50 columns with bounded memory).

Each (method, size, seed) runs in its own child process (as in ``bench_table_scale.py``, whose
helpers it uses), so that its peak resident memory is its own. A child makes the table: Gaussian
blobs (``make_blobs``, 10 centres in 50 columns, ``cluster_std=6``) of which 1% of the rows are
replaced by anomalies drawn uniformly over the box the blobs span (the classic scattered-noise
anomalies). It fits the method on the whole table, unsupervised (no reference of normal rows:
the table is its own, contaminated, reference, as ``metaunsup detect INPUT`` without
``--normal`` does), and reports the fit's seconds (scores and flags of every row included), its
peak memory, the AUROC of its scores against the injected anomalies and the share of rows it
flags. ``MetaOutlierDetector`` flags at its default false-alarm target (``fpr=0.05``);
``IsolationForest`` with its default ``contamination="auto"``.

Timings on a shared machine vary; the ratio to ``IsolationForest`` in the same run and the CPU
seconds are the numbers to compare. Prints a table and writes
``benchmarks/results/detect_scale.json`` and ``docs/results/detect_scale.md`` (the page only
when the JSON goes to its default place)::

    python benchmarks/bench_detect_scale.py --threads 1 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_table_scale import (
    paired_rows,
    run_script_child,
    scale_record,
    size_rows,
    timed_fit,
)
from metaunsup.fileio import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "detect_scale.json"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "results" / "detect_scale.md"
METHODS = ("MetaOutlierDetector (tabular)", "IsolationForest")
#: Share of the rows that are anomalies.
ANOMALY_SHARE = 0.01


def make_table(n: int, d: int, seed: int):
    """``(x [n, d] float64, is_anomaly [n] bool)``: blobs with 1% of rows replaced by uniform
    noise over the blobs' bounding box."""
    import numpy as np
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(n, d, centers=10, cluster_std=6.0, random_state=seed)
    rng = np.random.default_rng(seed)
    anomalous = rng.random(n) < ANOMALY_SHARE
    low, high = x.min(0), x.max(0)
    x[anomalous] = rng.uniform(low, high, size=(int(anomalous.sum()), d))
    return np.ascontiguousarray(x), anomalous


def child(method: str, n: int, d: int, seed: int, threads: int) -> dict:
    """Fit ``method`` on an ``n`` x ``d`` table; its seconds, peak memory, AUROC and flags."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(threads)
    x, anomalous = make_table(n, d, seed)

    def fit():  # every row's score and flag
        if method == METHODS[0]:
            from metaunsup import MetaOutlierDetector

            model = MetaOutlierDetector(checkpoint="tabular", random_state=seed).fit(x)
            return model.decision_scores_, model.labels_ == 1
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(random_state=seed).fit(x)
        return -forest.score_samples(x), forest.predict(x) == -1

    (scores, flagged), measured = timed_fit(fit, threads)
    return {
        "method": method,
        "n": n,
        "d": d,
        "seed": seed,
        **measured,
        "auroc": float(roc_auc_score(anomalous, scores)),
        "flagged": float(np.mean(flagged)),
    }


def write_page(record: dict, path: Path) -> None:
    """The results page: one line per (size, method), mean (min-max) over the seeds."""
    seeds = sorted({r["seed"] for r in record["rows"]})
    lines = [
        "# Scoring anomalies in a large table: time and memory against n",
        "",
        f"Measured by `{record['command']}` on {record['date']}, {record['threads']} thread(s), "
        f"on {record['machine']}: wall-clock times depend on that load, so the ratio to "
        "`IsolationForest` in the same run and the CPU seconds are the numbers to compare. "
        f"Tables of Gaussian blobs (`make_blobs`, 10 centres, {record['columns']} columns, "
        f"`cluster_std=6`) with {ANOMALY_SHARE:.0%} of the rows replaced by uniform noise over "
        "the blobs' bounding box, scored unsupervised (the table is its own reference, as "
        "`metaunsup detect INPUT` without `--normal`), one child process per method, size and "
        "seed; seconds include scoring and flagging every row; peak memory is the child's "
        "peak resident set, the table included (beside it, the peak right after making the "
        f"table). Mean (min-max) over the seeds {', '.join(map(str, seeds))}. "
        '`MetaOutlierDetector(checkpoint="tabular")` flags at its default false-alarm '
        'target 0.05, `IsolationForest` with `contamination="auto"`.',
        "",
        "| rows | method | seconds | CPU seconds | x IsolationForest | peak GiB | "
        "GiB after the table | AUROC | share flagged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fields = [("seconds", 1), ("cpu_seconds", 1), ("time_ratio_to_iforest", 1)]
    fields += [("peak_rss_gib", 2), ("data_rss_gib", 2), ("auroc", 3), ("flagged", 3)]
    lines += size_rows(record["rows"], METHODS, fields)
    lines += [
        "",
        "How `MetaOutlierDetector` bounds its memory on a large table "
        "(`src/metaunsup/estimators/outlier.py`): with more than 50 rows and no separate "
        "reference, a seeded reference of at most 1000 rows scores the rest (split conformal "
        "p-values), and the rows are embedded and scored against it in chunks of "
        "`batch_size` rows, so the distances held at once are a chunk's to the reference, "
        "not all rows' to each other. The anomalies here are easy (scattered noise far from "
        "the blobs): this page measures scale, not quality. Quality on real tables is in "
        "[tables_anomaly.md](tables_anomaly.md).",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, *nums = args.child
        n, d, seed, threads = (int(v) for v in nums)
        print(json.dumps(child(method.replace("_", " "), n, d, seed, threads)))
        return
    rows = paired_rows(
        args.sizes,
        args.seeds,
        METHODS,
        lambda m, n, seed: run_script_child(
            __file__, [m.replace(" ", "_"), n, args.columns, seed, args.threads], args.threads
        ),
        "IsolationForest",
        "time_ratio_to_iforest",
        lambda n, seed, m, r: (
            f"{n:>9} {seed:>4} {m:>30} {r['seconds']:>8.1f} s {r['cpu_seconds']:>8.1f} "
            f"cpu s {r['time_ratio_to_iforest']:>6.1f}x {r['peak_rss_gib']:>6.2f} GiB "
            f"AUROC {r['auroc']:.3f} flagged {r['flagged']:.3f}"
        ),
    )
    record = scale_record("bench_detect_scale.py", args, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    if args.out == RESULTS:  # a trial run elsewhere leaves the docs page alone
        write_page(record, PAGE)
    print(f"wrote {args.out}" + (f" and {PAGE}" if args.out == RESULTS else ""))


if __name__ == "__main__":
    main()
