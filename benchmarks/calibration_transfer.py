"""Which meta-calibration transfers to unseen classes: false alarms at ``fpr`` on test classes
for null tables measured on different label-free pseudo-class families and normalised by
different statistics of the support's leave-one-out scores.

For a Meta-SVDD checkpoint (``score="centre"``: a query's score is its squared distance to the
support's mean embedding, so tasks can be cut from precomputed embeddings) and the folder of the
run that trained it (its CACTUs partitions), per support size ``K``:

* null families (label-free): ``train-clusters`` (the CACTUs partitions the model was
  meta-trained on), ``pixel-clusters`` (k-means partitions of the training images' pixels, as
  many clusters, :func:`metaunsup.evaluation.anomaly.held_out_pixel_source`), ``pooled`` (half
  the tasks from each: what ``metaunsup.evaluation.anomaly`` calibrated with until
  2026-12-04 night), ``worst family`` (the larger of the two families' thresholds: what it
  calibrates with now, :func:`metaunsup.evaluation.anomaly.worst_family`); and, as a
  reference that reads training labels, ``train-classes`` (the training split's real classes);
* normalisations: ``mean, m=1`` (the support's mean leave-one-out score of its first 8 examples
  shrunk towards the median with weight 1: the calibration before this change), ``mean, m=0``,
  ``max, m=0`` (the largest leave-one-out score of the first 16: the calibration now);
* the checkpoint's stored null table (``stored table``): its false alarms on the same test
  tasks, as ``metaunsup evaluate`` flags them (the normal queries of an easy and a hard Omniglot
  task are alike: only the anomalies differ);
* measured: the share of normal queries of test tasks (test split, real classes) whose score
  exceeds the null's ``1 − fpr`` quantile; and, label-free, the same share on pixel-cluster
  tasks under the train-cluster null (how far one pseudo-class family transfers to another).

The test labels only measure; nothing here sets a threshold of a packaged model.

Run: ``python benchmarks/calibration_transfer.py --checkpoint omniglot-anomaly --run
runs/anomaly/omniglot-anomaly --dataset omniglot --train background --test evaluation
--k 2 5 10 --threads 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from _record import write_record
from metaunsup.data import load
from metaunsup.data.base import to_float
from metaunsup.evaluation.anomaly import PIXEL_PARTITIONS, learner_null_table
from metaunsup.evaluation.calibration import NullTable, leave_one_out_scores
from metaunsup.learners import load_learner
from metaunsup.tasks.anomaly import Grouping, OneClassStream
from metaunsup.tasks.pseudo.cactus import cactus_partitions
from metaunsup.training.unsupervised import PARTITIONS_FILE

NORMALISATIONS = {"mean, m=1": ("mean", 1.0), "mean, m=0": ("mean", 0.0), "max, m=0": ("max", 0.0)}


def centre(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Meta-SVDD's ``centre`` score on embeddings ``[B, K, D]``, ``[B, q, D]``."""
    return (query - support.mean(1, keepdim=True)).pow(2).sum(-1).to(torch.float64)


def embed(learner, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([learner.embed(x[i : i + 2000][None])[0] for i in range(0, len(x), 2000)])


def groupings(labels: torch.Tensor) -> list[Grouping]:
    return [Grouping(p.to(torch.int64), torch.unique(p.to(torch.int64))) for p in labels]


def normal_scores(z, groups, k: int, q: int, tasks: int, seed: int):
    """``(normal query scores [tasks, q], leave-one-out scores [tasks, min(k, 16)])``."""
    batch = OneClassStream(z, groups, k, q, seed=seed).sample(tasks)
    s = centre(batch.support_x, batch.query_x).masked_fill(batch.query_y > 0, float("nan"))
    return s, leave_one_out_scores(centre, batch.support_x, 16)


def normalised(s, loo, k: int, stat: str, prior: float) -> torch.Tensor:
    """Normal scores ``[n]`` divided by their task's scale ``(K·ℓ + m·σ0) / (K + m)``."""
    table = NullTable(torch.tensor([1]), torch.zeros(1, 1), torch.zeros(1), prior, stat)
    ell = table.statistic(loo)
    scale = (k * ell + prior * ell.median()) / (k + prior)
    out = (s / scale[:, None]).reshape(-1)
    return out[~torch.isnan(out)]


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (``python benchmarks/calibration_transfer.py --table
    FILE.json`` prints it from a record)."""
    cols = [
        "train-clusters",
        "pixel-clusters",
        "pooled",
        "worst family",
        "train-classes (reads labels)",
        "pixel-clusters under train-clusters null (label-free)",
    ]
    out = ["| K | normalisation | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        if "checkpoint" in r:
            cells = [f"checkpoint: **{r['checkpoint']:.3f}**"] + [""] * (len(cols) - 1)
        else:  # records from before the worst-family column have none
            cells = [f"{r[c]:.3f}" if c in r else "" for c in cols]
        out.append(f"| {r['k']} | {r['normalisation']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a measurement on a one-class checkpoint and the folder of its run (also
    used by ``benchmarks/threshold_rules.py``)."""
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)


def printed_table(markdown: Callable[[list[dict]], str]) -> bool:
    """``--table FILE.json``: print ``markdown`` of the file's rows (no measurement) and say so
    (also used by ``benchmarks/threshold_rules.py``)."""
    if sys.argv[1:2] != ["--table"]:
        return False
    print(markdown(json.loads(Path(sys.argv[2]).read_text())["rows"]))
    return True


def main() -> None:
    if printed_table(markdown):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    learner = load_learner(args.checkpoint).eval()
    if getattr(learner, "score_kind", None) != "centre":
        raise SystemExit("calibration_transfer: needs a Meta-SVDD checkpoint with score='centre'")
    train, test = load(args.dataset, args.train), load(args.dataset, args.test)
    xt = to_float(train.x)
    zt, zs = embed(learner, xt), embed(learner, to_float(test.x))
    from safetensors.torch import load_file

    parts = next(iter(load_file(str(args.run / PARTITIONS_FILE)).values()))
    n_clusters = int(parts.max()) + 1
    pixel = cactus_partitions(xt.reshape(len(xt), -1), PIXEL_PARTITIONS, n_clusters, seed=1,
                              scale=False)  # fmt: skip
    families = {
        "train-clusters": groupings(parts),
        "pixel-clusters": groupings(pixel),
        "train-classes (reads labels)": groupings(train.y[None]),
    }
    rows = []
    for k in args.k:
        q_test = min(100, int(torch.bincount(test.y).min()) - k)
        ts, tl = normal_scores(zs, groupings(test.y[None]), k, q_test, args.tasks, 0)
        table = learner_null_table(learner)
        if table is not None and table.ready:  # the checkpoint's own stored calibration
            p = table.pvalues(k, ts.nan_to_num(0.0), tl)[~torch.isnan(ts)]
            stored = {"k": k, "normalisation": f"stored table ({table.stat})"}
            stored["checkpoint"] = float((p <= args.fpr).double().mean())
            rows.append(stored)
            print(json.dumps(stored), flush=True)
        nulls = {
            n: normal_scores(zt, g, k, 5, 2000, 1 + i) for i, (n, g) in enumerate(families.items())
        }
        for norm, (stat, prior) in NORMALISATIONS.items():
            ref = {n: normalised(*v, k, stat, prior) for n, v in nulls.items()}
            ref["pooled"] = torch.cat([ref["train-clusters"], ref["pixel-clusters"]])
            test_n = normalised(ts, tl, k, stat, prior)
            row = {"k": k, "normalisation": norm}
            cuts = {n: torch.quantile(values, 1 - args.fpr) for n, values in ref.items()}
            cuts["worst family"] = torch.maximum(cuts["train-clusters"], cuts["pixel-clusters"])
            for n, cut in cuts.items():
                row[n] = float((test_n > cut).double().mean())
            cut = torch.quantile(ref["train-clusters"], 1 - args.fpr)
            row["pixel-clusters under train-clusters null (label-free)"] = float(
                (ref["pixel-clusters"] > cut).double().mean()
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        write_record("calibration_transfer", sys.argv[1:], args.json, fpr=args.fpr, rows=rows)


if __name__ == "__main__":
    main()
